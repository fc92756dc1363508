"""`facezoom enhance`: the enhance loop on a picture or a folder of pictures.

The work is `pipeline/creative/enhance.py`'s; this module parses, calls it and prints."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

import numpy as np

from pipeline.commands.common import report_skipped, say_backend_note, setting_inputs
from pipeline.creative.enhance import animated_into_still, enhance_picture, write_enhanced
from pipeline.errors import InputError, RunAborted, UserError

log = logging.getLogger(__name__)

# This command's defaults where they differ from the pipeline's: the loop's point is the model's
# own invention, so the model's faces are shown whole (sr.fidelity 0; -w 1 keeps the source's).
DEFAULTS = {"sr": {"fidelity": 0.0}}


def register(commands, add_config_args) -> None:
    p = commands.add_parser(
        "enhance", help="super-resolve, shrink back, super-resolve again, N times (faces, sprites, emoji)",
        description="The enhance loop: super-resolve a face, shrink the result back to the model's input size with the "
                    "model's own downscaler, and super-resolve again, --iterations times; --samples chains side by side.",
    )
    p.add_argument("input", help="a picture (png, jpg, webp, gif; animated GIFs stay animated) or a folder of pictures (a batch)")
    p.add_argument("-o", "--output", required=True,
                   help="out.png: a grid (rows: samples, columns: input then iterations); out.gif, out.mp4 or a folder name: "
                        "the iterations as an animation (an animated input: its frames, enhanced). For a folder input: an output folder")
    p.add_argument("--iterations", type=int, default=5, metavar="N", help="passes of the loop (default 5)")
    p.add_argument("--samples", type=int, default=1, metavar="K", help="chains from different seeds, side by side (default 1)")
    p.add_argument("--pre-blur", action="store_true", help="make the first input by an up-then-down resize (softer input, more invention)")
    p.add_argument("--grid", metavar="PATH", help="also write the grid here (.png; .gif for an animated input)")
    p.add_argument("--fps", type=float, default=2.0, help="frames per second of the iterations animation (default 2)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--face", type=int, metavar="N", help="the N-th face from the left (0 = leftmost); default: the largest face")
    target.add_argument("--track", type=int, metavar="ID", help="an animated input's face track with this id")
    target.add_argument("--at", metavar="X,Y", help="the face whose box holds this point (input pixels)")
    target.add_argument("--whole", action="store_true", help="no face detection: the whole picture is the face input (a 16x16 picture always is)")
    p.add_argument("--background", default="white", metavar="COLOUR", help="colour behind transparent pixels: white (default), black, gray, #rrggbb or r,g,b")
    p.add_argument("--seed", type=int, help="shortcut for --set sr.seed=N")
    add_config_args(p, fidelity=True, defaults=DEFAULTS)
    p.set_defaults(handler=cmd_enhance)


def cmd_enhance(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.creative.targets import Choice, parse_point
    from pipeline.media.files import folder_run
    from pipeline.media.stills import parse_colour

    if not 1 <= args.iterations <= 100:
        raise UserError(f"--iterations must be in 1..100, got {args.iterations}")
    if not 1 <= args.samples <= 64:
        raise UserError(f"--samples must be in 1..64, got {args.samples}")
    if not 0.1 <= args.fps <= 60:
        raise UserError(f"--fps must be in 0.1..60, got {args.fps:g}")
    overrides = list(args.overrides) + ([f"sr.seed={args.seed}"] if args.seed is not None else [])
    cfg = load_config(args.config, overrides, DEFAULTS)
    choice = Choice(face=args.face, track=args.track, at=parse_point(args.at) if args.at else None)
    background = parse_colour(args.background)
    source, output = Path(args.input), Path(args.output)
    grid_path = Path(args.grid) if args.grid else None
    batch = source.is_dir()
    with folder_run(output) if batch else contextlib.nullcontext():
        targets = _targets(source, output, grid_path, overwrite=args.overwrite, settings=setting_inputs(args, cfg))
        pre_blur = args.pre_blur or cfg.sr.pre_blur
        say_backend_note(cfg, quiet=args.quiet)
        backends: list = []  # made once the first input proved readable: a backend may load (or fetch) weights
        skipped, written = 0, 0
        try:
            for path, target in targets.items():
                try:
                    _enhance_one(path, target, args=args, cfg=cfg, choice=choice, background=background, pre_blur=pre_blur,
                                 grid_path=grid_path, backends=backends)
                except UserError as err:
                    if not batch or isinstance(err, RunAborted):  # RunAborted: the model, not this picture
                        raise
                    skipped += 1
                    log.warning("skipped %s: %s", path, err)
                    continue
                written += 1
                if not args.quiet:
                    print(f"facezoom: wrote {target}" + (f" and {grid_path}" if grid_path else ""), file=sys.stderr)
        except KeyboardInterrupt as err:
            if batch and written:
                err.kept = f"the {written} finished result{'s' if written > 1 else ''} in {output}"
            raise
    return report_skipped(skipped, len(targets))


def _enhance_one(path: Path, target: Path, *, args, cfg, choice, background, pre_blur: bool, grid_path: Path | None,
                 backends: list) -> None:
    """Enhance one picture into `target` (and `grid_path`); `backends` holds the backend once made."""
    from pipeline.media.stills import read_picture
    from pipeline.stages.superres import create_backend

    picture = read_picture(path, background=background)
    if any(f.shape != picture.frames[0].shape for f in picture.frames):
        raise InputError(f"{path}: frames of different sizes")
    if not backends:
        backends.append(create_backend(cfg.sr))
    enhanced = enhance_picture(picture, backends[0], cfg=cfg, iterations=args.iterations, samples=args.samples,
                               pre_blur=pre_blur, whole=args.whole, choice=choice, progress=not args.quiet)
    if args.samples > 1 and all(np.array_equal(c[-1], enhanced.results[0][0][-1]) for c in enhanced.results[0]):
        if cfg.sr.fidelity > 0:  # what the samples invent lies above the kept resolution, here above the picture's own
            why = (f"with sr.fidelity={cfg.sr.fidelity:g} each keeps the picture's own face up to its resolution and "
                   "the model's differences lie above what the output shows; -w 0 shows the model's faces whole")
        else:
            why = f"sr.backend={cfg.sr.backend} does not depend on the seed; use a generative backend (sr.backend=pulse) for different samples"
        log.warning("the %d samples are identical: %s", args.samples, why)
    write_enhanced(enhanced, target, grid_path=grid_path, fps=args.fps)


def _targets(source: Path, output: Path, grid_path: Path | None, *, overwrite: bool, settings: dict[str, Path]) -> dict[Path, Path]:
    """Each picture to enhance and where its result goes, once every output path is known to be
    writable under the output policy (`files.check_outputs`; for a folder, `stills.batch_output`)."""
    from pipeline.media.stills import batch_output, is_animated, is_picture, output_kind

    if not source.exists():
        raise InputError(f"input not found: {source}")
    if source.is_dir():
        if grid_path is not None:
            raise UserError("--grid is for one input; a folder's batch writes each picture's grid into the output folder")
        return batch_output(source, output, suffix=lambda path: ".gif" if is_animated(path) else ".png", overwrite=overwrite)
    if not is_picture(source):
        raise UserError(f"enhance takes pictures ({source.suffix or 'no suffix'} is not one: png, jpg, webp, gif, bmp, tiff) "
                        "or a folder of them; for videos use `facezoom video` or `facezoom zoom`")
    from pipeline.media.files import check_outputs

    outputs = {"the output": output, **({"the grid (--grid)": grid_path} if grid_path is not None else {})}
    frames = tuple(what for what, path in outputs.items() if output_kind(path) == "frames")  # a name it cannot write is refused here
    stills = [path for path in outputs.values() if output_kind(path) == "still"]
    if stills and is_animated(source):
        raise animated_into_still(stills[0])
    check_outputs({"the input": source, **settings}, {what: Path(str(path).rstrip("/") or str(path)) for what, path in outputs.items()},
                  overwrite=overwrite, frames_folders=frames)  # before any work
    return {source: output}
