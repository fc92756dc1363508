"""StyleGAN (v1) generator in lernapparat's PyTorch layout: the network PULSE searched.

StyleGAN (Karras et al., "A Style-Based Generator Architecture for Generative Adversarial
Networks", CVPR 2019): an 8-layer mapping MLP z -> w, then a synthesis network that starts from
a learned 4x4 constant and, per resolution, up-samples, convolves, adds per-pixel noise, applies
leaky ReLU, instance norm and a style (AdaIN) from one w vector per layer (18 for 1024x1024).
It has a single RGB head at full resolution, so unlike StyleGAN2 it always renders 1024x1024.

Names and shapes follow the PyTorch port PULSE used (lernapparat's notebook, published as
`karras2019stylegan-ffhq-1024x1024.for_g_all.pt`; alex-damian/pulse `stylegan.py`):
`g_mapping.dense{0-7}.{weight,bias}`, `g_synthesis.blocks.{R}x{R}.*` and `g_synthesis.torgb.*`,
including the blur kernels saved as buffers (`conv0_up.intermediate.kernel`) and the noise
strengths inside each epilogue's `top_epi` (`epi1.top_epi.noise.weight`; PULSE's own copy of the
port moved them to `epi1.noise.weight`, and `models.generators.unwrap` renames that form). Weight scales are
applied at run time (equalised learning rate): `gain / sqrt(fan_in) * lrmul`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.networks.stylegan2 import check_synthesis_inputs, pulse_w_plus

SQRT2 = math.sqrt(2.0)


def karras_channels(resolution: int, fmap_base: int = 8192, fmap_max: int = 512) -> tuple[int, ...]:
    """StyleGAN's `nf(stage) = min(fmap_base / 2**stage, fmap_max)` for blocks 4, 8, ..., resolution."""
    return tuple(min(int(fmap_base / 2.0 ** (r - 1)), fmap_max) for r in range(2, int(math.log2(resolution)) + 1))


@dataclasses.dataclass(frozen=True)
class StyleGAN1Config:
    resolution: int = 1024  # FFHQ StyleGAN renders 1024x1024
    w_dim: int = 512  # latent and style width
    num_mlp: int = 8  # mapping depth
    channels: tuple[int, ...] = karras_channels(1024)  # per block 4, 8, ..., resolution
    lrmul: float = 0.01  # mapping layers' learning-rate multiplier

    def __post_init__(self):
        log2 = int(math.log2(self.resolution)) if self.resolution > 0 else 0
        if self.resolution < 8 or 2**log2 != self.resolution:
            raise ValueError(f"StyleGAN resolution must be a power of two >= 8, got {self.resolution}")
        if len(self.channels) != log2 - 1:
            raise ValueError(f"StyleGAN needs {log2 - 1} channel widths (blocks 4..{self.resolution}), got {len(self.channels)}")

    @classmethod
    def karras(cls, resolution: int = 1024, fmap_base: int = 8192, fmap_max: int = 512, **kw) -> "StyleGAN1Config":
        return cls(resolution=resolution, channels=karras_channels(resolution, fmap_base, fmap_max), **kw)


class ScaledLinear(nn.Module):
    """lernapparat's `MyLinear` with use_wscale=True."""

    def __init__(self, in_dim: int, out_dim: int, *, gain: float, lrmul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lrmul)  # [out, in]
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.w_mul, self.b_mul = gain / math.sqrt(in_dim) * lrmul, lrmul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.w_mul, self.bias * self.b_mul)


class Blur(nn.Module):
    """The [1, 2, 1] x [1, 2, 1] / 16 low-pass after every up-sampling; its kernel is a saved buffer."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16)[None, None])  # [1, 1, 3, 3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel.expand(x.shape[1], -1, -1, -1), padding=1, groups=x.shape[1])


class ScaledConv2d(nn.Module):
    """lernapparat's `MyConv2d` (use_wscale=True); with `upscale`, 2x up-sampling then blur.

    From 64x64 inputs on (outputs >= 128), StyleGAN fuses the nearest up-sampling into a stride-2
    transposed convolution with the 3x3 kernel summed into 4x4; below, it up-samples then convolves.
    The fused form equals up-sampling then convolving with the kernel *flipped* (TF's
    conv2d_transpose semantics), which is how the released weights were trained: keep both paths.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, *, gain: float, upscale: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))  # [out, in, k, k]
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.w_mul = gain / math.sqrt(in_ch * kernel_size**2)
        self.upscale = upscale
        if upscale:
            self.intermediate = Blur()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.w_mul
        if not self.upscale:
            return F.conv2d(x, w, self.bias, padding=w.shape[-1] // 2)
        if x.shape[-1] * 2 >= 128:  # fused: [in, out, 3, 3] -> summed [in, out, 4, 4], stride 2
            w = F.pad(w.permute(1, 0, 2, 3), (1, 1, 1, 1))
            w = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]
            x = F.conv_transpose2d(x, w, stride=2, padding=1)
        else:
            x = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, padding=w.shape[-1] // 2)
        return self.intermediate(x) + self.bias.view(1, -1, 1, 1)


class NoiseLayer(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))  # per-channel noise strength

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight.view(1, -1, 1, 1) * noise  # noise: [B, 1, H, W]


class StyleMod(nn.Module):
    def __init__(self, w_dim: int, channels: int):
        super().__init__()
        self.lin = ScaledLinear(w_dim, channels * 2, gain=1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.lin(w).view(x.shape[0], 2, x.shape[1], 1, 1)  # [B, 2, C, 1, 1]: scale, shift
        return x * (style[:, 0] + 1.0) + style[:, 1]


class LayerEpilogue(nn.Module):
    """Noise, leaky ReLU(0.2), instance norm, style modulation.

    The port keeps the first three in a `top_epi` Sequential, of which only the noise has
    weights: the published file's key is `epiN.top_epi.noise.weight`, and so is ours.
    """

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.top_epi = nn.ModuleDict({"noise": NoiseLayer(channels)})
        self.style_mod = StyleMod(w_dim, channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.top_epi["noise"](x, noise), 0.2)
        return self.style_mod(F.instance_norm(x, eps=1e-5), w)  # nn.InstanceNorm2d's defaults, as in the port


class InputBlock(nn.Module):
    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.const = nn.Parameter(torch.ones(1, channels, 4, 4))
        self.bias = nn.Parameter(torch.ones(channels))
        self.epi1 = LayerEpilogue(channels, w_dim)
        self.conv = ScaledConv2d(channels, channels, 3, gain=SQRT2)
        self.epi2 = LayerEpilogue(channels, w_dim)

    def forward(self, ws: torch.Tensor, noise: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.const.expand(ws.shape[0], -1, -1, -1) + self.bias.view(1, -1, 1, 1)  # [B, C, 4, 4]
        x = self.epi1(x, ws[:, 0], noise[0])
        return self.epi2(self.conv(x), ws[:, 1], noise[1])


class SynthesisBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, w_dim: int):
        super().__init__()
        self.conv0_up = ScaledConv2d(in_ch, out_ch, 3, gain=SQRT2, upscale=True)
        self.epi1 = LayerEpilogue(out_ch, w_dim)
        self.conv1 = ScaledConv2d(out_ch, out_ch, 3, gain=SQRT2)
        self.epi2 = LayerEpilogue(out_ch, w_dim)

    def forward(self, x: torch.Tensor, ws: torch.Tensor, noise: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.epi1(self.conv0_up(x), ws[:, 0], noise[0])  # [B, Cout, 2H, 2W]
        return self.epi2(self.conv1(x), ws[:, 1], noise[1])


class Mapping(nn.Module):
    def __init__(self, w_dim: int, num_mlp: int, lrmul: float):
        super().__init__()
        self.num_mlp = num_mlp
        for i in range(num_mlp):
            setattr(self, f"dense{i}", ScaledLinear(w_dim, w_dim, gain=SQRT2, lrmul=lrmul))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)  # pixel norm
        for i in range(self.num_mlp):
            x = F.leaky_relu(getattr(self, f"dense{i}")(x), 0.2)
        return x


class Synthesis(nn.Module):
    def __init__(self, config: StyleGAN1Config):
        super().__init__()
        ch = config.channels
        blocks = {"4x4": InputBlock(ch[0], config.w_dim)}
        for i in range(1, len(ch)):
            side = 2 ** (i + 2)
            blocks[f"{side}x{side}"] = SynthesisBlock(ch[i - 1], ch[i], config.w_dim)
        self.blocks = nn.ModuleDict(blocks)
        self.torgb = ScaledConv2d(ch[-1], 3, 1, gain=1.0)

    def forward(self, ws: torch.Tensor, noise: Sequence[torch.Tensor]) -> torch.Tensor:
        x = None
        for i, block in enumerate(self.blocks.values()):
            pair = slice(2 * i, 2 * i + 2)
            x = block(ws[:, pair], noise[pair]) if i == 0 else block(x, ws[:, pair], noise[pair])
        return self.torgb(x)


class StyleGAN1Generator(nn.Module):
    """The generator; it renders only at its full resolution."""

    kind = "stylegan1"

    def __init__(self, config: StyleGAN1Config = StyleGAN1Config()):
        super().__init__()
        self.config = config
        self.resolution, self.w_dim = config.resolution, config.w_dim
        self.g_mapping = Mapping(config.w_dim, config.num_mlp, config.lrmul)
        self.g_synthesis = Synthesis(config)

    @property
    def render_sizes(self) -> tuple[int, ...]:
        return (self.resolution,)

    def num_ws(self, render_size: int) -> int:
        return 2 * int(math.log2(render_size)) - 2  # 18 at 1024

    def noise_sizes(self, render_size: int) -> list[int]:
        return [2**i for i in range(2, int(math.log2(render_size)) + 1) for _ in range(2)]

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z `[N, w_dim]` -> w `[N, w_dim]`."""
        return self.g_mapping(z)

    def styles(self, latent: torch.Tensor, fit) -> torch.Tensor:
        """The search's latents `[B, L, w_dim]` as W+ styles (PULSE's gaussian-fit map)."""
        return pulse_w_plus(latent, fit)

    def synthesize(self, ws: torch.Tensor, noise: Sequence[torch.Tensor], *, render_size: int | None = None) -> torch.Tensor:
        """ws `[B, 18, w_dim]` (at 1024), noise maps `[B, 1, s, s]` -> image `[B, 3, R, R]`."""
        size = render_size or self.resolution
        check_synthesis_inputs(self, ws, noise, size)
        return self.g_synthesis(ws, list(noise))

    forward = synthesize
