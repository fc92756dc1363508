"""The super-resolution backend interface every model plugs into.

A backend turns a batch of low-resolution face crops into high-resolution faces. It owns the
downscaler its model was trained or searched with: the pipeline makes every low-res input with
`backend.downscale`, never with a generic resize (Progressive Face SR distorts faces fed
anything else; PULSE's loss is defined through its own bicubic kernel).

Per-track state is what makes video work: a backend may return, for each crop, a `TrackState`
(plain CPU tensors, picklable, so it can travel between Ray actors) that the caller hands back
with the same track's next crop. PULSE keeps its latents there to warm-start the next frame;
feed-forward backends may keep the previous output for temporal blending; the classical
backend keeps nothing.

Contracts (checked where data enters a backend):
- low-res crops `lr`: `[B, 3, in_size, in_size]` float32 in [-1, 1];
  A backend with `any_input_size` also takes any side from 4 up to below `out_size`
  (`sr.in_size=auto` feeds each face at its own resolution);
- high-res faces: `[B, 3, out_size, out_size]` float32 in [-1, 1];
- `consistency`: per crop, the mean squared error between `downscale(output)` and `lr`,
  measured on the [0, 1] scale (the scale PULSE's eps = 2e-3 is defined on).

`downscale_to` is the same downscaler to any size: the compositor's detail transfer
(`pipeline/stages/fidelity.py`) splits faces into coarse and fine with it.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Sequence

import torch

from models.errors import ModelError

TrackState = dict[str, torch.Tensor]


@dataclasses.dataclass
class SRResult:
    """What a backend returns for a batch of B crops."""

    images: torch.Tensor  # [B, 3, out_size, out_size] float32 in [-1, 1]
    states: list[TrackState | None]  # per crop: the state to pass with the track's next crop
    consistency: torch.Tensor  # [B] float32, MSE of downscale(images) vs lr on the [0, 1] scale
    success: torch.Tensor  # [B] bool: the output downscales back to the input (consistency <= eps)
    steps: torch.Tensor  # [B] int64: optimisation steps spent (0 for feed-forward models)


class SRBackend(abc.ABC):
    """A super-resolution model behind one interface. Subclasses set the attributes below."""

    name: str  # the `sr.backend` value that selects it
    in_size: int  # side of the low-res input crops
    out_size: int  # side of the high-res output faces
    deterministic: bool  # same inputs and seeds give the same outputs, bit for bit
    device: torch.device
    stateful: bool = False  # a track's crop needs the state its previous crop returned (warm starts)
    keyframes: bool = False  # the state is a warm start that a crop a few frames on may also start from
    # (PULSE's latents: `sr.segment` applies); False where it is the previous frame itself (blending)
    any_input_size: bool = False  # takes low-res crops of any side below out_size, not only in_size
    framing: str = "ffhq"  # how its training faces were cropped: the alignment template (pipeline/stages/align.py TEMPLATES)
    weights: str | None = None  # the checkpoint its model was loaded from (a file or a registry name), for messages; None: no weights

    @abc.abstractmethod
    def downscale_to(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """The model's own downscaler, to any side: `[B, 3, H, W]` -> `[B, 3, size, size]`, unclamped."""

    def downscale(self, images: torch.Tensor) -> torch.Tensor:
        """The model's input: `[B, 3, H, W]` in [-1, 1] -> `[B, 3, in_size, in_size]` in [-1, 1]."""
        return self.downscale_to(images, self.in_size).clamp(-1, 1)

    @abc.abstractmethod
    def super_resolve(
        self,
        lr: torch.Tensor,
        states: Sequence[TrackState | None],
        *,
        seeds: Sequence[int],
        gaps: Sequence[int] | None = None,
    ) -> SRResult:
        """Super-resolve a batch.

        lr: `[B, 3, in_size, in_size]` float32 in [-1, 1].
        states: one entry per crop, the state the previous call returned for that crop's track,
            or None for a track's first crop (a cold start).
        seeds: one integer per crop; the same seed and inputs give the same output, and
            different seeds give different samples where the model is stochastic.
        gaps: per crop, the frames between it and the crop its state came from (default 1 each):
            a keyframe (`sr.segment`) starts several frames from its parent, so its warm start
            has further to go; a backend may spend more on it.
        """

    def check_lr(self, lr: torch.Tensor, states: Sequence[object], seeds: Sequence[int]) -> None:
        """Raise ValueError unless `lr`, `states` and `seeds` meet the input contract."""
        side = lr.shape[-1] if self.any_input_size and lr.ndim == 4 and 4 <= lr.shape[-1] < self.out_size else self.in_size
        if lr.ndim != 4 or tuple(lr.shape[1:]) != (3, side, side):
            sides = f"S, S] with S in 4..{self.out_size - 1}" if self.any_input_size else f"{side}, {side}]"
            raise ValueError(f"{self.name}: low-res crops must be [B, 3, {sides}, got {list(lr.shape)}")
        if lr.dtype != torch.float32:
            raise ValueError(f"{self.name}: low-res crops must be float32, got {lr.dtype}")
        if len(states) != lr.shape[0] or len(seeds) != lr.shape[0]:
            raise ValueError(
                f"{self.name}: got {lr.shape[0]} crops, {len(states)} states and {len(seeds)} seeds; "
                "pass one state and one seed per crop"
            )


def consistency(backend: SRBackend, images: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    """Per-crop MSE between `images` downscaled to `lr`'s size and `lr`, on the [0, 1] scale: `[B]`."""
    down = backend.downscale_to(images, lr.shape[-1]).clamp(-1, 1)
    return ((down - lr) / 2).pow(2).flatten(1).mean(1)


def resolve_device(device: str, setting: str = "sr.device") -> torch.device:
    """'auto' picks CUDA when present, else the CPU; anything else is passed to torch. A device this
    machine lacks is a `ModelError` naming `setting` (the user's to fix: exit 2)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ModelError(f"{setting} must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"{setting}={device} was asked for but this machine has no CUDA GPU; use {setting}=auto or cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ModelError(f"{setting}={device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), cuda:0.."
                         f"cuda:{torch.cuda.device_count() - 1}; use one of them or {setting}=auto")
    return resolved
