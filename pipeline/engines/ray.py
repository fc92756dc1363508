"""The Ray engine: the local engine's stages on actors, streaming, with GPUs kept busy.

    DecodeActor --frames--> TrackActor --one object per aligned crop--> SRActor pool --faces--> EncodeActor
                     (the driver: crop scheduler, backpressure, frame order, retries)

- DecodeActor reads the input in chunks; TrackActor detects, tracks and aligns (sequential: a
  tracker needs every frame in order); each aligned crop goes into the object store by itself.
- The driver feeds the crops to the crop scheduler (`pipeline/scheduler.py`), which batches them
  across tracks and keeps each track's crops in frame order. Each batch goes to a free SR actor
  together with its tracks' committed states: state travels with the crop, so any actor can
  take any track, the pool rebalances by itself as tracks start and end, and a dead actor
  costs only its batches, which run again from the same states.
- EncodeActor composites and encodes whole chunks, strictly in input order, exactly once.
- Backpressure: at most `engine.max_frames_in_flight` frames are decoded and not yet written,
  so memory and object-store use do not grow with the video's length.

Decode, track and encode run on the driver's node (they read and write its files); SR actors go
wherever their resources are.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from collections import deque
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from tqdm import tqdm

from models.errors import ModelError
from pipeline.stages.composite import PasteFace, composite
from pipeline.errors import UserError
from pipeline.stages.faces import FaceAnalyzer
from pipeline.media.video import VideoReader, VideoWriter, keep_frame_memory_flat
from pipeline.report import FaceReport
from pipeline.stages.scheduler import Batch, CropJob, CropScheduler, crop_seed
from pipeline.stages.superres import create_backend, run_batch

log = logging.getLogger(__name__)

BATCHES_PER_ACTOR = 2  # one running, one waiting: the next batch's transfer hides behind compute


def _setup_errors_reach_the_driver(cls):
    """Keep a user-facing error raised while an actor sets up, and raise it from `ready()`.

    Raised from `__init__` it would kill the actor: the driver would see `ActorDiedError`, which
    drops the cause, and the worker's traceback. Raised from a method, it reaches the driver as
    itself (`_get`), and the CLI prints its one line.
    """
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        self._setup_error = None
        try:
            init(self, *args, **kwargs)
        except (UserError, ModelError) as err:
            self._setup_error = err

    def ready(self) -> bool:
        if self._setup_error is not None:
            raise self._setup_error
        return True

    cls.__init__, cls.ready = __init__, ready
    return cls


@ray.remote(num_cpus=0)
@_setup_errors_reach_the_driver
class DecodeActor:
    def __init__(self, path: str, threads: int):
        keep_frame_memory_flat()
        self._reader = VideoReader(path, threads=threads)
        self._frames = iter(self._reader)

    def info(self) -> dict[str, Any]:
        r = self._reader
        return {"width": r.width, "height": r.height, "time_base": r.time_base, "rate": r.rate, "frames": r.frame_count}

    @ray.method(num_returns=2)
    def read(self, n: int):
        chunk = list(itertools.islice(self._frames, n))
        return len(chunk), chunk


@ray.remote(num_cpus=0)
@_setup_errors_reach_the_driver
class TrackActor:
    def __init__(self, detect_cfg, track_cfg, crop_size: int):
        keep_frame_memory_flat()
        self._analyzer = FaceAnalyzer(detect_cfg, track_cfg, crop_size=crop_size)
        self.busy = 0.0

    def process(self, frames: list) -> dict[str, Any]:
        """Per frame, the crops' metadata with each aligned crop as its own object ref."""
        if not frames:
            return {"crops": [], "detections": [], "finished": []}
        start = time.perf_counter()
        crops = self._analyzer.process([f.image for f in frames], frames[0].index)
        self.busy += time.perf_counter() - start
        return {
            "crops": [[(dataclasses.replace(c, crop=None), ray.put(c.crop)) for c in cs] for cs in crops],
            "detections": self._analyzer.last_detections,
            "finished": self._analyzer.pop_finished_tracks(),
        }

    def close(self) -> tuple[list, float]:
        """End of stream: the tracks still open, and the seconds spent detecting and tracking."""
        return self._analyzer.close(), self.busy


@ray.remote
@_setup_errors_reach_the_driver
class SRActor:
    def __init__(self, sr_cfg, threads: int):
        keep_frame_memory_flat()
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._backend = create_backend(sr_cfg)

    def info(self) -> dict[str, Any]:
        b = self._backend
        context = ray.get_runtime_context()
        return {
            "name": b.name, "out_size": b.out_size, "stateful": b.stateful, "device": str(b.device),
            "node": context.get_node_id(), "resources": context.get_assigned_resources(),
        }

    @ray.method(num_returns=2)
    def run(self, states: list, seeds: list[int], pre_blur: bool, *crops: np.ndarray):
        start = time.perf_counter()
        result = run_batch(self._backend, crops, states, seeds, pre_blur=pre_blur)
        summary = {k: getattr(result, k) for k in ("states", "consistency", "success", "steps")}
        summary["seconds"] = time.perf_counter() - start
        return summary, result.faces


@ray.remote(num_cpus=0)
@_setup_errors_reach_the_driver
class EncodeActor:
    def __init__(self, output: str, info: dict[str, Any], video_cfg, composite_cfg, audio_from: str):
        keep_frame_memory_flat()
        self._composite_cfg = composite_cfg
        width, height = composite_cfg.output_size(info["width"], info["height"])
        self._writer = VideoWriter(
            output, width=width, height=height,
            time_base=info["time_base"], rate=info["rate"], cfg=video_cfg, audio_from=audio_from,
        )
        self._writer.__enter__()
        self.busy = 0.0

    def write(self, frames: list, placements: list, *face_lists: list) -> int:
        """Composite and encode one chunk. placements[i]: (matrix, track_id, box, list, item) per face."""
        start = time.perf_counter()
        for frame, faces in zip(frames, placements, strict=True):
            paste = [PasteFace(m, face_lists[li][ii], tid, box) for m, tid, box, li, ii in faces]
            self._writer.write(composite(frame.image, paste, self._composite_cfg), frame.pts)
        self.busy += time.perf_counter() - start
        return len(frames)

    def close(self) -> tuple[int, float]:
        """Finish the file: the frames written, and the seconds spent compositing and encoding."""
        self._writer.__exit__(None, None, None)
        return self._writer.frames_written, self.busy

    def abort(self) -> None:
        if getattr(self, "_writer", None) is not None:  # None: it never opened (its own set-up error)
            self._writer.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)


@dataclasses.dataclass
class _Chunk:
    number: int  # chunk k holds frames k*chunk .. k*chunk+count-1
    frames_ref: Any
    count: int | None = None  # frames in it, once the decoder says
    crops: list | None = None  # per frame: [(FaceCrop without pixels, crop ref)], once tracked
    pending: int = 0  # crops not yet super-resolved
    faces: dict = dataclasses.field(default_factory=dict)  # (frame, track) -> (faces ref, item)


@dataclasses.dataclass
class _Dispatch:
    actor: Any
    batch: Batch
    faces_ref: Any


def connect(cfg) -> bool:
    """Start an embedded Ray or join `engine.ray_address`; True if this call started it."""
    if ray.is_initialized():
        return False
    try:
        ray.init(
            address=cfg.ray_address,
            include_dashboard=cfg.dashboard,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
    except ConnectionError as err:
        raise UserError(f"cannot join the Ray cluster at {cfg.ray_address}: {err}") from None
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


def run_video_ray(input_path, output_path, *, cfg, progress: bool = True, report_faces: bool = True, hooks=None) -> dict:
    """Process a video on Ray actors; the same report as `pipeline.engines.local.run_video`.

    `hooks` is for tests: `hooks.after_batch(actor, batch_number)` runs in the driver after
    each committed batch (e.g. to kill an actor mid-job).
    """
    start = time.perf_counter()
    started = connect(cfg.engine)
    actors: list = []
    encoder = None
    try:
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        threads = max(1, (os.cpu_count() or 2) // (cfg.engine.sr_actors + 1))
        sr_options = _sr_options(cfg.engine)
        pool = [
            SRActor.options(**sr_options).remote(cfg.sr, cfg.engine.sr_threads or threads)
            for _ in range(cfg.engine.sr_actors)
        ]
        actors += pool
        decoder = DecodeActor.options(scheduling_strategy=here).remote(str(input_path), cfg.video.decode_threads)
        actors.append(decoder)
        _get([decoder.ready.remote(), *[a.ready.remote() for a in pool]])  # input opened, weights loaded
        info, *pool_info = _get([decoder.info.remote(), *[a.info.remote() for a in pool]])
        sr_info = pool_info[0]
        tracker = TrackActor.options(scheduling_strategy=here).remote(
            cfg.detect, cfg.track, sr_info["out_size"]
        )
        encoder = EncodeActor.options(scheduling_strategy=here).remote(
            str(output_path), info, cfg.video, cfg.composite, str(input_path)
        )
        actors += [tracker, encoder]
        _get([tracker.ready.remote(), encoder.ready.remote()])  # detector loaded, output opened
        setup = time.perf_counter() - start
        report = FaceReport(enabled=report_faces)
        scheduler = CropScheduler(stateful=sr_info["stateful"], batch_size=cfg.sr.batch_size)
        with tqdm(total=info["frames"], unit="frame", disable=not progress, dynamic_ncols=True, desc="facezoom") as bar:
            frames_out, sr_seconds = _drive(cfg, decoder, tracker, pool, encoder, scheduler, report, bar, hooks)
        open_tracks, track_seconds = _get(tracker.close.remote())
        report.add_tracks(open_tracks)
        frames_written, encode_seconds = _get(encoder.close.remote())
        encoder = None
        assert frames_written == frames_out, (frames_written, frames_out)
        return {
            "input": str(input_path),
            "output": str(output_path),
            "engine": "ray",
            "backend": sr_info["name"],
            "sr_actors": [{"node": i["node"], "device": i["device"], "resources": i["resources"]} for i in pool_info],
            "frames_in": frames_out,
            "frames_out": frames_written,
            "wall_seconds": round(time.perf_counter() - start, 3),
            # Busy seconds per actor kind; the actors run side by side, so these overlap.
            "stage_seconds": {
                "setup": round(setup, 3), "detect_track": round(track_seconds, 3),
                "sr": round(sr_seconds, 3), "composite_encode": round(encode_seconds, 3),
            },
            **report.to_dict(),
        }
    finally:
        if encoder is not None:  # the job did not finish: drop the partial file before anything else
            try:
                ray.get(encoder.abort.remote(), timeout=30)
            except Exception as err:  # noqa: BLE001 - best effort while already failing
                log.warning("could not remove the partial output: %s", err)
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def _drive(cfg, decoder, tracker, pool, encoder, scheduler, report, bar, hooks) -> int:
    """The driver loop: read, track, schedule, super-resolve, write; returns frames written and SR busy seconds."""
    chunk_size, limit = cfg.engine.chunk, cfg.engine.max_frames_in_flight
    chunks: deque[_Chunk] = deque()
    waiting: dict[Any, tuple[str, Any]] = {}  # object ref -> (what it is, its context)
    load = {id(a): 0 for a in pool}
    failures: dict[int, int] = {}
    in_flight = frames_out = batches_done = next_number = 0
    sr_seconds = 0.0
    eof = False

    while True:
        # 1. Read ahead while the backpressure budget allows.
        while not eof and in_flight + chunk_size <= limit and len(chunks) * chunk_size < limit:
            count_ref, frames_ref = decoder.read.remote(chunk_size)
            chunk = _Chunk(next_number, frames_ref)
            next_number += 1
            chunks.append(chunk)
            waiting[count_ref] = ("count", chunk)
            waiting[tracker.process.remote(frames_ref)] = ("tracked", chunk)
            in_flight += chunk_size  # until the decoder says how many it read
        # 2. Hand ready crops to actors: first one batch to each idle actor, shared out evenly,
        #    then a second, queued batch each, so an actor never waits for the driver.
        for slot in range(BATCHES_PER_ACTOR):
            free = [a for a in pool if load[id(a)] == slot]
            for n, actor in enumerate(free):
                batch = scheduler.next_batch(limit=-(-scheduler.ready // (len(free) - n)))
                if batch is None:
                    break
                summary_ref, faces_ref = actor.run.remote(
                    batch.states, [j.seed for j in batch.jobs], cfg.sr.pre_blur, *[j.payload[1] for j in batch.jobs]
                )
                waiting[summary_ref] = ("sr", _Dispatch(actor, batch, faces_ref))
                load[id(actor)] += 1
        # 3. Write every finished chunk at the head, in order.
        while chunks and chunks[0].crops is not None and chunks[0].pending == 0 and chunks[0].count is not None:
            chunk = chunks.popleft()
            if chunk.count:
                waiting[_write(encoder, chunk)] = ("written", chunk)
        if not waiting:
            if chunks or scheduler.pending or scheduler.in_flight:
                raise RuntimeError("the Ray engine stalled with work left; this is a bug")
            return frames_out, sr_seconds
        # 4. Wait for the next result.
        [ref], _ = ray.wait(list(waiting), num_returns=1)
        kind, ctx = waiting.pop(ref)
        if kind == "count":
            ctx.count = _get(ref)
            in_flight -= chunk_size - ctx.count
            eof = eof or ctx.count < chunk_size
        elif kind == "tracked":
            result = _get(ref)
            ctx.crops = result["crops"]
            for frame_crops in ctx.crops:
                for meta, crop_ref in frame_crops:
                    seed = crop_seed(cfg.sr.seed, meta.track_id, meta.frame_index)
                    scheduler.add(CropJob(meta.frame_index, meta.track_id, seed, payload=(meta, crop_ref)))
                    ctx.pending += 1
            for record in result["finished"]:
                scheduler.end_track(record.track_id)
            report.add_detections(result["detections"])
            report.add_tracks(result["finished"])
        elif kind == "sr":
            load[id(ctx.actor)] -= 1
            try:
                summary = _get(ref)
            except ray.exceptions.RayActorError as err:
                scheduler.retry(ctx.batch)
                failures[id(ctx.actor)] = failures.get(id(ctx.actor), 0) + 1
                # A death fails every batch the actor held (up to BATCHES_PER_ACTOR); past max_restarts
                # deaths Ray has given up restarting it.
                if failures[id(ctx.actor)] > (cfg.engine.max_restarts + 1) * BATCHES_PER_ACTOR:
                    pool.remove(ctx.actor)
                    if not pool:
                        raise RuntimeError(f"every super-resolution actor died more than {cfg.engine.max_restarts} times: {err}") from None
                    log.warning("a super-resolution actor keeps dying; going on with %d", len(pool))
                else:
                    log.warning("a super-resolution actor died; its %d crops run again", len(ctx.batch.jobs))
                continue
            scheduler.commit(ctx.batch, summary["states"])
            sr_seconds += summary["seconds"]
            for i, job in enumerate(ctx.batch.jobs):
                chunk = chunks[job.frame_index // chunk_size - chunks[0].number]
                chunk.faces[job.frame_index, job.track_id] = (ctx.faces_ref, i)
                chunk.pending -= 1
                report.add_face(
                    job.payload[0],
                    consistency=summary["consistency"][i], success=summary["success"][i], steps=summary["steps"][i],
                )
            batches_done += 1
            if hooks is not None:
                hooks.after_batch(ctx.actor, batches_done)
        elif kind == "written":
            written = _get(ref)
            frames_out += written
            in_flight -= written
            bar.update(written)


def _write(encoder, chunk: _Chunk):
    """Send a finished chunk to the encoder with the faces it needs (each result list once)."""
    refs: list = []
    slot: dict[Any, int] = {}
    placements = []
    for frame_crops in chunk.crops:
        faces = []
        for meta, _ in frame_crops:
            faces_ref, item = chunk.faces[meta.frame_index, meta.track_id]
            if faces_ref not in slot:
                slot[faces_ref] = len(refs)
                refs.append(faces_ref)
            faces.append((meta.matrix, meta.track_id, meta.box, slot[faces_ref], item))
        placements.append(faces)
    return encoder.write.remote(chunk.frames_ref, placements, *refs)


def _get(refs):
    """ray.get, re-raising a user-facing error from an actor as itself (one line, no remote traceback)."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, (UserError, ModelError)):
            raise cause from None
        raise
