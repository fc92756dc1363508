"""Fidelity: which part of a pasted face is the source's, and which the model's.

A face in a frame holds real detail up to its native resolution: the number of source pixels
that span its aligned crop (`native_px`, from the alignment matrix; the matrix is made from
smoothed landmarks, so it changes smoothly along a track), and often less: a blurred, defocused
or upscaled face holds detail only up to its effective resolution (`effective_px`, measured on
the crop by `effective_px`, smoothed along the track by `EffectiveTracker`). A model has only to
supply what lies above it. `sr.fidelity` w in [0, 1] sets the kept resolution k, in pixels across the aligned
crop, up to which the pasted face is the source's:

    k = m * (MARGIN * effective / m) ** w          m = the side the model saw (`in_size`)

a geometric interpolation: w = 0.5 keeps half the octaves between what the model saw and what
the source holds. w = 1 keeps everything real (a quarter above the native resolution, MARGIN:
the split's filters are soft, and a split at the source's pixel pitch itself would take some of
its finest real detail away — measured on real faces in tests/test_fidelity.py), and the model's invented detail appears only
above the source's resolution (at output scales 2 and 4, or with a larger `sr.out_size`);
w = 0 is the full replacement: the model's face whole (the "zoom and enhance" effect).

Detail transfer. With `L_k(x)` the part of x a k-pixel image holds — x shrunk to k with the
backend's own downscaler D and enlarged back bicubically (U), refined by back-projection so
that `D(L_k(x)) = D(x)` (BACK_PROJECTIONS rounds of z += D(x) - D(U(z))) — a face's detail
above k is `x - L_k(x)`. For 0 < w the compositor adds

    detail = (F - L_k(F)) - (C - L_k(C))        F: the model's face, C: the aligned source crop

to the frame at the output scale: the source's band above k is swapped for the model's, and
below k the frame stays as it is (the addition is made on the frame itself, so nothing real is
resampled). Where k comes within a quarter octave (MARGIN) of the finest detail the output can show of the
face, min(out_size, native * scale), there is next to nothing to swap: the face keeps its pixels
and the model is not run for it (`FacePlan.keep`). So at scale 1 the model works only on faces
blurrier than their pixel size.

`sr.in_size=auto` feeds each face to the model at its own resolution: the largest power of two
at or below `native_px`, from 16 up to half the model's output side (powers of two keep the
crops of a batch at a few sizes, so batches stay full). Backends that take one size only (PFSR:
16) keep it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config.sections import AUTO_IN_FLOOR
from pipeline.stages.align import matrix_scale

MARGIN = 1.25  # fidelity 1 keeps the source up to this times its native resolution
BLUR_SHARE = 0.01  # effective resolution: the side above which a face holds under 1% of its detail energy
BLUR_SMOOTHING = 0.3  # per frame, how far a track's blur (in octaves) moves to the new measurement
BACK_PROJECTIONS = 4  # rounds that make the kept band agree with the source under D (0.80 -> 0.98 of a bicubic's sharpness)


def native_px(matrix: np.ndarray, crop_size: int) -> float:
    """How many source pixels span an aligned crop of side `crop_size` made with `matrix`."""
    return crop_size / matrix_scale(matrix)


def effective_px(crop: np.ndarray, native: float) -> float:
    """The resolution the face in an aligned crop `[S, S, 3] uint8` really holds, at most `native`.

    The detail above side k is the energy of `grey - enlarge(shrink(grey, k))` (area shrink,
    bicubic enlargement). The effective resolution is the smallest k on an eighth-octave ladder
    from 16 whose detail above is under BLUR_SHARE of the detail above 16: a sharp face's
    detail runs up to its pixel size, a blurred one's stops early. Faces of 16 px or less are
    taken at their native size. Measured on real faces (the astronaut shrunk 2x, 3x and 4x and
    enlarged back: 83, 64 and 59 px for the 86, 57 and 43 it holds; sharp faces: their pixel
    size or the crop's); sensor noise and JPEG artefacts count as detail, so it errs sharp.
    """
    size = crop.shape[0]
    top = min(float(native), float(size))
    if top <= AUTO_IN_FLOOR:
        return float(native)
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)

    def above(k: int) -> float:
        low = cv2.resize(cv2.resize(grey, (k, k), interpolation=cv2.INTER_AREA), (size, size), interpolation=cv2.INTER_CUBIC)
        return float(((grey - low) ** 2).mean())

    base = above(AUTO_IN_FLOOR)
    if base <= 1e-6:  # a flat crop: nothing to measure
        return float(native)
    ladder = [AUTO_IN_FLOOR * 2 ** (i / 8) for i in range(1, 8 * 8) if AUTO_IN_FLOOR * 2 ** (i / 8) < top]
    # The detail above k falls as k grows: bisect for the first rung under the share (a handful of
    # resizes per face and frame, not one per rung).
    lo, hi = 0, len(ladder)
    while lo < hi:
        mid = (lo + hi) // 2
        if above(int(round(ladder[mid]))) <= BLUR_SHARE * base:
            hi = mid
        else:
            lo = mid + 1
    return min(float(native), ladder[lo]) if lo < len(ladder) else float(native)


class EffectiveTracker:
    """Smooths each track's blur — how many octaves its effective resolution lies below its native
    one — over its measurements, so the kept resolution does not flicker; a face that grows or
    shrinks on screen changes its native size at once. Forget a track when it ends."""

    def __init__(self):
        self._blur: dict[int, float] = {}

    def __call__(self, track_id: int, measured: float | None, native: float) -> float:
        """The track's effective resolution at `native` px, after a new measurement (or None: none
        this frame, the track's blur as it stands; a track never measured counts as sharp)."""
        last = self._blur.get(track_id)
        if measured is None:
            return native / 2.0 ** (last or 0.0)
        blur = max(0.0, math.log2(max(native, 1.0) / max(measured, 1.0)))
        blur = blur if last is None else last + BLUR_SMOOTHING * (blur - last)
        self._blur[track_id] = blur
        return native / 2.0 ** blur

    def measured(self, track_id: int) -> bool:
        return track_id in self._blur

    def forget(self, track_id: int) -> None:
        self._blur.pop(track_id, None)


@dataclasses.dataclass(frozen=True)
class FacePlan:
    """What the SR stage does with one face."""

    native_px: float  # source pixels across the aligned crop
    effective_px: float  # the resolution it really holds (<= native_px)
    in_size: int  # the side the model sees
    kept_px: float  # the kept resolution k: the pasted face is the source's up to it
    keep: bool  # the output could show nothing of the model's: the face keeps its pixels, no model call
    replace: bool  # fidelity 0: the model's face replaces the source's whole


@dataclasses.dataclass(frozen=True)
class FidelityPlanner:
    """Makes each face's `FacePlan` from its native resolution: one per run (engine or command)."""

    fidelity: float  # sr.fidelity
    in_size: int | str  # sr.in_size: a side, or "auto"
    base_in_size: int  # the backend's own input side
    out_size: int  # the backend's output side = the aligned crop's side
    any_input_size: bool  # the backend takes sides other than base_in_size
    scale: float  # output pixels per source pixel: composite.scale

    @classmethod
    def for_run(cls, sr_cfg, scale: float, *, out_size: int, any_input_size: bool) -> "FidelityPlanner":
        return cls(sr_cfg.fidelity, sr_cfg.in_size, sr_cfg.base_in_size, out_size, any_input_size, scale)

    def __call__(self, native: float, effective: float | None = None, *, scale: float | None = None) -> FacePlan:
        """The plan of a face `native` source pixels across that holds detail up to `effective`
        (default: all of it); `scale`: output pixels per source pixel where it differs from the
        run's (a zoom's magnification)."""
        scale = self.scale if scale is None else scale
        effective = native if effective is None else min(effective, native)
        size = self.base_in_size
        if self.in_size == "auto" and self.any_input_size:
            top = max(AUTO_IN_FLOOR, 2 ** int(math.log2(self.out_size // 2)))
            size = min(top, max(AUTO_IN_FLOOR, 2 ** int(math.log2(max(effective, 1.0)))))
        kept = size * (MARGIN * effective / size) ** self.fidelity
        shown = min(float(self.out_size), native * scale)
        replace = self.fidelity == 0
        return FacePlan(native, effective, size, kept, keep=not replace and kept * MARGIN >= shown, replace=replace)

    def for_crop(self, crop) -> FacePlan:
        """The plan of a `FaceCrop`; a face the tracker fades to nothing (weight 0) is not run."""
        plan = self(crop.native_px, crop.effective_px)
        return dataclasses.replace(plan, keep=True) if crop.weight <= 0 else plan


def replacement(in_size: int) -> FacePlan:
    """The plan of a face fed at `in_size` and replaced whole (fidelity 0), its native size unknown."""
    return FacePlan(float("nan"), float("nan"), in_size, float(in_size), keep=False, replace=True)


def _low(backend, x: torch.Tensor, k: int) -> torch.Tensor:
    """L_k(x): what of x a k-pixel image holds, enlarged back to x's size (see the module's docstring)."""
    size = tuple(x.shape[-2:])

    def up(z: torch.Tensor) -> torch.Tensor:
        return F.interpolate(z, size=size, mode="bicubic", align_corners=False)

    target = backend.downscale_to(x, k)
    z = target
    for _ in range(BACK_PROJECTIONS):
        z = z + (target - backend.downscale_to(up(z), k))
    return up(z)


def transfer(backend, crops: torch.Tensor, faces: torch.Tensor, kept: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The detail to add per face, and its consistency at the kept resolution.

    crops, faces: `[B, 3, S, S]` in [-1, 1] (the aligned source crops and the model's faces);
    kept: per face, the kept resolution. Returns `detail [B, 3, S, S]` on the same scale, and per
    face the MSE ([0, 1] scale) between the pasted face (crop + detail) and the crop, both
    downscaled to the kept resolution: how far the paste strays from the source where it
    promises to keep it.
    """
    size = crops.shape[-1]
    detail = torch.zeros_like(faces)
    error = torch.zeros(len(kept))
    sides = [min(size, max(1, round(k))) for k in kept]
    for k in sorted(set(sides)):
        rows = [i for i, s in enumerate(sides) if s == k]
        if k >= size:  # nothing above the crop's own resolution to swap
            continue
        c, f = crops[rows], faces[rows]
        d = (f - _low(backend, f, k)) - (c - _low(backend, c, k))
        detail[rows] = d
        drift = backend.downscale_to(c + d, k) - backend.downscale_to(c, k)
        error[rows] = (drift / 2).pow(2).flatten(1).mean(1).cpu().float()
    return detail, error


def keep_source(backend, crops: torch.Tensor, faces: torch.Tensor, kept: Sequence[float]) -> torch.Tensor:
    """The faces as pasted, in crop space: each crop up to its kept resolution, the model's face
    above it (`[B, 3, S, S]` in [-1, 1]; for pictures, where there is no frame to add detail to)."""
    detail, _ = transfer(backend, crops, faces, kept)
    return (crops + detail).clamp(-1, 1)


def to_detail(detail: torch.Tensor) -> list[np.ndarray]:
    """`[B, 3, S, S]` signed detail on the [-1, 1] scale -> B `[S, S, 3] int16` on the 0..255 scale
    (the compositor adds an int16 face to the frame instead of replacing it)."""
    levels = (detail.detach().float() * 127.5).round().clamp(-255, 255).to(torch.int16)
    return list(levels.permute(0, 2, 3, 1).cpu().numpy())
