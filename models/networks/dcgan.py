"""DCGAN generator in the PyTorch DCGAN tutorial's layout: a face prior with a single latent vector.

DCGAN (Radford, Metz and Chintala, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks", ICLR 2016) as the PyTorch tutorial writes it
(`beginner_source/dcgan_faces_tutorial.py`): z `[B, nz, 1, 1]` -> a stride-1 transposed
convolution to 4x4, then stride-2 transposed convolutions that double the side, each followed by
batch norm and ReLU, and tanh after the last one (64x64 RGB in [-1, 1] with five layers).

Keys are the tutorial's `nn.Sequential` indices, which is how the published checkpoints store
them: `main.{0,3,6,9,12}.weight` (`[in, out, 4, 4]`, no bias) and the batch norms at
`main.{1,4,7,10}.{weight,bias,running_mean,running_var,num_batches_tracked}`. The network always
runs in eval mode (running statistics): a face must not depend on the others in its batch.

The PULSE search (models/search.py) drives it like a StyleGAN with one style layer and no noise
maps: its latent `[B, 1, nz]` is z itself (no mapping network, so no gaussian fit), kept on the
sphere of its starting norm. `gan-face-generate`'s DigiFace-1M generator is this network with nz
100 and ngf 64 (registry entry `dcgan-digiface-64`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
from torch import nn

from models.networks.stylegan2 import check_synthesis_inputs


@dataclasses.dataclass(frozen=True)
class DCGANConfig:
    resolution: int = 64  # the tutorial's image side
    z_dim: int = 100  # nz: the latent's width
    ngf: int = 64  # feature maps of the last hidden layer; doubled at each layer towards 4x4
    channels: int = 3  # nc: RGB

    def __post_init__(self):
        if self.resolution < 8 or 2 ** int(math.log2(self.resolution)) != self.resolution:
            raise ValueError(f"DCGAN resolution must be a power of two >= 8, got {self.resolution}")
        if min(self.z_dim, self.ngf, self.channels) < 1:
            raise ValueError(f"DCGAN widths must be >= 1, got z_dim={self.z_dim}, ngf={self.ngf}, channels={self.channels}")

    @property
    def widths(self) -> list[int]:
        """Channels after each transposed convolution: ngf * 2^k down to ngf, then RGB (the tutorial's 512, 256, 128, 64, 3)."""
        hidden = int(math.log2(self.resolution)) - 2  # 4 at 64x64
        return [self.ngf * 2 ** (hidden - 1 - i) for i in range(hidden)] + [self.channels]


class DCGANGenerator(nn.Module):
    """z -> image; the `Generator` the PULSE search needs (one latent vector, no noise maps)."""

    kind = "dcgan"
    mapping = None  # no mapping network: the search runs on z, which is N(0, I) by construction

    def __init__(self, config: DCGANConfig = DCGANConfig()):
        super().__init__()
        self.config = config
        self.resolution, self.w_dim = config.resolution, config.z_dim
        layers: list[nn.Module] = []
        width = config.z_dim
        for i, out in enumerate(config.widths):
            first, last = i == 0, i == len(config.widths) - 1
            layers.append(nn.ConvTranspose2d(width, out, 4, 1 if first else 2, 0 if first else 1, bias=False))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out), nn.ReLU(True)]
            width = out
        self.main = nn.Sequential(*layers)
        self.eval()

    def train(self, mode: bool = True) -> "DCGANGenerator":
        """Always eval: batch statistics would make each face depend on the rest of its batch."""
        return super().train(False)

    @property
    def render_sizes(self) -> tuple[int, ...]:
        return (self.resolution,)

    def num_ws(self, render_size: int) -> int:
        return 1  # a single latent vector

    def noise_sizes(self, render_size: int) -> list[int]:
        return []  # no per-pixel noise inputs

    def styles(self, latent: torch.Tensor, fit: object = None) -> torch.Tensor:
        """The search's latent `[B, 1, z_dim]` is the generator's input as it is."""
        return latent

    def synthesize(self, ws: torch.Tensor, noise: Sequence[torch.Tensor] = (), *, render_size: int | None = None) -> torch.Tensor:
        """z `[B, 1, z_dim]` -> image `[B, 3, R, R]` in [-1, 1]."""
        check_synthesis_inputs(self, ws, noise, render_size or self.resolution)
        return self.main(ws.reshape(ws.shape[0], self.w_dim, 1, 1))

    forward = synthesize


def infer_config(state: dict[str, torch.Tensor]) -> DCGANConfig:
    """The architecture a tutorial-layout state dict describes, read from its transposed convolutions' shapes."""
    convs = sorted(int(k.split(".")[1]) for k in state if k.startswith("main.") and k.endswith(".weight") and state[k].ndim == 4)
    if not convs or convs[0] != 0:
        raise ValueError("no transposed convolution at main.0.weight")
    first, last = state["main.0.weight"], state[f"main.{convs[-1]}.weight"]  # [nz, ngf*2^k, 4, 4], [ngf, nc, 4, 4]
    return DCGANConfig(resolution=4 * 2 ** (len(convs) - 1), z_dim=int(first.shape[0]), ngf=int(last.shape[0]), channels=int(last.shape[1]))
