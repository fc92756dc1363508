"""Video in and out with PyAV, losing nothing.

`VideoReader` decodes the first video stream of any file FFmpeg reads, multithreaded, and
yields upright `[H, W, 3] uint8 RGB` frames with their original pts and time base (rotation
metadata is applied to the pixels, so a phone video shot upright stays upright).

`VideoWriter` encodes frames with the configured codec, each at the pts it came with (variable
frame rate survives), and copies every audio stream of the input packet for packet, bytes
untouched, interleaved by time as the video is written. It writes to a temporary file beside
the output and renames it only when the file is complete: on an error or Ctrl-C nothing is
left at the output path.

Both stream: memory does not depend on the length of the video.
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import logging
import os
import sys
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from pipeline.errors import InputError, UserError
from pipeline.config.sections import CODECS, ALIASES, WEBM_CODECS, X264_PRESETS, VideoConfig

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


def _open_input(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a folder, not a video file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"input is an empty file: {path}")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {path} as a video ({_reason(err)})") from None


def _rotation(frame: av.VideoFrame) -> int:
    """Degrees (0, 90, 180, 270) to turn a decoded frame counterclockwise to show it upright.

    FFmpeg attaches the container's display matrix (what phones write instead of rotating
    pixels) to each frame; `frame.rotation` is its counterclockwise angle.
    """
    return int(round(frame.rotation / 90)) % 4 * 90


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err).splitlines()[0]


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm")  # what `VideoWriter` writes: containers that keep every pts and the audio


def check_output_video(path: Path) -> None:
    """A `UserError` now for an output video path that could only fail after the run."""
    if path.is_dir():
        raise UserError(f"the output {path} is a folder; give a file name such as {path / 'out.mp4'}")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"the output {path} must end in {', '.join(VIDEO_SUFFIXES)} (the containers that keep "
                        "every frame's timestamp and the audio untouched)")
    check_output_folder(path)


def check_output_folder(path: Path) -> None:
    """A `UserError` unless the folder `path` goes into exists and is writable."""
    if not path.parent.is_dir():
        raise UserError(f"output folder does not exist: {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"output folder is not writable: {path.parent}")


def main_video_stream(container) -> av.VideoStream | None:
    """The video a container plays: its first video stream that is not an attached (cover) picture."""
    movies = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    return movies[0] if movies else None


class VideoReader:
    """Decode the first video stream of `path`.

    with VideoReader("in.mp4") as reader:
        for frame in reader:  # Frame(image [H, W, 3] uint8 RGB, pts, time_base, index)
            ...
    """

    def __init__(self, path: str | Path, *, threads: int = 0):
        self.path = Path(path)
        self._container = _open_input(self.path)
        self.stream = main_video_stream(self._container)
        if self.stream is None:
            self._container.close()
            raise InputError(f"{self.path} has no video stream (audio-only or data file)")
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
        """The average frame rate, if the container knows it."""
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        return Fraction(rate) if rate else None

    @property
    def frame_count(self) -> int | None:
        """The number of frames, if the container records it or it can be estimated from the duration."""
        if self.stream.frames:
            return self.stream.frames
        duration = self.stream.duration
        if duration and self.rate:
            return round(float(duration * self.time_base * self.rate))
        if self._container.duration and self.rate:
            return round(self._container.duration / av.time_base * float(self.rate))
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

    def _decode(self) -> Iterator[av.VideoFrame]:
        packets = self._container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as err:  # a truncated or damaged container: keep what was read
                log.warning("%s: stopped reading at a damaged part of the file (%s)", self.path, _reason(err))
                return
            try:
                yield from packet.decode()
            except av.error.InvalidDataError as err:
                # A damaged packet: FFmpeg's own tools skip it too. Its frame does not exist.
                log.warning("%s: skipped a damaged video packet at pts %s (%s)", self.path, packet.pts, _reason(err))

    def _pts_step(self) -> int:
        rate = self.rate or Fraction(25)
        return max(1, round(1 / (rate * self.time_base)))

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AtomicWriter:
    """An output that appears only when complete: leaving its `with` block normally calls
    `close()` (which moves the finished file into place); leaving it through an exception, or
    a `close()` that fails, calls `_discard()` (which deletes the partial file)."""

    def close(self) -> None:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self._discard()
                raise
        else:
            self._discard()


class VideoWriter(AtomicWriter):
    """Encode frames to `path`, copying the audio of `audio_from` untouched.

    with VideoWriter("out.mp4", width=w, height=h, time_base=tb, rate=r, cfg=cfg, audio_from="in.mp4") as out:
        out.write(image, pts)  # image [h, w, 3] uint8 RGB, pts in `time_base` units, increasing
    # the file appears at out.mp4 only here, complete

    Leaving the block through an exception removes the partial file instead.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        time_base: Fraction,
        rate: Fraction | None,
        cfg: VideoConfig = VideoConfig(),
        audio_from: str | Path | None = None,
        low_latency: bool = False,
    ):
        self.path = Path(path)
        self.width, self.height = width, height
        self.low_latency = low_latency  # no B-frames: each frame is written as it comes (live recording)
        self.time_base = Fraction(time_base)
        self.frames_written = 0
        self._pad = _padding(width, height, cfg.pix_fmt)
        if self._pad != (0, 0):
            log.info("padding %dx%d frames by %s px to an even size for %s", width, height, self._pad, cfg.pix_fmt)
        self._tmp = temp_path_beside(self.path)
        self._closed = False
        self._audio_in: av.container.InputContainer | None = None
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its settings to stderr otherwise
        try:
            try:
                self._out = av.open(str(self._tmp), mode="w", format=_format_for(self.path))
            except ValueError as err:  # PyAV: "Could not determine output format"
                raise UserError(f"cannot write {self.path} ({err}); name it .mp4, .mkv, .mov or .webm") from None
            self._video = self._add_video_stream(cfg, rate)
            self._audio = self._add_audio_streams(audio_from)
            self._out.start_encoding()
        except av.error.FFmpegError as err:
            self._discard()
            raise UserError(f"cannot write {self.path} with codec {self._video_codec(cfg)} ({_reason(err)})") from None
        except BaseException:
            self._discard()
            raise

    def _video_codec(self, cfg: VideoConfig) -> str:
        """The encoder for this output: `cfg.codec`, or VP9 where WebM cannot hold that."""
        if getattr(self, "_out", None) is not None and self._out.format.name == "webm" and cfg.codec not in WEBM_CODECS:
            return "libvpx-vp9"
        return cfg.codec

    def _add_video_stream(self, cfg: VideoConfig, rate: Fraction | None) -> av.VideoStream:
        codec = self._video_codec(cfg)
        if codec != cfg.codec:
            log.info("WebM holds VP9 or AV1 video only: encoding %s with %s (video.codec=%s is for the other containers)",
                     self.path.name, codec, cfg.codec)
            cfg = dataclasses.replace(cfg, codec=codec)
        try:
            stream = self._out.add_stream(cfg.codec, rate=rate or None)
        except ValueError as err:  # PyAV: "'mov' format does not support 'libvpx-vp9' codec"
            raise UserError(f"cannot write {self.path} with codec {cfg.codec} ({err})") from None
        stream.width = self.width + self._pad[0]
        stream.height = self.height + self._pad[1]
        stream.pix_fmt = cfg.pix_fmt
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        names = CODECS[cfg.codec]
        options = {}
        if names["crf"]:
            options[names["crf"]] = str(cfg.crf)
        if names["preset"]:
            options[names["preset"]] = cfg.preset
        if cfg.codec == "libx265":
            options["x265-params"] = "log-level=error"  # x265 prints a banner per file otherwise
        if cfg.codec == "libvpx-vp9":
            options.update({"b": "0", "row-mt": "1"})  # constant quality mode, multithreaded rows
        if cfg.codec == "mpeg4":
            options["qscale"] = str(max(1, min(31, cfg.crf // 2)))
        if self.low_latency:
            options["bf"] = "0"
        stream.options = options
        return stream

    def _add_audio_streams(self, audio_from: str | Path | None) -> list[tuple[av.AudioStream, av.AudioStream]]:
        if audio_from is None:
            return []
        self._audio_in = _open_input(audio_from)
        main = main_video_stream(self._audio_in)
        others = [s for s in self._audio_in.streams if s.type != "audio" and s is not main]  # a cover picture, subtitles, data
        if others:
            def kind(s) -> str:
                what = "cover picture" if s.disposition & av.stream.Disposition.attached_pic else s.type
                return f"{what} ({s.codec_context.name if s.codec_context else '?'})"

            kinds = ", ".join(sorted({kind(s) for s in others}))
            log.warning("%s: %d stream(s) besides the video and its audio are not copied: %s", audio_from, len(others), kinds)
        pairs = []
        for in_stream in self._audio_in.streams.audio:
            try:
                out_stream = self._out.add_stream_from_template(in_stream)
            except ValueError:  # PyAV: "'webm' format does not support 'aac' codec"
                raise UserError(
                    f"{self.path.suffix or 'this output'} files cannot hold the input's "
                    f"{in_stream.codec_context.name} audio, which facezoom copies untouched; "
                    "write .mkv (it holds any codec) or .mp4/.mov instead"
                ) from None
            layout = in_stream.codec_context.layout
            if layout.name.endswith("channels"):  # "2 channels": no speaker order (mkv, avi), which mp4/mov refuse
                out_stream.codec_context.layout = av.AudioLayout(f"{len(layout.channels)}c")  # FFmpeg's default order for that count
            pairs.append((in_stream, out_stream))
        if not pairs:
            self._audio_in.close()
            self._audio_in = None
            return []
        self._audio_packets = self._audio_in.demux([s for s, _ in pairs])
        self._audio_map = {s.index: o for s, o in pairs}
        self._pending = None  # the next audio packet, read but not yet muxed
        self._audio_done = False
        return pairs

    def write(self, image: np.ndarray, pts: int) -> None:
        """Encode one `[height, width, 3] uint8 RGB` frame shown at `pts` (in `time_base` units)."""
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"frames must be [{self.height}, {self.width}, 3] uint8, got {list(image.shape)} {image.dtype}"
            )
        if self._pad != (0, 0):
            image = np.pad(image, ((0, self._pad[1]), (0, self._pad[0]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = pts
        frame.time_base = self.time_base
        self._mux_audio_until(float(pts * self.time_base))
        for packet in self._video.encode(frame):
            self._out.mux(packet)
        self.frames_written += 1

    def _mux_audio_until(self, seconds: float | None) -> None:
        """Mux the audio packets that start before `seconds` (all of them when None)."""
        if not self._audio or self._audio_done:
            return
        while True:
            if self._pending is None:
                self._pending = next(self._audio_packets, None)
                if self._pending is None:
                    self._audio_done = True
                    return
            packet = self._pending
            if packet.dts is None and packet.size == 0:  # the demuxer's end-of-stream marker
                self._pending = None
                continue
            when = packet.dts if packet.dts is not None else packet.pts
            if seconds is not None and when is not None and float(when * packet.time_base) > seconds:
                return
            packet.stream = self._audio_map[packet.stream.index]
            self._out.mux(packet)
            self._pending = None

    def close(self) -> None:
        """Flush the encoder, copy the remaining audio and move the file into place."""
        if self._closed:
            return
        for packet in self._video.encode(None):
            self._out.mux(packet)
        self._mux_audio_until(None)
        try:
            self._out.close()  # writes the trailer: a muxer may refuse the file only now
        except av.error.FFmpegError as err:
            self._discard()
            raise UserError(f"could not finish {self.path} ({_reason(err)}); try another container, e.g. .mkv") from None
        if self._audio_in is not None:
            self._audio_in.close()
        self._closed = True
        os.replace(self._tmp, self.path)

    def _discard(self) -> None:
        """Drop the partial file; nothing appears at the output path."""
        self._closed = True
        for container in (getattr(self, "_out", None), self._audio_in):
            if container is not None:
                try:
                    container.close()
                except (av.error.FFmpegError, ValueError, OSError):
                    pass  # closing a half-written file may fail; it is deleted next
        self._tmp.unlink(missing_ok=True)


def keep_frame_memory_flat() -> None:
    """Have glibc serve every allocation over 1 MiB with mmap, so freed frames go back to the OS.

    By default glibc raises its mmap threshold each time a large block is freed; after that,
    frame-sized buffers (6 MB at 1080p) come from heap arenas that fragment across threads, and
    resident memory crept up by ~0.5 MB per 1080p frame (measured: 1336 MB after 90 frames,
    1692 MB after 720; with the threshold pinned, 1192 MB and 1207 MB). Call it once per
    process; it does nothing where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        log.debug("not glibc: the malloc mmap threshold is left alone")


M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>


def _padding(width: int, height: int, pix_fmt: str) -> tuple[int, int]:
    """Pixels to add on the right and bottom so chroma subsampling gets even sizes."""
    if pix_fmt == "yuv420p":
        return width % 2, height % 2
    if pix_fmt == "yuv422p":
        return width % 2, 0
    return 0, 0


def _format_for(path: Path) -> str | None:
    return {".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".mp4": "mp4", ".avi": "avi"}.get(path.suffix.lower())


def temp_path_beside(path: Path) -> Path:
    """A fresh temporary file in the output's folder (same suffix), so the final rename is atomic."""
    check_output_folder(path)
    folder = path.parent
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=folder)
    except OSError as err:
        raise UserError(f"cannot write into the output folder {folder}: {err.strerror}") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp makes owner-only files; an output gets the usual mode
    return Path(name)
