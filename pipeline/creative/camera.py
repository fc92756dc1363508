"""The zoom animation's core: camera path, easing, the view of each frame, and the SR-detail blend.

A zoom is a camera moving between the *wide* view (the whole frame, at the output's aspect)
and a *tight* view around a face, `max_zoom` times closer. Plain functions, no video:
- `tightness(p)`: where the camera is (0 = wide, 1 = tight) at path position p in [0, 1], for
  a direction (in, out, inout) and an easing (linear, ease-in-out);
- `zoom_factor`: max_zoom ** tightness, so equal steps of the path feel like equal steps of
  zoom (each frame enlarges by the same ratio);
- `camera_view`: the source rectangle shown; the face's place on screen moves in a straight
  line from where it is in the wide view to the centre, so it never leaves the picture on
  the way, and the view stays inside the frame;
- `render_view`: that rectangle resampled to the output (bicubic when enlarging, area
  averaging when shrinking, so neither blurs nor aliases more than it must);
- `detail_weight` and `blend_detail`: where the view shows fewer source pixels than output
  pixels, the super-resolved face supplies the detail. Its weight rises smoothly with the
  magnification (smoothstep, from 1x to `full_at` x), so it fades in with no pop.

`pipeline/creative/zoom.py` drives these over pictures and videos; the idea is the "zoom and
enhance" animation popularised by PULSE demos (Menon et al., CVPR 2020).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from pipeline.stages.align import check_frame, compose, invert, resize_matrix
from pipeline.stages.composite import CompositeConfig, PasteFace, composite

EASINGS = ("linear", "ease-in-out")
DIRECTIONS = ("in", "out", "inout")
DETAIL_FULL_AT = 2.0  # magnification (relative to the wide view, or to 1:1) where the SR face fully takes over
FACE_FILL = 0.6  # the automatic max zoom makes the face box this fraction of the view's height


def ease(p: float, *, easing: str) -> float:
    """The easing curve at `p` in [0, 1] (clamped): linear, or ease-in-out (a half cosine)."""
    p = min(1.0, max(0.0, float(p)))
    if easing == "linear":
        return p
    if easing == "ease-in-out":
        return 0.5 - 0.5 * math.cos(math.pi * p)
    raise ValueError(f"easing must be one of {', '.join(EASINGS)}, got {easing!r}")


def tightness(p: float, *, direction: str, easing: str) -> float:
    """How close the camera is at path position `p` in [0, 1]: 0 = the wide view, 1 = the tight one.

    in: wide -> tight; out: tight -> wide; inout: wide -> tight at the middle -> wide, each half eased.
    """
    p = min(1.0, max(0.0, float(p)))
    if direction == "in":
        leg = p
    elif direction == "out":
        leg = 1.0 - p
    elif direction == "inout":
        leg = 1.0 - abs(2.0 * p - 1.0)
    else:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    return ease(leg, easing=easing)


def zoom_factor(tight: float, *, max_zoom: float) -> float:
    """The zoom at tightness `tight`: geometric from 1 to `max_zoom`."""
    if not max_zoom >= 1:
        raise ValueError(f"max_zoom must be >= 1, got {max_zoom}")
    return float(max_zoom) ** float(tight)


def frame_positions(*, duration: float, fps: float) -> np.ndarray:
    """Path positions of a picture's zoom: round(duration * fps) frames, first at 0, last at 1."""
    n = math.floor(duration * fps + 0.5)
    if n < 2:
        raise ValueError(f"duration x fps must give at least 2 frames, got {duration:g} s x {fps:g} fps = {duration * fps:g}")
    return np.linspace(0.0, 1.0, n)


@dataclasses.dataclass(frozen=True)
class View:
    """The source rectangle a frame shows, in source pixel edges (the frame spans [0, W] x [0, H])."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0


def wide_view(frame_size: tuple[int, int], out_size: tuple[int, int]) -> View:
    """The widest view: the largest rectangle of the output's aspect in the frame, centred."""
    (w, h), (ow, oh) = frame_size, out_size
    vw, vh = (w, w * oh / ow) if w * oh <= h * ow else (h * ow / oh, h)
    return View((w - vw) / 2, (h - vh) / 2, (w + vw) / 2, (h + vh) / 2)


def camera_view(*, frame_size: tuple[int, int], out_size: tuple[int, int], target: tuple[float, float], tight: float, zoom: float) -> View:
    """The view at `zoom` (1 = wide) and tightness `tight`, heading for `target` (x, y source px).

    The target's position on screen moves linearly in `tight` from where the wide view shows it
    to the centre of the output; the view is then shifted, if needed, to stay inside the frame.
    When the output's aspect differs from the frame's, the wide view slides from the centre
    toward the target as far as the frame allows, so a face near an edge is in the first frame.
    """
    w, h = frame_size
    wide = wide_view(frame_size, out_size)
    vw, vh = wide.width / zoom, wide.height / zoom
    fx, fy = target
    ox = min(max(fx, wide.width / 2), w - wide.width / 2)  # the wide view's centre: w / 2 at the frame's aspect
    oy = min(max(fy, wide.height / 2), h - wide.height / 2)
    cx = fx - (1.0 - tight) * (fx - ox) / zoom
    cy = fy - (1.0 - tight) * (fy - oy) / zoom
    cx = min(max(cx, vw / 2), w - vw / 2)
    cy = min(max(cy, vh / 2), h - vh / 2)
    return View(cx - vw / 2, cy - vh / 2, cx + vw / 2, cy + vh / 2)


def view_matrix(view: View, out_size: tuple[int, int]) -> np.ndarray:
    """`[2, 3]` mapping source pixels to output pixels (pixel centres at integers, as OpenCV)."""
    ow, oh = out_size
    sx, sy = ow / view.width, oh / view.height
    return np.array([[sx, 0.0, sx * (0.5 - view.x0) - 0.5], [0.0, sy, sy * (0.5 - view.y0) - 0.5]], dtype=np.float64)


def magnification(view: View, out_size: tuple[int, int]) -> float:
    """Output pixels per source pixel in `view`."""
    return out_size[0] / view.width


def render_view(frame: np.ndarray, view: View, out_size: tuple[int, int]) -> np.ndarray:
    """`view` of `frame` resampled to `out_size` (w, h): `[h, w, 3] uint8`.

    Enlarging: one bicubic warp. Shrinking: the view's region is area-averaged to about the
    output's scale first (the warp alone would alias), then warped the rest of the way; the
    wide view of a frame exactly `k` times the output is then exactly `cv2.resize(INTER_AREA)`.
    """
    check_frame(frame)
    ow, oh = out_size
    matrix = view_matrix(view, out_size)
    if min(matrix[0, 0], matrix[1, 1]) >= 1.0:
        return cv2.warpAffine(frame, matrix, (ow, oh), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    h, w = frame.shape[:2]
    a0, b0 = max(0, math.floor(view.x0) - 2), max(0, math.floor(view.y0) - 2)
    a1, b1 = min(w, math.ceil(view.x1) + 2), min(h, math.ceil(view.y1) + 2)
    if view.x0 <= 0 and view.x1 >= w:
        a0, a1 = 0, w
    if view.y0 <= 0 and view.y1 >= h:
        b0, b1 = 0, h
    tw = max(1, round((a1 - a0) * matrix[0, 0]))
    th = max(1, round((b1 - b0) * matrix[1, 1]))
    small = cv2.resize(frame[b0:b1, a0:a1], (tw, th), interpolation=cv2.INTER_AREA)
    to_small = compose(resize_matrix(tw / (a1 - a0), th / (b1 - b0)), np.array([[1.0, 0, -a0], [0, 1.0, -b0]]))
    rest = compose(matrix, invert(to_small))  # small pixels -> output pixels
    if small.shape[:2] == (oh, ow) and np.allclose(rest, [[1, 0, 0], [0, 1, 0]], atol=1e-6):
        return small
    return cv2.warpAffine(small, rest, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def detail_weight(magnification: float, *, wide_magnification: float, full_at: float = DETAIL_FULL_AT) -> float:
    """How much of the super-resolved face to show, in [0, 1].

    0 while the view shows at least one source pixel per output pixel, and at the wide view of
    a source smaller than the output (so the first frame of a zoom in is the source itself);
    rising smoothly to 1 at `full_at` times that magnification.
    """
    if not full_at > 1:
        raise ValueError(f"full_at must be > 1, got {full_at}")
    r = magnification / max(1.0, wide_magnification)
    t = min(1.0, max(0.0, (r - 1.0) / (full_at - 1.0)))
    return t * t * (3.0 - 2.0 * t)


def blend_detail(
    image: np.ndarray,
    face: np.ndarray,
    face_matrix: np.ndarray,
    *,
    weight: float,
    cfg: CompositeConfig = CompositeConfig(),
) -> np.ndarray:
    """`image` (an output frame) with the super-resolved `face` blended in at `weight`.

    face: `[S, S, 3] uint8` (the model's face, pasted with the compositor's feathered mask, then
    mixed with `image` by `weight`) or `int16` detail (`pipeline/stages/fidelity.py`: added to
    `image`, scaled by `weight`); face_matrix: `[2, 3]` output pixels -> face pixels.
    """
    if weight <= 0.0:
        return image
    cfg = dataclasses.replace(cfg, scale=1, draw_boxes=False, side_by_side=False)
    if face.dtype == np.int16:
        faded = np.rint(face * min(1.0, float(weight))).astype(np.int16)
        return composite(image, [PasteFace(face_matrix, faded, 0, None)], cfg)
    pasted = composite(image, [PasteFace(face_matrix, face, 0, None)], cfg)
    if weight >= 1.0:
        return pasted
    return cv2.addWeighted(pasted, float(weight), image, 1.0 - float(weight), 0.0)


def face_to_output(face_matrix: np.ndarray, view: View, out_size: tuple[int, int]) -> np.ndarray:
    """A face's alignment (source -> face pixels) re-expressed for an output frame (output -> face pixels)."""
    return compose(face_matrix, invert(view_matrix(view, out_size)))


def auto_max_zoom(face_height: float, *, wide_height: float, fill: float = FACE_FILL, lowest: float = 2.0, highest: float = 32.0) -> float:
    """The zoom at which a face `face_height` source px tall fills `fill` of the view's height."""
    if face_height <= 0:
        return lowest
    return float(min(highest, max(lowest, fill * wide_height / face_height)))
