"""The Ray engine: the steps of `pipeline/stages/chunk.py` on actors, streaming, GPUs kept busy.

    DecodeActor --frames--> TrackActor --one object per aligned crop--> SRActor pool --faces--> EncodeActor
                     (the driver: crop scheduler, backpressure, frame order, retries)

The actors are in `pipeline/engines/ray_actors.py`; the SR actors' pool in `ray_pool.py`; each
video's actors, chunks and step 2 (`SRStep`) in `ray_video.py`. This module is the driver's
loop: start actors, feed them, collect what they return, finish each video.

- Each tracked chunk's crops go to the video's `SRStep`, whose crop scheduler batches them
  across tracks and keeps each track's crops in frame order. Each batch goes to a free SR actor
  as one `SRRequest`, with its tracks' committed states: state travels with the crop, so any
  actor can take any track, the pool rebalances by itself as tracks start and end, and a dead
  actor costs only its batches, which run again from the same states.
- Finished chunks go to the EncodeActor strictly in input order, exactly once.
- Backpressure: at most `engine.max_frames_in_flight` frames are decoded and not yet written,
  so memory and object-store use do not grow with the video's length.

Decode, track and encode run on the driver's node (they read and write its files); SR actors go
wherever their resources are.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

import ray

from models.errors import ModelError
from pipeline.engines.ray_pool import SRPool
from pipeline.engines.ray_start import connect
from pipeline.engines.ray_video import HANDLERS, VideoJob
from pipeline.errors import RunAborted, UserError
from pipeline.media.memory import setup_done

log = logging.getLogger(__name__)


def run_video_ray(input_path, output_path, *, cfg, progress: bool = True, report_faces: bool = True, hooks=None) -> dict:
    """Process a video on Ray actors; the same report as `pipeline.engines.local.run_video`.

    `hooks` is for tests: `hooks.after_batch(actor, batch_number)` runs in the driver after
    each committed batch (e.g. to kill an actor mid-job).
    """
    [report] = run_videos_ray([(input_path, output_path)], cfg=cfg, progress=progress, report_faces=report_faces, hooks=hooks)
    return report


def run_videos_ray(jobs, *, cfg, progress: bool = True, report_faces: bool = True, hooks=None, skip=None, done=None) -> list[dict | None]:
    """Process videos `[(input, output), ...]`, `engine.videos_in_parallel` at a time, their crops
    sharing one SR actor pool (the models load once). Returns each video's report, in order.

    `skip(input, error)`: called for a video that fails with a user-facing error (its partial
    output removed, its report None) while the others go on; without it the error ends the run.
    `done(report)`: called as each video finishes.
    """
    start = time.perf_counter()
    started_ray = connect(cfg.engine)
    started = _Started()
    run = None
    try:
        pool = SRPool.start(cfg, started, hooks)
        setup_done()
        run = _Run(jobs, cfg, pool, started, start=start, report_faces=report_faces, progress=progress, skip=skip, done=done)
        while run.queue or run.active:
            run.start_videos()
            run.feed()
            run.finish_videos()
            run.collect()
        return run.reports
    except (UserError, ModelError):
        if run is not None:
            _collect_abandoned(run.waiting)
        raise
    finally:
        for video in run.active if run is not None else []:  # their bars end before the run's last line
            video.bar.close()
        _stop(started)
        if started_ray:
            ray.shutdown()


def _collect_abandoned(waiting: dict) -> None:
    """Results no video will use (`waiting`'s refs and their tasks' other results), fetched for up to
    two seconds, errors and all: Ray logs a task's error that nobody fetched as an "Unhandled
    error", dozens of lines after the run's own one-line message."""
    refs = list(waiting) + [ref for _, _, ctx in waiting.values() if (ref := getattr(ctx, "result_ref", None)) is not None]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=2) if refs else ([], [])
    for ref in ready:
        try:
            ray.get(ref)
        except Exception:  # noqa: BLE001 - the run's own error is the one it reports
            pass


class _Run:
    """The driver's state: the videos waiting, running and done, and the results it waits for."""

    def __init__(self, jobs, cfg, pool: SRPool, started: "_Started", *, start: float, report_faces, progress, skip, done):
        self.jobs, self.cfg, self.pool, self.started, self.start = jobs, cfg, pool, started, start
        self.report_faces, self.progress, self.skip, self.done = report_faces, progress, skip, done
        self.setup = time.perf_counter() - start
        self.reports: list[dict | None] = [None] * len(jobs)
        self.queue = deque(enumerate(jobs))
        self.active: list[VideoJob] = []
        self.waiting: dict[Any, tuple[VideoJob, str, Any]] = {}  # object ref -> (its video, its kind in HANDLERS, its context)
        self.free_slots = list(range(cfg.engine.videos_in_parallel))

    def start_videos(self) -> None:
        """Start the next videos' actors, up to `engine.videos_in_parallel` at once."""
        while self.queue and self.free_slots:
            number, (input_path, output_path) = self.queue.popleft()
            try:
                video = VideoJob.start(number, input_path, output_path, self.cfg, self.pool, self.started,
                                       report_faces=self.report_faces, progress=self.progress,
                                       position=self.free_slots[0] if len(self.jobs) > 1 else None,
                                       setup=self.setup if number == 0 else time.perf_counter() - self.start)
            except (UserError, ModelError) as err:
                if self.skip is None or isinstance(err, RunAborted):
                    raise
                self.skip(input_path, err)
                continue
            self.free_slots.pop(0)
            self.active.append(video)

    def feed(self) -> None:
        """Decode and track ahead within the backpressure budget; give every free SR actor a batch."""
        for video in self.active:
            video.read_ahead(self.waiting)
        self.pool.dispatch(self.active, self.waiting)

    def finish_videos(self) -> None:
        """Send finished chunks to their encoders; close the videos that are done."""
        for video in list(self.active):
            video.write_finished(self.waiting)
            if not video.done(self.waiting):
                continue
            self._leave(video)
            try:
                self.reports[video.number] = video.finish(self.started)
            except (UserError, ModelError) as err:
                video.fail(self.started, self.waiting, err, self.skip)
                continue
            if self.done is not None:
                self.done(self.reports[video.number])

    def collect(self) -> None:
        """Wait for the next result and hand it to its video."""
        if not self.waiting:
            if self.active:
                raise RuntimeError("the Ray engine stalled with work left; this is a bug")
            return
        [ref], _ = ray.wait(list(self.waiting), num_returns=1)
        video, kind, ctx = self.waiting.pop(ref)
        if video.failed:
            if kind in ("sr", "upscaled"):
                self.pool.returned(ctx)
            _collect_abandoned({ref: (video, kind, ctx)})
            return
        try:
            HANDLERS[kind](video, ref, ctx)
        except (UserError, ModelError) as err:
            _collect_abandoned({ref: (video, kind, ctx)})  # its task's other result: the same error
            self._leave(video)
            video.fail(self.started, self.waiting, err, self.skip)

    def _leave(self, video: VideoJob) -> None:
        self.active.remove(video)
        self.free_slots.append(video.position or 0)


@dataclasses.dataclass
class _Started:
    """The actors a job has started so far, to be stopped on any exit."""

    actors: list = dataclasses.field(default_factory=list)
    partials: set = dataclasses.field(default_factory=set)  # the partial files of the videos not finished

    def drop(self, actors, partial: Path | None, *, finished: bool = False) -> None:
        """Stop one video's actors and forget its partial file, which goes unless the video
        `finished` (its output moved into place)."""
        self.partials.discard(partial)
        for actor in actors:
            ray.kill(actor)
            self.actors.remove(actor)
        if not finished:
            _remove(partial)


def _remove(partial: Path | None) -> None:
    """An unfinished video's partial output goes, removed by the driver once the encoder is killed:
    the encoder writes on the driver's node, or on shared storage."""
    if partial is None:
        return
    try:
        partial.unlink(missing_ok=True)
    except OSError as err:
        log.warning("could not remove the partial output %s: %s", partial, err)


def _stop(started: _Started) -> None:
    """Kill the run's actors; a video that did not finish drops its partial output."""
    for actor in started.actors:
        ray.kill(actor)
    started.actors.clear()
    for partial in started.partials:
        _remove(partial)
    started.partials.clear()
