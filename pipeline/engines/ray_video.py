"""One video of a Ray run: its decode, track and encode actors, its `SRStep`, its chunks in flight.

`pipeline/engines/ray.py` starts a `VideoJob` per video, lets it read ahead (`read_ahead`), sends
its batches to the shared `SRPool`, and hands every result back to it through `HANDLERS`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from tqdm import tqdm

from models.errors import ModelError
from pipeline.engines.ray_actors import DecodeActor, EncodeActor, TrackActor, get
from pipeline.engines.ray_pool import Dispatch, SRPool
from pipeline.errors import RunAborted, UserError
from pipeline.media.files import temp_path_beside
from pipeline.report import run_report
from pipeline.stages.chunk import SRStep, TrackedChunk

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Chunk:
    number: int  # chunk k holds frames k*chunk .. k*chunk+count-1
    frames_ref: Any
    count: int | None = None  # frames in it, once the decoder says
    tracked: TrackedChunk | None = None  # step 1's result (crop pixels as object refs), once scheduled
    arrived: TrackedChunk | None = None  # step 1's result, before the chunks ahead of it are scheduled
    pending: int = 0  # crops not yet super-resolved
    faces: dict = dataclasses.field(default_factory=dict)  # (frame, track) -> (faces ref, item)
    upscaled: Any = None  # the frame model's output (an object ref), once made
    upscaling: bool = False  # a frame model enlarges this chunk's frames

    @property
    def ready(self) -> bool:
        return (self.tracked is not None and self.pending == 0 and self.count is not None
                and (self.upscaled is not None or not self.upscaling))


class VideoJob:
    """One video's part of the run: its decode, track and encode actors and its `SRStep`; it reads
    ahead, writes finished chunks in order, and takes each result back (`HANDLERS`)."""

    def __init__(self, number, input_path, output_path, cfg, pool: SRPool, actors: dict, *, report_faces, progress, position, setup):
        self.number, self.input, self.output, self.cfg, self.pool, self.position = number, input_path, output_path, cfg, pool, position
        self.decoder, self.tracker, self.encoder, self.info = actors["decoder"], actors["tracker"], actors["encoder"], actors["info"]
        self.nodes, self.partial = actors["nodes"], actors["partial"]
        self.step = SRStep(cfg, pool.backend, report=report_faces)
        self.bar = tqdm(total=self.info["frames"], unit="frame", disable=not progress, dynamic_ncols=True,
                        desc=Path(input_path).name if position is not None else "facezoom",
                        position=None if position is None else position + 1, leave=position is None)
        self.chunk_size, self.limit = cfg.engine.chunk, cfg.engine.max_frames_in_flight
        self.chunks: deque[_Chunk] = deque()
        self.in_flight = self.frames_in = self.frames_out = self.next_number = 0
        self.to_upscale: deque[_Chunk] = deque()  # chunks waiting for an SR actor's frame model (composite.upscaler)
        self.sr_seconds = self.frame_sr_seconds = 0.0
        self.setup, self.started_at, self.first_frame = setup, time.perf_counter(), None
        self.eof = self.failed = False

    @classmethod
    def start(cls, number, input_path, output_path, cfg, pool, started, **kwargs) -> "VideoJob":
        """Start the video's actors and wait until each is ready. Without `engine.shared_storage` they
        run on the driver's node, whose files they read and write; with it, anywhere (spread)."""
        place = "SPREAD" if cfg.engine.shared_storage else NodeAffinitySchedulingStrategy(
            node_id=ray.get_runtime_context().get_node_id(), soft=False)
        first, partial = len(started.actors), None
        try:
            decoder = DecodeActor.options(scheduling_strategy=place).remote(str(input_path), cfg.video.decode_threads, cfg.video.strict)
            started.actors.append(decoder)
            get(decoder.ready.remote())  # input opened
            info = get(decoder.info.remote())
            tracker = TrackActor.options(scheduling_strategy=place).remote(cfg.detect, cfg.track, pool.backend.out_size, pool.backend.framing)
            partial = temp_path_beside(Path(output_path))  # the driver's: it removes it if the video does not finish
            started.partials.add(partial)
            encoder = EncodeActor.options(scheduling_strategy=place).remote(str(output_path), info, cfg.video, cfg.composite,
                                                                             str(input_path), str(partial))
            started.actors += [tracker, encoder]
            get([tracker.ready.remote(), encoder.ready.remote()])  # detector loaded, output opened
            nodes = dict(zip(("decode", "track", "encode"), get([a.node.remote() for a in (decoder, tracker, encoder)])))
        except (UserError, ModelError):
            started.drop(started.actors[first:], partial)  # a folder's next videos go on without this one's actors
            raise
        actors = {"decoder": decoder, "tracker": tracker, "encoder": encoder, "info": info, "nodes": nodes, "partial": partial}
        return cls(number, input_path, output_path, cfg, pool, actors, **kwargs)

    def done(self, waiting: dict) -> bool:
        return self.eof and not self.chunks and not any(v is self for v, _, _ in waiting.values())

    def read_ahead(self, waiting: dict) -> None:
        """Decode and track more chunks while the backpressure budget allows."""
        while not self.eof and self.in_flight + self.chunk_size <= self.limit and len(self.chunks) * self.chunk_size < self.limit:
            count_ref, frames_ref = self.decoder.read.remote(self.chunk_size)
            chunk = _Chunk(self.next_number, frames_ref, upscaling=self.cfg.composite.upscaler is not None and self.cfg.composite.scale > 1)
            self.next_number += 1
            self.chunks.append(chunk)
            if chunk.upscaling:
                self.to_upscale.append(chunk)
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
        self.frames_in += chunk.count
        self.first_frame = self.first_frame or time.perf_counter()
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
            chunk.pending = self.step.add(chunk.tracked)

    def on_sr(self, ref, ctx: Dispatch) -> None:
        self.pool.returned(ctx)
        try:
            result, seconds = get(ref)
        except ray.exceptions.RayActorError as err:
            self.step.retry(ctx.work)
            self.pool.on_death(ctx, err)
            return
        self.step.commit(ctx.work, result)
        self.sr_seconds += seconds
        for i, job in enumerate(ctx.work.jobs):
            chunk = self.chunks[job.frame_index // self.chunk_size - self.chunks[0].number]
            chunk.faces[job.frame_index, job.track_id] = (ctx.result_ref, i)
            chunk.pending -= 1
        self.pool.after_batch(ctx.actor)

    def on_upscaled(self, ref, ctx: Dispatch) -> None:
        self.pool.returned(ctx)
        try:
            self.frame_sr_seconds += get(ref)
        except ray.exceptions.RayActorError as err:
            self.to_upscale.appendleft(ctx.work)  # frames are independent: the chunk goes to the next free actor
            self.pool.on_death(ctx, err)
            return
        ctx.work.upscaled = ctx.result_ref

    def on_written(self, ref, chunk: _Chunk) -> None:
        written = get(ref)
        self.frames_out += written
        self.in_flight -= written
        self.bar.update(written)

    def finish(self, started) -> dict:
        """Close the video's actors and the output; its report."""
        self.bar.close()
        open_tracks, track_seconds = get(self.tracker.close.remote())
        self.step.report.add_tracks(open_tracks)
        damage, decode_seconds = get(self.decoder.close.remote())
        if damage:
            log.warning("%s", damage)
        frames_written, encode_seconds = get(self.encoder.close.remote())
        started.drop([self.decoder, self.tracker, self.encoder], self.partial, finished=True)
        assert frames_written == self.frames_out, (frames_written, self.frames_out)
        return run_report(
            input_path=self.input, output_path=self.output, engine="ray", backend=self.pool.backend.name,
            frames_in=self.frames_in, frames_out=frames_written, frames_expected=self.info["frames"], damage=damage,
            wall_seconds=time.perf_counter() - self.started_at + self.setup,
            first_frame_seconds=None if self.first_frame is None else self.first_frame - self.started_at + self.setup,
            # Busy seconds per actor; the actors run side by side, so these overlap.
            stage_seconds={"setup": self.setup, "decode": decode_seconds, "detect_track": track_seconds, "sr": self.sr_seconds,
                           "frame_sr": self.frame_sr_seconds, **encode_seconds},
            sr_actors=self.pool.placement, video_actors=self.nodes, faces=self.step.report.to_dict(),
        )

    def fail(self, started, waiting: dict, err: Exception, skip) -> None:
        """A user-facing error in this video: drop its partial output and its actors; the others go on."""
        self.failed = True
        self.bar.close()
        if skip is None or isinstance(err, RunAborted):  # RunAborted: every other video would meet it too
            raise err
        started.drop([self.decoder, self.tracker, self.encoder], self.partial)
        for ref, (video, kind, ctx) in list(waiting.items()):
            if video is self and kind not in ("sr", "upscaled"):  # its SR actors' jobs return to free their slots
                del waiting[ref]
        skip(self.input, err)


def _write(encoder, chunk: _Chunk):
    """Send a finished chunk to the encoder with the faces it needs (each result list once) and the
    frame model's output (None: the encoder interpolates)."""
    refs: list = []
    slot: dict[Any, int] = {}
    placements: dict[tuple[int, int], tuple[int, int]] = {}
    for key, (faces_ref, item) in chunk.faces.items():
        if faces_ref not in slot:
            slot[faces_ref] = len(refs)
            refs.append(faces_ref)
        placements[key] = (slot[faces_ref], item)
    crops = [[dataclasses.replace(c, crop=None) for c in frame_crops] for frame_crops in chunk.tracked.crops]
    return encoder.write.remote(chunk.frames_ref, crops, placements, chunk.upscaled, *refs)


# What the driver does with each result it waits for: the result's kind -> the method that takes it.
HANDLERS = {
    "count": VideoJob.on_count,  # the decoder read a chunk: how many frames
    "tracked": VideoJob.on_tracked,  # step 1 is done on a chunk: schedule its crops
    "sr": VideoJob.on_sr,  # a batch came back from an SR actor (or its actor died)
    "upscaled": VideoJob.on_upscaled,  # a chunk's frames came back from an SR actor's frame model
    "written": VideoJob.on_written,  # the encoder wrote a chunk
}
