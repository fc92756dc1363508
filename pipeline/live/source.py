"""Live sources for `facezoom live`: a webcam, a network stream, or a file played in real time.

`LiveSource` opens a parsed SOURCE (`pipeline/live/spec.py`) with time-outs and decodes it on a thread that keeps
only the newest frame: a frame not taken before the next one is decoded is dropped, never
queued. A source that accepts a connection but sends nothing fails at the open time-out; one
that stops sending fails at the read time-out (PyAV's `timeout=(open_s, read_s)`, an FFmpeg
interrupt callback, so it holds for every protocol). A network source that drops is reopened
for up to `reconnect` seconds when asked.

The reader also measures how far it runs behind the source's own clock (`LiveFrame.lag`: the
growth of wall time minus presentation time since the stream started). Data waiting in socket
or demuxer buffers — the 10-15 s backlog of tools that queue every frame — shows there and
nowhere else, since latency is counted from the moment a frame is read.

Each frame is also given its time on the run's clock (`LiveFrame.clock`, `pipeline/live/clock.py`):
its own timestamp mapped onto the reader's monotonic clock, which paces a `--realtime` file and
stamps the recording. Asked to (`audio=True`), the reader keeps the source's audio packets too,
timed on that same clock, in `audio` (`pipeline/live/audio.py`): a frame dropped as stale takes no
sound with it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Iterator

import av
import numpy as np

from pipeline.errors import InputError, UserError
from pipeline.live.audio import AudioFeed
from pipeline.live.clock import RESYNC_SECONDS, Timeline
from pipeline.live.spec import SourceSpec
from pipeline.media.reader import main_video_stream

log = logging.getLogger(__name__)


class SourceError(InputError):
    """The live source stopped sending (and was not, or could not be, reopened)."""


@dataclasses.dataclass
class LiveFrame:
    """One frame as read from a live source; it is converted to RGB only if it is processed."""

    frame: av.VideoFrame
    read_time: float  # time.monotonic() when the decoder gave the frame
    number: int  # frames read from the source before this one (dropped ones included)
    lag: float  # s the reader runs behind the source's clock, relative to its best so far
    clock: float  # the frame's time on the run's clock (its timestamp on `time.monotonic()`'s scale), for the recording

    def image(self) -> np.ndarray:
        """`[H, W, 3] uint8 RGB`, upright."""
        image = self.frame.to_ndarray(format="rgb24")
        turns = int(round(self.frame.rotation / 90)) % 4  # display-matrix rotation, counterclockwise
        return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image


def preflight(spec: SourceSpec, *, timeout: float) -> None:
    """An `InputError` now, before the models load (seconds), for what the system already says no
    to: a camera device that does not exist, a stream host whose name does not resolve (asked for
    at most `timeout` s; a slow answer is left to the open, which has its own time-out)."""
    import socket
    import urllib.parse

    if spec.kind == "camera" and spec.url.startswith("/dev/") and not os.path.exists(spec.url):
        raise InputError(f"cannot open live source {spec.label}: no such camera {spec.url} "
                         "(list them with `v4l2-ctl --list-devices` on Linux)")
    if spec.kind != "network":
        return
    try:
        host = urllib.parse.urlsplit(spec.url).hostname
    except ValueError:
        return
    if not host:
        return
    answer: dict = {}

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, None)
        except socket.gaierror as err:
            answer["error"] = err
        except OSError:  # anything else is the open's to say
            pass

    worker = threading.Thread(target=resolve, name="facezoom-live-resolve", daemon=True)
    worker.start()
    worker.join(timeout)
    err = answer.get("error")
    if err is not None and err.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
        raise InputError(f"cannot open live source {spec.label}: the host {host!r} does not resolve ({err.strerror}); "
                         "check the address")


class _Abandoned(Exception):
    """An open given up because the run is stopping."""


class LiveSource:
    """Decode `spec` on a thread, keeping only the newest frame.

    with LiveSource(spec, open_timeout=10, read_timeout=5, reconnect=0) as source:
        while (item := source.take(timeout=1.0)) is not ...:  # see `take`

    Opening (and the first frame) happens in the constructor, so a bad source raises at once.
    A network source or camera is read from then on (from `start()` with `autostart=False`); a
    file starts playing at its first `take`. Counters: `frames_read`, `frames_dropped` (decoded
    but replaced by a newer frame before anyone took them), `reconnects`, `damaged_packets`.
    """

    def __init__(self, spec: SourceSpec, *, open_timeout: float, read_timeout: float, reconnect: float = 0.0,
                 interrupt: threading.Event | None = None, audio: bool = False, autostart: bool = True):
        """`interrupt`, when set while the source is opening (Ctrl-C), abandons the open with a
        KeyboardInterrupt rather than waiting out `open_timeout`. `audio`: keep the packets of the
        source's first audio stream in `self.audio` (None when it has none); the recording's audio
        stream is made from `audio.stream`, which must happen before the reader starts, so a
        recording run passes `autostart=False` and reads from `start()` (or the first `take`)."""
        self.spec = spec
        self.open_timeout, self.read_timeout, self.reconnect = open_timeout, read_timeout, reconnect
        self.frames_read = self.frames_dropped = self.reconnects = self.damaged_packets = 0
        self._cond = threading.Condition()
        self._latest: LiveFrame | None = None
        self._ended = False
        self._error: SourceError | None = None
        self._stop = threading.Event()
        self._clock: tuple[float, float] | None = None  # (read time, source seconds) the lag is measured from
        self._best_lag = 0.0
        self._timeline = Timeline()  # source seconds -> the run's clock, for frames and audio alike
        self._audio_lost_said = False
        try:
            self._container = self._open(self.open_timeout, interrupt or threading.Event())
        except _Abandoned:
            raise KeyboardInterrupt from None
        self.has_audio = bool(self._container.streams.audio)
        self.audio = AudioFeed(self._container.streams.audio[0], spec.label) if audio and self.has_audio else None
        self._frames = self._decode(self._container)
        try:
            first = next(self._frames, None)
        except (av.error.FFmpegError, OSError) as err:
            self._container.close()
            raise InputError(f"cannot read live source {spec.label}: {self._reason(err, opening=True)}") from None
        if first is None:
            self._container.close()
            raise InputError(f"{spec.label} sent no decodable video frame")
        self.width, self.height = first.width, first.height
        if int(round(first.rotation / 90)) % 2:
            self.width, self.height = self.height, self.width
        self._publish(first, self._timeline.at(first.time, time.monotonic()))
        self._thread = threading.Thread(target=self._run, name="facezoom-live-reader", daemon=True)
        if autostart:
            self.start()

    @property
    def lead(self) -> float:
        """How far the run's clock runs ahead of the frames' earliest arrival (`clock.Timeline.lead`)."""
        return self._timeline.lead

    def start(self) -> None:
        """Start draining a stream or camera (once). A file plays from its first `take` instead,
        which gets the frame read at open however loaded the machine is."""
        if self.spec.kind != "file":
            self._play()

    def _play(self) -> None:
        if self._thread.ident is None and not self._stop.is_set():
            self._thread.start()

    # -- the consumer's side ----------------------------------------------------------------

    def take(self, timeout: float) -> LiveFrame | None:
        """The newest frame not yet taken, waiting up to `timeout` s for one.

        Returns None when no new frame came within `timeout` (ask again) and raises
        `EOFError` when a file has ended; a dropped source that was not reopened raises
        `SourceError`.
        """
        with self._cond:
            if self._latest is None and self._thread.ident is not None and not (self._ended or self._error):
                self._cond.wait(timeout)
            item, self._latest = self._latest, None
        self._play()
        with self._cond:
            if item is not None:
                return item
            if self._error is not None:
                raise self._error
            if self._ended:
                raise EOFError(f"{self.spec.label} ended")
            return None

    def discard(self) -> int:
        """Drop the waiting frame, if any (counted as dropped); returns how many were dropped."""
        with self._cond:
            dropped, self._latest = int(self._latest is not None), None
            self.frames_dropped += dropped
            return dropped

    def close(self) -> None:
        """Stop reading. Waits for the reader, which may sit in a read for up to `read_timeout`."""
        self._stop.set()
        if self._thread.ident is None:  # never started (a file nobody read): the container is still ours
            self._close_container()
        elif self._thread.is_alive():
            self._thread.join(self.read_timeout + 1.0)
        if self._thread.is_alive():
            log.warning("%s: the reader is still blocked in a read; it ends at the read time-out", self.spec.label)
        self.discard()

    def __enter__(self) -> "LiveSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the reader thread -----------------------------------------------------------------

    def _publish(self, frame: av.VideoFrame, clock: float) -> None:
        now = time.monotonic()
        seconds = float(frame.time) if frame.time is not None else None
        lag = self._lag(now, seconds)
        with self._cond:
            if self._latest is not None:
                self.frames_dropped += 1  # latest frame wins: the untaken one is stale
            self._latest = LiveFrame(frame, now, self.frames_read, lag, clock)
            self.frames_read += 1
            self._cond.notify_all()

    def _lag(self, now: float, seconds: float | None) -> float:
        if seconds is None:
            return 0.0
        if self._clock is None:
            self._clock = (now, seconds)
        lag = (now - self._clock[0]) - (seconds - self._clock[1])
        if abs(lag - self._best_lag) > RESYNC_SECONDS:  # the source's clock jumped: measure afresh
            self._clock, lag, self._best_lag = (now, seconds), 0.0, 0.0
        self._best_lag = min(self._best_lag, lag)
        return lag - self._best_lag

    def _run(self) -> None:
        self._clock, self._best_lag = None, 0.0  # lag counts from here (a file starts late, on purpose)
        if self.spec.kind == "file":
            self._timeline.restart()  # played from here: the frames after the first are due from now on
        try:
            self._read()
        finally:
            if self.audio is not None:
                self.audio.end()
            self._close_container()  # the thread owns the container once it runs

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                for frame in self._frames:
                    now = time.monotonic()
                    clock = self._timeline.at(frame.time, now)  # a jump in the timestamps (a splice, a reset) is mapped afresh
                    if self.spec.realtime and clock > now and self._stop.wait(clock - now):
                        return
                    self._publish(frame, clock)
                    if self._stop.is_set():
                        return
                reason = "the stream ended"
            except (av.error.FFmpegError, OSError) as err:
                reason = self._reason(err, opening=False)
            if self._stop.is_set():
                return
            if self.spec.kind == "file":
                self._finish(ended=True)
                return
            if not self._reopen(reason):
                return

    def _reopen(self, reason: str) -> bool:
        """Reconnect for up to `self.reconnect` s; False (with the error set) when that fails."""
        self._close_container()
        if self.reconnect <= 0:
            self._finish(error=SourceError(f"{self.spec.label} dropped: {reason} (pass --reconnect SECONDS to wait for it to return)"))
            return False
        log.warning("%s dropped (%s); reconnecting for up to %g s", self.spec.label, reason, self.reconnect)
        deadline, backoff = time.monotonic() + self.reconnect, 0.25
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                self._container = self._open(min(self.open_timeout, max(left, 0.5)), self._stop)
                self._frames = self._decode(self._container)
                self._clock, self._best_lag = None, 0.0
                self._timeline.restart()  # a sender that restarted may count its timestamps from 0 again
                self.reconnects += 1
                log.warning("%s: reconnected (%d so far)", self.spec.label, self.reconnects)
                return True
            except _Abandoned:
                return False
            except InputError as err:
                reason = str(err)
                self._stop.wait(min(backoff, max(0.0, deadline - time.monotonic())))
                backoff = min(2.0, backoff * 2)
        self._finish(error=SourceError(f"{self.spec.label} dropped and did not come back within {self.reconnect:g} s (last: {reason})"))
        return False

    def _finish(self, *, ended: bool = False, error: SourceError | None = None) -> None:
        with self._cond:
            self._ended, self._error = ended, error
            self._cond.notify_all()

    # -- FFmpeg ----------------------------------------------------------------------------

    def _open(self, open_timeout: float, interrupt: threading.Event) -> av.container.InputContainer:
        spec = self.spec
        start = time.monotonic()
        try:
            container = self._open_or_abandon(open_timeout, interrupt)
        except (av.error.FFmpegError, OSError) as err:
            # RTSP reports its interrupted handshake as invalid data: the clock tells a time-out apart
            timed_out = isinstance(err, av.error.ExitError) or time.monotonic() - start >= 0.95 * open_timeout
            reason = self._reason(err, opening=True) if not timed_out else (
                f"no video within the {open_timeout:g} s open time-out (is the sender running and sending?)")
            raise InputError(f"cannot open live source {spec.label}: {reason}") from None
        except ValueError as err:  # PyAV: "no container format 'x'" (FFmpeg's own errors are caught above)
            raise UserError(f"cannot open live source {spec.label}: {err}") from None
        stream = main_video_stream(container)
        if stream is None:
            container.close()
            raise InputError(f"{spec.label} has no video stream")
        stream.thread_type = "SLICE"  # frame threads would hold back one frame per thread: latency
        return container

    def _open_or_abandon(self, open_timeout: float, interrupt: threading.Event) -> av.container.InputContainer:
        """`av.open` on a thread of its own, abandoned (`_Abandoned`) as soon as `interrupt` is set.

        FFmpeg's open blocks in C, where no Python signal handler runs, for up to `open_timeout`;
        an abandoned open finishes on its thread, which closes what it opened.
        """
        spec, outcome, lock = self.spec, {}, threading.Lock()

        def attempt() -> None:
            try:
                container = av.open(spec.url, format=spec.format, options=spec.options, timeout=(open_timeout, self.read_timeout))
            except BaseException as err:  # handed to the waiting thread
                outcome["error"] = err
                return
            with lock:
                if outcome.get("abandoned"):
                    container.close()
                else:
                    outcome["container"] = container

        def abandon() -> None:
            with lock:
                outcome["abandoned"] = True
                container = outcome.pop("container", None)
            if container is not None:
                container.close()

        worker = threading.Thread(target=attempt, name="facezoom-live-open", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.1)
                if interrupt.is_set():
                    raise _Abandoned
        except BaseException:  # _Abandoned, or a second Ctrl-C's KeyboardInterrupt from join
            abandon()
            raise
        if "error" in outcome:
            raise outcome["error"]
        return outcome["container"]

    def _decode(self, container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
        """The video's frames; on the way, the audio packets go to `self.audio`, timed on the run's clock."""
        video, audio = main_video_stream(container), self._audio_stream(container)
        for packet in container.demux([video, audio] if audio is not None else [video]):
            if audio is not None and packet.stream.index == audio.index:
                if packet.size and packet.pts is not None:
                    self.audio.put(packet, self._timeline.at(float(packet.pts * packet.time_base), time.monotonic(), "audio"))
                continue
            try:
                yield from packet.decode()
            except av.error.InvalidDataError:  # a lost or damaged packet (UDP): its frame does not exist
                self.damaged_packets += 1

    def _audio_stream(self, container: av.container.InputContainer) -> av.AudioStream | None:
        """The stream whose packets go on into `self.audio`: the first audio stream, if the recording's can take them."""
        if self.audio is None:
            return None
        stream = container.streams.audio[0] if container.streams.audio else None
        if stream is not None and self.audio.matches(stream):
            return stream
        if not self._audio_lost_said:  # a reconnect brought other sound, or none
            what = f"{stream.codec_context.name} at {stream.codec_context.sample_rate} Hz" if stream is not None else "no sound"
            log.warning("%s now sends %s, not the %s the recording began with: the recording leaves that sound out",
                        self.spec.label, what, self.audio.codec)
            self._audio_lost_said = True
        return None

    def _close_container(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.close()

    def _reason(self, err: Exception, *, opening: bool) -> str:
        if isinstance(err, av.error.ExitError) and not opening:  # PyAV's time-out interrupts FFmpeg with AVERROR_EXIT
            return f"no data for {self.read_timeout:g} s (read time-out)"
        if isinstance(err, FileNotFoundError) and self.spec.kind == "camera":
            return "no such camera (list them with `v4l2-ctl --list-devices` on Linux)"
        if isinstance(err, ConnectionRefusedError):
            return "connection refused: nothing listens at that address (is the camera or sender running, is the port right?)"
        if isinstance(err, PermissionError) and self.spec.kind == "camera":
            return "permission denied (on Linux, add yourself to the 'video' group)"
        return getattr(err, "strerror", None) or str(err).splitlines()[0]
