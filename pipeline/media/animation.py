"""Animations out: `open_animation` picks a writer from the output's name — video (through
`pipeline/media/writer.py`, audio copied), an animated GIF (`GifWriter`) or a folder of PNG
frames (`PngFolderWriter`); each is written atomically. Pictures in are `pipeline/media/stills.py`.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections import deque
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from pipeline.errors import UserError
from pipeline.media.files import VIDEO_SUFFIXES, AtomicWriter, check_output_folder, is_frame_folder
from pipeline.media.stills import FRAME_NAME, check_image, output_kind, temp_file_beside, umask_mode

log = logging.getLogger(__name__)


GIF_TIME_BASE = Fraction(1, 100)  # GIF frame delays are whole hundredths of a second


GIF_MIN_DELAY = 2  # browsers show delays under 0.02 s as 0.1 s


def open_animation(
    path: str | Path,
    *,
    width: int,
    height: int,
    time_base: Fraction,
    rate: Fraction | None,
    video_cfg=None,
    audio_from: str | Path | None = None,
    last_duration: float | None = None,
):
    """A writer for `path` by its kind (see `output_kind`): `VideoWriter`, `GifWriter` or `PngFolderWriter`.

    Each is a context manager with `write(image [height, width, 3] uint8 RGB, pts)`, pts in
    `time_base` units, increasing. Only video keeps the audio of `audio_from`. A GIF shows its
    last frame for `last_duration` seconds (default: one frame at `rate`, else 0.1 s).
    """
    kind = output_kind(path)
    if kind == "video":
        from pipeline.config.sections import VideoConfig
        from pipeline.media.writer import VideoWriter

        return VideoWriter(path, width=width, height=height, time_base=time_base, rate=rate,
                           cfg=video_cfg or VideoConfig(), audio_from=audio_from)
    if audio_from is not None and _has_audio(audio_from):
        log.warning("%s holds no sound: the input's audio is kept only in video outputs (%s)", path, ", ".join(VIDEO_SUFFIXES))
    if kind == "gif":
        if last_duration is None:
            last_duration = 1 / float(rate) if rate else 0.1
        return GifWriter(path, width=width, height=height, time_base=time_base, frame_duration=last_duration)
    if kind == "frames":
        return PngFolderWriter(path, width=width, height=height)
    raise UserError(f"{Path(path).name!r} names a single picture; an animation needs a video name, .gif or a folder name")


def _has_audio(path: str | Path) -> bool:
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except av.error.FFmpegError:
        return False


class GifWriter(AtomicWriter):
    """An animated GIF, looping forever; each frame shown until the next one's pts.

    Frames are quantised to 256 colours each (Pillow's median cut, Floyd-Steinberg dithering)
    and encoded by FFmpeg's GIF encoder, which keeps every frame (identical frames included)
    with its own delay. Delays are rounded to hundredths of a second, at least 0.02 s; the last
    frame is shown for `frame_duration` seconds.
    """

    def __init__(self, path: str | Path, *, width: int, height: int, time_base: Fraction, frame_duration: float = 0.1):
        if not (1 <= width <= 65535 and 1 <= height <= 65535):
            raise UserError(f"GIF frames must be 1..65535 px on each side, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height = width, height
        self.time_base = Fraction(time_base)
        self.frame_duration = frame_duration
        self.frames_written = 0
        self._pending: tuple[np.ndarray, float] | None = None  # the frame waiting for its successor's time
        self._durations: deque[int] = deque()  # delays (1/100 s) of frames sent to the encoder
        self._clock = 0  # the next frame's pts in 1/100 s
        self._clamped = False
        self._tmp = temp_file_beside(self.path)
        self._closed = False
        try:
            self._out = av.open(str(self._tmp), mode="w", format="gif")
            self._stream = self._out.add_stream("gif", rate=100)
            self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "pal8"
            self._stream.time_base = GIF_TIME_BASE
            self._stream.codec_context.time_base = GIF_TIME_BASE
            self._out.start_encoding()
        except BaseException:
            self._discard()
            raise

    def write(self, image: np.ndarray, pts: int) -> None:
        """Add one `[height, width, 3] uint8 RGB` frame shown from `pts` (in `time_base` units)."""
        check_image(image, (self.height, self.width))
        seconds = float(pts * self.time_base)
        if self._pending is not None:
            previous, start = self._pending
            self._encode(previous, start, seconds)
        self._pending = (image.copy(), seconds)
        self.frames_written += 1

    def _encode(self, image: np.ndarray, start: float, end: float) -> None:
        from PIL import Image

        delay = _centiseconds(end) - _centiseconds(start)  # rounded on the timeline, so rounding errors do not add up
        if delay < GIF_MIN_DELAY:
            if not self._clamped:
                log.warning("%s: frames shorter than 0.02 s are shown for 0.02 s (GIF's limit; use 50 fps or less)", self.path)
                self._clamped = True
            delay = GIF_MIN_DELAY
        quantised = Image.fromarray(image).quantize(256, dither=Image.Dither.FLOYDSTEINBERG)
        palette = np.asarray(quantised.getpalette(), np.uint8).reshape(-1, 3)
        argb = np.zeros((256, 4), np.uint8)
        argb[:, 0] = 255
        argb[: len(palette), 1:] = palette[:256]
        frame = av.VideoFrame.from_ndarray((np.ascontiguousarray(np.asarray(quantised)), argb), format="pal8")
        frame.pts, frame.time_base = self._clock, GIF_TIME_BASE
        self._clock += delay
        self._durations.append(delay)
        self._mux(self._stream.encode(frame))

    def _mux(self, packets) -> None:
        for packet in packets:
            packet.duration = self._durations.popleft()  # the muxer writes it as the frame's delay
            self._out.mux(packet)

    def close(self) -> None:
        if self._closed:
            return
        if self._pending is not None:
            image, start = self._pending
            self._encode(image, start, start + self.frame_duration)
            self._pending = None
        self._mux(self._stream.encode(None))
        self._out.close()
        self._closed = True
        os.replace(self._tmp, self.path)

    def _discard(self) -> None:
        self._closed = True
        out = getattr(self, "_out", None)
        if out is not None:
            try:
                out.close()
            except (av.error.FFmpegError, ValueError, OSError):
                pass  # a half-written file may not close cleanly; it is deleted next
        self._tmp.unlink(missing_ok=True)


def _centiseconds(seconds: float) -> int:
    return math.floor(seconds * 100 + 0.5)


class PngFolderWriter(AtomicWriter):
    """A folder of PNG frames named frame_00000.png, frame_00001.png, ... in order of writing.

    The frames go into a temporary folder beside `path`, renamed to `path` when complete. An
    existing folder at `path` is replaced only if it holds nothing but such frames (a previous
    run's output); any other existing folder is refused, so no one's files are deleted.
    """

    def __init__(self, path: str | Path, *, width: int, height: int):
        self.path = Path(str(path).rstrip("/" + os.sep) or str(path))
        self.width, self.height = width, height
        self.frames_written = 0
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"the output {self.path} is a file; a folder of PNG frames needs a name that is not taken")
        if self.path.exists() and not is_frame_folder(self.path):
            raise UserError(
                f"the output {self.path} already exists and holds files other than {FRAME_NAME.format(0)}, ...; "
                "choose a new folder name or remove it"
            )
        parent = self.path.parent
        check_output_folder(self.path)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".partial", dir=parent))
        umask_mode(self._tmp, 0o777)
        self._closed = False

    def write(self, image: np.ndarray, pts: int) -> None:
        """Write one `[height, width, 3] uint8 RGB` frame as the next PNG (`pts` only orders frames)."""
        check_image(image, (self.height, self.width))
        name = self._tmp / FRAME_NAME.format(self.frames_written)
        if not cv2.imwrite(str(name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise UserError(f"cannot write {name}; is the disk full?")
        self.frames_written += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        old = None
        if self.path.exists():  # a previous run's frames: move them aside, then drop them
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".old", dir=self.path.parent))
            os.replace(self.path, old / "frames")
        os.replace(self._tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _discard(self) -> None:
        self._closed = True
        shutil.rmtree(self._tmp, ignore_errors=True)


