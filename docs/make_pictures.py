"""Remake the README's pictures with the commands they show: `make docs`.

Every picture comes from the public-domain astronaut photograph (scikit-image) and the
built-in sample clip; scratch files go to a temporary folder, never into the repository.
Usage: python docs/make_pictures.py [--out DIR]   (default: this folder)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import av
from PIL import Image

from pipeline.commands.cli import main
from pipeline.media.sample import astronaut, write_sample

# A 16x16 emoji-like face with transparent corners, for the sprite picture.
_CORNERS = [(0, 0), (1, 0), (0, 1), (15, 0), (14, 0), (15, 1), (0, 15), (1, 15), (0, 14), (15, 15), (14, 15), (15, 14)]
DEMO_FRAME = 30  # the sample's frame shown in docs/demo.png (the face is small there: the case facezoom is for)


def facezoom(*args) -> None:
    argv = ["-q", "-y", *map(str, args)]  # -y: `make docs` replaces the pictures it made before
    if main(argv) != 0:
        raise SystemExit(f"make_pictures: `facezoom {' '.join(argv)}` failed")


def make(out: Path) -> list[Path]:
    """Write every README picture into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="facezoom-docs-") as scratch:
        tmp = Path(scratch)
        photo = Image.fromarray(astronaut())
        photo.save(tmp / "astronaut.png")
        photo.resize((128, 128), Image.LANCZOS).save(tmp / "astronaut_small.png")
        face = photo.crop((160, 40, 288, 168)).resize((16, 16), Image.LANCZOS).convert("RGBA")
        for xy in _CORNERS:
            face.putpixel(xy, (0, 0, 0, 0))
        face.save(tmp / "face16.png")

        # What `facezoom video` did to the sample: input | output, with the tracked box.
        sample = write_sample(tmp / "sample.mp4", seconds=1.5)
        facezoom("video", sample, "-o", tmp / "side.mp4", "--side-by-side", "--draw-boxes")
        with av.open(str(tmp / "side.mp4")) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i == DEMO_FRAME:
                    frame.to_image().save(out / "demo.png")
                    break

        facezoom("zoom", tmp / "astronaut_small.png", "-o", out / "zoom.gif", "--size", "128x128", "--duration", "2", "--fps", "6")
        facezoom("enhance", tmp / "astronaut.png", "-o", out / "enhance.png", "--iterations", "4", "--pre-blur")
        facezoom("enhance", tmp / "face16.png", "-o", out / "sprite.png", "--iterations", "3")
        # A face model at work, as `make demo` shows it: the real (demonstration) prior invents faces from a 16x16 one.
        facezoom("sample", "-o", tmp / "sample_face.png")
        facezoom("enhance", tmp / "sample_face.png", "-o", out / "invented.png", "--iterations", "2", "--samples", "3",
                 "--set", "sr.backend=pulse", "--set", "sr.generator=dcgan-digiface-64")
    return [out / name for name in ("demo.png", "zoom.gif", "enhance.png", "sprite.png", "invented.png")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    for path in make(parser.parse_args().out):
        print(f"wrote {path}", file=sys.stderr)
