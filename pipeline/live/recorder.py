"""The live recording: processed frames and the source's sound, encoded on a thread, on the run's clock, never blocking the loop."""

from __future__ import annotations

import collections
import logging
import math
import queue
from fractions import Fraction
from pathlib import Path

from pipeline.errors import Worker

log = logging.getLogger(__name__)


RECORD_QUEUE = 30  # frames (1 s at 30 fps) the recorder may fall behind before it drops frames from the recording
AUDIO_TAIL_SECONDS = 1.0  # at the end, how long to wait for the sound of the last frame (MPEG-TS sends audio up to 0.7 s late)


class Recorder:
    """Encodes output frames to `path` on a thread, with the sound of `audio` (a `pipeline.live.audio.AudioFeed`).

    Everything is placed by its time on the run's clock (`pipeline/live/clock.py`): the first
    frame written is the recording's time 0, and frames are stamped in milliseconds from it
    (time base 1/1000), so the recording plays at real time whatever was dropped. Audio packets
    are moved by that same mapping, so sound and picture stay as the source had them; each is
    muxed once the video has passed its time. Audio before the first frame and after the last
    frame's end (the last frame lasts as long as the one before it) is cut; a video frame that
    is dropped keeps its sound. Packets are copied where the container holds their codec and
    encoded to AAC where it does not (`pipeline/media/writer.py`'s `AudioTrack`).

    `write` never blocks: with `RECORD_QUEUE` frames waiting, a frame is left out of the
    recording (`frames_skipped`). `close()` encodes what is queued and finishes the file; a
    recording with no frame is not left behind.
    """

    def __init__(self, path: str | Path, *, width: int, height: int, video_cfg, audio=None):
        from pipeline.media.writer import VideoWriter

        self.path = Path(path)
        self.frames_written = self.frames_skipped = 0
        self.audio = audio
        self._writer = VideoWriter(self.path, width=width, height=height, time_base=Fraction(1, 1000), rate=None, cfg=video_cfg,
                                   audio_like=audio.stream if audio is not None else None,
                                   low_latency=True)  # B-frames would reorder irregular wall-clock timestamps
        self.audio_written = self.audio_cut = 0
        self.audio_error: str | None = None  # why the sound stopped being recorded, if it did
        self._audio_pending: collections.deque = collections.deque()  # (packet, clock) taken from the feed, not yet muxed
        self._audio_start = self._audio_end = -math.inf  # recording seconds of the last audio packet written, and its end
        self._queue: queue.Queue = queue.Queue(maxsize=RECORD_QUEUE)
        self._error: BaseException | None = None
        self._origin: float | None = None  # the run's clock at the recording's time 0: the first frame's
        self._last_pts = -1
        self._thread = Worker(self._run, name="facezoom-live-recorder")

    def write(self, image, clock: float) -> None:
        """Record `image` ([H, W, 3] uint8 RGB) at `clock`, its time on the run's clock (`LiveFrame.clock`)."""
        if self._origin is None:  # set before the frame is queued: the thread places the sound by it
            self._origin = clock
        pts = max(round((clock - self._origin) * 1000), self._last_pts + 1)  # strictly increasing, whatever the clock did
        try:
            self._queue.put_nowait((image, pts, clock))
        except queue.Full:
            self.frames_skipped += 1
            return
        self._last_pts = pts

    def close(self) -> None:
        self._queue.put((None, None, None))  # blocks only until the thread makes room
        self._thread.wait()  # a second Ctrl-C must not end the process before the recording is finished
        if self._error is not None:
            raise self._error

    def audio_report(self) -> dict | None:
        """What became of the sound: None when the recording has no audio stream."""
        if self.audio is None or not self._writer.audio_tracks:
            return None
        track = self._writer.audio_tracks[0]
        return {
            "from": self.audio.label,
            "codec": track.codec,
            "copied": track.copied,  # else encoded from the source's codec
            "source_codec": track.source_codec,
            "packets": self.audio_written,  # the source's packets written (copied, or decoded into the encoder)
            "seconds": round(max(self._audio_end, 0.0), 3),
            "packets_cut": self.audio_cut,  # before the first frame, after the last, or overlapping after a jump
            "packets_lost": self.audio.packets_lost,  # the recorder fell too far behind the source
            "error": self.audio_error,
        }

    def _run(self) -> None:
        try:
            with self._writer:
                last = previous = None
                while (item := self._queue.get())[0] is not None:
                    image, pts, clock = item
                    self._writer.write(image, pts)
                    self.frames_written += 1
                    self._write_audio(until=clock)
                    last, previous = clock, last
                if self.frames_written == 0:
                    raise _NothingRecorded  # leaving the block through an exception removes the file
                end = last + (last - previous if previous is not None else 0.0)
                if self.audio is not None and self.audio_error is None:
                    self.audio.wait_past(end - self.audio.shift(), AUDIO_TAIL_SECONDS)
                self._write_audio(until=end)
                self.audio_cut += len(self._audio_pending)  # after the last frame's end
        except _NothingRecorded:
            log.warning("no frame was processed, so nothing was recorded to %s", self.path)
        except BaseException as err:  # handed to close(), in the loop's thread
            log.error("recording to %s failed (%s); the live run goes on without it", self.path, err)
            self._error = err
            while self._queue.get()[0] is not None:  # unblock close()
                pass

    def _write_audio(self, *, until: float) -> None:
        """Mux the audio due before `until` (the run's clock), on the recording's clock."""
        import av

        from pipeline.media.reader import error_reason

        if self.audio is None or self.audio_error is not None:
            return
        self._audio_pending.extend(self.audio.take())
        shift = self.audio.shift()
        while self._audio_pending and self._audio_pending[0][1] + shift < until:
            packet, clock = self._audio_pending.popleft()
            clock += shift
            tb = packet.time_base
            length = float((packet.duration or 0) * tb)
            start = clock - self._origin
            if start < 0 or start < self._audio_end - length / 2:  # before the first frame, or over sound already written
                self.audio_cut += 1
                continue
            pts = round(max(start, self._audio_end) / tb)  # back to back with the last packet, never overlapping it
            if pts * tb <= self._audio_start:
                pts = math.floor(self._audio_start / tb) + 1
            packet.pts = packet.dts = pts
            try:
                self._writer.write_audio(packet)
            except av.error.FFmpegError as err:
                self.audio_error = error_reason(err)
                log.warning("recording the sound of %s failed (%s); the rest of %s is video only",
                            self.audio.label, self.audio_error, self.path)
                return
            self.audio_written += 1
            self._audio_start = float(pts * tb)
            self._audio_end = self._audio_start + length


class _NothingRecorded(Exception):
    pass
