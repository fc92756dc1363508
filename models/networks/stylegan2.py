"""StyleGAN2 generator in BasicSR's `StyleGAN2Generator` layout, in plain PyTorch.

StyleGAN2 (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020):
a mapping MLP turns z into w; a synthesis network of modulated/demodulated 3x3 convolutions
with per-pixel noise, starting from a learned 4x4 constant, adds an RGB image at every
resolution ("skip" architecture). Because each resolution's RGB is complete, rendering can stop
at a lower block (128, 256) and return a smaller face: for the 512 Cmul1 network, the 256
render takes 30 of the full render's 38 GFLOPs and about half its activation memory.

The parameter names and shapes are exactly those of XPixelGroup/BasicSR
`basicsr/archs/stylegan2_arch.py` (`style_mlp.{1..8}`, `constant_input`, `style_conv1`,
`to_rgb1`, `style_convs.N`, `to_rgbs.N`, `noises.noiseN`), the layout of the FFHQ checkpoint
GFPGAN released (`StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth`, under `params_ema`), so that
checkpoint loads strictly. The FIR up-sampling that BasicSR runs through a compiled `upfirdn2d`
is written here with ordinary convolutions; there is no build step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
RESAMPLE_KERNEL = (1.0, 3.0, 3.0, 1.0)  # BasicSR/StyleGAN2's FIR filter for 2x up-sampling


def basicsr_channels(resolution: int, channel_multiplier: int = 1, narrow: float = 1.0) -> tuple[int, ...]:
    """BasicSR's channel widths for blocks 4, 8, ..., resolution (512 up to 32 px, then halving)."""
    sizes = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
    return tuple(int((512 if s <= 32 else (16384 // s) * channel_multiplier) * narrow) for s in sizes)


@dataclasses.dataclass(frozen=True)
class StyleGAN2Config:
    resolution: int = 512  # GFPGAN's FFHQ prior is 512x512
    w_dim: int = 512  # `num_style_feat`: width of z, w and every style vector
    num_mlp: int = 8  # mapping-network depth (StyleGAN2's 8)
    channels: tuple[int, ...] = basicsr_channels(512, 1)  # per block 4, 8, ..., resolution (Cmul1)
    lr_mlp: float = 0.01  # the mapping layers' learning-rate multiplier (scales their weights)

    def __post_init__(self):
        log2 = int(math.log2(self.resolution)) if self.resolution > 0 else 0
        if self.resolution < 4 or 2**log2 != self.resolution:
            raise ValueError(f"StyleGAN2 resolution must be a power of two >= 4, got {self.resolution}")
        if len(self.channels) != log2 - 1:
            raise ValueError(f"StyleGAN2 needs {log2 - 1} channel widths (blocks 4..{self.resolution}), got {len(self.channels)}")

    @classmethod
    def basicsr(cls, resolution: int = 512, channel_multiplier: int = 1, narrow: float = 1.0, **kw) -> "StyleGAN2Config":
        return cls(resolution=resolution, channels=basicsr_channels(resolution, channel_multiplier, narrow), **kw)


def _fir_kernel(scale: float) -> torch.Tensor:
    k = torch.tensor(RESAMPLE_KERNEL)
    k = k[:, None] * k[None, :]
    return k / k.sum() * scale  # [4, 4]


def _upfirdn(x: torch.Tensor, kernel: torch.Tensor, *, up: int, pad: tuple[int, int]) -> torch.Tensor:
    """Zero-insertion up-sampling by `up`, zero padding, then FIR filtering (upfirdn2d, down=1)."""
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = kernel.flip([0, 1]).to(x).expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, groups=c)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; `activate` = BasicSR's fused leaky ReLU (×√2)."""

    def __init__(self, in_dim: int, out_dim: int, *, bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)  # [out, in]
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))  # [out]
        self.scale, self.lr_mul, self.activate = lr_mul / math.sqrt(in_dim), lr_mul, activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return F.leaky_relu(out, 0.2) * SQRT2 if self.activate else out


class ModulatedConv2d(nn.Module):
    """Style-modulated (and optionally demodulated) convolution, one weight set per sample."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, w_dim: int, *, demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.demodulate, self.upsample, self.padding = demodulate, upsample, kernel_size // 2
        if upsample:  # blur after the stride-2 transposed conv; BasicSR's UpFirDnSmooth(upsample_factor=2)
            self.register_buffer("blur", _fir_kernel(4.0), persistent=False)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape  # [B, Cin, H, W]
        out_ch, k = self.weight.shape[1], self.weight.shape[-1]
        style = self.modulation(style).view(b, 1, c, 1, 1)  # [B, 1, Cin, 1, 1]
        weight = self.scale * self.weight * style  # [B, Cout, Cin, k, k]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, out_ch, 1, 1, 1)
        x = x.reshape(1, b * c, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * c, out_ch, k, k)  # [B*Cin, Cout, k, k]
            out = F.conv_transpose2d(x, weight, stride=2, groups=b)  # [1, B*Cout, 2H+1, 2W+1]
            out = _upfirdn(out.view(b, out_ch, *out.shape[2:]), self.blur, up=1, pad=(1, 1))
            return out  # [B, Cout, 2H, 2W]
        out = F.conv2d(x, weight.reshape(b * out_ch, c, k, k), padding=self.padding, groups=b)
        return out.view(b, out_ch, h, w)


class BiasLeakyReLU(nn.Module):
    """BasicSR's `FusedLeakyReLU`: add a per-channel bias, leaky ReLU(0.2), scale by √2."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2) * SQRT2


class StyleConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, w_dim: int, *, upsample: bool = False):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.activate = BiasLeakyReLU(out_ch)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.modulated_conv(x, style)  # [B, Cout, H, W]
        return self.activate(out + self.weight * noise)  # noise: [B, 1, H, W]


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, w_dim: int, *, upsample: bool = True):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_ch, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.upsample = upsample
        if upsample:  # BasicSR's UpFirDnUpsample(factor=2) for the skip image
            self.register_buffer("fir", _fir_kernel(4.0), persistent=False)

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias  # [B, 3, H, W]
        if skip is not None:
            out = out + _upfirdn(skip, self.fir, up=2, pad=(2, 1))
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, 4, 4))


class StyleGAN2Generator(nn.Module):
    """The generator; `synthesize(ws, noise, render_size=R)` stops at the R x R block."""

    kind = "stylegan2"

    def __init__(self, config: StyleGAN2Config = StyleGAN2Config()):
        super().__init__()
        self.config = config
        self.resolution, self.w_dim = config.resolution, config.w_dim
        ch = config.channels
        self.style_mlp = nn.Sequential(
            PixelNorm(), *[EqualLinear(config.w_dim, config.w_dim, lr_mul=config.lr_mlp, activate=True) for _ in range(config.num_mlp)]
        )
        self.constant_input = ConstantInput(ch[0])
        self.style_conv1 = StyleConv(ch[0], ch[0], config.w_dim)
        self.to_rgb1 = ToRGB(ch[0], config.w_dim, upsample=False)
        self.style_convs, self.to_rgbs, self.noises = nn.ModuleList(), nn.ModuleList(), nn.Module()
        for i, side in enumerate(self.noise_sizes(config.resolution)):
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, side, side))  # the checkpoint's fixed noise
        for prev, cur in zip(ch[:-1], ch[1:]):
            self.style_convs.append(StyleConv(prev, cur, config.w_dim, upsample=True))
            self.style_convs.append(StyleConv(cur, cur, config.w_dim))
            self.to_rgbs.append(ToRGB(cur, config.w_dim))

    @property
    def render_sizes(self) -> tuple[int, ...]:
        """Every side the skip architecture can stop at: 4, 8, ..., resolution."""
        return tuple(2**i for i in range(2, int(math.log2(self.resolution)) + 1))

    def num_ws(self, render_size: int) -> int:
        """Style vectors consumed when rendering at `render_size` (16 for 512, 14 for 256)."""
        return 2 * int(math.log2(render_size)) - 2

    def noise_sizes(self, render_size: int) -> list[int]:
        """Side of each noise map, in order: one 4x4, then two per resolution."""
        return [4] + [2**i for i in range(3, int(math.log2(render_size)) + 1) for _ in range(2)]

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z `[N, w_dim]` -> w `[N, w_dim]`."""
        return self.style_mlp(z)

    def styles(self, latent: torch.Tensor, fit) -> torch.Tensor:
        """The search's latents `[B, L, w_dim]` as W+ styles (PULSE's gaussian-fit map)."""
        return pulse_w_plus(latent, fit)

    def synthesize(self, ws: torch.Tensor, noise: Sequence[torch.Tensor], *, render_size: int | None = None) -> torch.Tensor:
        """ws `[B, num_ws(R), w_dim]`, noise maps `[B, 1, s, s]` -> image `[B, 3, R, R]` (about [-1, 1])."""
        size = render_size or self.resolution
        check_synthesis_inputs(self, ws, noise, size)
        out = self.constant_input.weight.expand(ws.shape[0], -1, -1, -1)  # [B, C4, 4, 4]
        out = self.style_conv1(out, ws[:, 0], noise[0])
        skip = self.to_rgb1(out, ws[:, 1])  # [B, 3, 4, 4]
        for block in range(int(math.log2(size)) - 2):
            i = 2 * block + 1
            out = self.style_convs[2 * block](out, ws[:, i], noise[i])
            out = self.style_convs[2 * block + 1](out, ws[:, i + 1], noise[i + 1])
            skip = self.to_rgbs[block](out, ws[:, i + 2], skip)
        return skip  # [B, 3, R, R]

    forward = synthesize


def pulse_w_plus(latent: torch.Tensor, fit) -> torch.Tensor:
    """PULSE's map from search latents `[B, L, w_dim]` ~ N(0, I) into W+: `leaky_relu(latent * std + mean, 0.2)`
    through the gaussian fit of the mapping network (`models.generators.GaussianFit`, on the latent's device)."""
    return F.leaky_relu(latent * fit.std + fit.mean, 0.2)


def check_synthesis_inputs(g, ws: torch.Tensor, noise: Sequence[torch.Tensor], size: int) -> None:
    """Shared by both generators: raise ValueError naming what was got and what was expected."""
    if size not in g.render_sizes:
        raise ValueError(f"{g.kind} ({g.resolution}px) can render at {list(g.render_sizes)}, got render_size={size}")
    expected = [ws.shape[0], g.num_ws(size), g.w_dim]
    if ws.ndim != 3 or list(ws.shape) != expected:
        raise ValueError(f"ws must be [B, num_ws, w_dim] = {expected}, got {list(ws.shape)}")
    sizes = g.noise_sizes(size)
    got = [tuple(n.shape) for n in noise]
    want = [(ws.shape[0], 1, s, s) for s in sizes]
    if got != want:
        raise ValueError(f"noise maps must be {want}, got {got}")
