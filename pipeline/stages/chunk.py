"""The face stages on a chunk of frames, written once for every engine.

A chunk of consecutive frames goes through three steps:

1. `track_chunk`: detect every k-th frame, track every frame, align each face (`FaceAnalyzer`).
2. `schedule_chunk` hands each aligned crop to the crop scheduler, which batches crops across
   tracks and keeps each track's crops in frame order; every batch is super-resolved by
   `pipeline.stages.superres.run_batch` and committed by `finish_batch` (the track states it
   returns, the report's face entries).
3. `composite_chunk`: paste the super-resolved faces back into the chunk's frames.

The engines only place these steps: `FaceProcessor` runs them one after the other in one
process (the local engine, live mode); the Ray engine runs step 1 on its TrackActor, the
batches of step 2 on its SR actors and the commits in its driver, and step 3 on its EncodeActor.
A step added here reaches every engine.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.media.reader import Frame
from pipeline.report import FaceReport
from pipeline.stages.composite import PasteFace, composite
from pipeline.stages.faces import FaceAnalyzer, FaceCrop, FrameDetections
from pipeline.stages.fidelity import FidelityPlanner
from pipeline.stages.scheduler import Batch, CropJob, CropScheduler, crop_seed, scheduler_for
from pipeline.stages.superres import BatchResult, create_backend, run_batch
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


def schedule_chunk(scheduler: CropScheduler, tracked: TrackedChunk, *, seed: int) -> int:
    """Step 2a: one `CropJob` per face (its payload: the `FaceCrop`); ended tracks end. Returns the jobs added."""
    added = 0
    for frame_crops in tracked.crops:
        for crop in frame_crops:
            scheduler.add(CropJob(crop.frame_index, crop.track_id, crop_seed(seed, crop.track_id, crop.frame_index), payload=crop))
            added += 1
    for record in tracked.finished:
        scheduler.end_track(record.track_id)
    return added


def finish_batch(scheduler: CropScheduler, report: FaceReport, batch: Batch, result: BatchResult) -> None:
    """Step 2c: commit a super-resolved batch's track states and report its faces."""
    scheduler.commit(batch, result.states)
    for i, job in enumerate(batch.jobs):
        report.add_face(job.payload, consistency=result.consistency[i], success=result.success[i], steps=result.steps[i],
                        in_size=result.in_sizes[i], kept_px=result.kept_px[i], model_ran=result.model_ran[i],
                        keyframe=job.keyframe)


def composite_chunk(
    frames: Sequence[Frame],
    crops: Sequence[Sequence[FaceCrop]],
    face_of: Callable[[FaceCrop], np.ndarray],
    cfg,
) -> list[np.ndarray]:
    """Step 3: each frame with its faces pasted back; `face_of(crop)` is what `run_batch` made for the
    crop (a face, detail or None: see `pipeline/stages/composite.py`). Faces are pasted smallest
    first, so where two overlap the nearer (larger) one is on top."""
    def pastes(frame_crops):
        ordered = sorted(frame_crops, key=lambda c: (c.box[2] - c.box[0]) * (c.box[3] - c.box[1]))
        return [PasteFace(c.matrix, face_of(c), c.track_id, c.box, c.weight) for c in ordered]

    return [composite(frame.image, pastes(frame_crops), cfg) for frame, frame_crops in zip(frames, crops, strict=True)]


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
        self.backend = like.backend if like is not None else create_backend(cfg.sr)
        detector = like.analyzer.detector if like is not None else None
        self.analyzer = FaceAnalyzer(cfg.detect, cfg.track, crop_size=self.backend.out_size, framing=self.backend.framing, detector=detector)
        self.scheduler = scheduler_for(cfg.sr, stateful=self.backend.stateful, keyframes=self.backend.keyframes)
        self.plan = FidelityPlanner.for_run(cfg.sr, cfg.composite.scale, out_size=self.backend.out_size,
                                            any_input_size=self.backend.any_input_size, default_fidelity=1.0)
        self.report = FaceReport(enabled=report)

    def __call__(self, frames: Sequence[Frame], timer: StageTimer) -> list[np.ndarray]:
        with timer("detect_track"):
            tracked = track_chunk(self.analyzer, frames)
            self.report.add_detections(tracked.detections)
            self.report.add_cuts(tracked.cuts)
        faces: dict[tuple[int, int], np.ndarray] = {}
        with timer("sr"):
            schedule_chunk(self.scheduler, tracked, seed=self.cfg.sr.seed)
            while (batch := self.scheduler.next_batch()) is not None:
                crops = [job.payload.crop for job in batch.jobs]
                plans = [self.plan.for_crop(job.payload) for job in batch.jobs]
                result = run_batch(self.backend, crops, batch.states, [job.seed for job in batch.jobs], pre_blur=self.cfg.sr.pre_blur, plans=plans,
                                   gaps=batch.gaps)
                finish_batch(self.scheduler, self.report, batch, result)
                faces.update(((job.frame_index, job.track_id), face) for job, face in zip(batch.jobs, result.faces))
        with timer("composite"):
            images = composite_chunk(frames, tracked.crops, lambda c: faces[c.frame_index, c.track_id], self.cfg.composite)
        self.report.add_tracks(tracked.finished)
        return images

    def prefetch(self, frames: Sequence[Frame], timer: StageTimer) -> None:
        """Start the coming chunk's whole-frame scans on the detection thread (`FaceAnalyzer.prefetch`)."""
        self.analyzer.prefetch([f.image for f in frames], frames[0].index, timing=lambda: timer("detect_ahead"))

    def finish(self) -> dict[str, Any]:
        """End of stream: the report's face entries."""
        self.report.add_tracks(self.analyzer.close())
        return self.report.to_dict()

