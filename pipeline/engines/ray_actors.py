"""The Ray engine's actors: each runs one step of `pipeline/stages/chunk.py` where its data is.

- `DecodeActor` reads the input in chunks of frames.
- `TrackActor` runs step 1 (detect, track, align; sequential: a tracker needs every frame in
  order) and puts each aligned crop into the object store by itself.
- `SRActor` runs step 2's batches (`run_batch`) for any track: states travel with the batch.
- `EncodeActor` runs step 3 (composite) and encodes, strictly in input order, exactly once.

The driver that schedules them is `pipeline/engines/ray.py`.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

import numpy as np
import ray

from models.errors import ModelError
from pipeline.errors import UserError
from pipeline.media.memory import keep_frame_memory_flat
from pipeline.media.reader import VideoReader
from pipeline.media.writer import VideoWriter
from pipeline.stages.chunk import TrackedChunk, composite_chunk, track_chunk
from pipeline.stages.faces import FaceAnalyzer
from pipeline.stages.superres import create_backend, run_batch


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

    def info(self) -> dict[str, Any]:
        r = self._reader
        return {"width": r.width, "height": r.height, "time_base": r.time_base, "rate": r.rate, "frames": r.frame_count}

    def damage(self) -> str | None:
        """Once read to the end: what was wrong with the file (`VideoReader.damage`)."""
        return self._reader.damage

    @ray.method(num_returns=2)
    def read(self, n: int):
        chunk = list(itertools.islice(self._frames, n))
        return len(chunk), chunk


@ray.remote(num_cpus=0)
@_setup_errors_reach_the_driver
class TrackActor(_Placed):
    def __init__(self, detect_cfg, track_cfg, crop_size: int, framing: str):
        keep_frame_memory_flat()
        self._analyzer = FaceAnalyzer(detect_cfg, track_cfg, crop_size=crop_size, framing=framing)
        self.busy = 0.0

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
            "name": b.name, "out_size": b.out_size, "framing": b.framing, "stateful": b.stateful, "keyframes": b.keyframes, "any_input_size": b.any_input_size, "device": str(b.device),
            "node": context.get_node_id(), "resources": context.get_assigned_resources(),
        }

    @ray.method(num_returns=2)
    def run(self, states: list, seeds: list[int], gaps: list[int], plans: list, pre_blur: bool, *crops: np.ndarray):
        """Step 2b on one batch: (the result without its faces, busy seconds), and the faces as their own object."""
        start = time.perf_counter()
        result = run_batch(self._backend, crops, states, seeds, pre_blur=pre_blur, plans=plans, gaps=gaps)
        return (dataclasses.replace(result, faces=[]), time.perf_counter() - start), result.faces


@ray.remote(num_cpus=0)
@_setup_errors_reach_the_driver
class EncodeActor(_Placed):
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

    def write(self, frames: list, crops: list, placements: dict, *face_lists: list) -> int:
        """Step 3 on one chunk, then encode it. placements[(frame, track)]: (face list, item) of each crop's face."""
        start = time.perf_counter()

        def face_of(crop):
            lists, item = placements[crop.frame_index, crop.track_id]
            return face_lists[lists][item]

        for frame, image in zip(frames, composite_chunk(frames, crops, face_of, self._composite_cfg), strict=True):
            self._writer.write(image, frame.pts)
        self.busy += time.perf_counter() - start
        return len(frames)

    def close(self) -> tuple[int, float]:
        """Finish the file: the frames written, and the seconds spent compositing and encoding."""
        self._writer.__exit__(None, None, None)
        return self._writer.frames_written, self.busy

    def abort(self) -> None:
        if getattr(self, "_writer", None) is not None:  # None: it never opened (its own set-up error)
            self._writer.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)


def get(refs):
    """ray.get, re-raising a user-facing error from an actor as itself (one line, no remote traceback)."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, (UserError, ModelError)):
            raise cause from None
        raise
