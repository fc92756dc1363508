"""`facezoom zoom`: a zoom animation into (or out of) a face of a picture, GIF, video or folder of pictures.

The work is `pipeline/creative/zoom.py`'s; this module parses, calls it and prints."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.commands.common import report_skipped, say_backend_note, setting_inputs
from pipeline.creative.zoom import (
    DIRECTIONS,
    EASINGS,
    ENLARGED_SIDE,
    PICTURE_DURATION,
    PICTURE_FPS,
    SMALL_PICTURE,
    ZoomSettings,
    parse_size,
    zoom_picture,
    zoom_video,
)
from pipeline.errors import RunAborted, UserError

log = logging.getLogger(__name__)


def _zoom_folder(source: Path, output: Path, *, fmt: str, cfg, settings, choice, background, quiet: bool, overwrite: bool) -> int:
    """A zoom of every picture in `source`, written as `output/<name>.<fmt>`; unreadable ones are skipped (exit 2)."""
    from pipeline.media.files import folder_run
    from pipeline.media.stills import batch_output

    with folder_run(output):
        targets = batch_output(source, output, suffix=lambda path: f".{fmt}", overwrite=overwrite)
        skipped, written = 0, 0
        try:
            for path, target in targets.items():
                try:
                    summary = zoom_picture(path, target, cfg=cfg, settings=settings, choice=choice, background=background, progress=not quiet)
                except RunAborted:  # the model, not this picture: every other one would fail the same way
                    raise
                except UserError as err:
                    skipped += 1
                    log.warning("skipped %s: %s", path, err)
                    continue
                written += 1
                if not quiet:
                    print(f"facezoom: wrote {target}: {summary['frames']} frames", file=sys.stderr)
        except KeyboardInterrupt as err:
            if written:
                err.kept = f"the {written} finished zoom{'s' if written > 1 else ''} in {output}"
            raise
    return report_skipped(skipped, len(targets))


def register(commands, add_config_args) -> None:
    p = commands.add_parser(
        "zoom", help="a zoom animation into (or out of) a face; the model supplies detail where the pixels run out",
        description="Zoom into (or out of) a face of a picture, an animated GIF or a video. Where the view has fewer "
                    "source pixels than output pixels, the super-resolved face fades in.",
    )
    p.add_argument("input", help="a picture (png, jpg, webp; alpha is put over --background), an animated GIF, a video, or a folder of pictures")
    p.add_argument("-o", "--output", required=True, help="out.mp4 (.mkv, .mov, .webm), out.gif, or a name without a suffix: a folder of PNG frames; for a folder input, the output folder")
    p.add_argument("--format", choices=("mp4", "gif"), default="mp4", help="what a folder input's zooms are written as (default mp4)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--face", type=int, metavar="N", help="the N-th face from the left (0 = leftmost) on the first frame with faces; default: the largest face")
    target.add_argument("--track", type=int, metavar="ID", help="the face with this track id (as `facezoom video --report` lists them)")
    target.add_argument("--at", metavar="X,Y", help="the face whose box holds this point (input pixels); with no face there, the point itself")
    target.add_argument("--whole", action="store_true", help="no face detection: the whole picture is the face (sprites, emoji); a 16x16 picture is always taken whole")
    p.add_argument("--direction", choices=DIRECTIONS, default="in", help="in (default), out, or inout (in, then back out)")
    p.add_argument("--duration", type=float, metavar="S", help=f"seconds (default: {PICTURE_DURATION:g} for a picture; the whole video for a video)")
    p.add_argument("--fps", type=float, help=f"frames per second of a picture's zoom (default {PICTURE_FPS:g}); a video keeps its own")
    p.add_argument("--easing", choices=EASINGS, default="ease-in-out", help="speed curve (default ease-in-out)")
    p.add_argument("--max-zoom", type=float, metavar="Z", help="zoom factor of the tightest view (default: the face fills 60%% of its height, at least 2)")
    p.add_argument("--size", metavar="WxH", help=f"output frame size (default: the input's; pictures under {SMALL_PICTURE} px are enlarged to {ENLARGED_SIDE})")
    p.add_argument("--background", default="white", metavar="COLOUR", help="colour behind transparent pixels: white (default), black, gray, #rrggbb or r,g,b")
    p.add_argument("--seed", type=int, help="shortcut for --set sr.seed=N (which invented face you get)")
    add_config_args(p, fidelity=True)
    p.set_defaults(handler=cmd_zoom)


def cmd_zoom(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.creative.targets import Choice, parse_point
    from pipeline.media.stills import is_picture, output_kind, parse_colour

    overrides = list(args.overrides) + ([f"sr.seed={args.seed}"] if args.seed is not None else [])
    cfg = load_config(args.config, overrides)
    settings = ZoomSettings(direction=args.direction, duration=args.duration, fps=args.fps, easing=args.easing,
                            max_zoom=args.max_zoom, size=parse_size(args.size) if args.size else None, whole=args.whole)
    choice = Choice(face=args.face, track=args.track, at=parse_point(args.at) if args.at else None)
    background = parse_colour(args.background)
    source, target = Path(args.input), Path(args.output)
    if source.is_dir():
        say_backend_note(cfg, quiet=args.quiet)
        return _zoom_folder(source, target, fmt=args.format, cfg=cfg, settings=settings, choice=choice,
                            background=background, quiet=args.quiet, overwrite=args.overwrite)
    if output_kind(target) == "still":
        raise UserError(f"a zoom is an animation: name the output .mp4, .gif or a folder for PNG frames, not {target.name!r}")
    from pipeline.media.files import check_outputs

    frames = output_kind(target) == "frames"
    target_path = Path(str(target).rstrip("/") or str(target)) if frames else target
    check_outputs({"the input": source, **setting_inputs(args, cfg)}, {"the output": target_path}, overwrite=args.overwrite,  # before any work
                  frames_folders=("the output",) if frames else ())
    say_backend_note(cfg, quiet=args.quiet)
    if is_picture(source):
        summary = zoom_picture(source, target, cfg=cfg, settings=settings, choice=choice, background=background, progress=not args.quiet)
    else:
        summary = zoom_video(source, target, cfg=cfg, settings=settings, choice=choice, progress=not args.quiet)
    if not args.quiet:
        print(f"facezoom: wrote {target}: {summary['frames']} frames, zooming up to {summary['max_zoom']:.2f}x", file=sys.stderr)
    return 0
