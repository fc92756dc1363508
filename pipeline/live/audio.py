"""The live recording's sound: audio packets on their way from a reader thread to the recorder.

Sound comes from the source's own container (a stream's or a `--realtime` file's audio, read by
`pipeline/live/source.py`'s reader next to the video) or from an audio device opened as a second
input (`--audio-input`, `AudioDevice` here, for a webcam). Either way each packet is kept whole
(never decoded here, never dropped with a stale video frame) with its time on the run's clock
(`pipeline/live/clock.py`), and the recorder (`pipeline/live/recorder.py`) muxes it at that time.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import av

from pipeline.errors import InputError, UserError
from pipeline.live.clock import Timeline
from pipeline.live.spec import AudioInputSpec
from pipeline.media.reader import error_reason

log = logging.getLogger(__name__)

AUDIO_BACKLOG = 3000  # packets (~60 s of 48 kHz AAC) waiting for the recorder before the oldest are lost
SYSTEM_ALSA = Path("/usr/share/alsa")  # the system's ALSA configuration: device names such as `default` are defined there


class AudioFeed:
    """Audio packets waiting for the recording, oldest first, each with its time on the run's clock.

    `stream` is the stream they come from; the recording's audio stream is made like it, so it must
    be read before the reader thread starts (a reconnect closes its container). The reader calls
    `put` (and `end` when it stops), the recorder `take`. Packets are copied out of their
    container, so they outlive it. `shift()` is added to every clock when the packet is muxed (a
    second input's correction; 0 for the source's own sound). Counters: `packets_read`,
    `packets_lost` (over `AUDIO_BACKLOG`, the oldest go).
    """

    def __init__(self, stream: av.AudioStream, label: str):
        self.stream, self.label = stream, label
        ctx = stream.codec_context
        self.codec = getattr(ctx.codec, "canonical_name", None) or ctx.name
        self._kind = (ctx.name, ctx.sample_rate, len(ctx.layout.channels))
        self.packets_read = self.packets_lost = 0
        self._packets: collections.deque[tuple[av.Packet, float]] = collections.deque()
        self._cond = threading.Condition()
        self._latest = float("-inf")  # the latest clock put
        self._ended = False
        self.shift: Callable[[], float] = lambda: 0.0

    def matches(self, stream: av.AudioStream) -> bool:
        """Whether `stream` (a reopened source's) carries packets the recording's audio stream can take."""
        ctx = stream.codec_context
        return (ctx.name, ctx.sample_rate, len(ctx.layout.channels)) == self._kind

    def put(self, packet: av.Packet, clock: float) -> None:
        """Keep a copy of `packet`, due at `clock` on the run's clock. Empty and untimed packets are skipped."""
        if not packet.size or packet.pts is None:
            return
        copy = av.Packet(bytes(packet))
        copy.pts, copy.dts, copy.duration, copy.time_base = packet.pts, packet.dts, packet.duration, packet.time_base
        copy.is_keyframe = packet.is_keyframe
        with self._cond:
            if len(self._packets) >= AUDIO_BACKLOG:
                self._packets.popleft()
                self.packets_lost += 1
            self._packets.append((copy, clock))
            self.packets_read += 1
            self._latest = max(self._latest, clock)
            self._cond.notify_all()

    def end(self) -> None:
        """No more packets will come (the reader stopped)."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def take(self) -> list[tuple[av.Packet, float]]:
        """Every packet waiting, oldest first; the feed is empty afterwards."""
        with self._cond:
            items = list(self._packets)
            self._packets.clear()
        return items

    def wait_past(self, clock: float, timeout: float) -> None:
        """Wait up to `timeout` s for a packet due at `clock` or later (the sound up to `clock` is then in)."""
        with self._cond:
            self._cond.wait_for(lambda: self._latest >= clock or self._ended, timeout)


class AudioDevice:
    """A microphone (`--audio-input`), read on a thread of its own into `feed`.

    with AudioDevice(spec, open_timeout=10, read_timeout=5) as device:
        recorder = Recorder(..., audio=device.feed)
        device.start(video_lead=lambda: source.lead)

    Its packets are timed on the run's clock by their own timestamps, anchored at their arrival
    as the video's are, and moved by the difference of the two clocks' leads (how late each
    input's first item was read: the video's open reads ahead to probe the stream; the video's
    is asked when a packet is muxed, after the reader has read past its open), so sound and
    picture agree to within the devices' own latency. A device that fails while the run goes on leaves the rest
    of the recording silent, with a warning; one that cannot be opened is an `InputError` at once.
    """

    def __init__(self, spec: AudioInputSpec, *, open_timeout: float, read_timeout: float):
        self.spec = spec
        if spec.format == "alsa" and not {"ALSA_CONFIG_DIR", "ALSA_CONFIG_PATH"} & set(os.environ) and (SYSTEM_ALSA / "alsa.conf").is_file():
            # PyAV's wheels bundle an alsa-lib that looks for its configuration under its build
            # folder, where no `default` device exists: point it at the system's.
            os.environ["ALSA_CONFIG_DIR"] = str(SYSTEM_ALSA)
        chatter: list[str] = []
        try:
            with _own_stderr(chatter):  # alsa-lib writes its complaints to fd 2 itself, eight lines for a missing card
                self._container = av.open(spec.url, format=spec.format, timeout=(open_timeout, read_timeout))
        except ValueError as err:  # PyAV: "no container format 'pulse'": this FFmpeg lacks the device input
            raise UserError(f"cannot open audio input {spec.label}: {err} (this FFmpeg has no {spec.format} input)") from None
        except (av.error.FFmpegError, OSError) as err:
            said = f" ({spec.format}: {chatter[-1].rsplit(')', 1)[-1].strip()})" if chatter else ""
            raise InputError(f"cannot open audio input {spec.label} ({spec.format} device {spec.url!r}): "
                             f"{error_reason(err)}{said}; {spec.hint}") from None
        if not self._container.streams.audio:
            self._container.close()
            raise InputError(f"audio input {spec.label} gives no audio stream")
        self.feed = AudioFeed(self._container.streams.audio[0], spec.label)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="facezoom-live-audio", daemon=True)

    def start(self, video_lead: Callable[[], float] | None = None) -> None:
        """Start reading (once the recording's audio stream is made from `feed.stream`).
        `video_lead()`: the video source's `lead`, which moves every packet as it is muxed."""
        if video_lead is not None:
            self.feed.shift = video_lead
        if self._thread.ident is None:
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is None:
            self._container.close()
        else:
            self._thread.join(5.0)

    def __enter__(self) -> "AudioDevice":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        timeline = Timeline()
        try:
            for packet in self._container.demux(self.feed.stream):
                if self._stop.is_set():
                    return
                seconds = float(packet.pts * packet.time_base) if packet.pts is not None else None
                clock = timeline.at(seconds, time.monotonic())
                self.feed.put(packet, clock - timeline.lead)  # at its earliest arrival; `feed.shift` adds the video's lead
            log.warning("audio input %s ended; the rest of the recording is silent", self.spec.label)
        except (av.error.FFmpegError, OSError) as err:
            if not self._stop.is_set():
                log.warning("audio input %s failed (%s); the rest of the recording is silent", self.spec.label, error_reason(err))
        finally:
            self.feed.end()
            self._container.close()


@contextlib.contextmanager
def _own_stderr(lines: list[str]) -> Iterator[None]:
    """Inside, whatever is written to file descriptor 2 (a C library's own messages, which no
    Python logger sees) goes into `lines` instead of the terminal; each line is logged at debug."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip())
    for line in lines:
        log.debug("%s", line)
