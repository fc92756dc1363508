"""Pictures in and out for the creative commands: still images, animated GIFs, folders, animations.

`zoom` and `enhance` read more than video files: a photo, a 16x16 emoji, a PNG with an alpha
channel, an animated GIF of a game sprite, a folder of such files. `read_picture` turns any of
them into `[H, W, 3] uint8 RGB` frames (the contract every stage takes), compositing transparent
pixels over a chosen background colour, with each frame's display time for animations.

Animations go out as video (through `pipeline.media.writer.VideoWriter`, audio copied), as an animated
GIF (`GifWriter`: PyAV's GIF encoder fed frames quantised by Pillow, one palette per frame, every
frame kept with its own delay) or as a folder of numbered PNG frames (`PngFolderWriter`). Every
writer takes `write(image, pts)` in a time base, like `VideoWriter`, and is atomic the same way:
it writes to a temporary file or folder beside the target and renames it into place only when
complete; on an error or Ctrl-C nothing is left at the output path.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import cv2
import numpy as np

from pipeline.errors import InputError, UserError
from pipeline.media.files import VIDEO_SUFFIXES, AtomicWriter, check_output_folder, temp_path_beside

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".webp", ".avif", ".bmp", ".tif", ".tiff",
                  ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico")
SNIFFED_SUFFIXES = ("", ".heic", ".heif")  # names that do not say what a file is: Pillow is asked
STILL_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # single pictures `write_image` writes
COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), "grey": (128, 128, 128)}
GIF_TIME_BASE = Fraction(1, 100)  # GIF frame delays are whole hundredths of a second
GIF_MIN_DELAY = 2  # browsers show delays under 0.02 s as 0.1 s
MAX_FRAMES = 10_000  # an animation longer than this is a video: read it as one
FRAME_NAME = "frame_{:05d}.png"


class Picture(NamedTuple):
    """An image file's frames: one for a still picture, several for an animation."""

    path: Path
    frames: list[np.ndarray]  # each [H, W, 3] uint8 RGB, transparency composited over the background
    durations: list[float]  # seconds each frame is shown, one per frame

    @property
    def animated(self) -> bool:
        return len(self.frames) > 1


def is_picture(path: str | Path) -> bool:
    """Whether `path` is an image file (animated GIFs included): by its suffix, or, for a name
    without one (or a `.heic` that may be a JPEG inside), by whether Pillow can decode its kind."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SNIFFED_SUFFIXES or not path.is_file():
        return suffix in IMAGE_SUFFIXES
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # read_picture reports them, if it comes to that
            with Image.open(path) as image:  # reads the header only
                return image.format != "MPEG"  # Pillow identifies MPEG video but cannot decode it
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


def parse_colour(text: str) -> tuple[int, int, int]:
    """'white', 'black', 'gray', '#rrggbb', '#rgb' or 'r,g,b' -> an RGB triple."""
    value = text.strip().lower()
    if value in COLOURS:
        return COLOURS[value]
    if re.fullmatch(r"#[0-9a-f]{6}", value):
        return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))
    if re.fullmatch(r"#[0-9a-f]{3}", value):
        return tuple(int(c * 2, 16) for c in value[1:])
    parts = value.split(",")
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) <= 255 for p in parts):
        return tuple(int(p) for p in parts)
    raise UserError(f"background colour {text!r} is not one of {', '.join(COLOURS)}, #rrggbb or r,g,b (0-255 each)")


def read_picture(path: str | Path, *, background: tuple[int, int, int] = (255, 255, 255)) -> Picture:
    """Every frame of an image file as `[H, W, 3] uint8 RGB`, alpha composited over `background`.

    Animated GIF, PNG (APNG) and WebP files give all their frames, fully drawn (Pillow applies
    each frame's disposal), with their delays; a delay of 0 is read as 0.1 s, as browsers do.
    A still photo's EXIF orientation is applied, so a phone photo taken upright stays upright.
    """
    from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a folder, not a picture: {path}")
    frames, durations = [], []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # Pillow's (a huge picture, corrupt EXIF) go to the log, one line each
            with Image.open(path) as image:
                for frame in ImageSequence.Iterator(image):
                    if len(frames) == MAX_FRAMES:
                        raise InputError(f"{path} has more than {MAX_FRAMES} frames; convert it to a video (mp4) and use that")
                    if getattr(image, "n_frames", 1) == 1:
                        frame = ImageOps.exif_transpose(frame)  # a phone photo's orientation tag: upright stays upright
                    frames.append(_flatten(frame, background))
                    delay = frame.info.get("duration") or 100  # ms
                    durations.append(float(delay) / 1000.0)
        for warning in caught:
            log.warning("%s: %s", path, str(warning.message).splitlines()[0])
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as err:
        raise InputError(f"cannot read {path} as a picture ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if not frames:
        raise InputError(f"{path} holds no image")
    return Picture(path, frames, durations)


def _flatten(frame, background: tuple[int, int, int]) -> np.ndarray:
    """A Pillow frame of any mode -> `[H, W, 3] uint8 RGB`, transparency over `background`."""
    from PIL import Image

    if frame.mode.startswith("I"):  # 16- or 32-bit grey: Pillow's convert would clip at 255, not scale
        grey = np.asarray(frame, dtype=np.float32)
        wide = frame.mode.startswith("I;16") or grey.max() > 255  # "I" holds 8-bit values too, now and then
        frame = Image.fromarray(np.clip(np.rint(grey / 257.0 if wide else grey), 0, 255).astype(np.uint8), "L")
    palette_alpha = frame.mode == "P" and frame.palette is not None and frame.palette.mode == "RGBA"  # e.g. a TGA
    if not (frame.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in frame.info or palette_alpha):
        return np.array(frame.convert("RGB"))  # opaque: no float copy (a 96 MP photo is 6 GB as one); writable
    rgba = np.asarray(frame.convert("RGBA"), dtype=np.float32)  # [H, W, 4]
    alpha = rgba[..., 3:] / 255.0
    rgb = rgba[..., :3] * alpha + np.asarray(background, np.float32) * (1.0 - alpha)
    return np.ascontiguousarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))


def list_pictures(folder: str | Path) -> list[Path]:
    """The image files directly inside `folder`, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    found = sorted(p for p in folder.iterdir() if p.is_file() and is_picture(p) and not p.name.startswith("."))
    if not found:
        raise InputError(f"{folder} holds no pictures (looked for {', '.join(IMAGE_SUFFIXES)})")
    return found


def batch_output(source: Path, output: Path) -> list[Path]:
    """The pictures of the folder `source`, once the folder `output` their results go into is
    known to be usable (made if missing, and not `source` itself)."""
    if output.exists() and not output.is_dir():
        raise UserError(f"a folder input writes a folder of results: {output} is a file; give a folder name")
    if output.exists() and output.resolve() == source.resolve():
        raise UserError(f"the output folder {output} is the input folder; its pictures would be overwritten: choose another")
    pictures = list_pictures(source)
    if not output.exists():
        check_output_folder(output)
        output.mkdir()
    return pictures


def report_skipped(skipped: int, total: int) -> int:
    """A batch's exit status: 2, said in one line, when some pictures were skipped; else 0."""
    if skipped:
        print(f"facezoom: error: {skipped} of {total} pictures were skipped (see the warnings above)", file=sys.stderr)
        return 2
    return 0


def batch_names(pictures: list[Path]) -> dict[Path, str]:
    """Output names for a batch: the input's stem, or its whole name where two inputs share a stem."""
    stems = [p.stem for p in pictures]
    return {p: (p.stem if stems.count(p.stem) == 1 else p.name.replace(".", "_")) for p in pictures}


def output_kind(path: str | Path) -> str:
    """What an output path asks for: 'video', 'gif', 'still' (one picture) or 'frames' (a PNG folder).

    A name without a suffix, ending in a path separator, or naming an existing folder is a
    folder of PNG frames.
    """
    text = str(path)
    path = Path(path)
    suffix = path.suffix.lower()
    if text.endswith(("/", os.sep)) or path.is_dir() or not suffix:
        return "frames"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix == ".gif":
        return "gif"
    if suffix in STILL_SUFFIXES:
        return "still"
    raise UserError(
        f"cannot tell what to write from the output name {path.name!r}: use a video name ({', '.join(VIDEO_SUFFIXES)}), "
        f".gif, a picture name ({', '.join(STILL_SUFFIXES)}) or a name without a suffix for a folder of PNG frames"
    )


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write one `[H, W, 3] uint8 RGB` picture (PNG, JPEG or WebP by suffix), atomically."""
    from PIL import Image

    path = Path(path)
    _check_image(image)
    tmp = _temp_file_beside(path)
    try:
        Image.fromarray(image).save(tmp, format=_PIL_FORMATS[path.suffix.lower()], **({"quality": 95} if path.suffix.lower() != ".png" else {}))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


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
        self._tmp = _temp_file_beside(self.path)
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
        _check_image(image, (self.height, self.width))
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
        if self.path.exists() and not _is_frame_folder(self.path):
            raise UserError(
                f"the output {self.path} already exists and holds files other than {FRAME_NAME.format(0)}, ...; "
                "choose a new folder name or remove it"
            )
        parent = self.path.parent
        check_output_folder(self.path)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".partial", dir=parent))
        _umask_mode(self._tmp, 0o777)
        self._closed = False

    def write(self, image: np.ndarray, pts: int) -> None:
        """Write one `[height, width, 3] uint8 RGB` frame as the next PNG (`pts` only orders frames)."""
        _check_image(image, (self.height, self.width))
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


def read_frames(path: str | Path) -> list[np.ndarray]:
    """The frames of a PNG folder written by `PngFolderWriter`, in order: `[H, W, 3] uint8 RGB` each."""
    names = sorted(Path(path).glob("frame_*.png"))
    return [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in names]


def _is_frame_folder(path: Path) -> bool:
    return path.is_dir() and all(re.fullmatch(r"frame_\d{5,}\.png", p.name) for p in path.iterdir())


def _check_image(image: np.ndarray, size: tuple[int, int] | None = None) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{list(image.shape)} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"images must be [H, W, 3] uint8 RGB, got {got}")
    if size is not None and image.shape[:2] != size:
        raise ValueError(f"frames must be [{size[0]}, {size[1]}, 3] uint8, got {list(image.shape)}")


def _temp_file_beside(path: Path) -> Path:
    """`media.temp_path_beside`, refusing a folder in the file's place."""
    if path.is_dir():
        raise UserError(f"the output {path} is a folder; give a file name such as {path / ('out' + (path.suffix or '.png'))}")
    return temp_path_beside(path)


def _umask_mode(path: Path, mode: int) -> None:
    """Give a file made by `tempfile` (owner-only) the permissions a plain `open` would have."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, mode & ~mask)
