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
from pipeline.stages.fidelity import FacePlan, to_detail, transfer

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


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """What step 2 and the tracker need to know of a backend, without holding it (the Ray driver's
    backends live on the SR actors)."""

    name: str
    in_size: int
    out_size: int
    framing: str  # the alignment template of its training faces
    stateful: bool
    keyframes: bool
    any_input_size: bool
    device: str

    @classmethod
    def of(cls, backend: SRBackend) -> "BackendInfo":
        return cls(backend.name, backend.in_size, backend.out_size, backend.framing, backend.stateful, backend.keyframes,
                   backend.any_input_size, str(backend.device))


@dataclasses.dataclass
class SRRequest:
    """Everything one batch of step 2 needs, per face: made by `make` (for `pipeline.stages.chunk.SRStep`,
    and for zoom and enhance, one face at a time), run by `run_batch` wherever the backend is. A
    field added here and filled in `make` reaches every engine and command: they pass the request
    whole (a Ray SR actor receives it as one argument)."""

    crops: list  # aligned crops [S, S, 3] uint8 (S = out_size), or a face the model made, [3, S, S] in [-1, 1]
    # (the enhance loop's next pass); on Ray, object refs until the SR actor `resolved` them
    states: list[TrackState | None]  # the state each face starts from (None: cold)
    seeds: list[int]
    plans: list[FacePlan]  # the side the model sees, the kept resolution, whether it runs at all
    gaps: list[int] | None = None  # frames from the crop its state came from (None: 1 each)
    pre_blur: bool = False  # sr.pre_blur: shrink and re-enlarge the crop before the model's downscaler
    inputs: torch.Tensor | None = None  # the model's inputs [B, 3, in, in], where the caller holds them already
    # (a picture exactly the model's input size); None: made from the crops with the backend's downscaler
    keep_images: bool = False  # also return the model's own faces (`BatchResult.images`: enhance's next pass, zoom's reuse)

    @classmethod
    def make(cls, sr_cfg: SRConfig, *, crops, states, seeds, plans, gaps=None, inputs=None) -> "SRRequest":
        """A request under the run's `sr` settings: where settings become request fields, for every caller."""
        return cls(crops=list(crops), states=list(states), seeds=list(seeds), plans=list(plans),
                   gaps=None if gaps is None else list(gaps), pre_blur=sr_cfg.pre_blur, inputs=inputs)

    def resolved(self, get: Callable) -> "SRRequest":
        """The request with its crops fetched: `get(list of refs)` (Ray's `ray.get`)."""
        return dataclasses.replace(self, crops=list(get(list(self.crops))))


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
    images: list[torch.Tensor | None]  # per crop: the model's face [3, S, S] in [-1, 1] on the CPU (None: not run,
    # or not asked for: `SRRequest.keep_images`)

    def summary(self) -> "BatchResult":
        """Without its pictures (faces, images): what a Ray SR actor returns beside the faces."""
        return dataclasses.replace(self, faces=[], images=[])


def low_res(backend: SRBackend, crops: Sequence[np.ndarray], *, pre_blur: bool, size: int | None = None) -> torch.Tensor:
    """Aligned `[S, S, 3] uint8` crops (or faces `[3, S, S]` in [-1, 1]) -> the model's input
    `[B, 3, size, size]` float32 in [-1, 1] (`size`: the backend's `in_size` unless given).

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


def to_tensor(backend: SRBackend, crops: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
    """`[S, S, 3] uint8` images -> `[B, 3, S, S]` float32 in [-1, 1] on the backend's device (`to_images` undone);
    faces already `[3, S, S]` in [-1, 1] are stacked as they are."""
    if all(isinstance(c, torch.Tensor) for c in crops):
        return torch.stack(list(crops)).to(backend.device)
    return torch.from_numpy(np.stack(crops)).to(backend.device).permute(0, 3, 1, 2).float() / 127.5 - 1


def run_batch(backend: SRBackend, request: SRRequest) -> BatchResult:
    """Step 2 on one request: super-resolve its crops and make what to paste.

    Each face's plan (`pipeline/stages/fidelity.py`) says at which side the model sees it, up to
    which resolution the source is kept, and whether it needs the model at all; a kept face's
    track state passes through unchanged. Faces seen at the same side go to the model in one call.
    """
    crops, plans, n = request.crops, request.plans, len(request.crops)
    out = BatchResult([None] * n, list(request.states), [0.0] * n, [True] * n, [0] * n,
                      [p.in_size for p in plans], [p.kept_px for p in plans], [not p.keep for p in plans], [None] * n)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, plan in enumerate(plans):
        if not plan.keep:
            groups[plan.in_size].append(i)
    _check_crops(backend, [crops[i] for rows in groups.values() for i in rows
                           if request.inputs is None or not plans[i].replace])  # the crops used below
    for size, rows in groups.items():
        with torch.no_grad():
            lr = request.inputs[rows] if request.inputs is not None else low_res(
                backend, [crops[i] for i in rows], pre_blur=request.pre_blur, size=size)
        result, new_states = solve(backend, lr, [request.states[i] for i in rows], [request.seeds[i] for i in rows],
                                   None if request.gaps is None else [request.gaps[i] for i in rows])
        made = pastes(backend, result.images, [crops[i] for i in rows], [plans[i] for i in rows])
        for j, i in enumerate(rows):
            out.faces[i], drift = made[j]
            out.consistency[i] = float(result.consistency[j]) if drift is None else drift
            if request.keep_images:
                out.images[i] = result.images[j].detach().float().cpu()
            out.states[i] = new_states[j]
            out.success[i], out.steps[i] = bool(result.success[j]), int(result.steps[j])
    return out


def pastes(backend: SRBackend, images: torch.Tensor, crops: Sequence, plans: Sequence[FacePlan]) -> list[tuple]:
    """What to paste for each face the model made (`images [B, 3, S, S]` in [-1, 1]), by its plan: the
    face whole (`[S, S, 3] uint8`, fidelity 0) with None, or the detail above the kept resolution
    (`[S, S, 3] int16`) with its drift there (the consistency the report gives)."""
    faces, details = to_images(images), _details(backend, images, crops, plans)
    return [(faces[j], None) if plan.replace else details[j] for j, plan in enumerate(plans)]


def _details(backend: SRBackend, images: torch.Tensor, crops: Sequence, plans: Sequence[FacePlan]) -> list:
    """Per face: (its detail to add, its drift at the kept resolution), for the faces not replaced whole
    (`pipeline/stages/fidelity.py`'s transfer); None for the others."""
    rows = [j for j, plan in enumerate(plans) if not plan.replace]
    out: list = [None] * len(plans)
    if rows:
        with torch.no_grad():
            detail, drift = transfer(backend, to_tensor(backend, [crops[j] for j in rows]), images[rows].to(backend.device),
                                     [plans[j].kept_px for j in rows])
        for j, d, e in zip(rows, to_detail(detail), drift):
            out[j] = (d, float(e))
    return out


def _check_crops(backend: SRBackend, crops: Sequence) -> None:
    side = backend.out_size
    for crop in crops:
        if isinstance(crop, torch.Tensor):
            ok = tuple(crop.shape) == (3, side, side)
        else:
            ok = crop.shape == (side, side, 3) and crop.dtype == np.uint8
        if not ok:
            raise ValueError(f"aligned crops must be [{side}, {side}, 3] uint8 (or faces [3, {side}, {side}]), "
                             f"got {list(crop.shape)} {crop.dtype}")


def solve(backend: SRBackend, lr: torch.Tensor, states: Sequence[TrackState | None], seeds: Sequence[int], gaps: Sequence[int] | None = None):
    """The model on low-res inputs `[B, 3, in, in]`: `(SRResult, its states on the CPU)`.

    `run_batch` calls it for every engine and command.
    """
    result = backend.super_resolve(lr, list(states), seeds=list(seeds), gaps=None if gaps is None else list(gaps))
    if not bool(torch.isfinite(result.images).all()):  # NaN weights: nothing derived from them may be pasted
        # (PULSE: a search none of whose renders was finite returns NaN, models/search_loop.py)
        weights = f"sr.generator={backend.weights}" if backend.weights else "its weights"
        raise RunAborted(f"sr.backend={getattr(backend, 'name', type(backend).__name__)} made faces that are not finite numbers (NaN or inf) "
                         f"from finite inputs: {weights} is damaged or was trained into NaN; nothing was written. Use another "
                         "checkpoint (`facezoom weights verify` checks the downloaded ones)")
    return result, [None if s is None else {k: v.detach().cpu() for k, v in s.items()} for s in result.states]


def to_images(images: torch.Tensor) -> list[np.ndarray]:
    """`[B, 3, S, S]` in [-1, 1] -> B `[S, S, 3] uint8 RGB` images."""
    faces = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return list(faces.permute(0, 2, 3, 1).cpu().numpy())
