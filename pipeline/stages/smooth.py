"""One Euro smoothing of a tracked face's points (Casiez, Roussel and Vogel, "1 Euro Filter: A
Simple Speed-based Low-pass Filter for Noisy Input in Interactive Systems", CHI 2012).

The tracker (`pipeline/stages/track.py`) smooths each face's reported landmarks and box with one
filter: strong smoothing while the face is still, little lag once it moves.
"""

from __future__ import annotations

import math

import numpy as np


class OneEuroFilter:
    """A One Euro filter over a set of 2-D points, with one adaptive cutoff for all of them.

    The speed that raises the cutoff is that of the points' centre, divided by `speed_scale`
    (pass the face width, so beta is in face widths per frame), or the `motion` passed in: the
    tracker passes the motion the flow measured, so a detection's correction of the position is
    smoothed like noise instead of being taken for movement. Time is in frames.
    """

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.value: np.ndarray | None = None
        self.speed = 0.0

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, dt: float, speed_scale: float, motion: float | None = None) -> np.ndarray:
        if self.value is None:
            self.value, self.speed = x.copy(), 0.0
            return self.value.copy()
        # Speed of the centre of all points: noise of single points averages out, motion does not.
        moved = float(np.linalg.norm((x - self.value).reshape(-1, 2).mean(0))) if motion is None else motion
        raw_speed = moved / dt / max(speed_scale, 1e-6)
        self.speed += self._alpha(self.d_cutoff, dt) * (raw_speed - self.speed)
        cutoff = self.min_cutoff + self.beta * self.speed
        self.value = self.value + self._alpha(cutoff, dt) * (x - self.value)
        return self.value.copy()
