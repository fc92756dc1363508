"""Crowds of real small faces, several shots, occlusions: clips with known truth at any size.

The faces are the first hundred images of scikit-image's `lfw_subset()` (25x25 grey crops of
Labeled Faces in the Wild; scikit-image ships them as public-domain test data), shown at 20-60
px, tinted, over `face_scenes.background` textures. Each shot places its own people: some sit
still (only sensor noise moves them), some drift, and a grey bar (a passer-by in front of the
camera) sweeps across the frame, covering faces one after another. Cuts are hard.

`CrowdClip.frame(i)` renders frame i on demand, so a 1080p clip never sits in memory whole;
`CrowdClip.truth(i)` says who is where on it.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import cv2

from face_scenes import background

# lfw_subset faces that facenet-pytorch's MTCNN finds on their own at 24 px in a 640x360 frame
# and at 40 px in a 1920x1080 one (measured once, default thresholds): the truth is made of
# faces the detector of record can see, so a miss is the pipeline's, not the material's.
DETECTABLE = (0, 3, 5, 15, 18, 20, 33, 35, 37, 41, 44, 46, 48, 49, 50, 51, 58, 60, 66, 71, 72, 73, 75, 76, 79, 88, 89, 90,
              92, 93, 94, 95, 98, 99)


@functools.lru_cache(maxsize=1)
def _faces() -> np.ndarray:
    from skimage import data

    return (data.lfw_subset()[:100] * 255).round().astype(np.uint8)  # [100, 25, 25]


@dataclasses.dataclass(frozen=True)
class Person:
    """One person in one shot: a face, where it starts, how it moves (px/frame), whether it is still."""

    person: int  # unique across the clip (a person in two shots would be two tracks anyway)
    face: int  # index into lfw_subset
    x: float  # box centre on the shot's first frame
    y: float
    size: float  # box side, px
    vx: float = 0.0
    vy: float = 0.0

    @property
    def still(self) -> bool:
        return self.vx == 0 and self.vy == 0


@dataclasses.dataclass(frozen=True)
class Seen:
    """A person on a frame: its box `[4]` x0, y0, x1, y1 and whether the camera sees the face."""

    person: int
    box: np.ndarray
    visible: bool
    still: bool

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])


@dataclasses.dataclass(frozen=True)
class Shot:
    start: int
    length: int
    people: tuple[Person, ...]
    bar: tuple[float, float, float]  # the passer-by: x of its left edge at the shot's start, speed px/frame, width px


class CrowdClip:
    """Shots of crowds (see the module docstring); `frames` frames of `height` x `width`."""

    def __init__(self, height: int, width: int, *, shots: int, shot_length: int, people: int, sizes: tuple[float, float],
                 noise: float = 2.0, seed: int = 0):
        self.height, self.width, self.noise, self.seed = height, width, noise, seed
        rng = np.random.default_rng(seed)
        faces = iter(rng.permutation(DETECTABLE))
        self.shots: list[Shot] = []
        next_person = 1
        for k in range(shots):
            crowd = []
            count = people if k == 0 else max(2, people - 1 - k % 3)  # the first shot holds the most
            for j in range(count):
                size = float(rng.uniform(*sizes))
                x = width * (j + 0.5 + rng.uniform(-0.2, 0.2)) / count
                y = height * rng.uniform(0.3, 0.7)
                moving = j % 3 == 2
                vx, vy = (float(rng.uniform(-1, 1) * size / 40), float(rng.uniform(-0.5, 0.5) * size / 40)) if moving else (0.0, 0.0)
                crowd.append(Person(next_person, int(next(faces)), x, y, size, vx, vy))
                next_person += 1
            speed = width / shot_length * rng.uniform(0.5, 0.8)
            bar = (-0.1 * width, speed, sizes[1] * 1.5) if k % 2 == 0 else (width * 1.1, -speed, sizes[1] * 1.5)
            self.shots.append(Shot(k * shot_length, shot_length, tuple(crowd), bar))
        self.frames = shots * shot_length
        self.cuts = [s.start for s in self.shots[1:]]
        self._backgrounds: dict[int, np.ndarray] = {}

    def _shot(self, i: int) -> Shot:
        return self.shots[min(i // self.shots[0].length, len(self.shots) - 1)]

    def _bar(self, shot: Shot, i: int) -> tuple[float, float]:
        x0, speed, w = shot.bar
        left = x0 + speed * (i - shot.start)
        return left, left + w

    def truth(self, i: int) -> list[Seen]:
        """Who is on frame i, and where."""
        shot = self._shot(i)
        t = i - shot.start
        bar0, bar1 = self._bar(shot, i)
        out = []
        for p in shot.people:
            cx, cy, h = p.x + p.vx * t, p.y + p.vy * t, p.size / 2
            box = np.array([cx - h, cy - h, cx + h, cy + h])
            covered = min(box[2], bar1) - max(box[0], bar0) > 0.3 * p.size
            inside = box[0] >= 0 and box[1] >= 0 and box[2] <= self.width and box[3] <= self.height
            out.append(Seen(p.person, box, inside and not covered, p.still))
        return out

    def frame(self, i: int) -> np.ndarray:
        """Frame i: `[H, W, 3] uint8 RGB`."""
        shot = self._shot(i)
        if shot.start not in self._backgrounds:
            self._backgrounds = {shot.start: background(self.height, self.width, self.seed + 100 + shot.start)}
        img = self._backgrounds[shot.start].astype(np.float32)
        faces = _faces()
        for seen, person in zip(self.truth(i), shot.people):
            _paste(img, faces[person.face], seen.box, tint=(1.0, 0.86, 0.74) if person.person % 2 else (0.95, 0.8, 0.7))
        bar0, bar1 = self._bar(shot, i)
        img[:, max(0, int(bar0)) : max(0, min(self.width, int(bar1)))] = (90, 96, 110)
        rng = np.random.default_rng(self.seed * 100003 + i)
        img += rng.normal(0, self.noise, img.shape).astype(np.float32)
        return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _paste(img: np.ndarray, face: np.ndarray, box: np.ndarray, *, tint: tuple[float, float, float]) -> None:
    """Paste a grey face, tinted, into `img` (float32 [H, W, 3]) at `box`, sub-pixel, with a soft rim."""
    height, width = img.shape[:2]
    x0, y0 = int(np.floor(box[0])) - 1, int(np.floor(box[1])) - 1
    x1, y1 = int(np.ceil(box[2])) + 1, int(np.ceil(box[3])) + 1
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return
    s = (box[2] - box[0]) / face.shape[1]
    m = np.array([[s, 0, box[0] - x0 + 0.5 * s - 0.5], [0, s, box[1] - y0 + 0.5 * s - 0.5]])
    w, h = x1 - x0, y1 - y0
    patch = cv2.warpAffine(face.astype(np.float32), m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    rim = np.ones(face.shape, np.float32)
    rim[[0, -1], :] = rim[:, [0, -1]] = 0.5
    alpha = cv2.warpAffine(rim, m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    patch = patch[..., None] * np.array(tint, np.float32)
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    sl = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    region = img[cy0:cy1, cx0:cx1]
    region[:] = region * (1 - alpha[sl]) + patch[sl] * alpha[sl]
