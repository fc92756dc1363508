"""The weight-free `classical` backend: bicubic upscaling.

It invents nothing, needs no download and is deterministic, so it is the default when no model
weights are configured and the reference the engines are compared on. Its downscaler is
antialiased bicubic (PyTorch's `interpolate(..., antialias=True)`), which is also what it
inverts best.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from models.backends.base import SRBackend, SRResult, TrackState, consistency


class ClassicalBackend(SRBackend):
    name = "classical"
    deterministic = True
    any_input_size = True

    def __init__(self, *, in_size: int = 16, out_size: int = 128, eps: float = 2e-3, device: str | torch.device = "cpu"):
        self.in_size = in_size
        self.out_size = out_size
        self.eps = eps
        self.device = torch.device(device)

    def downscale_to(self, images: torch.Tensor, size: int) -> torch.Tensor:
        return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True)

    def super_resolve(self, lr: torch.Tensor, states: Sequence[TrackState | None], *, seeds: Sequence[int], gaps=None) -> SRResult:
        self.check_lr(lr, states, seeds)
        size = (self.out_size, self.out_size)
        images = F.interpolate(lr, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)  # [B, 3, S, S]
        err = consistency(self, images, lr)
        n = lr.shape[0]
        return SRResult(
            images=images,
            states=[None] * n,
            consistency=err,
            success=err <= self.eps,
            steps=torch.zeros(n, dtype=torch.int64),
        )
