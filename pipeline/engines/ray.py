"""The Ray engine: the steps of `pipeline/stages/chunk.py` on actors, streaming, GPUs kept busy.

    DecodeActor --frames--> TrackActor --one object per aligned crop--> SRActor pool --faces--> EncodeActor
                     (the driver: crop scheduler, backpressure, frame order, retries)

The actors are in `pipeline/engines/ray_actors.py`; this module starts them and drives them.

- The driver feeds each tracked chunk's crops to the crop scheduler (`schedule_chunk`), which
  batches them across tracks and keeps each track's crops in frame order. Each batch goes to a
  free SR actor together with its tracks' committed states: state travels with the crop, so
  any actor can take any track, the pool rebalances by itself as tracks start and end, and a
  dead actor costs only its batches, which run again from the same states.
- Finished chunks go to the EncodeActor strictly in input order, exactly once.
- Backpressure: at most `engine.max_frames_in_flight` frames are decoded and not yet written,
  so memory and object-store use do not grow with the video's length.

Decode, track and encode run on the driver's node (they read and write its files); SR actors go
wherever their resources are.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import deque
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from tqdm import tqdm

from pipeline.engines.ray_actors import DecodeActor, EncodeActor, SRActor, TrackActor, get
from pipeline.errors import UserError, library_log_level, terminate_as_interrupt
from pipeline.report import FaceReport
from pipeline.stages.chunk import TrackedChunk, finish_batch, schedule_chunk
from pipeline.stages.fidelity import FidelityPlanner
from pipeline.stages.scheduler import Batch, CropScheduler, scheduler_for

log = logging.getLogger(__name__)

BATCHES_PER_ACTOR = 2  # one running, one waiting: the next batch's transfer hides behind compute
RESTART_POLL = 0.1  # s between batches offered to an SR actor that Ray is restarting


def connect(cfg) -> bool:
    """Start an embedded Ray or join `engine.ray_address`; True if this call started it."""
    if ray.is_initialized():
        return False
    if cfg.ray_address is None:
        # Ray starts its workers at niceness 15; here they do the work, and beside any busy process
        # they got a few per cent of a core (a 10 s job took 3 minutes next to two CPU-bound ones).
        os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        ray.init(
            address=cfg.ray_address,
            include_dashboard=cfg.dashboard,
            logging_level=library_log_level(),  # ERROR under -q
            log_to_driver=True,
        )
    except ConnectionError as err:
        raise UserError(f"cannot join the Ray cluster at {cfg.ray_address}: {err}") from None
    terminate_as_interrupt()  # Ray's driver installs its own SIGTERM handler; ours cleans up as Ctrl-C does
    return True


def _sr_options(cfg) -> dict[str, Any]:
    """Resources for each SR actor, checked against the cluster so nothing waits forever."""
    available = ray.cluster_resources()
    actors = cfg.sr_actors
    gpus = cfg.num_gpus
    if gpus is None:  # automatic: a GPU per actor where the cluster has them, else the CPU
        gpus = min(1.0, available.get("GPU", 0) / actors) if available.get("GPU", 0) else 0.0
    needs = {"GPU": gpus * actors, **{k: v * actors for k, v in cfg.sr_resources.items()}}
    for name, amount in needs.items():
        if amount > available.get(name, 0) + 1e-9:
            raise UserError(
                f"{actors} SR actor(s) need {amount:g} {name} in all but the Ray cluster has "
                f"{available.get(name, 0):g}; lower engine.sr_actors, engine.num_gpus or engine.sr_resources"
            )
    cpus = min(1.0, available.get("CPU", 1) / actors)
    return {"num_cpus": cpus, "num_gpus": gpus, "resources": dict(cfg.sr_resources), "max_restarts": cfg.max_restarts}


@dataclasses.dataclass
class _Actors:
    decoder: Any
    tracker: Any
    pool: list
    encoder: Any
    info: dict[str, Any]  # the input's size, time base, rate and frame count
    pool_info: list[dict[str, Any]]  # per SR actor: backend name, out_size, stateful, device, node



@dataclasses.dataclass
class _Started:
    """The actors a job has started so far, to be stopped on any exit."""

    actors: list = dataclasses.field(default_factory=list)
    encoder: Any = None  # its partial output is dropped unless the job finished


def _start_actors(input_path, output_path, cfg, started: _Started) -> _Actors:
    """Start every actor and wait until each is ready; each goes into `started` as soon as it exists."""
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    threads = cfg.engine.sr_threads or max(1, (os.cpu_count() or 2) // (cfg.engine.sr_actors + 1))
    sr_options = _sr_options(cfg.engine)
    pool = [SRActor.options(**sr_options).remote(cfg.sr, threads) for _ in range(cfg.engine.sr_actors)]
    started.actors += pool
    decoder = DecodeActor.options(scheduling_strategy=here).remote(str(input_path), cfg.video.decode_threads, cfg.video.strict)
    started.actors.append(decoder)
    get([decoder.ready.remote(), *[a.ready.remote() for a in pool]])  # input opened, weights loaded
    info, *pool_info = get([decoder.info.remote(), *[a.info.remote() for a in pool]])
    tracker = TrackActor.options(scheduling_strategy=here).remote(cfg.detect, cfg.track, pool_info[0]["out_size"])
    encoder = EncodeActor.options(scheduling_strategy=here).remote(
        str(output_path), info, cfg.video, cfg.composite, str(input_path)
    )
    started.actors += [tracker, encoder]
    started.encoder = encoder
    get([tracker.ready.remote(), encoder.ready.remote()])  # detector loaded, output opened
    return _Actors(decoder, tracker, pool, encoder, info, pool_info)


def run_video_ray(input_path, output_path, *, cfg, progress: bool = True, report_faces: bool = True, hooks=None) -> dict:
    """Process a video on Ray actors; the same report as `pipeline.engines.local.run_video`.

    `hooks` is for tests: `hooks.after_batch(actor, batch_number)` runs in the driver after
    each committed batch (e.g. to kill an actor mid-job).
    """
    start = time.perf_counter()
    started_ray = connect(cfg.engine)
    started = _Started()
    try:
        actors = _start_actors(input_path, output_path, cfg, started)
        setup = time.perf_counter() - start
        report = FaceReport(enabled=report_faces)
        sr_info = actors.pool_info[0]
        scheduler = scheduler_for(cfg.sr, stateful=sr_info["stateful"], keyframes=sr_info["keyframes"])
        with tqdm(total=actors.info["frames"], unit="frame", disable=not progress, dynamic_ncols=True, desc="facezoom") as bar:
            driver = _Driver(cfg, actors, scheduler, report, bar, hooks)
            frames_out = driver.run()
        open_tracks, track_seconds = get(actors.tracker.close.remote())
        report.add_tracks(open_tracks)
        damage = get(actors.decoder.damage.remote())
        if damage:
            log.warning("%s", damage)
        frames_written, encode_seconds = get(actors.encoder.close.remote())
        started.encoder = None  # the output is complete
        assert frames_written == frames_out, (frames_written, frames_out)
        return {
            "input": str(input_path),
            "output": str(output_path),
            "engine": "ray",
            "backend": sr_info["name"],
            "sr_actors": [{"node": i["node"], "device": i["device"], "resources": i["resources"]} for i in actors.pool_info],
            "frames_in": frames_out,
            "frames_out": frames_written,
            "frames_expected": actors.info["frames"],
            "warnings": [damage] if damage else [],
            "wall_seconds": round(time.perf_counter() - start, 3),
            # Busy seconds per actor kind; the actors run side by side, so these overlap.
            "stage_seconds": {
                "setup": round(setup, 3), "detect_track": round(track_seconds, 3),
                "sr": round(driver.sr_seconds, 3), "composite_encode": round(encode_seconds, 3),
            },
            **report.to_dict(),
        }
    finally:
        _stop(started)
        if started_ray:
            ray.shutdown()


def _stop(started: _Started) -> None:
    """Kill the job's actors; a job that did not finish first drops its partial output."""
    if started.encoder is not None:
        try:
            ray.get(started.encoder.abort.remote(), timeout=30)
        except Exception as err:  # noqa: BLE001 - best effort while already failing
            log.warning("could not remove the partial output: %s", err)
    for actor in started.actors:
        ray.kill(actor)


@dataclasses.dataclass
class _Chunk:
    number: int  # chunk k holds frames k*chunk .. k*chunk+count-1
    frames_ref: Any
    count: int | None = None  # frames in it, once the decoder says
    tracked: TrackedChunk | None = None  # step 1's result (crop pixels as object refs), once tracked
    pending: int = 0  # crops not yet super-resolved
    faces: dict = dataclasses.field(default_factory=dict)  # (frame, track) -> (faces ref, item)

    @property
    def ready(self) -> bool:
        return self.tracked is not None and self.pending == 0 and self.count is not None


@dataclasses.dataclass
class _Dispatch:
    actor: Any
    batch: Batch
    faces_ref: Any
    number: int  # dispatch order, to tell one death from the next


class _Driver:
    """The driver loop: read ahead, hand batches to SR actors, write finished chunks, wait for one result.

    Every result is handled by `_on_<kind>`; the loop ends when nothing is left in flight.
    """

    def __init__(self, cfg, actors: _Actors, scheduler: CropScheduler, report: FaceReport, bar, hooks):
        self.cfg, self.actors, self.scheduler, self.report, self.bar, self.hooks = cfg, actors, scheduler, report, bar, hooks
        self.pool = list(actors.pool)
        sr = actors.pool_info[0]
        self.plan = FidelityPlanner.for_run(cfg.sr, cfg.composite.scale, out_size=sr["out_size"],
                                            any_input_size=sr["any_input_size"], default_fidelity=1.0)
        self.chunk_size, self.limit = cfg.engine.chunk, cfg.engine.max_frames_in_flight
        self.chunks: deque[_Chunk] = deque()
        self.waiting: dict[Any, tuple[str, Any]] = {}  # object ref -> (what it is, its context)
        self.load = {id(a): 0 for a in self.pool}
        self.deaths: dict[int, int] = {}  # per SR actor: deaths seen
        self.last_death: dict[int, int] = {}  # per SR actor: dispatches up to this number failed with the last death
        self.dispatched = self.in_flight = self.frames_out = self.batches_done = self.next_number = 0
        self.sr_seconds = 0.0
        self.eof = False

    def run(self) -> int:
        """Drive the job to its end; returns the frames written."""
        while True:
            self._read_ahead()
            self._dispatch()
            self._write_finished()
            if not self.waiting:
                if self.chunks or self.scheduler.pending or self.scheduler.in_flight:
                    raise RuntimeError("the Ray engine stalled with work left; this is a bug")
                return self.frames_out
            [ref], _ = ray.wait(list(self.waiting), num_returns=1)
            kind, ctx = self.waiting.pop(ref)
            getattr(self, f"_on_{kind}")(ref, ctx)

    def _read_ahead(self) -> None:
        """Decode and track more chunks while the backpressure budget allows."""
        while not self.eof and self.in_flight + self.chunk_size <= self.limit and len(self.chunks) * self.chunk_size < self.limit:
            count_ref, frames_ref = self.actors.decoder.read.remote(self.chunk_size)
            chunk = _Chunk(self.next_number, frames_ref)
            self.next_number += 1
            self.chunks.append(chunk)
            self.waiting[count_ref] = ("count", chunk)
            self.waiting[self.actors.tracker.process.remote(frames_ref)] = ("tracked", chunk)
            self.in_flight += self.chunk_size  # until the decoder says how many it read

    def _dispatch(self) -> None:
        """First one batch to each idle actor, shared out evenly, then a second, queued batch each,
        so an actor never waits for the driver."""
        for slot in range(BATCHES_PER_ACTOR):
            free = [a for a in self.pool if self.load[id(a)] == slot]
            for n, actor in enumerate(free):
                batch = self.scheduler.next_batch(limit=-(-self.scheduler.ready // (len(free) - n)))
                if batch is None:
                    break
                crops = [job.payload.crop for job in batch.jobs]  # object refs: Ray hands the actor their pixels
                plans = [self.plan.for_crop(job.payload) for job in batch.jobs]
                summary_ref, faces_ref = actor.run.remote(batch.states, [j.seed for j in batch.jobs], plans, self.cfg.sr.pre_blur, *crops)
                self.dispatched += 1
                self.waiting[summary_ref] = ("sr", _Dispatch(actor, batch, faces_ref, self.dispatched))
                self.load[id(actor)] += 1

    def _write_finished(self) -> None:
        """Send every finished chunk at the head to the encoder, in order."""
        while self.chunks and self.chunks[0].ready:
            chunk = self.chunks.popleft()
            if chunk.count:
                self.waiting[_write(self.actors.encoder, chunk)] = ("written", chunk)

    def _on_count(self, ref, chunk: _Chunk) -> None:
        chunk.count = get(ref)
        self.in_flight -= self.chunk_size - chunk.count
        self.eof = self.eof or chunk.count < self.chunk_size

    def _on_tracked(self, ref, chunk: _Chunk) -> None:
        chunk.tracked = get(ref)
        chunk.pending = schedule_chunk(self.scheduler, chunk.tracked, seed=self.cfg.sr.seed)
        self.report.add_detections(chunk.tracked.detections)
        self.report.add_cuts(chunk.tracked.cuts)
        self.report.add_tracks(chunk.tracked.finished)

    def _on_sr(self, ref, ctx: _Dispatch) -> None:
        self.load[id(ctx.actor)] -= 1
        try:
            result, seconds = get(ref)
        except ray.exceptions.RayActorError as err:
            self._on_death(ctx, err)
            return
        finish_batch(self.scheduler, self.report, ctx.batch, result)
        self.sr_seconds += seconds
        for i, job in enumerate(ctx.batch.jobs):
            chunk = self.chunks[job.frame_index // self.chunk_size - self.chunks[0].number]
            chunk.faces[job.frame_index, job.track_id] = (ctx.faces_ref, i)
            chunk.pending -= 1
        self.batches_done += 1
        if self.hooks is not None:
            self.hooks.after_batch(ctx.actor, self.batches_done)

    def _on_death(self, ctx: _Dispatch, err: Exception) -> None:
        """A batch failed because its actor died: run it again; past `max_restarts` deaths, drop the actor.

        One death fails every batch the actor held; they count as one: a failed batch sent
        before the last counted death's failures belongs to that death. A batch refused while
        Ray restarts the actor (`ActorUnavailableError`) is no new death: it runs again a moment later.
        """
        self.scheduler.retry(ctx.batch)
        key = id(ctx.actor)
        if isinstance(err, ray.exceptions.ActorUnavailableError):
            time.sleep(RESTART_POLL)  # not a busy loop of refused batches while the actor comes back
            return
        if ctx.number > self.last_death.get(key, 0):
            self.deaths[key] = self.deaths.get(key, 0) + 1
            self.last_death[key] = self.dispatched
        if self.deaths[key] > self.cfg.engine.max_restarts and ctx.actor in self.pool:
            self.pool.remove(ctx.actor)  # Ray has given up restarting it
            if not self.pool:
                raise RuntimeError(f"every super-resolution actor died more than {self.cfg.engine.max_restarts} times: {err}") from None
            log.warning("a super-resolution actor keeps dying; going on with %d", len(self.pool))
        else:
            log.warning("a super-resolution actor died; its %d crops run again", len(ctx.batch.jobs))

    def _on_written(self, ref, chunk: _Chunk) -> None:
        written = get(ref)
        self.frames_out += written
        self.in_flight -= written
        self.bar.update(written)


def _write(encoder, chunk: _Chunk):
    """Send a finished chunk to the encoder with the faces it needs (each result list once)."""
    refs: list = []
    slot: dict[Any, int] = {}
    placements: dict[tuple[int, int], tuple[int, int]] = {}
    for key, (faces_ref, item) in chunk.faces.items():
        if faces_ref not in slot:
            slot[faces_ref] = len(refs)
            refs.append(faces_ref)
        placements[key] = (slot[faces_ref], item)
    crops = [[dataclasses.replace(c, crop=None) for c in frame_crops] for frame_crops in chunk.tracked.crops]
    return encoder.write.remote(chunk.frames_ref, crops, placements, *refs)
