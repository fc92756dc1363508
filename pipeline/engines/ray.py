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
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from tqdm import tqdm

from models.errors import ModelError
from pipeline.engines.ray_actors import DecodeActor, EncodeActor, SRActor, TrackActor, get
from pipeline.engines.ray_start import connect
from pipeline.errors import RunAborted, UserError
from pipeline.report import FaceReport
from pipeline.stages.chunk import TrackedChunk, finish_batch, schedule_chunk
from pipeline.stages.fidelity import FidelityPlanner
from pipeline.stages.scheduler import Batch, scheduler_for

log = logging.getLogger(__name__)

BATCHES_PER_ACTOR = 2  # one running, one waiting: the next batch's transfer hides behind compute
RESTART_POLL = 0.1  # s between batches offered to an SR actor that Ray is restarting


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
class _Pool:
    """The SR actors every video of the run shares, with their load and deaths."""

    actors: list
    info: list[dict[str, Any]]  # per SR actor: backend name, out_size, stateful, keyframes, device, node
    cfg: Any
    hooks: Any = None
    load: dict[int, int] = dataclasses.field(default_factory=dict)
    deaths: dict[int, int] = dataclasses.field(default_factory=dict)  # per SR actor: deaths seen
    last_death: dict[int, int] = dataclasses.field(default_factory=dict)  # per SR actor: dispatches up to this number failed with it
    dispatched: int = 0
    batches_done: int = 0

    @classmethod
    def start(cls, cfg, started: "_Started", hooks=None) -> "_Pool":
        threads = cfg.engine.sr_threads or max(1, (os.cpu_count() or 2) // (cfg.engine.sr_actors + 1))
        options = _sr_options(cfg.engine)
        actors = [SRActor.options(**options).remote(cfg.sr, threads) for _ in range(cfg.engine.sr_actors)]
        started.actors += actors
        get([a.ready.remote() for a in actors])  # weights loaded
        pool = cls(actors, get([a.info.remote() for a in actors]), cfg, hooks)
        pool.load = {id(a): 0 for a in actors}
        return pool

    def dispatch(self, videos: list["_Video"], waiting: dict) -> None:
        """First one batch to each idle actor, shared out evenly, then a second, queued batch each,
        so an actor never waits for the driver. Videos take turns: the one with most ready crops first."""
        for slot in range(BATCHES_PER_ACTOR):
            free = [a for a in self.actors if self.load[id(a)] == slot]
            for n, actor in enumerate(free):
                video = max(videos, key=lambda v: v.scheduler.ready, default=None)
                if video is None or not video.scheduler.ready:
                    return
                ready = sum(v.scheduler.ready for v in videos)
                batch = video.scheduler.next_batch(limit=-(-ready // (len(free) - n)))
                crops = [job.payload.crop for job in batch.jobs]  # object refs: Ray hands the actor their pixels
                plans = [video.plan.for_crop(job.payload) for job in batch.jobs]
                summary_ref, faces_ref = actor.run.remote(batch.states, [j.seed for j in batch.jobs], batch.gaps, plans, self.cfg.sr.pre_blur, *crops)
                self.dispatched += 1
                waiting[summary_ref] = (video, "sr", _Dispatch(actor, batch, faces_ref, self.dispatched))
                self.load[id(actor)] += 1

    def returned(self, ctx: "_Dispatch") -> None:
        self.load[id(ctx.actor)] -= 1

    def after_batch(self, actor) -> None:
        self.batches_done += 1
        if self.hooks is not None:
            self.hooks.after_batch(actor, self.batches_done)

    def on_death(self, ctx: "_Dispatch", err: Exception) -> None:
        """A batch failed because its actor died; past `max_restarts` deaths, drop the actor.

        One death fails every batch the actor held; they count as one: a failed batch sent
        before the last counted death's failures belongs to that death. A batch refused while
        Ray restarts the actor (`ActorUnavailableError`) is no new death: it runs again a moment later.
        """
        key = id(ctx.actor)
        if isinstance(err, ray.exceptions.ActorUnavailableError):
            time.sleep(RESTART_POLL)  # not a busy loop of refused batches while the actor comes back
            return
        if ctx.number > self.last_death.get(key, 0):
            self.deaths[key] = self.deaths.get(key, 0) + 1
            self.last_death[key] = self.dispatched
        if self.deaths[key] > self.cfg.engine.max_restarts and ctx.actor in self.actors:
            self.actors.remove(ctx.actor)  # Ray has given up restarting it
            if not self.actors:
                cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise RunAborted(f"every super-resolution actor died more than engine.max_restarts={self.cfg.engine.max_restarts} "
                                f"times (last: {cause}); an actor that runs out of memory dies this way: lower sr.batch_size "
                                "or engine.sr_actors, or raise engine.max_restarts") from None
            log.warning("a super-resolution actor keeps dying; going on with %d", len(self.actors))
        else:
            log.warning("a super-resolution actor died; its %d crops run again", len(ctx.batch.jobs))


@dataclasses.dataclass
class _Started:
    """The actors a job has started so far, to be stopped on any exit."""

    actors: list = dataclasses.field(default_factory=list)
    encoders: list = dataclasses.field(default_factory=list)  # their partial outputs are dropped unless their videos finished

    def drop(self, actors, *, abort=None) -> None:
        """Stop some of the actors (one video's); `abort`: its encoder, whose partial output goes first."""
        if abort is not None:
            try:
                ray.get(abort.abort.remote(), timeout=30)
            except Exception as err:  # noqa: BLE001 - best effort while already failing
                log.warning("could not remove the partial output: %s", err)
        for actor in actors:
            if actor in self.encoders:
                self.encoders.remove(actor)
            ray.kill(actor)
            self.actors.remove(actor)


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
    active: list[_Video] = []
    try:
        pool = _Pool.start(cfg, started, hooks)
        setup = time.perf_counter() - start
        reports: list[dict | None] = [None] * len(jobs)
        queue = deque(enumerate(jobs))
        waiting: dict[Any, tuple[_Video, str, Any]] = {}  # object ref -> (its video, what it is, its context)
        free_slots = list(range(cfg.engine.videos_in_parallel))
        while queue or active:
            while queue and free_slots:
                number, (input_path, output_path) = queue.popleft()
                try:
                    video = _Video.start(number, input_path, output_path, cfg, pool, started, report_faces=report_faces,
                                         progress=progress, position=free_slots[0] if len(jobs) > 1 else None,
                                         setup=setup if number == 0 else time.perf_counter() - start)
                except (UserError, ModelError) as err:
                    if skip is None or isinstance(err, RunAborted):
                        raise
                    skip(input_path, err)
                    continue
                free_slots.pop(0)
                active.append(video)
            for video in active:
                video.read_ahead(waiting)
            pool.dispatch(active, waiting)
            for video in list(active):
                video.write_finished(waiting)
                if video.done(waiting):
                    active.remove(video)
                    free_slots.append(video.position or 0)
                    try:
                        reports[video.number] = video.finish(started)
                    except (UserError, ModelError) as err:
                        video.fail(started, waiting, err, skip)
                        continue
                    if done is not None:
                        done(reports[video.number])
            if not waiting:
                if active:
                    raise RuntimeError("the Ray engine stalled with work left; this is a bug")
                continue
            [ref], _ = ray.wait(list(waiting), num_returns=1)
            video, kind, ctx = waiting.pop(ref)
            if video.failed:
                if kind == "sr":
                    pool.returned(ctx)
                continue
            try:
                getattr(video, f"on_{kind}")(ref, ctx)
            except (UserError, ModelError) as err:
                active.remove(video)
                free_slots.append(video.position or 0)
                video.fail(started, waiting, err, skip)
        return reports
    finally:
        for video in active:  # their bars end before the run's last line (an interrupt's, an error's)
            video.bar.close()
        _stop(started)
        if started_ray:
            ray.shutdown()


def _stop(started: _Started) -> None:
    """Kill the run's actors; a video that did not finish first drops its partial output."""
    for encoder in started.encoders:
        try:
            ray.get(encoder.abort.remote(), timeout=30)
        except Exception as err:  # noqa: BLE001 - best effort while already failing
            log.warning("could not remove a partial output: %s", err)
    started.encoders.clear()
    for actor in started.actors:
        ray.kill(actor)
    started.actors.clear()


@dataclasses.dataclass
class _Chunk:
    number: int  # chunk k holds frames k*chunk .. k*chunk+count-1
    frames_ref: Any
    count: int | None = None  # frames in it, once the decoder says
    tracked: TrackedChunk | None = None  # step 1's result (crop pixels as object refs), once scheduled
    arrived: TrackedChunk | None = None  # step 1's result, before the chunks ahead of it are scheduled
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


class _Video:
    """One video's part of the run: its decode, track and encode actors, its crop scheduler and
    report; read ahead, write finished chunks in order, and handle each result (`on_<kind>`)."""

    def __init__(self, number, input_path, output_path, cfg, pool: _Pool, actors: dict, *, report_faces, progress, position, setup):
        self.number, self.input, self.output, self.cfg, self.pool, self.position = number, input_path, output_path, cfg, pool, position
        self.decoder, self.tracker, self.encoder, self.info = actors["decoder"], actors["tracker"], actors["encoder"], actors["info"]
        self.nodes = actors["nodes"]
        sr = pool.info[0]
        self.scheduler = scheduler_for(cfg.sr, stateful=sr["stateful"], keyframes=sr["keyframes"])
        self.plan = FidelityPlanner.for_run(cfg.sr, cfg.composite.scale, out_size=sr["out_size"],
                                            any_input_size=sr["any_input_size"], default_fidelity=1.0)
        self.report = FaceReport(enabled=report_faces)
        self.bar = tqdm(total=self.info["frames"], unit="frame", disable=not progress, dynamic_ncols=True,
                        desc=Path(input_path).name if position is not None else "facezoom",
                        position=None if position is None else position + 1, leave=position is None)
        self.chunk_size, self.limit = cfg.engine.chunk, cfg.engine.max_frames_in_flight
        self.chunks: deque[_Chunk] = deque()
        self.in_flight = self.frames_out = self.next_number = 0
        self.sr_seconds, self.setup, self.started_at = 0.0, setup, time.perf_counter()
        self.eof = self.failed = False

    @classmethod
    def start(cls, number, input_path, output_path, cfg, pool, started: _Started, **kwargs) -> "_Video":
        """Start the video's actors and wait until each is ready. Without `engine.shared_storage` they
        run on the driver's node, whose files they read and write; with it, anywhere (spread)."""
        place = "SPREAD" if cfg.engine.shared_storage else NodeAffinitySchedulingStrategy(
            node_id=ray.get_runtime_context().get_node_id(), soft=False)
        first, encoder = len(started.actors), None
        try:
            decoder = DecodeActor.options(scheduling_strategy=place).remote(str(input_path), cfg.video.decode_threads, cfg.video.strict)
            started.actors.append(decoder)
            get(decoder.ready.remote())  # input opened
            info = get(decoder.info.remote())
            tracker = TrackActor.options(scheduling_strategy=place).remote(cfg.detect, cfg.track, pool.info[0]["out_size"], pool.info[0]["framing"])
            encoder = EncodeActor.options(scheduling_strategy=place).remote(str(output_path), info, cfg.video, cfg.composite, str(input_path))
            started.actors += [tracker, encoder]
            started.encoders.append(encoder)
            get([tracker.ready.remote(), encoder.ready.remote()])  # detector loaded, output opened
            nodes = dict(zip(("decode", "track", "encode"), get([a.node.remote() for a in (decoder, tracker, encoder)])))
        except (UserError, ModelError):
            started.drop(started.actors[first:], abort=encoder)  # a folder's next videos go on without this one's actors
            raise
        actors = {"decoder": decoder, "tracker": tracker, "encoder": encoder, "info": info, "nodes": nodes}
        return cls(number, input_path, output_path, cfg, pool, actors, **kwargs)

    def done(self, waiting: dict) -> bool:
        return self.eof and not self.chunks and not any(v is self for v, _, _ in waiting.values())

    def read_ahead(self, waiting: dict) -> None:
        """Decode and track more chunks while the backpressure budget allows."""
        while not self.eof and self.in_flight + self.chunk_size <= self.limit and len(self.chunks) * self.chunk_size < self.limit:
            count_ref, frames_ref = self.decoder.read.remote(self.chunk_size)
            chunk = _Chunk(self.next_number, frames_ref)
            self.next_number += 1
            self.chunks.append(chunk)
            waiting[count_ref] = (self, "count", chunk)
            waiting[self.tracker.process.remote(frames_ref)] = (self, "tracked", chunk)
            self.in_flight += self.chunk_size  # until the decoder says how many it read

    def write_finished(self, waiting: dict) -> None:
        """Send every finished chunk at the head to the encoder, in order."""
        while self.chunks and self.chunks[0].ready:
            chunk = self.chunks.popleft()
            if chunk.count:
                waiting[_write(self.encoder, chunk)] = (self, "written", chunk)

    def on_count(self, ref, chunk: _Chunk) -> None:
        chunk.count = get(ref)
        self.in_flight -= self.chunk_size - chunk.count
        self.eof = self.eof or chunk.count < self.chunk_size

    def on_tracked(self, ref, chunk: _Chunk) -> None:
        """Schedule tracked chunks in frame order: the scheduler takes a track's crops in order, and
        one tracker's results may become ready out of order (a small result that rides in the task's
        reply can overtake a larger one in the object store; seen on a loaded CI machine)."""
        chunk.arrived = get(ref)
        for chunk in self.chunks:
            if chunk.tracked is not None:
                continue
            if chunk.arrived is None:
                break
            chunk.tracked, chunk.arrived = chunk.arrived, None
            chunk.pending = schedule_chunk(self.scheduler, chunk.tracked, seed=self.cfg.sr.seed)
            self.report.add_detections(chunk.tracked.detections)
            self.report.add_cuts(chunk.tracked.cuts)
            self.report.add_tracks(chunk.tracked.finished)

    def on_sr(self, ref, ctx: _Dispatch) -> None:
        self.pool.returned(ctx)
        try:
            result, seconds = get(ref)
        except ray.exceptions.RayActorError as err:
            self.scheduler.retry(ctx.batch)
            self.pool.on_death(ctx, err)
            return
        finish_batch(self.scheduler, self.report, ctx.batch, result)
        self.sr_seconds += seconds
        for i, job in enumerate(ctx.batch.jobs):
            chunk = self.chunks[job.frame_index // self.chunk_size - self.chunks[0].number]
            chunk.faces[job.frame_index, job.track_id] = (ctx.faces_ref, i)
            chunk.pending -= 1
        self.pool.after_batch(ctx.actor)

    def on_written(self, ref, chunk: _Chunk) -> None:
        written = get(ref)
        self.frames_out += written
        self.in_flight -= written
        self.bar.update(written)

    def finish(self, started: _Started) -> dict:
        """Close the video's actors and the output; its report."""
        self.bar.close()
        open_tracks, track_seconds = get(self.tracker.close.remote())
        self.report.add_tracks(open_tracks)
        damage = get(self.decoder.damage.remote())
        if damage:
            log.warning("%s", damage)
        frames_written, encode_seconds = get(self.encoder.close.remote())
        started.drop([self.decoder, self.tracker, self.encoder])  # the output is complete: not aborted
        assert frames_written == self.frames_out, (frames_written, self.frames_out)
        return {
            "input": str(self.input),
            "output": str(self.output),
            "engine": "ray",
            "backend": self.pool.info[0]["name"],
            "sr_actors": [{"node": i["node"], "device": i["device"], "resources": i["resources"]} for i in self.pool.info],
            "video_actors": self.nodes,
            "frames_in": self.frames_out,
            "frames_out": frames_written,
            "frames_expected": self.info["frames"],
            "warnings": [damage] if damage else [],
            "wall_seconds": round(time.perf_counter() - self.started_at + self.setup, 3),
            # Busy seconds per actor kind; the actors run side by side, so these overlap.
            "stage_seconds": {
                "setup": round(self.setup, 3), "detect_track": round(track_seconds, 3),
                "sr": round(self.sr_seconds, 3), "composite_encode": round(encode_seconds, 3),
            },
            **self.report.to_dict(),
        }

    def fail(self, started: _Started, waiting: dict, err: Exception, skip) -> None:
        """A user-facing error in this video: drop its partial output and its actors; the others go on."""
        self.failed = True
        self.bar.close()
        if skip is None or isinstance(err, RunAborted):  # RunAborted: every other video would meet it too
            raise err
        started.drop([self.decoder, self.tracker, self.encoder], abort=self.encoder)
        for ref, (video, kind, ctx) in list(waiting.items()):
            if video is self and kind != "sr":  # its SR batches return to free their actors' slots
                del waiting[ref]
        skip(self.input, err)


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
