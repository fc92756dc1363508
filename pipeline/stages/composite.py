"""Compositing: the last face stage, putting super-resolved faces back into the frame.

Each high-res face is warped back with the inverse of its alignment transform and blended in
with a feathered mask, so no seam shows. Only the face's footprint is touched: the face and
its mask are warped into the bounding rectangle of the mask's footprint in the output frame,
never into a full frame. The whole frame can be upscaled first (an output scale of 2 or 4), and
the faces are then placed at that scale, at their full resolution. The enlarged frame is a cv2
interpolation (`composite.upscale`), or the output of a whole-frame SR model
(`composite.upscaler`, `models/frame_sr.py`) that the engine ran on the chunk and passes in as
`upscaled`: the model is batched across frames and may run elsewhere (on Ray actors).

Optionally each face's colour is matched to the frame: per channel, the face's mean and
standard deviation under the mask are moved to those of the original pixels it replaces (the
low-res face), which removes the colour casts some models add.

A face arrives in one of three forms (what `pipeline/stages/fidelity.py` decided for it):
- a face `[S, S, 3] uint8` replaces the pixels under its mask (fidelity 0, the model's face whole);
- detail `[S, S, 3] int16`, signed, on the 0..255 scale, is added to the frame under its mask:
  the frame's own pixels (at the output scale) stay, and the face gains the model's fine detail.
  The detail is what the interpolated frame lacks, so over a frame model's output it is added to
  the interpolated frame, feathered into the model's frame by the mask: the face looks as it does
  without a frame model, and the two models' inventions are not stacked;
- None: the face keeps its pixels (only its box is drawn, with `draw_boxes`).

Faces are pasted in order; `composite_chunk` puts the larger (nearer) ones last, on top.

Inputs per face (`PasteFace`, or any 4- or 5-tuple in this order):
- matrix: `[2, 3]` float64, source pixels -> crop pixels of a crop of side S;
- image: the face, its detail or None, as above; S is the size the matrix was made for. For a
  matrix made for another crop size C, rescale it first: `compose(resize_matrix(S / C), matrix)`
  (both in `pipeline/stages/align.py`);
- track_id: int, and box: `x0, y0, x1, y1` in source pixels or None (for `draw_boxes`);
- weight: in [0, 1], default 1: the mask is scaled by it (a face fading in or out).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import numpy as np
import cv2

from models.errors import NotFiniteError
from pipeline.stages.align import check_frame, check_matrix, compose, invert, matrix_scale, resize_matrix, transform_points
from pipeline.config.sections import CompositeConfig
from pipeline.errors import RunAborted

_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}


class PasteFace(NamedTuple):
    matrix: np.ndarray  # [2, 3] float64: source pixels -> pixels of this face image
    image: np.ndarray | None  # [S, S, 3] uint8 RGB (replaces), int16 (detail, added) or None (kept)
    track_id: int
    box: np.ndarray | None  # [4] x0, y0, x1, y1 in source pixels (for draw_boxes)
    weight: float = 1.0  # scales the mask: the tracker's fade in / out


# The ellipse covers the FFHQ template's face (brows to chin, cheek to cheek) with room for the
# feather: centre and radii as fractions of the crop side.
_ELLIPSE_CENTRE = (0.5, 0.54)
_ELLIPSE_RADII = (0.36, 0.40)


@functools.lru_cache(maxsize=16)
def face_mask(size: int, shape: str, feather: float) -> np.ndarray:
    """The blend mask in crop pixels: `[size, size]` float32, 1 inside, 0 outside, smooth between.

    The soft edge lies inside the shape and follows smoothstep, so the blend has no kink.
    """
    u = (np.arange(size, dtype=np.float64) + 0.5) / size  # pixel centres in [0, 1]
    x, y = u[None, :], u[:, None]
    if shape == "ellipse":
        (cx, cy), (rx, ry) = _ELLIPSE_CENTRE, _ELLIPSE_RADII
        rho = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
        inside = (1.0 - rho) * min(rx, ry)  # approximate distance to the rim, in crop sides
    else:
        inside = np.minimum(np.minimum(x, 1 - x), np.minimum(y, 1 - y))
    t = np.clip(inside / feather, 0.0, 1.0)
    mask = (t * t * (3 - 2 * t)).astype(np.float32)
    mask.setflags(write=False)
    return mask


def _mask_extent(shape: str) -> tuple[float, float, float, float]:
    """The mask's support as fractions of the crop side: x0, y0, x1, y1."""
    if shape == "ellipse":
        (cx, cy), (rx, ry) = _ELLIPSE_CENTRE, _ELLIPSE_RADII
        return cx - rx, cy - ry, cx + rx, cy + ry
    return 0.0, 0.0, 1.0, 1.0


def _check_face(i: int, face: Sequence) -> PasteFace:
    if len(face) not in (4, 5):
        raise ValueError(f"faces[{i}] must be (matrix, image, track_id, box[, weight]), got {len(face)} items")
    matrix, image, track_id, box = face[:4]
    weight = float(face[4]) if len(face) == 5 else 1.0
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"faces[{i}].weight must be in [0, 1], got {weight}")
    matrix = check_matrix(matrix)
    if image is None:
        pass
    elif not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        got = list(image.shape) if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"faces[{i}].image must be [S, S, 3] uint8, got {got}")
    elif image.dtype not in (np.uint8, np.int16):
        raise ValueError(f"faces[{i}].image must be uint8 (a face) or int16 (detail), got {image.dtype}")
    if box is not None:
        box = np.asarray(box, dtype=np.float64)
        if box.shape != (4,):
            raise ValueError(f"faces[{i}].box must be [4] (x0, y0, x1, y1) or None, got shape {list(box.shape)}")
    return PasteFace(matrix, image, int(track_id), box, weight)


def _match_colour(face: np.ndarray, original: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Move `face`'s per-channel mean and std under `weight` to those of `original` (float32)."""
    w = weight[..., None]
    total = float(w.sum())
    if total < 1.0:
        return face
    mean_f = (face * w).sum((0, 1)) / total
    mean_o = (original * w).sum((0, 1)) / total
    std_f = np.sqrt(((face - mean_f) ** 2 * w).sum((0, 1)) / total)
    std_o = np.sqrt(((original - mean_o) ** 2 * w).sum((0, 1)) / total)
    gain = np.clip(std_o / np.maximum(std_f, 1e-3), 0.5, 2.0)  # bounded: a flat original must not flatten the face
    return (face - mean_f) * gain + mean_o


def frame_upscaler(cfg: CompositeConfig, device: str):
    """The frame model `cfg.upscaler` names, loaded on `device` and checked against `cfg.scale`
    (`models.frame_sr.FrameUpscaler`), or None where the frame is interpolated (no upscaler set).
    A missing spandrel, an unknown file, a face model or a scale mismatch is a ModelError."""
    if cfg.upscaler is None:
        return None
    from models.backends.base import resolve_device
    from models.frame_sr import FrameUpscaler

    return FrameUpscaler.from_settings(cfg.upscaler, scale=cfg.scale, device=resolve_device(device), tile=cfg.upscaler_tile,
                                       overlap=cfg.upscaler_overlap, batch=cfg.upscaler_batch)


def upscale_chunk(upscaler, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """A chunk's frames `[H, W, 3] uint8` through the frame model (`frame_upscaler`), for every engine:
    `[H*s, W*s, 3] uint8` each. A model that makes numbers that are not finite stops the run
    (`RunAborted`: every frame of every input would meet it) before anything of it is written."""
    try:
        return upscaler(list(images))
    except NotFiniteError as err:
        raise RunAborted(str(err)) from None


def composite(frame: np.ndarray, faces: Sequence[PasteFace | tuple], cfg: CompositeConfig, *,
              upscaled: np.ndarray | None = None) -> np.ndarray:
    """`frame` upscaled by `cfg.scale`, with each face blended in (in order): `[H*s, W*s, 3] uint8`
    (`[H*s, 2*W*s, 3]` with `side_by_side`: the input interpolated to the output scale on the left).

    `upscaled`: the frame already enlarged by the frame model (`frame_upscaler`), `[H*s, W*s, 3] uint8`;
    required when `cfg.upscaler` is set and the scale is above 1. `frame` is not modified. Pixels
    outside every face's mask footprint are those of the upscaled frame exactly. Where nothing is
    pasted or drawn at scale 1, `frame` itself is returned (not a copy: 6 MB a 1080p frame).
    """
    check_frame(frame)
    checked = [_check_face(i, f) for i, f in enumerate(faces)]
    height, width = frame.shape[:2]
    s = cfg.scale
    pasted = [f for f in checked if f.image is not None and f.weight > 0.0]
    if s == 1 and not (pasted or cfg.draw_boxes or cfg.side_by_side):
        return frame
    # 1. The frame at the output scale: interpolated, or the frame model's (then interpolated only where needed).
    model_frame = s > 1 and cfg.upscaler is not None
    details = any(f.image is not None and f.image.dtype == np.int16 for f in checked)
    if s == 1:
        before = frame
    elif not model_frame or cfg.side_by_side or details:
        before = cv2.resize(frame, (width * s, height * s), interpolation=_INTERPOLATION[cfg.upscale])
    else:
        before = None  # not needed: the model's frame, its faces replaced or kept
    out = _enlarged(upscaled, cfg, (height * s, width * s)) if model_frame else before.copy()
    to_out = resize_matrix(float(s))  # source pixels -> output pixels, as cv2.resize maps them

    for face in pasted:
        _paste(out, face, to_out, cfg, interpolated=before if model_frame else None)

    if cfg.draw_boxes:
        _draw_boxes(out, checked, to_out)
    if cfg.side_by_side:
        return np.concatenate([before, out], axis=1)
    return out


def _enlarged(upscaled: np.ndarray | None, cfg: CompositeConfig, shape: tuple[int, int]) -> np.ndarray:
    """A copy of the frame model's output (the engine's array may be read-only), checked against the output's shape."""
    if upscaled is None:  # every engine runs the frame model and passes its output: a caller's mistake
        raise ValueError(f"composite.upscaler={cfg.upscaler} is set: pass the frame model's output as `upscaled` "
                         "(`frame_upscaler`), or drop composite.upscaler for the interpolated frame")
    if upscaled.dtype != np.uint8 or upscaled.shape != (*shape, 3):
        raise ValueError(f"upscaled must be {[*shape, 3]} uint8, got {upscaled.dtype} {list(upscaled.shape)}")
    return upscaled.copy()


def _paste(out: np.ndarray, face: PasteFace, to_out: np.ndarray, cfg: CompositeConfig, *,
           interpolated: np.ndarray | None = None) -> None:
    """Blend one face into `out` (the frame at the output scale; `to_out`: source -> output pixels), in place.
    `interpolated`: the interpolated frame, where `out` is a frame model's: a face's detail is added to it."""
    out_h, out_w = out.shape[:2]
    size = face.image.shape[0]
    crop_to_out = compose(to_out, invert(face.matrix))  # face pixels -> output pixels
    # 2. The rectangle the mask lands on, clipped to the frame.
    ex0, ey0, ex1, ey1 = _mask_extent(cfg.mask)
    corners = np.array([[ex0, ey0], [ex1, ey0], [ex1, ey1], [ex0, ey1]]) * size - 0.5
    footprint = transform_points(crop_to_out, corners)
    x0, y0 = np.floor(footprint.min(0)).astype(int) - 1
    x1, y1 = np.ceil(footprint.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, out_w), min(y1, out_h)
    if x1 <= x0 or y1 <= y0:
        return
    # 3. A face much larger than its footprint is area-shrunk first, so the warp cannot alias.
    detail = face.image.dtype == np.int16
    image, local = face.image.astype(np.float32) if detail else face.image, compose(np.array([[1.0, 0, -x0], [0, 1.0, -y0]]), crop_to_out)
    ratio = matrix_scale(crop_to_out)
    if ratio < 0.5:
        small = max(8, int(np.ceil(size * ratio * 1.5)))
        image = cv2.resize(image, (small, small), interpolation=cv2.INTER_AREA)
        local = compose(local, resize_matrix(size / small))
    mask = face_mask(image.shape[0], cfg.mask, cfg.feather)
    # 4. Warp face and mask into the rectangle only, and blend.
    dsize = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(image, local, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, local, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if face.weight < 1.0:
        alpha = alpha * np.float32(face.weight)
    region = out[y0:y1, x0:x1].astype(np.float32)
    warped = warped.astype(np.float32)
    if detail and interpolated is not None:  # the interpolated face plus its detail, feathered into the model's frame
        blended = region + alpha[..., None] * (interpolated[y0:y1, x0:x1].astype(np.float32) + warped - region)
    elif detail:
        blended = region + alpha[..., None] * warped
    else:
        if cfg.color_match:
            warped = _match_colour(warped, region, alpha)
        blended = region + alpha[..., None] * (warped - region)
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _draw_boxes(out: np.ndarray, faces: list[PasteFace], to_out: np.ndarray) -> None:
    thickness = max(1, round(out.shape[0] / 360))
    for face in faces:
        if face.box is None:
            continue
        (bx0, by0), (bx1, by1) = transform_points(to_out, face.box.reshape(2, 2))
        colour = _track_colour(face.track_id)
        cv2.rectangle(out, (round(bx0), round(by0)), (round(bx1), round(by1)), colour, thickness)
        cv2.putText(
            out, f"id {face.track_id}", (round(bx0), max(12 * thickness, round(by0) - 4)),
            cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, colour, thickness, cv2.LINE_AA,
        )


def _track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright colour that stays the same for a track id (golden-angle hues)."""
    hue = np.array([[[int(track_id * 137.508) % 180, 220, 255]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hue, cv2.COLOR_HSV2RGB)[0, 0])
