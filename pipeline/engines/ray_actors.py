"""The Ray engine's actors: each runs one step of `pipeline/stages/chunk.py` where its data is.

- `DecodeActor` reads the input in chunks of frames.
- `TrackActor` runs step 1 (detect, track, align; sequential: a tracker needs every frame in
  order) and puts each aligned crop into the object store by itself.
- `SRActor` runs step 2's batches (`run_batch`) for any track: each arrives as one `SRRequest`,
  its states with it; with a frame model (`composite.upscaler`) it also enlarges chunks of frames.
- `EncodeActor` runs step 3 (composite) and encodes, strictly in input order, exactly once.

The driver that schedules them is `pipeline/engines/ray.py` (with `ray_pool.py`, `ray_video.py`).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

import ray

from models.errors import ModelError
from pipeline.errors import UserError
from pipeline.media.memory import keep_frame_memory_flat, setup_done
from pipeline.media.reader import VideoReader
from pipeline.media.writer import VideoWriter
from pipeline.stages.chunk import TrackedChunk, composite_chunk, track_chunk
from pipeline.stages.composite import frame_upscaler, upscale_chunk
from pipeline.stages.faces import FaceAnalyzer
from pipeline.stages.superres import BackendInfo, SRRequest, create_backend, run_batch


def _setup_errors_reach_the_driver(cls):
    """Keep a user-facing error raised while an actor sets up, and raise it from `ready()`.

    Raised from `__init__` it would kill the actor: the driver would see `ActorDiedError`, which
    drops the cause, and the worker's traceback. Raised from a method, it reaches the driver as
    itself (`get`), and the CLI prints its one line.
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


class _Placed:
    def node(self) -> str:
        """The Ray node this actor runs on."""
        return ray.get_runtime_context().get_node_id()


@ray.remote(num_cpus=0)
@_setup_errors_reach_the_driver
class DecodeActor(_Placed):
    def __init__(self, path: str, threads: int, strict: bool):
        keep_frame_memory_flat()
        self._reader = VideoReader(path, threads=threads, strict=strict, warn=False)  # the driver says it
        self._frames = iter(self._reader)
        self.busy = 0.0

    def info(self) -> dict[str, Any]:
        r = self._reader
        return {"width": r.width, "height": r.height, "time_base": r.time_base, "rate": r.rate, "frames": r.frame_count}

    def close(self) -> tuple[str | None, float]:
        """Once read to the end: what was wrong with the file (`VideoReader.damage`), and the seconds spent decoding."""
        return self._reader.damage, self.busy

    @ray.method(num_returns=2)
    def read(self, n: int):
        start = time.perf_counter()
        chunk = list(itertools.islice(self._frames, n))
        self.busy += time.perf_counter() - start
        return len(chunk), chunk


@ray.remote(num_cpus=0)
@_setup_errors_reach_the_driver
class TrackActor(_Placed):
    def __init__(self, detect_cfg, track_cfg, crop_size: int, framing: str):
        keep_frame_memory_flat()
        self._analyzer = FaceAnalyzer(detect_cfg, track_cfg, crop_size=crop_size, framing=framing)
        self.busy = 0.0
        setup_done()

    def process(self, frames: list) -> TrackedChunk:
        """Step 1 on a chunk; each aligned crop's pixels go into the object store as their own object."""
        if not frames:
            return TrackedChunk([], [], [])
        start = time.perf_counter()
        tracked = track_chunk(self._analyzer, frames)
        tracked.crops = [[dataclasses.replace(c, crop=ray.put(c.crop)) for c in cs] for cs in tracked.crops]
        self.busy += time.perf_counter() - start
        return tracked

    def close(self) -> tuple[list, float]:
        """End of stream: the tracks still open, and the seconds spent detecting and tracking."""
        return self._analyzer.close(), self.busy


@ray.remote
@_setup_errors_reach_the_driver
class SRActor:
    def __init__(self, sr_cfg, composite_cfg, threads: int):
        keep_frame_memory_flat()
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._backend = create_backend(sr_cfg)
        self._upscaler = frame_upscaler(composite_cfg, sr_cfg.device)  # None: the frame is interpolated (by the encoder)
        setup_done()

    def info(self) -> tuple[BackendInfo, dict[str, Any]]:
        """The backend it runs, and where it runs (node, device, resources: the report's `sr_actors`)."""
        context = ray.get_runtime_context()
        return BackendInfo.of(self._backend), {
            "node": context.get_node_id(), "device": str(self._backend.device), "resources": context.get_assigned_resources()}

    @ray.method(num_returns=2)
    def run(self, request: SRRequest):
        """Step 2 on one request (its crops fetched here): (the result without its pictures, busy seconds),
        and the faces to paste as their own object."""
        start = time.perf_counter()
        result = run_batch(self._backend, request.resolved(ray.get))
        return (result.summary(), time.perf_counter() - start), result.faces

    @ray.method(num_returns=2)
    def upscale(self, frames: list):
        """A chunk's frames through the frame model (`composite.upscaler`): busy seconds, and the
        enlarged images as their own object."""
        start = time.perf_counter()
        images = upscale_chunk(self._upscaler, [f.image for f in frames])
        return time.perf_counter() - start, images


@ray.remote(num_cpus=0)
@_setup_errors_reach_the_driver
class EncodeActor(_Placed):
    """Writes one output into `partial`, a file the driver made beside it and removes itself (after
    killing this actor) if the video does not finish: the actor may be gone by then (a signal to
    the whole process group stops Ray's workers too), or busy behind chunks still waiting for faces."""

    def __init__(self, output: str, info: dict[str, Any], video_cfg, composite_cfg, audio_from: str, partial: str):
        keep_frame_memory_flat()
        self._composite_cfg = composite_cfg
        width, height = composite_cfg.output_size(info["width"], info["height"])
        if not Path(partial).exists():  # the driver stopped while this actor started: write nothing
            raise UserError(f"the partial output {partial} is gone; the run stopped")
        self._writer = VideoWriter(
            output, width=width, height=height,
            time_base=info["time_base"], rate=info["rate"], cfg=video_cfg, audio_from=audio_from, partial=Path(partial),
        )
        self._writer.__enter__()
        self.busy = {"composite": 0.0, "encode": 0.0}

    def write(self, frames: list, crops: list, placements: dict, upscaled: list | None, *face_lists: list) -> int:
        """Step 3 on one chunk, then encode it. placements[(frame, track)]: (face list, item) of each crop's face."""
        def face_of(crop):
            lists, item = placements[crop.frame_index, crop.track_id]
            return face_lists[lists][item]

        start = time.perf_counter()
        images = composite_chunk(frames, crops, face_of, self._composite_cfg, upscaled=upscaled)
        middle = time.perf_counter()
        for frame, image in zip(frames, images, strict=True):
            self._writer.write(image, frame.pts)
        self.busy["composite"] += middle - start
        self.busy["encode"] += time.perf_counter() - middle
        return len(frames)

    def close(self) -> tuple[int, dict[str, float]]:
        """Finish the file: the frames written, and the seconds spent compositing and encoding."""
        start = time.perf_counter()
        self._writer.__exit__(None, None, None)
        self.busy["encode"] += time.perf_counter() - start
        return self._writer.frames_written, self.busy


def get(refs):
    """ray.get, re-raising a user-facing error from an actor as itself (one line, no remote traceback)."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, (UserError, ModelError)):
            raise cause from None
        raise
