"""Synthetic scenes with a real face, for the face-stage tests and benchmarks/detect_every.py.

The face is scikit-image's astronaut photo (Eileen Collins, NASA; public domain), pasted into a
smooth random background at known positions and sizes, so every frame comes with its ground
truth: the face's box and five landmarks in frame pixels.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import cv2

# MTCNN's box and landmarks for the astronaut's face in the 512x512 original (measured once
# with facenet-pytorch's MTCNN at native resolution); the ground truth every scene maps.
REF_BOX = np.array([181.05, 62.16, 267.75, 172.05])
REF_LANDMARKS = np.array([[205.01, 101.73], [246.76, 103.71], [224.67, 128.96], [201.72, 139.25], [245.27, 141.86]])
REF_WIDTH = REF_BOX[2] - REF_BOX[0]  # 86.7 px
_PATCH = (112, 8, 336, 232)  # x0, y0, x1, y1 of the pasted region: face, hair, a little helmet


@functools.lru_cache(maxsize=1)
def _patch() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    x0, y0, x1, y1 = _PATCH
    patch = np.ascontiguousarray(data.astronaut()[y0:y1, x0:x1])
    h, w = patch.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.sqrt(((xx - (w - 1) / 2) / (w / 2)) ** 2 + ((yy - (h - 1) / 2) / (h / 2)) ** 2)
    alpha = np.clip((1.0 - r) / 0.15, 0.0, 1.0).astype(np.float32)  # an oval with a soft rim
    return patch, alpha


@dataclasses.dataclass(frozen=True)
class Face:
    """Where a face sits in a frame: its box centre and box width in frame pixels."""

    cx: float
    cy: float
    width: float

    def matrix(self) -> np.ndarray:
        """Original-photo pixels -> frame pixels: `[2, 3]`."""
        s = self.width / REF_WIDTH
        ref_c = (REF_BOX[:2] + REF_BOX[2:]) / 2
        return np.array([[s, 0, self.cx - s * ref_c[0]], [0, s, self.cy - s * ref_c[1]]])

    def landmarks(self) -> np.ndarray:
        m = self.matrix()
        return REF_LANDMARKS @ m[:, :2].T + m[:, 2]

    def box(self) -> np.ndarray:
        m = self.matrix()
        return np.concatenate([REF_BOX[:2] * m[0, 0] + m[:, 2], REF_BOX[2:] * m[0, 0] + m[:, 2]])


def background(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth, face-free random texture: `[H, W, 3] uint8`."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, size=(max(2, height // 24), max(2, width // 24), 3)).astype(np.float32)
    fine = rng.normal(0, 6, size=(height, width, 3)).astype(np.float32)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) + cv2.GaussianBlur(fine, (0, 0), 1.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def render(bg: np.ndarray, faces: list[Face], occluders: list[tuple[int, int, int, int]] = ()) -> np.ndarray:
    """`bg` with the astronaut's face pasted at each `Face` (in order) and grey boxes on top."""
    patch, alpha = _patch()
    frame = bg.astype(np.float32)
    h, w = bg.shape[:2]
    for face in faces:
        m = face.matrix()
        m[:, 2] += m[:, :2] @ np.array(_PATCH[:2], np.float64)  # patch pixels -> frame pixels
        img = cv2.warpAffine(patch, m, (w, h), flags=cv2.INTER_AREA if m[0, 0] < 1 else cv2.INTER_LINEAR)
        a = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
        frame = frame * (1 - a) + img.astype(np.float32) * a
    for x0, y0, x1, y1 in occluders:
        frame[y0:y1, x0:x1] = 128.0
    return np.clip(np.round(frame), 0, 255).astype(np.uint8)


def moving_face(n: int, height: int = 240, width: int = 320, seed: int = 0) -> tuple[list[np.ndarray], list[Face]]:
    """One face drifting across the frame and zooming in and out: frames and ground truth."""
    bg = background(height, width, seed)
    frames, truth = [], []
    for i in range(n):
        t = i / max(1, n - 1)
        face = Face(
            cx=width * (0.3 + 0.4 * t),
            cy=height * (0.5 + 0.12 * np.sin(2 * np.pi * t)),
            width=height * (0.28 + 0.08 * np.sin(3 * np.pi * t)),
        )
        frames.append(render(bg, [face]))
        truth.append(face)
    return frames, truth


@dataclasses.dataclass(frozen=True)
class Shown:
    """One person on one frame of a `shots` clip: who, where, and whether the camera sees the face."""

    person: int
    face: Face
    visible: bool  # False while an occluder covers the face or it is out of the frame


def shots(n: int = 40, height: int = 240, width: int = 320, noise: float = 3.0, seed: int = 0):
    """Two shots with a hard cut, the things that make faces pop: frames, truth, cut frames.

    Shot 1 (frames 0..n+2): person 1 sits still (only sensor noise moves), person 2 drifts right.
    Cut at n+3 (off the detection cadences 1, 2, 4, 5, 8, 10, for n = 40) to a new background:
    person 3 is covered by a grey card for 20 frames, person 4 leaves the frame on the left and
    comes back to where it was. `noise` is the per-frame sensor noise (levels), so a detector's boxes jitter on a
    still face as they do on real video.
    """
    rng = np.random.default_rng(seed)
    cut = n + 3
    total = cut + 2 * n
    bgs = [background(height, width, seed + 21), background(height, width, seed + 22)]
    frames, truth = [], []
    for i in range(total):
        if i < cut:
            people = [Shown(1, Face(cx=80, cy=125, width=58), True),
                      Shown(2, Face(cx=190 + 1.5 * i, cy=110, width=52), True)]
            covers = []
            bg = bgs[0]
        else:
            t = i - cut
            card = 10 <= t < 30  # person 3 hidden for 20 frames
            x4 = 90 - 6 * t if t < 25 else min(90.0, -60 + 6 * (t - 25))  # out on the left, then back

            people = [Shown(3, Face(cx=225, cy=120, width=60), not card),
                      Shown(4, Face(cx=x4, cy=130, width=54), x4 - 27 > 0 and x4 + 27 < width)]
            covers = [(180, 40, 275, 215)] if card else []
            bg = bgs[1]
        frame = render(bg, [p.face for p in people], covers).astype(np.float32)
        frame += rng.normal(0, noise, frame.shape)
        frames.append(np.clip(np.round(frame), 0, 255).astype(np.uint8))
        truth.append(people)
    return frames, truth, [cut]
