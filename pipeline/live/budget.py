"""What `facezoom live` measures, and how it trades quality for keeping up.

`LiveStats` records each output frame's latency (from the moment the frame was read from the
source to the moment its processed frame was output) in a 1 ms histogram, so percentiles over
hours of video cost constant memory, plus a short window for the preview's figures and the
p95 of every second, which shows whether latency trends upward.

`BudgetController` keeps the p95 latency under `budget_ms` by moving along a ladder of
settings, from best to cheapest:

1. for backends with a step budget (PULSE: `steps` for a track's first frame, `warm_steps`
   for the warm-started ones), fewer optimisation steps, down to a tenth;
2. then detection on fewer frames (`detect.every` doubled, up to `max_detect_every`):
   detection frames are the latency spikes of the cheap backends (MTCNN is ~20x the cost of
   a tracked frame), so this makes the spikes rarer; the tracker carries faces between them.

Each time a window of frames (at least `WINDOW_SECONDS` long and `WINDOW_FRAMES` frames) ends,
the controller steps cheaper if the window's p95 was over budget (one rung, or as many as the
overshoot calls for when each rung saves ~30%), and one rung better after enough calm windows (p95 under `CALM_FRACTION` of the budget). A step up that is undone
by the very next window doubles the calm windows the next step up needs, so the controller
settles instead of oscillating around a rung whose spikes cross the budget.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import deque

import numpy as np

from pipeline.stages.chunk import Knobs

log = logging.getLogger(__name__)

HISTOGRAM_MS = 60_000  # latencies are binned by the millisecond up to a minute; longer ones land in the last bin
STEP_FACTORS = (1.0, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1)  # of the configured steps: each rung ~30% cheaper
WINDOW_SECONDS = 1.0  # a decision needs a window this long...
WINDOW_FRAMES = 3  # ...holding at least this many frames (a slow backend's window is longer)
RUNG_SAVING = 0.7  # cost of a rung relative to the one above it, roughly: how many rungs a big overshoot skips
CALM_FRACTION = 0.5  # a window is calm when its p95 is under this fraction of the budget
MAX_CALM_WINDOWS = 32  # the longest wait before trying a better rung again


class LiveStats:
    """Counts and latencies of a live run. Call `add` once per output frame."""

    def __init__(self, *, recent: int = 60):
        self._histogram = np.zeros(HISTOGRAM_MS + 1, np.int64)
        self._recent: deque[tuple[float, float]] = deque(maxlen=recent)  # (output time, latency ms)
        self._second: list[float] = []  # latencies of the current second
        self._second_start: float | None = None
        self.p95_per_second: deque[float] = deque(maxlen=3600)  # the last hour
        self.frames_out = 0
        self.latency_max_ms = 0.0
        self.lag_max_ms = 0.0
        self.first_output: float | None = None
        self.last_output: float | None = None

    def add(self, *, latency_s: float, output_time: float, lag_s: float = 0.0) -> None:
        ms = latency_s * 1000
        self._histogram[min(HISTOGRAM_MS, max(0, int(round(ms))))] += 1
        self._recent.append((output_time, ms))
        self.frames_out += 1
        self.latency_max_ms = max(self.latency_max_ms, ms)
        self.lag_max_ms = max(self.lag_max_ms, lag_s * 1000)
        self.first_output = self.first_output if self.first_output is not None else output_time
        self.last_output = output_time
        if self._second_start is None:
            self._second_start = output_time
        if output_time - self._second_start >= 1.0:
            self.p95_per_second.append(round(float(np.percentile(self._second, 95)), 1))
            self._second, self._second_start = [], output_time
        self._second.append(ms)

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0-100) of every latency so far, in ms (1 ms resolution)."""
        total = int(self._histogram.sum())
        if total == 0:
            return None
        rank = max(1, int(np.ceil(q / 100 * total)))
        return float(np.searchsorted(np.cumsum(self._histogram), rank))

    def fps(self) -> float:
        """Output frames per second over the run."""
        if self.frames_out < 2 or self.last_output == self.first_output:
            return 0.0
        return (self.frames_out - 1) / (self.last_output - self.first_output)

    def recent(self, now: float | None = None, seconds: float = 2.0) -> dict[str, float | None]:
        """fps and latency percentiles over the last `seconds`, for a live display."""
        now = time.monotonic() if now is None else now
        window = [(t, ms) for t, ms in self._recent if now - t <= seconds]
        if not window:
            return {"fps": 0.0, "latency_ms_p50": None, "latency_ms_p95": None}
        span = window[-1][0] - window[0][0]
        values = [ms for _, ms in window]
        return {
            "fps": round((len(window) - 1) / span, 1) if span > 0 else 0.0,
            "latency_ms_p50": round(float(np.percentile(values, 50)), 1),
            "latency_ms_p95": round(float(np.percentile(values, 95)), 1),
        }


Rung = Knobs  # one rung of the ladder: the processor's knobs at one setting


def ladder(best: Knobs, *, max_detect_every: int) -> list[Rung]:
    """The rungs down from the processor's configured knobs `best`: fewer optimisation steps
    first (where the backend spends any), then detection less and less often."""
    rungs: list[Rung] = []
    if best.steps is not None:
        for f in STEP_FACTORS:
            rung = Rung(best.detect_every, max(1, round(best.steps * f)), max(1, round(best.warm_steps * f)))
            if not rungs or rung != rungs[-1]:
                rungs.append(rung)
    else:
        rungs.append(best)
    every = best.detect_every
    while every < max_detect_every:
        every = min(max_detect_every, every * 2)
        rungs.append(dataclasses.replace(rungs[-1], detect_every=every))
    return rungs


class BudgetController:
    """Adapts a `FaceProcessor`'s settings so that the p95 latency stays under `budget_ms`.

    `update(latency_ms)` once per output frame; between frames it turns the knobs the processor
    exposes for it (`FaceProcessor.knobs`, `.turn`: the SR steps, the detection rate). With
    `enabled=False` it only reports.
    """

    def __init__(self, processor, *, budget_ms: float, max_detect_every: int, enabled: bool = True):
        self.processor, self.budget_ms, self.enabled = processor, budget_ms, enabled
        best = processor.knobs
        self.rungs = ladder(best, max_detect_every=max(best.detect_every, max_detect_every))
        self.level = 0
        self.changes = 0
        self._window: list[float] = []
        self._window_start: float | None = None
        self._calm = 0
        self._calm_needed = 2
        self._just_raised = False

    @property
    def rung(self) -> Rung:
        return self.rungs[self.level]

    def update(self, latency_ms: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._window_start = self._window_start if self._window_start is not None else now
        self._window.append(latency_ms)
        if len(self._window) < WINDOW_FRAMES or now - self._window_start < WINDOW_SECONDS:
            return
        p95 = float(np.percentile(self._window, 95))
        self._window, self._window_start = [], None
        if not self.enabled:
            return
        if p95 > self.budget_ms:
            if self._just_raised:  # the better rung did not hold: wait longer before trying it again
                self._calm_needed = min(MAX_CALM_WINDOWS, self._calm_needed * 2)
            self._calm, self._just_raised = 0, False
            skip = max(1, math.ceil(math.log(p95 / self.budget_ms) / -math.log(RUNG_SAVING)))
            if self.level + 1 < len(self.rungs):
                self._set(min(len(self.rungs) - 1, self.level + skip), f"p95 {p95:.0f} ms > budget {self.budget_ms:g} ms")
            return
        self._just_raised = False
        self._calm = self._calm + 1 if p95 < CALM_FRACTION * self.budget_ms else 0
        if self._calm >= self._calm_needed and self.level > 0:
            self._calm, self._just_raised = 0, True
            self._set(self.level - 1, f"p95 {p95:.0f} ms, well within budget")

    def _set(self, level: int, why: str) -> None:
        self.level = level
        self.changes += 1
        self.processor.turn(self.rung)
        log.info("live budget: rung %d/%d (%s): %s", level, len(self.rungs) - 1, why, self.describe())

    def describe(self) -> str:
        rung = self.rung
        steps = f"steps {rung.steps}/{rung.warm_steps} (cold/warm), " if rung.steps is not None else ""
        return f"{steps}detect every {rung.detect_every} frames"

    def to_dict(self) -> dict:
        return {"level": self.level, "levels": len(self.rungs), "changes": self.changes, **dataclasses.asdict(self.rung)}
