"""The super-resolution stage: its settings, the choice of backend, and one batch's run.

`SRConfig` is the `sr` section of the pipeline config; `create_backend` builds the backend it
names; `run_batch` turns aligned face crops into super-resolved faces through the backend's own
downscaler. Both engines call these. The backends themselves live in `models/` and know
nothing of video or Ray.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from models.backend import SRBackend, TrackState, resolve_device

log = logging.getLogger(__name__)

BACKENDS = ("classical", "pulse", "ffsr")


@dataclasses.dataclass(frozen=True)
class SRConfig:
    backend: Literal["classical", "pulse", "ffsr"] = "classical"  # weight-free until weights are configured
    generator: str | None = None  # a registry name (`weights list`) or a local checkpoint path
    device: str = "auto"  # 'auto' = CUDA when present, else CPU
    batch_size: int = 8  # crops per model call; bigger keeps a GPU busier
    in_size: int = 16  # the low-res crop side the model sees (PULSE and PFSR were built for 16)
    out_size: int | None = None  # high-res face side; None = the backend's natural size
    steps: int = 100  # PULSE: optimisation steps for a cold start (the paper's budget)
    warm_steps: int = 20  # PULSE: steps for a frame warm-started from its track's previous one
    eps: float = 2e-3  # PULSE's success threshold on the downscaling MSE ([0, 1] scale)
    temporal_weight: float = 0.0  # PULSE: lambda of the prior |w_t - w_{t-1}|^2 on warm frames
    temporal_blend: float = 0.0  # feed-forward: weight of the previous frame's output (0 = off)
    pre_blur: bool = False  # up-then-down resize before the model's downscaler (gives room to invent)
    seed: int = 0  # base seed; each track's seed is derived from it and the track id

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 4 <= self.in_size <= 256:
            raise ValueError(f"in_size must be in 4..256, got {self.in_size}")
        if self.out_size is not None and not self.in_size < self.out_size <= 2048:
            raise ValueError(f"out_size must be in {self.in_size + 1}..2048 (larger than in_size), got {self.out_size}")
        if self.steps < 1 or self.warm_steps < 1:
            raise ValueError(f"steps and warm_steps must be >= 1, got {self.steps} and {self.warm_steps}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.temporal_weight < 0:
            raise ValueError(f"temporal_weight must be >= 0, got {self.temporal_weight}")
        if not 0 <= self.temporal_blend < 1:
            raise ValueError(f"temporal_blend must be in [0, 1), got {self.temporal_blend}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


def create_backend(cfg: SRConfig) -> SRBackend:
    """Build the backend `cfg.backend` names, on the device `cfg.device` resolves to."""
    device = resolve_device(cfg.device)
    if cfg.backend == "classical":
        from models.classical import ClassicalBackend

        if cfg.generator is not None:
            log.warning("sr.generator=%s is ignored by the classical backend", cfg.generator)
        return ClassicalBackend(in_size=cfg.in_size, out_size=cfg.out_size or 128, eps=cfg.eps, device=device)
    if cfg.backend == "pulse":
        from models.pulse import PulseBackend

        return PulseBackend.from_settings(
            generator=cfg.generator,
            device=device,
            in_size=cfg.in_size,
            out_size=cfg.out_size,
            steps=cfg.steps,
            warm_steps=cfg.warm_steps,
            eps=cfg.eps,
            temporal_weight=cfg.temporal_weight,
        )
    if cfg.backend == "ffsr":
        from models.pfsr import FFSRBackend

        return FFSRBackend.from_settings(
            generator=cfg.generator,
            device=device,
            in_size=cfg.in_size,
            out_size=cfg.out_size,
            eps=cfg.eps,
            temporal_blend=cfg.temporal_blend,
        )
    raise AssertionError(f"unhandled backend {cfg.backend!r}")  # SRConfig's Literal allows no other


@dataclasses.dataclass
class BatchResult:
    """The super-resolved faces of one batch, ready to composite and to report."""

    faces: list[np.ndarray]  # per crop: [out_size, out_size, 3] uint8 RGB
    states: list[TrackState | None]
    consistency: list[float]
    success: list[bool]
    steps: list[int]


def low_res(backend: SRBackend, crops: Sequence[np.ndarray], *, pre_blur: bool) -> torch.Tensor:
    """Aligned `[S, S, 3] uint8` crops -> the model's input `[B, 3, in, in]` float32 in [-1, 1].

    Always through the backend's own downscaler. `pre_blur` first shrinks and re-enlarges the
    crop (the blog's 128 -> 16 trick): a softer input leaves the model room to invent.
    """
    images = torch.from_numpy(np.stack(crops)).to(backend.device).permute(0, 3, 1, 2).float() / 127.5 - 1
    lr = backend.downscale(images)  # [B, 3, in, in]
    if pre_blur:
        size = images.shape[-1]
        lr = backend.downscale(F.interpolate(lr, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1))
    return lr.float().contiguous()


def run_batch(
    backend: SRBackend,
    crops: Sequence[np.ndarray],
    states: Sequence[TrackState | None],
    seeds: Sequence[int],
    *,
    pre_blur: bool = False,
) -> BatchResult:
    """Super-resolve aligned crops (each `[out_size, out_size, 3] uint8`) in one backend call."""
    for crop in crops:
        if crop.shape != (backend.out_size, backend.out_size, 3) or crop.dtype != np.uint8:
            raise ValueError(
                f"aligned crops must be [{backend.out_size}, {backend.out_size}, 3] uint8, "
                f"got {list(crop.shape)} {crop.dtype}"
            )
    with torch.no_grad():
        lr = low_res(backend, crops, pre_blur=pre_blur)
    result = backend.super_resolve(lr, list(states), seeds=list(seeds))
    faces = ((result.images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    faces = faces.permute(0, 2, 3, 1).cpu().numpy()  # [B, S, S, 3]
    return BatchResult(
        faces=list(faces),
        states=[None if s is None else {k: v.detach().cpu() for k, v in s.items()} for s in result.states],
        consistency=[float(c) for c in result.consistency],
        success=[bool(s) for s in result.success],
        steps=[int(s) for s in result.steps],
    )
