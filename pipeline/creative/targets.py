"""The face a creative command works on (its *target*), and the model input made from it.

`zoom` and `enhance` each work on one face. `find_faces` runs the face stages (detect, track,
align: `pipeline.stages.faces.FaceAnalyzer`) over a picture or a clip and keeps, per frame, where each
face is (`Spot`: track id, box, alignment matrix) without the crops. `choose_track` picks the
target the way the user named it: the largest face (default), the N-th face from the left, a
track id, or the face at a point (`face_at`; `zoom` heads for the point itself when no face is
there: `point_spot`, a spot with no face to super-resolve). `follow` lists the target's spot on
every frame, holding the nearest frame's where the tracker lost it.

`--whole` skips detection: `whole_matrix` maps the whole picture, mirrored out to a square, onto
the model's crop. A picture exactly the model's input size (16x16 by default) is taken as it is:
its pixels are the low-res input (`face_input`), with no detection and no resize.

Low-res inputs are always made by the backend's own downscaler (`pipeline.stages.superres.low_res`).
"""

from __future__ import annotations

import logging
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from models.backends.base import SRBackend
from pipeline.stages.align import warp_face
from pipeline.errors import InputError, UserError
from pipeline.stages.superres import low_res

log = logging.getLogger(__name__)


class Spot(NamedTuple):
    """Where one face is on one frame (source pixels)."""

    track_id: int
    box: np.ndarray  # [4] float64: x0, y0, x1, y1
    matrix: np.ndarray | None  # [2, 3] float64: source pixels -> aligned-crop pixels (side = the backend's out_size); None = a point, no face


class Choice(NamedTuple):
    """How the user named the target; all None = the largest face."""

    face: int | None = None  # the N-th face (0-based) from the left on the first frame with faces
    track: int | None = None  # a track id
    at: tuple[float, float] | None = None  # a point (x, y) in source pixels inside the face's box


WHOLE_TRACK = 0  # the track id given to the whole picture under --whole (real tracks start at 1)
POINT_TRACK = -1  # the track id of a free point under --at (no face there)


def parse_point(text: str) -> tuple[float, float]:
    """'x,y' (source pixels) -> (x, y)."""
    parts = text.split(",")
    try:
        x, y = (float(p) for p in parts)
    except ValueError:
        raise UserError(f"--at expects X,Y in input pixels, e.g. --at 220,120; got {text!r}") from None
    return x, y


def find_faces(frames: Iterable[np.ndarray], *, cfg, crop_size: int, framing: str = "ffhq", chunk: int = 8, progress=None) -> list[list[Spot]]:
    """The faces of every frame (`[H, W, 3] uint8 RGB`, in order): one list of `Spot`s per frame.

    `cfg` is the pipeline config (its `detect` and `track` sections); `progress`, if given, is
    called with the number of frames done after each chunk.
    """
    from pipeline.stages.faces import FaceAnalyzer

    analyzer = FaceAnalyzer(cfg.detect, cfg.track, crop_size=crop_size, framing=framing)
    spots: list[list[Spot]] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        for crops in analyzer.process(batch, len(spots)):
            spots.append([Spot(c.track_id, np.asarray(c.box, np.float64), c.matrix) for c in crops])
        if progress is not None:
            progress(len(batch))
        batch.clear()

    for frame in frames:
        batch.append(frame)
        if len(batch) == chunk:
            flush()
    if batch:
        flush()
    analyzer.close()
    return spots


def face_at(faces: Sequence[Sequence[Spot]], point: tuple[float, float]) -> int | None:
    """The track of the innermost face whose box holds `point` on the first frame with faces, or None."""
    first = next((f for f in faces if f), [])
    x, y = point
    inside = [s for s in first if s.box[0] <= x <= s.box[2] and s.box[1] <= y <= s.box[3]]
    return min(inside, key=lambda s: (s.box[2] - s.box[0]) * (s.box[3] - s.box[1])).track_id if inside else None


def point_spot(x: float, y: float) -> Spot:
    """A point to zoom into that has no face: the camera heads for it, nothing is super-resolved."""
    return Spot(POINT_TRACK, np.array([x, y, x, y], np.float64), None)


def check_point(point: tuple[float, float], width: int, height: int) -> None:
    """A `UserError` unless `point` lies in a `width` x `height` picture."""
    x, y = point
    if not (0 <= x <= width and 0 <= y <= height):
        raise UserError(f"--at {x:g},{y:g} is outside the {width}x{height} input (x in 0..{width}, y in 0..{height})")


def choose_track(faces: Sequence[Sequence[Spot]], choice: Choice, *, source: str, min_face: int) -> int:
    """The track id of the face `choice` names; a `UserError` that lists the faces otherwise."""
    if not any(faces):
        raise InputError(
            f"no face found in {source} (faces under detect.min_face={min_face} px, or under 12 px at "
            "detect.working_size, are not looked for); pass --whole to use the whole picture as the face, "
            "or look for smaller faces, e.g. --set detect.min_face=12 --set detect.working_size=0"
        )
    first = sorted(next(f for f in faces if f), key=lambda s: (s.box[0] + s.box[2]) / 2)  # left to right
    listing = ", ".join(f"#{i} (track {s.track_id}) box {_box(s.box)}" for i, s in enumerate(first))
    if choice.track is not None:
        ids = sorted({s.track_id for frame in faces for s in frame})
        if choice.track not in ids:
            raise UserError(f"--track {choice.track}: no such face track in {source}; its tracks are {', '.join(map(str, ids))}")
        return choice.track
    if choice.face is not None:
        if not 0 <= choice.face < len(first):
            raise UserError(f"--face {choice.face}: {source} has {len(first)} face(s) on its first frame with faces, "
                            f"numbered from 0 left to right: {listing}")
        return first[choice.face].track_id
    if choice.at is not None:
        track = face_at(faces, choice.at)
        if track is None:
            x, y = choice.at
            raise UserError(f"--at {x:g},{y:g}: no face's box holds that point on the first frame with faces of {source}; "
                            f"the faces are {listing}")
        return track
    heights: dict[int, list[float]] = {}
    for frame in faces:
        for s in frame:
            heights.setdefault(s.track_id, []).append(float(s.box[3] - s.box[1]))
    return max(heights, key=lambda t: (float(np.median(heights[t])), -t))


def follow(faces: Sequence[Sequence[Spot]], track_id: int) -> list[Spot]:
    """The target's spot on every frame; where it is not seen, the nearest frame's (earlier on ties)."""
    seen = [next((s for s in frame if s.track_id == track_id), None) for frame in faces]
    known = [i for i, s in enumerate(seen) if s is not None]
    if not known:
        raise ValueError(f"track {track_id} is on no frame")
    missing = len(seen) - len(known)
    if missing:
        log.info("track %d is not seen on %d of %d frames; holding its nearest position there", track_id, missing, len(seen))
    positions = np.asarray(known)
    out = []
    for i, s in enumerate(seen):
        if s is None:
            s = seen[int(positions[np.argmin(np.abs(positions - i))])]
        out.append(s)
    return out


def whole_matrix(width: int, height: int, size: int) -> np.ndarray:
    """`[2, 3]` mapping a `width` x `height` picture onto a `size` crop: the whole picture, centred,
    in a square of side max(width, height) (`warp_face` mirrors the picture into the margins)."""
    side = max(width, height)
    s = size / side
    # Pixel edges: source [0, side) centred on the picture -> crop [0, size); centres at +0.5.
    tx = (side - width) / 2
    ty = (side - height) / 2
    return np.array([[s, 0.0, s * (tx + 0.5) - 0.5], [0.0, s, s * (ty + 0.5) - 0.5]], dtype=np.float64)


def whole_spot(width: int, height: int, size: int) -> Spot:
    return Spot(WHOLE_TRACK, np.array([0.0, 0.0, width, height]), whole_matrix(width, height, size))


def takes_as_is(image: np.ndarray, backend: SRBackend) -> bool:
    """A picture exactly the model's input size is the low-res input itself."""
    return image.shape[:2] == (backend.in_size, backend.in_size)


def face_input(backend: SRBackend, image: np.ndarray, matrix: np.ndarray, *, pre_blur: bool, size: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """The model's low-res input for the face `matrix` places in `image`: `[1, 3, size, size]` float32
    in [-1, 1] (`size`: the backend's `in_size` unless given).

    Also returns the aligned crop `[out, out, 3] uint8` it was made from. A picture of exactly
    `in_size` pixels is taken as it is (`pre_blur` still applies).
    """
    with torch.no_grad():
        if takes_as_is(image, backend):
            lr = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(backend.device) / 127.5 - 1  # [1, 3, in, in]
            if pre_blur:  # the same up-then-down as `low_res`, from the model's input size
                size = backend.out_size
                lr = backend.downscale(F.interpolate(lr, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1))
            crop = np.asarray(image)
            return lr.float().contiguous(), crop
        crop = warp_face(image, matrix, backend.out_size)
        return low_res(backend, [crop], pre_blur=pre_blur, size=size), crop


def _box(box: np.ndarray) -> str:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return f"({x0},{y0})-({x1},{y1})"
