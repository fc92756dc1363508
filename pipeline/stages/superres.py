"""The super-resolution stage: its settings, the choice of backend, and one batch's run.

`SRConfig` is the `sr` section of the pipeline config; `create_backend` builds the backend it
names (`BUILDERS`: one builder per name, each importing its backend only when called);
`run_batch` turns aligned face crops into super-resolved faces through the backend's own
downscaler. Both engines call these. The backends themselves live in `models/` and know
nothing of video or Ray.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from models.backends.base import SRBackend, TrackState, resolve_device
from pipeline.config.sections import SRConfig

log = logging.getLogger(__name__)


def create_backend(cfg: SRConfig) -> SRBackend:
    """Build the backend `cfg.backend` names, on the device `cfg.device` resolves to."""
    device = resolve_device(cfg.device)
    build = BUILDERS.get(cfg.backend)
    if build is None:
        raise ValueError(f"sr.backend={cfg.backend!r} is not a backend; use one of {', '.join(BUILDERS)}")
    return build(cfg, device)


def _classical(cfg: SRConfig, device: torch.device) -> SRBackend:
    from models.backends.classical import ClassicalBackend

    if cfg.generator is not None:
        log.warning("sr.generator=%s is ignored by the classical backend", cfg.generator)
    return ClassicalBackend(in_size=cfg.in_size, out_size=cfg.out_size or 128, eps=cfg.eps, device=device)


def _pulse(cfg: SRConfig, device: torch.device) -> SRBackend:
    from models.backends.pulse import PulseBackend

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


def _ffsr(cfg: SRConfig, device: torch.device) -> SRBackend:
    from models.backends.ffsr import FFSRBackend

    return FFSRBackend.from_settings(
        generator=cfg.generator,
        device=device,
        in_size=cfg.in_size,
        out_size=cfg.out_size,
        eps=cfg.eps,
        temporal_blend=cfg.temporal_blend,
    )


# sr.backend -> how to build it from the `sr` settings and the device. Each builder imports its
# backend's module when called, so importing this stage loads no backend (and no weights code).
# The names are pipeline.config.sections.BACKENDS (tests/test_pulse.py checks they agree).
BUILDERS: dict[str, Callable[[SRConfig, torch.device], SRBackend]] = {
    "classical": _classical,
    "pulse": _pulse,
    "ffsr": _ffsr,
}


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
    result, new_states = solve(backend, lr, states, seeds)
    return BatchResult(
        faces=to_images(result.images),
        states=new_states,
        consistency=[float(c) for c in result.consistency],
        success=[bool(s) for s in result.success],
        steps=[int(s) for s in result.steps],
    )


def solve(backend: SRBackend, lr: torch.Tensor, states: Sequence[TrackState | None], seeds: Sequence[int]):
    """The model on low-res inputs `[B, 3, in, in]`: `(SRResult, its states on the CPU)`.

    Every caller of a backend goes through here: `run_batch` (video, live), zoom and enhance.
    """
    result = backend.super_resolve(lr, list(states), seeds=list(seeds))
    return result, [None if s is None else {k: v.detach().cpu() for k, v in s.items()} for s in result.states]


def to_images(images: torch.Tensor) -> list[np.ndarray]:
    """`[B, 3, S, S]` in [-1, 1] -> B `[S, S, 3] uint8 RGB` images."""
    faces = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return list(faces.permute(0, 2, 3, 1).cpu().numpy())
