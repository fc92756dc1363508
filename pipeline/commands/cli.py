"""The command line: `facezoom COMMAND ...` (also `python run_pipeline.py COMMAND ...`).

Thin by design: it parses arguments, loads the config and calls the pipeline. Exit status:
0 success, 2 bad input or usage (one line on stderr, no traceback), 1 internal error,
130 interrupted (no output file is left behind).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from models.errors import ModelError
from pipeline.errors import UserError
from pipeline.media.memory import keep_frame_memory_flat

log = logging.getLogger("facezoom")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML preset (see configs/); its keys override the defaults")
    parser.add_argument(
        "--set", dest="overrides", metavar="SECTION.KEY=VALUE", action="append", default=[],
        help="override one setting, e.g. --set sr.backend=pulse (repeatable; wins over --config)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facezoom", description="Find, track and super-resolve faces in video.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes: only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each stage does")
    parser.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    video = commands.add_parser("video", help="super-resolve the faces of a video file")
    video.set_defaults(handler=cmd_video)
    video.add_argument("input", help="any video file FFmpeg reads")
    video.add_argument("-o", "--output", required=True, help="output video (.mp4, .mkv, .mov, .webm)")
    video.add_argument("--report", metavar="R.json", help="write a JSON report of the run")
    video.add_argument("--engine", choices=("local", "ray"), help="shortcut for --set engine.engine=...")
    video.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (implies --engine ray)")
    video.add_argument("--side-by-side", action="store_true", help="write input | output side by side (composite.side_by_side)")
    video.add_argument("--draw-boxes", action="store_true", help="debug: draw face boxes and track ids (composite.draw_boxes)")
    _add_config_args(video)

    sample = commands.add_parser("sample", help="write the built-in sample clip (a real face, with audio)")
    sample.set_defaults(handler=cmd_sample)
    sample.add_argument("-o", "--output", required=True, help="where to write the clip (.mp4)")
    sample.add_argument("--seconds", type=float, default=4.0, help="length (default 4)")

    weights = commands.add_parser("weights", help="list, download, verify or locate model weights")
    weights.set_defaults(handler=cmd_weights)
    actions = weights.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every registry entry: size, licence, source, whether it is cached")
    fetch = actions.add_parser("fetch", help="download an entry into the cache and verify it")
    fetch.add_argument("name")
    verify = actions.add_parser("verify", help="hash cached files (all, or one) against their expected SHA-256")
    verify.add_argument("name", nargs="?")
    where = actions.add_parser("path", help="print where an entry's file lives (or must be placed)")
    where.add_argument("name")

    # Commands that live beside their feature: each module's `register(commands)` adds its
    # parser and handler, importing nothing heavy until the handler runs.
    for module in _FEATURE_COMMANDS:
        importlib.import_module(module).register(commands, _add_config_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_frame_memory_flat()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="facezoom: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.handler(args)
    except (UserError, ModelError) as err:
        print(f"facezoom: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facezoom: interrupted; no output was written", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: say so in one line unless asked for the traceback
        if args.debug:
            raise
        print(f"facezoom: internal error: {type(err).__name__}: {err} (rerun with --debug for details)", file=sys.stderr)
        return 1


def cmd_video(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.media.reader import VideoReader
    from pipeline.engines import run

    overrides = list(args.overrides)
    if args.engine:
        overrides.append(f"engine.engine={args.engine}")
    if args.ray_address:
        overrides += ["engine.engine=ray", f"engine.ray_address={args.ray_address}"]
    if args.side_by_side:
        overrides.append("composite.side_by_side=true")
    if args.draw_boxes:
        overrides.append("composite.draw_boxes=true")
    cfg = load_config(args.config, overrides)
    _check_paths(Path(args.input), Path(args.output), report=Path(args.report) if args.report else None)
    with VideoReader(args.input):  # a bad input is reported before anything else is said or started
        pass
    from pipeline.creative.targets import say_backend_note

    say_backend_note(cfg, quiet=args.quiet)
    report = run(args.input, args.output, cfg=cfg, progress=not args.quiet)
    if args.report:
        from pipeline.report import write_report

        write_report(Path(args.report), report)
    if not args.quiet:
        print(
            f"facezoom: wrote {args.output}: {report['frames_out']} frames in {report['wall_seconds']:.1f} s",
            file=sys.stderr,
        )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from pipeline.media.sample import write_sample

    if not 0.5 <= args.seconds <= 600:
        raise UserError(f"--seconds must be in 0.5..600, got {args.seconds}")
    output = Path(args.output)
    if output.suffix.lower() not in (".mp4", ".mkv", ".mov"):
        raise UserError(f"the sample is H.264 with AAC audio: write it to .mp4, .mkv or .mov, not {output.name!r}")
    write_sample(output, seconds=args.seconds)
    if not args.quiet:
        print(f"facezoom: wrote the sample clip to {output}", file=sys.stderr)
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from models import weights

    if args.action == "list":
        for e in weights.REGISTRY.values():
            cached = "cached" if weights.path_for(e.name).is_file() else "not cached"
            default = " (default)" if e.name == weights.DEFAULT else ""
            print(f"{e.name}{default}: {e.description}")
            print(f"    {e.approx_size}, {cached}; licence: {e.licence}")
            print(f"    source: {e.source}")
            print(f"    url: {e.url}")
        print(f"cache folder: {weights.cache_dir() / 'weights'} (set FACEZOOM_HOME to move it)")
        return 0
    if args.action == "fetch":
        print(weights.fetch(args.name, progress=not args.quiet))
        return 0
    if args.action == "path":
        print(weights.path_for(args.name))
        return 0
    reports = weights.verify(args.name)
    if not reports:
        print(f"no registry weights are cached in {weights.cache_dir() / 'weights'}")
    for r in reports:
        print(f"{r.name}: {r.status}: {r.detail} ({r.path})")
    return 2 if any(r.status in ("mismatch", "missing") for r in reports) else 0


def _check_paths(input_path: Path, output_path: Path, *, report: Path | None = None) -> None:
    """Everything about the paths that can be known before a run, so a run never ends in an error
    that was there from the start (leaving its output behind, or none after an hour)."""
    from pipeline.media.files import check_output_folder, check_output_video

    if output_path.exists() and input_path.exists() and os.path.samefile(input_path, output_path):
        raise UserError(f"the output {output_path} is the input; choose another output path")
    check_output_video(output_path)
    if report is not None:
        check_output_folder(report)


_FEATURE_COMMANDS: tuple[str, ...] = ("pipeline.creative.zoom", "pipeline.creative.enhance", "pipeline.training.train", "pipeline.live.loop")  # modules with a register(commands, add_config_args)
