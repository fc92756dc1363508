"""Pictures in and out for the creative commands: still images, animated GIFs, folders of pictures.

`zoom` and `enhance` read more than video files: a photo, a 16x16 emoji, a PNG with an alpha
channel, an animated GIF of a game sprite, a folder of such files. `read_picture` turns any of
them into `[H, W, 3] uint8 RGB` frames (the contract every stage takes), compositing transparent
pixels over a chosen background colour, with each frame's display time for animations.

Animations go out through `pipeline/media/animation.py` (video, animated GIF, or a folder of PNG
frames), atomically like every output.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import cv2
import numpy as np

from pipeline.errors import InputError, UserError
from pipeline.media.files import VIDEO_SUFFIXES, make_output_folder, temp_path_beside

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".webp", ".avif", ".bmp", ".tif", ".tiff",
                  ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico")
SNIFFED_SUFFIXES = ("", ".heic", ".heif")  # names that do not say what a file is: Pillow is asked
STILL_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # single pictures `write_image` writes
COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), "grey": (128, 128, 128)}
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


def batch_output(source: Path, output: Path, *, suffix: Callable[[Path], str], overwrite: bool) -> dict[Path, Path]:
    """Each picture of the folder `source` and its result in the folder `output` (named by
    `batch_names`, with `suffix(picture)`), once every result is known to be writable under the
    output policy (`files.make_output_folder`: not the input folder, no name taken, an existing
    result refused unless `overwrite`); `output` is made if missing."""
    pictures = list_pictures(source)
    names = batch_names(pictures)
    targets = {path: output / f"{names[path]}{suffix(path)}" for path in pictures}
    make_output_folder(output, source=source, targets=targets, overwrite=overwrite)
    return targets


def is_animated(path: Path) -> bool:
    """Whether the picture at `path` has more than one frame (an animated GIF, APNG or WebP);
    False where Pillow cannot tell (reading it will say why)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                return getattr(image, "n_frames", 1) > 1
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # said when the picture is read
        return False


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
    check_image(image)
    tmp = temp_file_beside(path)
    try:
        Image.fromarray(image).save(tmp, format=_PIL_FORMATS[path.suffix.lower()], **({"quality": 95} if path.suffix.lower() != ".png" else {}))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def read_frames(path: str | Path) -> list[np.ndarray]:
    """The frames of a PNG folder written by `PngFolderWriter`, in order: `[H, W, 3] uint8 RGB` each."""
    names = sorted(Path(path).glob("frame_*.png"))
    return [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in names]


def check_image(image: np.ndarray, size: tuple[int, int] | None = None) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{list(image.shape)} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"images must be [H, W, 3] uint8 RGB, got {got}")
    if size is not None and image.shape[:2] != size:
        raise ValueError(f"frames must be [{size[0]}, {size[1]}, 3] uint8, got {list(image.shape)}")


def temp_file_beside(path: Path) -> Path:
    """`media.temp_path_beside`, refusing a folder in the file's place."""
    if path.is_dir():
        raise UserError(f"the output {path} is a folder; give a file name such as {path / ('out' + (path.suffix or '.png'))}")
    return temp_path_beside(path)


def umask_mode(path: Path, mode: int) -> None:
    """Give a file made by `tempfile` (owner-only) the permissions a plain `open` would have."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, mode & ~mask)
