"""The single-process engine: decode -> face stages -> encode, streaming, in one process.

`run_video` reads the input frame by frame, hands frames in small chunks to the face
processor, and writes each processed frame at its input timestamp, with the input's audio
copied alongside. Memory is bounded by the chunk size, whatever the video's length. The Ray
engine (`pipeline/ray_engine.py`) runs the same stages on actors.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
from tqdm import tqdm

from pipeline.media import Frame, VideoReader, VideoWriter

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    engine: Literal["local", "ray"] = "local"  # one process, or Ray actors
    chunk: int = 8  # frames handed to the face stages at once (detection batches over them)
    ray_address: str | None = None  # None = start an embedded local Ray; else join this cluster
    sr_actors: int = 1  # super-resolution actors in the pool
    num_gpus: float = 0.0  # GPUs each SR actor reserves (0 on a CPU machine; 1 = one GPU per actor)
    max_frames_in_flight: int = 32  # backpressure: frames decoded but not yet encoded
    dashboard: bool = False  # Ray's dashboard costs memory and a port; off unless asked for

    def __post_init__(self):
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")
        if self.sr_actors < 1:
            raise ValueError(f"sr_actors must be >= 1, got {self.sr_actors}")
        if self.num_gpus < 0:
            raise ValueError(f"num_gpus must be >= 0, got {self.num_gpus}")
        if self.max_frames_in_flight < self.chunk:
            raise ValueError(
                f"max_frames_in_flight must be >= chunk ({self.chunk}), got {self.max_frames_in_flight}"
            )


class StageTimer:
    """Adds up wall seconds per named stage: `with timer("decode"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, stage: str) -> "_Timing":
        return _Timing(self.seconds, stage)


class _Timing:
    def __init__(self, totals: dict[str, float], stage: str):
        self.totals, self.stage = totals, stage

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.totals[self.stage] += time.perf_counter() - self.start


# A processor takes a chunk of frames and returns their processed images, in order.
Processor = Callable[[Sequence[Frame], StageTimer], list[np.ndarray]]


def passthrough(frames: Sequence[Frame], timer: StageTimer) -> list[np.ndarray]:
    return [frame.image for frame in frames]


def chunks(frames: Iterator[Frame], size: int, timer: StageTimer) -> Iterator[list[Frame]]:
    """Group decoded frames into lists of `size`, timing the decode."""
    chunk: list[Frame] = []
    while True:
        with timer("decode"):
            frame = next(frames, None)
        if frame is None:
            break
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_video(
    input_path: str | Path,
    output_path: str | Path,
    *,
    cfg,
    processor: Processor = passthrough,
    out_scale: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Process `input_path` into `output_path` in this process; returns the run's report."""
    start = time.perf_counter()
    timer = StageTimer()
    with VideoReader(input_path, threads=cfg.video.decode_threads) as reader:
        bar = tqdm(total=reader.frame_count, unit="frame", disable=not progress, dynamic_ncols=True, desc="facezoom")
        with bar, VideoWriter(
            output_path,
            width=reader.width * out_scale,
            height=reader.height * out_scale,
            time_base=reader.time_base,
            rate=reader.rate,
            cfg=cfg.video,
            audio_from=input_path,
        ) as writer:
            frames_in = 0
            for chunk in chunks(iter(reader), cfg.engine.chunk, timer):
                frames_in += len(chunk)
                images = processor(chunk, timer)
                with timer("encode"):
                    for frame, image in zip(chunk, images, strict=True):
                        writer.write(image, frame.pts)
                bar.update(len(chunk))
            with timer("encode"):
                writer.close()
    return {
        "input": str(input_path),
        "output": str(output_path),
        "frames_in": frames_in,
        "frames_out": writer.frames_written,
        "wall_seconds": round(time.perf_counter() - start, 3),
        "stage_seconds": {k: round(v, 3) for k, v in timer.seconds.items()},
    }
