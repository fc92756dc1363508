"""The live recording: processed frames encoded on a thread, at wall-clock milliseconds, never blocking the loop."""

from __future__ import annotations

import logging
import queue
import threading
from fractions import Fraction
from pathlib import Path

log = logging.getLogger(__name__)


RECORD_QUEUE = 30  # frames (1 s at 30 fps) the recorder may fall behind before it drops frames from the recording


class Recorder:
    """Encodes output frames to `path` on a thread, at wall-clock milliseconds (time base 1/1000).

    `write` never blocks: with `RECORD_QUEUE` frames waiting, a frame is left out of the
    recording (`frames_skipped`). `close()` encodes what is queued and finishes the file; a
    recording with no frame is not left behind.
    """

    def __init__(self, path: str | Path, *, width: int, height: int, video_cfg):
        from pipeline.media.writer import VideoWriter

        self.path = Path(path)
        self.frames_written = self.frames_skipped = 0
        self._writer = VideoWriter(self.path, width=width, height=height, time_base=Fraction(1, 1000), rate=None, cfg=video_cfg,
                                   low_latency=True)  # B-frames would reorder irregular wall-clock timestamps
        self._queue: queue.Queue = queue.Queue(maxsize=RECORD_QUEUE)
        self._error: BaseException | None = None
        self._last_pts = -1
        self._thread = threading.Thread(target=self._run, name="facezoom-live-recorder", daemon=True)
        self._thread.start()

    def write(self, image, ms: int) -> None:
        pts = max(ms, self._last_pts + 1)  # strictly increasing, whatever the clock did
        try:
            self._queue.put_nowait((image, pts))
            self._last_pts = pts
        except queue.Full:
            self.frames_skipped += 1

    def close(self) -> None:
        self._queue.put((None, None))  # blocks only until the thread makes room
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            with self._writer:
                while (item := self._queue.get())[0] is not None:
                    self._writer.write(*item)
                    self.frames_written += 1
                if self.frames_written == 0:
                    raise _NothingRecorded  # leaving the block through an exception removes the file
        except _NothingRecorded:
            log.warning("no frame was processed, so nothing was recorded to %s", self.path)
        except BaseException as err:  # handed to close(), in the loop's thread
            log.error("recording to %s failed (%s); the live run goes on without it", self.path, err)
            self._error = err
            while self._queue.get()[0] is not None:  # unblock close()
                pass


class _NothingRecorded(Exception):
    pass
