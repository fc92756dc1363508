"""The super-resolution stage: its settings, the choice of backend, and one batch's run.

`SRConfig` is the `sr` section of the pipeline config; `create_backend` builds the backend it
names (`BUILDERS`: one builder per name, each importing its backend only when called);
`run_batch` turns aligned face crops into what the compositor pastes, through the backend's
own downscaler and the detail transfer of `pipeline/stages/fidelity.py`. Both engines call these. The backends themselves live in `models/` and know
nothing of video or Ray.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from models.backends.base import SRBackend, TrackState, resolve_device
from pipeline.config.sections import SRConfig
from pipeline.errors import RunAborted
from pipeline.stages.fidelity import FacePlan, replacement, to_detail, transfer

log = logging.getLogger(__name__)


def create_backend(cfg: SRConfig) -> SRBackend:
    """Build the backend `cfg.backend` names, on the device `cfg.device` resolves to."""
    device = resolve_device(cfg.device)
    build = BUILDERS.get(cfg.backend)
    if build is None:
        raise ValueError(f"sr.backend={cfg.backend!r} is not a backend; use one of {', '.join(BUILDERS)}")
    return build(cfg, device)  # a checkpoint that cannot be read is a ModelError from models.weights.load_checkpoint


def _classical(cfg: SRConfig, device: torch.device) -> SRBackend:
    from models.backends.classical import ClassicalBackend

    if cfg.generator is not None:
        log.warning("sr.generator=%s is ignored by the classical backend", cfg.generator)
    return ClassicalBackend(in_size=cfg.base_in_size, out_size=cfg.out_size or 128, eps=cfg.eps, device=device)


def _pulse(cfg: SRConfig, device: torch.device) -> SRBackend:
    from models.backends.pulse import PulseBackend

    return PulseBackend.from_settings(
        generator=cfg.generator,
        device=device,
        in_size=cfg.base_in_size,
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
        in_size=cfg.base_in_size,
        out_size=cfg.out_size,
        eps=cfg.eps,
        temporal_blend=cfg.temporal_blend,
    )


def _restore(cfg: SRConfig, device: torch.device) -> SRBackend:
    from models.backends.restore import RestoreBackend

    return RestoreBackend.from_settings(generator=cfg.generator, device=device, in_size=cfg.in_size, out_size=cfg.out_size,
                                        eps=cfg.eps, temporal_blend=cfg.temporal_blend, codeformer_w=cfg.codeformer_w)


# sr.backend -> how to build it from the `sr` settings and the device. Each builder imports its
# backend's module when called, so importing this stage loads no backend (and no weights code).
# The names are pipeline.config.sections.BACKENDS (tests/test_pulse.py checks they agree).
BUILDERS: dict[str, Callable[[SRConfig, torch.device], SRBackend]] = {
    "classical": _classical,
    "pulse": _pulse,
    "ffsr": _ffsr,
    "restore": _restore,
}


@dataclasses.dataclass
class BatchResult:
    """The super-resolved faces of one batch, ready to composite and to report."""

    faces: list[np.ndarray | None]  # per crop: what to paste (see pipeline/stages/composite.py): a face
    # [S, S, 3] uint8 that replaces the source's, detail [S, S, 3] int16 added to it, or None: keep it
    states: list[TrackState | None]
    consistency: list[float]  # at the kept resolution (fidelity 0: at the model's input)
    success: list[bool]
    steps: list[int]
    in_sizes: list[int]  # the side the model saw, per crop
    kept_px: list[float]  # the kept resolution, per crop
    model_ran: list[bool]  # per crop: the model ran for it (else the face kept its pixels)


def low_res(backend: SRBackend, crops: Sequence[np.ndarray], *, pre_blur: bool, size: int | None = None) -> torch.Tensor:
    """Aligned `[S, S, 3] uint8` crops -> the model's input `[B, 3, size, size]` float32 in [-1, 1]
    (`size`: the backend's `in_size` unless given).

    Always through the backend's own downscaler. `pre_blur` first shrinks and re-enlarges the
    crop (the blog's 128 -> 16 trick): a softer input leaves the model room to invent.
    """
    size = backend.in_size if size is None else size
    images = to_tensor(backend, crops)
    lr = backend.downscale_to(images, size).clamp(-1, 1)  # [B, 3, size, size]
    if pre_blur:
        side = images.shape[-1]
        lr = F.interpolate(lr, size=(side, side), mode="bicubic", align_corners=False).clamp(-1, 1)
        lr = backend.downscale_to(lr, size).clamp(-1, 1)
    return lr.float().contiguous()


def to_tensor(backend: SRBackend, crops: Sequence[np.ndarray]) -> torch.Tensor:
    """`[S, S, 3] uint8` images -> `[B, 3, S, S]` float32 in [-1, 1] on the backend's device (`to_images` undone)."""
    return torch.from_numpy(np.stack(crops)).to(backend.device).permute(0, 3, 1, 2).float() / 127.5 - 1


def run_batch(
    backend: SRBackend,
    crops: Sequence[np.ndarray],
    states: Sequence[TrackState | None],
    seeds: Sequence[int],
    *,
    pre_blur: bool = False,
    plans: Sequence[FacePlan] | None = None,
    gaps: Sequence[int] | None = None,
) -> BatchResult:
    """Super-resolve aligned crops (each `[out_size, out_size, 3] uint8`) and make what to paste.

    `plans` (one per crop, `pipeline/stages/fidelity.py`) say at which side the model sees each
    face, up to which resolution the source is kept, and which faces need no model at all; by
    default every face is fed at `in_size` and replaced whole. A kept face's track state passes
    through unchanged. Crops seen at the same side go to the model in one call.
    """
    for crop in crops:
        if crop.shape != (backend.out_size, backend.out_size, 3) or crop.dtype != np.uint8:
            raise ValueError(
                f"aligned crops must be [{backend.out_size}, {backend.out_size}, 3] uint8, "
                f"got {list(crop.shape)} {crop.dtype}"
            )
    plans = list(plans) if plans is not None else [replacement(backend.in_size)] * len(crops)
    n = len(crops)
    out = BatchResult([None] * n, list(states), [0.0] * n, [True] * n, [0] * n,
                      [p.in_size for p in plans], [p.kept_px for p in plans], [not p.keep for p in plans])
    groups: dict[int, list[int]] = defaultdict(list)
    for i, plan in enumerate(plans):
        if not plan.keep:
            groups[plan.in_size].append(i)
    for size, rows in groups.items():
        with torch.no_grad():
            lr = low_res(backend, [crops[i] for i in rows], pre_blur=pre_blur, size=size)
        result, new_states = solve(backend, lr, [states[i] for i in rows], [seeds[i] for i in rows],
                                   None if gaps is None else [gaps[i] for i in rows])
        kept = [backend.out_size if plans[i].replace else plans[i].kept_px for i in rows]  # a replaced face needs no split
        with torch.no_grad():
            detail, drift = transfer(backend, to_tensor(backend, [crops[i] for i in rows]), result.images.to(backend.device), kept)
        faces, details = to_images(result.images), to_detail(detail)
        for j, i in enumerate(rows):
            replace = plans[i].replace
            out.faces[i] = faces[j] if replace else details[j]
            out.states[i] = new_states[j]
            out.consistency[i] = float(result.consistency[j] if replace else drift[j])
            out.success[i], out.steps[i] = bool(result.success[j]), int(result.steps[j])
    return out


def solve(backend: SRBackend, lr: torch.Tensor, states: Sequence[TrackState | None], seeds: Sequence[int], gaps: Sequence[int] | None = None):
    """The model on low-res inputs `[B, 3, in, in]`: `(SRResult, its states on the CPU)`.

    Every caller of a backend goes through here: `run_batch` (video, live), zoom and enhance.
    """
    result = backend.super_resolve(lr, list(states), seeds=list(seeds), gaps=None if gaps is None else list(gaps))
    if not bool(torch.isfinite(result.images).all()):  # NaN weights: nothing derived from them may be pasted
        raise RunAborted(f"sr.backend={getattr(backend, 'name', type(backend).__name__)} made faces that are not finite numbers (NaN or inf) from finite inputs: "
                         "its weights are damaged or were trained into NaN; nothing was written. Check them with "
                         "`facezoom weights verify`, or use another checkpoint")
    return result, [None if s is None else {k: v.detach().cpu() for k, v in s.items()} for s in result.states]


def to_images(images: torch.Tensor) -> list[np.ndarray]:
    """`[B, 3, S, S]` in [-1, 1] -> B `[S, S, 3] uint8 RGB` images."""
    faces = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return list(faces.permute(0, 2, 3, 1).cpu().numpy())
