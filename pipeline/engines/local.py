"""The single-process engine: decode -> detect and track -> super-resolve -> composite -> encode.

`run_video` reads the input frame by frame, hands frames in small chunks to the
face stages (`pipeline/stages/chunk.py`'s `FaceProcessor`), and writes each processed frame at its input timestamp, with the input's audio
copied alongside. Memory is bounded by the chunk size, whatever the video's length. The Ray
engine (`pipeline/engines/ray.py`) runs the same steps on actors.

Four threads share the work: decoding (`ReadThread`, a chunk ahead), the face stages (this one),
cuts and whole-frame scans (`FaceAnalyzer.prefetch`'s, a chunk ahead) and encoding
(`EncodeThread`); PyAV, OpenCV and torch release the GIL while they work.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from pipeline.errors import Worker
from pipeline.media.memory import setup_done
from pipeline.media.reader import Frame, VideoReader
from pipeline.media.writer import VideoWriter
from pipeline.report import run_report
from pipeline.stages.chunk import FaceProcessor, StageTimer

log = logging.getLogger(__name__)


def chunks(frames: Iterator[Frame], size: int, timer: StageTimer) -> Iterator[list[Frame]]:
    """Group decoded frames into lists of `size`, timing the decode; `timer.first_frame` is when
    the first frame was decoded (`time.perf_counter()`)."""
    chunk: list[Frame] = []
    while True:
        with timer("decode"):
            frame = next(frames, None)
        if frame is None:
            break
        timer.first_frame = timer.first_frame or time.perf_counter()
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ReadThread:
    """Decodes on a thread of its own, one chunk ahead of the face stages: PyAV's decoder and its
    conversion to RGB release the GIL, and on the pipeline's thread they were a sixth of its time
    at 1080p (the thread the run waits for). Iterate it for the chunks (`chunks`); a decoding
    error is raised there. Leaving its `with` block stops and joins the thread, before the reader
    it decodes from is closed."""

    _END = object()

    def __init__(self, frames: Iterator[Frame], size: int, timer: StageTimer, *, depth: int = 1):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = Worker(self._run, args=(chunks(frames, size, timer),), name="facezoom-decode")

    def _run(self, source: Iterator[list[Frame]]) -> None:
        try:
            for chunk in source:
                if not self._put(chunk):
                    return
            self._put(self._END)
        except BaseException as err:  # handed to the pipeline's thread, which owns the job
            self._put(err)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self) -> Iterator[list[Frame]]:
        while (item := self._queue.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def __enter__(self) -> "ReadThread":
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.wait()  # a second Ctrl-C must not close the reader under the thread


class EncodeThread:
    """Encodes processed chunks on a second thread, so encoding overlaps the face stages.

    FFmpeg's encoders and PyTorch both release the GIL, so on two cores the encoder runs
    nearly for free beside detection (measured: 8.4 s in sequence, 5.6 s overlapped). The queue
    is bounded: when the encoder falls behind, `put` waits, and memory stays flat.
    """

    def __init__(self, writer: VideoWriter, timer: StageTimer, bar: tqdm, *, depth: int = 2):
        self._writer, self._timer, self._bar = writer, timer, bar
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = Worker(self._run, name="facezoom-encode")

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain what is queued; the main thread re-raises
            try:
                with self._timer("encode"):
                    for image, pts in item:
                        self._writer.write(image, pts)
                self._bar.update(len(item))
            except BaseException as err:  # handed to the main thread, which owns the job
                self._error = err

    def put(self, frames: Sequence[Frame], images: Sequence[np.ndarray]) -> None:
        self._check()
        self._queue.put([(image, frame.pts) for frame, image in zip(frames, images, strict=True)])

    def finish(self) -> None:
        """Wait until everything queued is encoded; re-raise the encoder's error, if any."""
        self._queue.put(None)
        self._thread.wait()
        self._check()

    def stop(self) -> None:
        """Stop without waiting for queued work (the job failed; the output is discarded)."""
        self._error = self._error or RuntimeError("stopped")
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self._thread.wait()  # a Ctrl-C meanwhile must not close the writer under the thread

    def _check(self) -> None:
        if self._error is not None:
            raise self._error


def process_ahead(chunked: Iterator[list[Frame]], processor: FaceProcessor, encoder: EncodeThread, timer: StageTimer) -> int:
    """Each chunk through `processor` to `encoder`, one chunk read ahead: the chunk after is handed
    to `processor.prefetch` first, so its whole-frame scans run on the detection thread while this
    thread tracks and composites the chunk before it. Returns the frames read."""
    pending, frames_in = None, 0
    for chunk in chunked:
        frames_in += len(chunk)
        processor.prefetch(chunk, timer)
        if pending is not None:
            encoder.put(pending, processor(pending, timer))
        pending = chunk
    if pending is not None:
        encoder.put(pending, processor(pending, timer))
    return frames_in


def run_video(
    input_path: str | Path,
    output_path: str | Path,
    *,
    cfg,
    processor: FaceProcessor | None = None,
    progress: bool = True,
    report_faces: bool = True,
) -> dict[str, Any]:
    """Process `input_path` into `output_path` in this process; returns the run's report.

    `stage_seconds` are busy seconds per stage; decoding, the detection thread's work
    (`detect_ahead`) and encoding run beside the other stages, so they add up to more than
    `wall_seconds`.
    """
    start = time.perf_counter()
    timer = StageTimer()
    with timer("setup"):
        processor = processor or FaceProcessor(cfg, report=report_faces)
    setup_done()
    with VideoReader(input_path, threads=cfg.video.decode_threads, strict=cfg.video.strict) as reader:
        bar = tqdm(total=reader.frame_count, unit="frame", disable=not progress, dynamic_ncols=True, desc="facezoom")
        width, height = cfg.composite.output_size(reader.width, reader.height)
        with bar, VideoWriter(
            output_path,
            width=width,
            height=height,
            time_base=reader.time_base,
            rate=reader.rate,
            cfg=cfg.video,
            audio_from=input_path,
        ) as writer:
            encoder = EncodeThread(writer, timer, bar)
            try:
                with ReadThread(iter(reader), cfg.engine.chunk, timer) as reading:
                    frames_in = process_ahead(iter(reading), processor, encoder, timer)
                faces = processor.finish()
                encoder.finish()
            except BaseException:
                encoder.stop()
                raise
            with timer("encode"):
                writer.close()
        expected = reader.frame_count
    return run_report(
        input_path=input_path, output_path=output_path, engine="local", backend=processor.backend.name,
        frames_in=frames_in, frames_out=writer.frames_written, frames_expected=expected, damage=reader.damage,
        wall_seconds=time.perf_counter() - start, stage_seconds=timer.seconds, sr_actors=[], video_actors={},
        first_frame_seconds=timer.first_frame - start if timer.first_frame else None, faces=faces,
    )
