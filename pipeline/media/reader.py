"""`VideoReader`: decode a video with PyAV, losing nothing.

It decodes the first video stream of any file FFmpeg reads, multithreaded, and yields upright
`[H, W, 3] uint8 RGB` frames with their original pts and time base (rotation metadata is
applied to the pixels, so a phone video shot upright stays upright). A damaged file gives every
frame a plain single-threaded decode recovers, whatever the thread count (`VideoReader._decode`),
and says what it lacked in one line. It streams: memory does not depend on the length of the
video. Writing is `pipeline/media/writer.py`.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from pipeline.errors import InputError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Frame:
    """One decoded video frame."""

    image: np.ndarray  # [H, W, 3] uint8 RGB, upright
    pts: int  # presentation timestamp in `time_base` units, as in the input
    time_base: Fraction
    index: int  # 0-based position in decode (presentation) order

    @property
    def seconds(self) -> float:
        return float(self.pts * self.time_base)


def open_input(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a folder, not a video file: {path}")
    if not path.is_file():  # /dev/zero would be read for ever, a FIFO blocks until someone writes
        raise InputError(f"input {path} is not a regular file (a device, FIFO or socket): give a video file; "
                         "for a camera or a stream use `facezoom live`")
    if path.stat().st_size == 0:
        raise InputError(f"input is an empty file: {path}")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        if _mp4_without_index(path):
            raise InputError(f"cannot read {path}: it is an MP4/MOV file cut short before its index (the moov atom, "
                             "written last) was written; copy it again from its source, or rebuild the index "
                             "with a repair tool such as untrunc") from None
        raise InputError(f"cannot read {path} as a video ({error_reason(err)})") from None


def _mp4_without_index(path: Path) -> bool:
    """Whether `path` is an MP4/MOV file (an `ftyp` box first) whose top-level boxes hold neither
    the index (`moov`) nor fragments (`moof`): what a recording or copy cut off early leaves when
    the index was to be written at the end."""
    kinds = []
    with open(path, "rb") as file:
        size = file.seek(0, 2)
        at = 0
        while at + 8 <= size and len(kinds) < 1000:
            file.seek(at)
            length, kind = int.from_bytes(file.read(4), "big"), file.read(4)
            if length == 1:  # a 64-bit size follows
                length = int.from_bytes(file.read(8), "big")
            kinds.append(kind)
            if length < 8:  # 0: the box runs to the end of the file
                break
            at += length
    return bool(kinds) and kinds[0] == b"ftyp" and b"moov" not in kinds and b"moof" not in kinds


def _rotation(frame: av.VideoFrame) -> int:
    """Degrees (0, 90, 180, 270) to turn a decoded frame counterclockwise to show it upright.

    FFmpeg attaches the container's display matrix (what phones write instead of rotating
    pixels) to each frame; `frame.rotation` is its counterclockwise angle.
    """
    return int(round(frame.rotation / 90)) % 4 * 90


def error_reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err).splitlines()[0]


def main_video_stream(container) -> av.VideoStream | None:
    """The video a container plays: its first video stream that is not an attached (cover) picture."""
    movies = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    return movies[0] if movies else None


class VideoReader:
    """Decode the first video stream of `path`.

    with VideoReader("in.mp4") as reader:
        for frame in reader:  # Frame(image [H, W, 3] uint8 RGB, pts, time_base, index)
            ...

    `threads`: decoder threads (0 = FFmpeg's choice, 1 = single-threaded). Frames come once each,
    in presentation order, with consecutive indexes. From a damaged file they are the frames a
    plain single-threaded decode recovers, for any `threads`; once read to the end, `damage`
    says what was wrong in one line (a warning, or an `InputError` with `strict`).
    """

    def __init__(self, path: str | Path, *, threads: int = 0, strict: bool = False, warn: bool = True):
        self.path = Path(path)
        self.strict = strict  # damage is an InputError (`--strict`), not a warning
        self.warn = warn  # log the damage line (False: the caller says it, as the Ray driver does)
        self.damage: str | None = None  # once read to the end: what was wrong with the file, in one line
        self.frames_read = 0
        self.threads = threads
        self._skipped = 0  # damaged packets the decoder refused
        self._stopped: str | None = None  # why demuxing stopped early
        self._lossy = False  # the threaded decode met damage: a single-threaded one takes over
        self._single: av.container.InputContainer | None = None  # the file opened again for it
        self._container = open_input(self.path)
        self.stream = main_video_stream(self._container)
        if self.stream is None:
            self._container.close()
            raise InputError(f"{self.path} has no video stream (audio-only or data file)")
        # AVI stores no presentation times: FFmpeg numbers its packets in decode order, and a decoder
        # hands each frame the number of the packet it came from, so B-frames come out (in
        # presentation order) carrying numbers out of order. Presentation slots are those numbers
        # sorted: the n-th frame out gets the smallest not yet given (`_decode_stream`).
        self._avi = "avi" in self._container.format.name.split(",")
        self.stream.thread_type = "AUTO"  # frame and slice threads
        self.stream.codec_context.thread_count = threads
        self.time_base = Fraction(self.stream.time_base or Fraction(1, 90000))
        self.audio_streams = list(self._container.streams.audio)
        # Decode the first frame now: it proves the file is readable and tells the upright size.
        self._frames = self._decode()
        self._first = next(self._frames, None)
        if self._first is None:
            self._container.close()
            raise InputError(f"{self.path} has no decodable video frames; the file may be truncated or damaged")
        self.rotation = _rotation(self._first)
        width, height = self._first.width, self._first.height
        self.width, self.height = (height, width) if self.rotation % 180 else (width, height)

    @property
    def rate(self) -> Fraction | None:
        """The average frame rate, if the container knows it. An AVI's average is its header's
        count over its duration, and that count is of time-base ticks (below): FFmpeg's guess from
        the timestamps is the rate there."""
        first = (self.stream.guessed_rate, self.stream.average_rate) if self._avi else (self.stream.average_rate, self.stream.guessed_rate)
        rate = first[0] or first[1] or self.stream.base_rate
        return Fraction(rate) if rate else None

    @property
    def frame_count(self) -> int | None:
        """The number of frames, if the container records it or it can be estimated from the duration.
        An AVI's header counts time-base ticks (one per frame only where the time base is the frame
        rate: an AVI at 1/1000 declares 1000 a second), so its count is that span times the rate."""
        if self.stream.frames and self._avi:
            return round(self.stream.frames * self.time_base * self.rate) if self.rate else None
        if self.stream.frames:
            return self.stream.frames
        span = self._span()
        return round(span[1] * float(self.rate)) if span and self.rate else None

    def _span(self) -> tuple[float, float] | None:
        """(start, duration) of the video in seconds: its own duration, else Matroska's per-track
        DURATION tag, else the container's; None if none is known."""
        start = float((self.stream.start_time or 0) * self.time_base)
        if self.stream.duration:
            return start, float(self.stream.duration * self.time_base)
        tag = _clock_seconds(self.stream.metadata.get("DURATION"))
        if tag is not None:  # where the track ends (FFmpeg writes its last timestamp plus duration), not its length
            return start, max(tag - start, 0.0)
        if self._container.duration:
            return (self._container.start_time or 0) / av.time_base, self._container.duration / av.time_base
        return None

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        last_pts: int | None = None
        step = self._pts_step()
        for frame in itertools.chain([self._first], self._frames):
            pts = frame.pts
            if pts is None:  # raw streams and some AVIs carry no timestamps: count them at the frame rate
                pts = 0 if last_pts is None else last_pts + step
            image = frame.to_ndarray(format="rgb24")  # [H, W, 3] uint8
            rotation = _rotation(frame)
            if rotation:
                image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
            yield Frame(image=image, pts=pts, time_base=self.time_base, index=index)
            last_pts = pts
            index += 1
            self.frames_read = index
        self._check_damage(last_pts)

    def _check_damage(self, last_pts: int | None) -> None:
        """After the last frame: one line on what the file lacked (said as a warning, or raised with
        `strict`). Frames short of what the container declares (or its duration implies) count:
        a truncated file often just ends, with no decoder error at all."""
        expected = self.frame_count
        if self.stream.frames and expected:  # a count the container declares
            short = self.frames_read < expected - max(2, 0.02 * expected)
        else:  # only a duration, which a variable-rate file with pauses fills with fewer frames: compare times
            short = self._ended_early(last_pts)
        if not (short or self._skipped or self._stopped):
            return
        declared = "the container declares" if self.stream.frames else "the container's duration implies"
        parts = [f"read {self.frames_read} frames" + (f" of the {expected} {declared}" if short else "")]
        if last_pts is not None:
            parts.append(f"the last at {float(last_pts * self.time_base):.2f} s")
        if self._stopped:
            parts.append(f"reading stopped at a damaged part ({self._stopped})")
        if self._skipped:
            parts.append(f"{self._skipped} damaged packet(s) skipped")
        self.damage = f"{self.path}: damaged input: " + "; ".join(parts)
        if self.strict:
            raise InputError(f"{self.damage} (--strict: nothing was written)")
        if self.warn:
            log.warning("%s", self.damage)

    def _ended_early(self, last_pts: int | None) -> bool:
        """The frames stop well before the video's duration."""
        span, rate = self._span(), self.rate
        if last_pts is None or span is None or not rate:
            return False
        begins, seconds = span
        covered = float(last_pts * self.time_base) - begins + 1 / float(rate)  # the last frame lasts a frame
        return covered < seconds - max(2 / float(rate), 0.02 * seconds)

    def _decode(self) -> Iterator[av.VideoFrame]:
        """The video stream's frames, each once, in presentation order.

        FFmpeg's frame threads do not recover what a single thread does from damaged input: past
        a broken frame a decoder with many threads may return nothing more and report no error
        (measured on bit-flipped H.264: 33 frames at 64 threads where one thread gives 57; none
        lost at 16 threads or fewer). So a threaded decode runs only while the file looks intact:
        at its first sign of damage (a packet the decoder refuses, a demuxing error) or at its
        end, if it returned fewer frames than it was given packets, a single-threaded decode of
        the file from its start takes over and yields the frames after the last one already
        yielded (by pts; by count for a stream without timestamps). The damage counted is the
        single-threaded decode's own. Only a damaged file is decoded twice (up to its damage, or
        whole where the loss shows only at its end).
        """
        if self.threads == 1:
            yield from self._decode_stream(self._container, self.stream, threaded=False)
            return
        yielded, last_pts = 0, None
        for frame in self._decode_stream(self._container, self.stream, threaded=True):
            yield frame
            yielded += 1
            last_pts = frame.pts if frame.pts is not None else last_pts
        if not self._lossy:
            return
        log.info("%s: damaged input; decoding it again in one thread, which recovers more (%d frames so far)", self.path, yielded)
        self._single = open_input(self.path)
        stream = main_video_stream(self._single)
        stream.codec_context.thread_count = 1
        for i, frame in enumerate(self._decode_stream(self._single, stream, threaded=False)):
            # yielded already by the threaded decode?
            already = i < yielded if frame.pts is None else last_pts is not None and frame.pts <= last_pts
            if not already:
                yield frame

    def _decode_stream(self, container, stream: av.VideoStream, *, threaded: bool) -> Iterator[av.VideoFrame]:
        """Decode `stream`, keeping what a damaged file still gives: a packet the decoder refuses
        is skipped (FFmpeg's own tools skip it too: its frame does not exist), and a demuxing error
        ends the stream after the frames the decoder still holds. `threaded`: stop instead at the
        first damage, or at the end after fewer frames than packets, with `_lossy` set."""
        self._lossy = False
        packets = container.demux(stream)
        slots: list[int] = []  # with `_reorder`: the packets' numbers not yet given to a frame (a heap)
        sent = returned = 0
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                self._lossy = threaded and returned < sent
                return
            except av.error.FFmpegError as err:  # a truncated or damaged container
                if threaded:
                    self._lossy = True
                    return
                self._stopped = error_reason(err)
                yield from self._in_order(self._flush(stream), slots)  # what the decoder still holds (reordering)
                return
            sent += packet.size > 0  # the demuxer's end-of-stream packet is empty: it flushes
            if self._avi and packet.size > 0 and packet.pts is not None:
                heapq.heappush(slots, packet.pts)
            try:
                frames = packet.decode()
            except av.error.InvalidDataError as err:
                if threaded:
                    self._lossy = True
                    return
                self._skipped += 1
                if self._avi and packet.pts in slots:  # its frame does not exist: neither does its slot
                    slots.remove(packet.pts)
                    heapq.heapify(slots)
                log.debug("%s: skipped a damaged video packet at pts %s (%s)", self.path, packet.pts, error_reason(err))
                continue
            returned += len(frames)
            yield from self._in_order(frames, slots)

    def _in_order(self, frames, slots: list[int]) -> Iterator[av.VideoFrame]:
        """`frames` (in presentation order, as decoders give them), each with its presentation
        slot where the container stores none (`_reorder`: AVI)."""
        for frame in frames:
            if self._avi and slots:
                frame.pts = heapq.heappop(slots)
            yield frame

    @staticmethod
    def _flush(stream: av.VideoStream) -> Iterator[av.VideoFrame]:
        try:
            yield from stream.codec_context.decode(None)
        except av.error.FFmpegError:
            return

    def _pts_step(self) -> int:
        rate = self.rate or Fraction(25)
        return max(1, round(1 / (rate * self.time_base)))

    def close(self) -> None:
        self._container.close()
        if self._single is not None:
            self._single.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _clock_seconds(text: str | None) -> float | None:
    """'HH:MM:SS.fraction' (Matroska's DURATION tag) in seconds; None if it is not one."""
    try:
        hours, minutes, seconds = (text or "").split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
