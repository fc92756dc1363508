"""The face stages together, for a stream: detect every k-th frame, track every frame, align.

`FaceAnalyzer.process` takes the next chunk of a video's frames and returns, per frame, the
aligned crop of every face shown (or fading out, `FaceCrop.weight`) with everything needed to put a super-resolved face back
(`FaceCrop.matrix`). The engine calling it then makes the model's low-res input from each crop
with the SR backend's own downscaler, super-resolves, and calls `pipeline.stages.composite.composite`.

Streaming: chunks must follow one another (`start_index` continues where the last chunk
ended); the analyzer keeps only the tracker's state (one greyscale frame and a few numbers per
track), so memory stays constant however long the stream. Detection runs on the chunk's
detection frames (every `detect.every`-th): every `detect.full_every`-th of them scans the whole
frame (as one batch); on the others, once the tracker has moved its faces there, each face the
flow followed is checked by MTCNN's last network alone and the rest (lost, overlapping) are
searched for around (`FaceDetector.near`), so a tracked face is checked as often as before and a
new one is found at the next full scan. Two more kinds of frame are detected on, one at a time, as the stream reaches
them: the first frame of a shot (`pipeline/stages/cuts.py`: every track ends there), and the
frame after one where a face was lost, so a missed face comes back at once instead of a
cadence later (there only around the lost faces: `FaceDetector.detect_regions`).

An engine that reads a chunk ahead may hand it to `prefetch` first: its shot cuts and whole-frame
scans (a cut's first frame's included) then run on a detection thread (torch and OpenCV release
the GIL) while this thread tracks, aligns and composites the chunk before it. The cuts and
detections are the same either way; the local engine does this.

For the run report, `last_detections` holds the raw detections of the latest chunk,
`last_cuts` its shot cuts (frame indices), and `pop_finished_tracks()` / `close()` hand over the
tracks that have ended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.stages.align import check_frame, similarity_transform, template_for, warp_face
from pipeline.stages.fidelity import EffectiveTracker, effective_px, native_px
from pipeline.stages.cuts import CutDetector
from pipeline.stages.detect import DetectConfig, Detections, FaceDetector
from pipeline.stages.track import FaceTracker, TrackConfig, TrackRecord

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FaceCrop:
    """One face on one frame, aligned. Coordinates in source pixels."""

    frame_index: int
    track_id: int
    box: np.ndarray  # [4] float64: x0, y0, x1, y1 (smoothed)
    landmarks: np.ndarray  # [5, 2] float64 (smoothed), MTCNN's order
    matrix: np.ndarray  # [2, 3] float64: source pixels -> crop pixels
    crop: np.ndarray  # [crop_size, crop_size, 3] uint8 RGB, FFHQ framing
    score: float  # score of the track's latest detection
    detected: bool  # a detection matched the face on this frame (else it was tracked)
    native_px: float  # source pixels across the crop (fidelity.py)
    effective_px: float  # the detail the face really holds, smoothed along its track (<= native_px)
    weight: float = 1.0  # how much of its super-resolved face the compositor pastes (the tracker's fades)


@dataclasses.dataclass(frozen=True)
class FrameDetections:
    """The detector's raw output for one detection frame."""

    frame_index: int
    detections: Detections


class FaceAnalyzer:
    """Detection, tracking and alignment over a stream of frame chunks.

    `detector` may be passed in to share one MTCNN between analyzers; by default one is built.
    """

    def __init__(
        self,
        detect_cfg: DetectConfig,
        track_cfg: TrackConfig,
        crop_size: int,
        *,
        framing: str = "ffhq",
        detector: FaceDetector | None = None,
    ):
        if not isinstance(crop_size, int) or not 8 <= crop_size <= 4096:
            raise ValueError(f"crop_size must be an integer in 8..4096, got {crop_size!r}")
        self.detect_cfg = detect_cfg
        self.crop_size, self.template = crop_size, template_for(framing)
        self.detector = detector if detector is not None else FaceDetector(detect_cfg)
        self.tracker = FaceTracker(track_cfg)
        self.cuts = CutDetector(track_cfg)
        self.last_cuts: list[int] = []
        self.effective = EffectiveTracker()
        self.last_detections: list[FrameDetections] = []
        self.seconds = {"detect": 0.0, "track": 0.0, "align": 0.0}  # wall time per step, for benchmarks
        self._first_index: int | None = None
        self._next_index: int | None = None
        self._pool: ThreadPoolExecutor | None = None  # the detection thread, once `prefetch` is used
        self._ahead: dict[int, Future] = {}  # a prefetched chunk's first frame -> its cuts and scans, to come

    def process(self, frames: Sequence[np.ndarray], start_index: int) -> list[list[FaceCrop]]:
        """The faces of each frame (one list per frame, in order; by track id within a frame).

        `frames[i]` is frame `start_index + i` of the stream, `[H, W, 3] uint8 RGB`. The first
        frame ever seen is a detection frame, and every `detect.every`-th frame after it.
        """
        if self._next_index is not None and start_index != self._next_index:
            raise ValueError(
                f"start_index must continue the stream: expected {self._next_index}, got {start_index}; "
                "pass chunks in order, without gaps (or use a new FaceAnalyzer for a new stream)"
            )
        for i, frame in enumerate(frames):
            check_frame(frame, f"frames[{i}]")
        if len(frames) == 0:
            return []
        if self._first_index is None:
            self._first_index = start_index

        # 1. Detect on this chunk's full-scan frames, in one batch (or take what `prefetch` found, and
        #    its cuts): every `detect.full_every`-th detection frame; those between: step 2.
        start = time.perf_counter()
        cadence, full = self._scans(len(frames), start_index)
        ahead = self._ahead.pop(start_index, None)
        if ahead is None and self._pool is not None:
            raise ValueError(f"frames {start_index}.. were not prefetched: once `prefetch` is used, every chunk goes through it first")
        cuts, by_position = ahead.result() if ahead is not None else (None, {})
        now = [i for i in full if i not in by_position]
        by_position.update(zip(now, self.detector.detect([frames[i] for i in now]) if now else []))
        near_tracks = set(cadence) - set(full)
        self.seconds["detect"] += time.perf_counter() - start
        self.last_cuts = []

        # 2. Track through every frame (a cut's first frame, and the frame after a face was lost,
        #    are detected on too); 3. align each face.
        out: list[list[FaceCrop]] = []
        for i, frame in enumerate(frames):
            index = start_index + i
            start = time.perf_counter()
            cut = i in cuts if cuts is not None else self.cuts(frame, index)
            if cut:
                self.last_cuts.append(index)
                self.tracker.cut(index)
            self.seconds["track"] += time.perf_counter() - start
            detections = by_position.get(i)
            if detections is None and i in near_tracks and not cut:  # once the tracks have moved here
                detections = self._near(frame, i, by_position)
            elif detections is None and (cut or self.tracker.wants_detection):
                start = time.perf_counter()
                detections = by_position[i] = self._detect_one(frame, cut)
                self.seconds["detect"] += time.perf_counter() - start
            start, detecting = time.perf_counter(), self.seconds["detect"]
            tracked = self.tracker.update(frame, detections, index)
            self.seconds["track"] += time.perf_counter() - start - (self.seconds["detect"] - detecting)
            start = time.perf_counter()
            out.append([self._align(frame, index, face) for face in tracked])
            self.seconds["align"] += time.perf_counter() - start
        self.last_detections = [FrameDetections(start_index + i, by_position[i]) for i in sorted(by_position)]
        self._next_index = start_index + len(frames)
        log.debug("frames %d..%d: %d faces", start_index, self._next_index - 1, sum(map(len, out)))
        return out

    def _align(self, frame: np.ndarray, index: int, face) -> FaceCrop:
        """One tracked face (`TrackedFace`) on frame `index`, aligned."""
        matrix = similarity_transform(face.landmarks, self.crop_size, template=self.template)
        crop = warp_face(frame, matrix, self.crop_size)
        native = native_px(matrix, self.crop_size)
        # A face's blur is measured where it was detected (and on its first frame), not on the
        # frames the flow carried it through: 4 ms a face and frame, a fifth of the tracking.
        fresh = face.detected or not self.effective.measured(face.track_id)
        measured = effective_px(crop, native) if fresh else None
        return FaceCrop(frame_index=index, track_id=face.track_id, box=face.box, landmarks=face.landmarks, matrix=matrix,
                        crop=crop, score=face.score, detected=face.detected, native_px=native,
                        effective_px=self.effective(face.track_id, measured, native), weight=face.weight)

    def prefetch(self, frames: Sequence[np.ndarray], start_index: int, timing: Callable[[], Any] | None = None) -> None:
        """Start a chunk's shot cuts and whole-frame scans (a cut's first frame is scanned whole too)
        on the detection thread, before `process` has it. Chunks come here in stream order, each
        before `process` gets the very same frames; once one has, every chunk must. `timing()`: a
        context manager the detection thread's busy time is counted in."""
        if self._first_index is None:
            self._first_index = start_index
        frames = list(frames)
        for i, frame in enumerate(frames):
            check_frame(frame, f"frames[{i}]")
        _, full = self._scans(len(frames), start_index)

        def ahead() -> tuple[set[int], dict[int, Detections]]:
            with timing() if timing is not None else contextlib.nullcontext():
                cuts = {i for i, frame in enumerate(frames) if self.cuts(frame, start_index + i)}
                scans = sorted(set(full) | cuts)
                return cuts, dict(zip(scans, self.detector.detect([frames[i] for i in scans]) if scans else []))

        self._pool = self._pool or ThreadPoolExecutor(max_workers=1, thread_name_prefix="facezoom-detect")
        self._ahead[start_index] = self._pool.submit(ahead)

    def _scans(self, count: int, start_index: int) -> tuple[list[int], list[int]]:
        """Positions in a chunk of `count` frames from `start_index`: its detection frames, and those of
        them that scan the whole frame (every `detect.full_every`-th)."""
        every, first = self.detect_cfg.every, self._first_index
        cadence = [i for i in range(count) if (start_index + i - first) % every == 0]
        return cadence, [i for i in cadence if (start_index + i - first) // every % self.detect_cfg.full_every == 0]

    def _detect_one(self, frame: np.ndarray, cut: bool) -> Detections:
        """A shot's first frame: the whole frame; the frame after a face was lost: around the lost
        faces. With no face to look around, the whole frame."""
        near = [] if cut else self.tracker.lost_boxes
        return self.detector.detect_regions(frame, near) if near else self.detector.detect([frame])[0]

    def _near(self, frame: np.ndarray, i: int, by_position: dict[int, Detections]):
        """A detection frame between full scans: a function the tracker calls once its faces have
        moved to this frame (`FaceDetector.near`), with no faces the whole frame; what it
        detected goes into `by_position[i]`, its time into the detect step's."""

        def near(shown, hidden, anchors) -> Detections:
            start = time.perf_counter()
            by_position[i] = self.detector.near(frame, shown, hidden, anchors) if shown or hidden else self.detector.detect([frame])[0]
            self.seconds["detect"] += time.perf_counter() - start
            return by_position[i]

        return near

    def active_tracks(self) -> list[TrackRecord]:
        """Live tracks reported so far (last_frame = the latest frame each was seen on)."""
        return self.tracker.active()

    def pop_finished_tracks(self) -> list[TrackRecord]:
        """Tracks that ended since the last call; call it after each chunk to keep memory flat."""
        return self._forget(self.tracker.pop_finished())

    def close(self) -> list[TrackRecord]:
        """End of stream: end every live track and return all ended tracks not yet popped; the
        detection thread, if any, stops."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._ahead = None, {}
        return self._forget(self.tracker.close())

    def _forget(self, records: list[TrackRecord]) -> list[TrackRecord]:
        for record in records:
            self.effective.forget(record.track_id)
        return records
