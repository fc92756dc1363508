"""The face stages on a chunk of frames, written once for every engine.

A chunk of consecutive frames goes through three steps:

1. `track_chunk`: detect every k-th frame, track every frame, align each face (`FaceAnalyzer`).
2. `SRStep`: the crop scheduler batches the aligned crops across tracks, keeping each track's
   crops in frame order; each batch leaves as one `SRRequest` (crops, states, seeds, gaps,
   fidelity plans, ...), is run by `pipeline.stages.superres.run_batch` wherever the backend
   is, and its result is committed (the track states it returns, the report's face rows).
3. `composite_chunk`: paste the super-resolved faces back into the chunk's frames.

The engines only place these steps: `FaceProcessor` runs them one after the other in one
process (the local engine, live mode); the Ray engine runs step 1 on its TrackActor, step 2's
`SRStep` in its driver and `run_batch` on its SR actors, and step 3 on its EncodeActor. Zoom
and enhance send one face at a time through the same `SRRequest` and `run_batch`. A step or a
request field added here reaches every engine and command.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.media.reader import Frame
from pipeline.report import FaceReport
from pipeline.stages.composite import PasteFace, composite, frame_upscaler, upscale_chunk
from pipeline.stages.faces import FaceAnalyzer, FaceCrop, FrameDetections
from pipeline.stages.fidelity import FidelityPlanner
from pipeline.stages.scheduler import Batch, CropJob, crop_seed, scheduler_for
from pipeline.stages.superres import BackendInfo, BatchResult, SRRequest, create_backend, run_batch
from pipeline.stages.track import TrackRecord


@dataclasses.dataclass
class TrackedChunk:
    """Step 1's output for a chunk: per frame, its faces; and what the report needs."""

    crops: list[list[FaceCrop]]  # per frame, in order; an engine may swap `crop` pixels for a reference
    detections: list[FrameDetections]  # the raw detections of the chunk's detection frames
    finished: list[TrackRecord]  # tracks that ended in this chunk
    cuts: list[int] = dataclasses.field(default_factory=list)  # the chunk's shot cuts: first frames of new shots


def track_chunk(analyzer: FaceAnalyzer, frames: Sequence[Frame]) -> TrackedChunk:
    """Step 1. `frames` must continue where the analyzer's last chunk ended."""
    crops = analyzer.process([f.image for f in frames], frames[0].index)
    return TrackedChunk(crops, analyzer.last_detections, analyzer.pop_finished_tracks(), analyzer.last_cuts)


class SRStep:
    """Step 2 for one stream: the crop scheduler, the fidelity planner and the report's rows.

    `add` a tracked chunk; take requests with `next` until it returns None, run each with
    `run_batch` (here, or on a Ray SR actor), and `commit` its result, or `retry` it if the run
    failed (its crops run again from the same states). `report` collects the stream's rows.
    """

    def __init__(self, cfg, backend: BackendInfo, *, report: bool = True):
        self.sr = cfg.sr
        self.scheduler = scheduler_for(cfg.sr, stateful=backend.stateful, keyframes=backend.keyframes)
        self.planner = FidelityPlanner.for_run(cfg.sr, cfg.composite.scale, out_size=backend.out_size,
                                               any_input_size=backend.any_input_size)
        self.report = FaceReport(enabled=report)

    @property
    def ready(self) -> int:
        """Crops that could go out right now."""
        return self.scheduler.ready

    def add(self, tracked: TrackedChunk) -> int:
        """Schedule a chunk's crops (each with its seed); ended tracks end. Returns the crops added."""
        self.report.add_detections(tracked.detections)
        self.report.add_cuts(tracked.cuts)
        self.report.add_tracks(tracked.finished)
        added = 0
        for frame_crops in tracked.crops:
            for crop in frame_crops:
                self.scheduler.add(CropJob(crop.frame_index, crop.track_id, crop_seed(self.sr.seed, crop.track_id, crop.frame_index), payload=crop))
                added += 1
        for record in tracked.finished:
            self.scheduler.end_track(record.track_id)
        return added

    def next(self, limit: int | None = None) -> tuple[Batch, SRRequest] | None:
        """The next batch that may run (up to `limit` crops) and its request, or None."""
        batch = self.scheduler.next_batch(limit=limit)
        if batch is None:
            return None
        jobs = batch.jobs
        request = SRRequest.make(self.sr, crops=[job.payload.crop for job in jobs], states=batch.states, seeds=[job.seed for job in jobs],
                                 plans=[self.planner.for_crop(job.payload) for job in jobs], gaps=batch.gaps)
        return batch, request

    def commit(self, batch: Batch, result: BatchResult) -> None:
        """A batch ran: its track states go to the crops that start from them; its faces are reported."""
        self.scheduler.commit(batch, result.states)
        for i, job in enumerate(batch.jobs):
            self.report.add_face(job.payload, consistency=result.consistency[i], success=result.success[i], steps=result.steps[i],
                                 in_size=result.in_sizes[i], kept_px=result.kept_px[i], model_ran=result.model_ran[i],
                                 keyframe=job.keyframe)

    def retry(self, batch: Batch) -> None:
        self.scheduler.retry(batch)


def composite_chunk(
    frames: Sequence[Frame],
    crops: Sequence[Sequence[FaceCrop]],
    face_of: Callable[[FaceCrop], np.ndarray],
    cfg,
    upscaled: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Step 3: each frame with its faces pasted back; `face_of(crop)` is what `run_batch` made for the
    crop (a face, detail or None: see `pipeline/stages/composite.py`). Faces are pasted smallest
    first, so where two overlap the nearer (larger) one is on top."""
    def pastes(frame_crops):
        ordered = sorted(frame_crops, key=lambda c: (c.box[2] - c.box[0]) * (c.box[3] - c.box[1]))
        return [PasteFace(c.matrix, face_of(c), c.track_id, c.box, c.weight) for c in ordered]

    upscaled = upscaled if upscaled is not None else [None] * len(frames)  # the frame model's output, where one ran
    return [composite(frame.image, pastes(frame_crops), cfg, upscaled=big)
            for frame, frame_crops, big in zip(frames, crops, upscaled, strict=True)]


class StageTimer:
    """Adds up wall seconds per named stage: `with timer("decode"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.first_frame: float | None = None  # perf_counter() when the first frame was decoded (the local engine)

    def __call__(self, stage: str) -> "_Timing":
        return _Timing(self.seconds, stage)


class _Timing:
    def __init__(self, totals: dict[str, float], stage: str):
        self.totals, self.stage = totals, stage

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.totals[self.stage] += time.perf_counter() - self.start


@dataclasses.dataclass(frozen=True)
class Knobs:
    """What a live budget may turn between frames: how often faces are detected, and the backend's
    optimisation steps (cold and warm; None where it spends none)."""

    detect_every: int
    steps: int | None = None
    warm_steps: int | None = None


class FaceProcessor:
    """The three steps in one process, for one stream (the local engine, live mode).

    Call it with consecutive chunks of frames; it returns their processed images, in order.
    Every face crop of a chunk is super-resolved before the chunk is returned, batched across
    tracks by the crop scheduler, each track warm-starting from its previous frame.
    """

    def __init__(self, cfg, *, report: bool = True, like: "FaceProcessor | None" = None):
        """`like`: another processor whose models (backend, detector) this one shares: a new
        stream (its own tracks, states and report) without loading the models again."""
        self.cfg = cfg
        self.upscaler = like.upscaler if like is not None else frame_upscaler(cfg.composite, cfg.sr.device)  # None: interpolation
        self.backend = like.backend if like is not None else create_backend(cfg.sr)
        info = BackendInfo.of(self.backend)
        detector = like.analyzer.detector if like is not None else None
        self.analyzer = FaceAnalyzer(cfg.detect, cfg.track, crop_size=info.out_size, framing=info.framing, detector=detector)
        self.step = SRStep(cfg, info, report=report)

    def __call__(self, frames: Sequence[Frame], timer: StageTimer) -> list[np.ndarray]:
        with timer("detect_track"):
            tracked = track_chunk(self.analyzer, frames)
        faces: dict[tuple[int, int], np.ndarray] = {}
        with timer("sr"):
            self.step.add(tracked)
            while (work := self.step.next()) is not None:
                batch, request = work
                result = run_batch(self.backend, request)
                self.step.commit(batch, result)
                faces.update(((job.frame_index, job.track_id), face) for job, face in zip(batch.jobs, result.faces))
        upscaled = None
        if self.upscaler is not None:
            with timer("frame_sr"):
                upscaled = upscale_chunk(self.upscaler, [f.image for f in frames])
        with timer("composite"):
            return composite_chunk(frames, tracked.crops, lambda c: faces[c.frame_index, c.track_id], self.cfg.composite, upscaled)

    def prefetch(self, frames: Sequence[Frame], timer: StageTimer) -> None:
        """Start the coming chunk's shot cuts and whole-frame scans on the detection thread (`FaceAnalyzer.prefetch`)."""
        self.analyzer.prefetch([f.image for f in frames], frames[0].index, timing=lambda: timer("detect_ahead"))

    def finish(self) -> dict[str, Any]:
        """End of stream: the report's face entries."""
        self.step.report.add_tracks(self.analyzer.close())
        return self.step.report.to_dict()

    def warm_up(self) -> None:
        """Run the detector once on a blank frame: MTCNN's first call costs far more than the next
        (live mode does this before its clock starts)."""
        self.analyzer.detector.detect([np.zeros((120, 160, 3), np.uint8)])

    @property
    def knobs(self) -> Knobs:
        """The settings a live budget turns, as they stand."""
        steps = getattr(self.backend, "steps", None), getattr(self.backend, "warm_steps", None)
        spends = all(isinstance(v, int) for v in steps)  # PULSE spends a settable number of steps
        return Knobs(self.analyzer.detect_cfg.every, *(steps if spends else (None, None)))

    def turn(self, knobs: Knobs) -> None:
        """Apply a budget's settings between two chunks."""
        if knobs.steps is not None:
            self.backend.steps, self.backend.warm_steps = knobs.steps, knobs.warm_steps
        if self.analyzer.detect_cfg.every != knobs.detect_every:
            self.analyzer.detect_cfg = dataclasses.replace(self.analyzer.detect_cfg, every=knobs.detect_every)
