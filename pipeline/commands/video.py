"""`facezoom video`: super-resolve the faces of a video file (the main job)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.commands.common import no_model_note, say_backend_note, setting_inputs
from models.errors import ModelError
from pipeline.errors import InputError, RunAborted, UserError

log = logging.getLogger(__name__)


def register(commands, add_config_args) -> None:
    video = commands.add_parser("video", help="super-resolve the faces of a video file")
    video.set_defaults(handler=cmd_video)
    video.add_argument("input", help="any video file FFmpeg reads, or a folder of them (each into -o as a folder, under its own name)")
    video.add_argument("-o", "--output", required=True, help="output video (.mp4, .mkv, .mov, .webm); for a folder input, the output folder")
    video.add_argument("--report", metavar="R.json", help="write a JSON report of the run")
    video.add_argument("--engine", choices=("local", "ray"), help="shortcut for --set engine.engine=...")
    video.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (implies --engine ray)")
    video.add_argument("-s", "--scale", type=int, choices=(1, 2, 4), help="output size / input size (composite.scale)")
    video.add_argument("--backend", choices=("classical", "pulse", "ffsr"), help="the super-resolution backend (sr.backend)")
    video.add_argument("--side-by-side", action="store_true", help="write input | output side by side (composite.side_by_side)")
    video.add_argument("--draw-boxes", action="store_true", help="debug: draw face boxes and track ids (composite.draw_boxes)")
    video.add_argument("--strict", action="store_true", help="a damaged input (truncated, corrupt packets) is an error: exit 2, nothing written (video.strict)")
    add_config_args(video, fidelity=True)


def cmd_video(args: argparse.Namespace) -> int:
    from pipeline.startup import process_started  # first: off Linux its import stands in for the process's start
    from pipeline.config import load_config

    overrides = list(args.overrides)
    if args.engine:
        overrides.append(f"engine.engine={args.engine}")
    if args.ray_address:
        overrides += ["engine.engine=ray", f"engine.ray_address={args.ray_address}"]
    if args.scale:
        overrides.append(f"composite.scale={args.scale}")
    if args.backend:
        overrides.append(f"sr.backend={args.backend}")
    if args.side_by_side:
        overrides.append("composite.side_by_side=true")
    if args.draw_boxes:
        overrides.append("composite.draw_boxes=true")
    if args.strict:
        overrides.append("video.strict=true")
    cfg = load_config(args.config, overrides)
    if Path(args.input).is_dir():
        return _video_folder(Path(args.input), Path(args.output), cfg=cfg, quiet=args.quiet, report=args.report, overwrite=args.overwrite)
    _check_paths(Path(args.input), Path(args.output), report=Path(args.report) if args.report else None, overwrite=args.overwrite,
                 settings=setting_inputs(args, cfg))
    from pipeline.engines import run  # only now: the checks above answer without importing PyAV or torch
    from pipeline.media.reader import VideoReader
    from pipeline.media.writer import check_audio_fits, check_encoder

    with VideoReader(args.input):  # a bad input is reported before anything else is said or started
        pass
    check_encoder(cfg.video, Path(args.output))
    check_audio_fits(args.input, Path(args.output))
    say_backend_note(cfg, quiet=args.quiet)
    from pipeline.report import ReportFile

    report_file = ReportFile(Path(args.report)) if args.report else None  # an unwritable report fails now, not after the run
    outputs = [Path(args.output)] + ([Path(args.report)] if args.report else [])
    before = [_identity(path) for path in outputs]
    try:
        report = run(args.input, args.output, cfg=cfg, progress=not args.quiet, started_at=process_started())
        if report_file is not None:
            report_file.commit(report, together=(Path(args.output),))
    except KeyboardInterrupt:
        # A signal after the video was moved into place (the end of the run, the report's commit)
        # takes what this run put there with it: all of its outputs or none, as the message says.
        for path, was in zip(outputs, before):
            if _identity(path) not in (None, was):
                path.unlink(missing_ok=True)
        raise
    finally:
        if report_file is not None:
            report_file.discard()
    if not args.quiet:
        print(
            f"facezoom: wrote {args.output}: {report['frames_out']} frames in {report['wall_seconds']:.1f} s "
            f"(start-up {_startup(report['startup']):.1f} s){no_model_note(report)}",
            file=sys.stderr,
        )
    return 0


def _identity(path: Path) -> tuple | None:
    """Which file stands at `path` (None: none): a file this run puts there is another."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _startup(startup: dict) -> float:
    """Seconds before the first frame entered the pipeline (or, where the engine does not say, before the job)."""
    first = startup.get("first_frame_seconds")
    return startup["seconds"] if first is None else first


# What a folder input takes: the containers FFmpeg reads that people keep video in.
FOLDER_VIDEOS = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")


def folder_outputs(videos: list[Path], output: Path) -> dict[Path, Path]:
    """Each video's output in the folder `output`: its own name, or `NAME.mkv` for a container
    facezoom cannot write (.avi, .ts, ...). Where that would give two inputs one output
    (`same.avi` and `same.mkv`), the one that keeps its own name keeps it and the others get
    their whole name: `same_avi.mkv`."""
    from pipeline.media.files import VIDEO_SUFFIXES

    own = {path: path.suffix.lower() in VIDEO_SUFFIXES for path in videos}
    names = {path: path.name if own[path] else f"{path.stem}.mkv" for path in videos}
    taken = list(names.values())
    for path in videos:
        if not own[path] and taken.count(names[path]) > 1:
            names[path] = f"{path.name.replace('.', '_')}.mkv"
    return {path: output / name for path, name in names.items()}


def _video_folder(source: Path, output: Path, *, cfg, quiet: bool, report: str | None, overwrite: bool) -> int:
    """`video DIR -o OUTDIR`: every video in DIR into OUTDIR under its own name (`folder_outputs`),
    in one process that loads the models once. Every output is checked before the first video
    runs (the output policy: `make_output_folder`). Unreadable files are skipped, named in a
    warning, and the run exits 2 at the end."""
    from pipeline.commands.common import report_skipped
    from pipeline.media.files import folder_run, make_output_folder

    if report:
        raise UserError("--report is for one video; a folder's runs are summed up on stderr")
    videos = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in FOLDER_VIDEOS and not p.name.startswith("."))
    if not videos:
        raise InputError(f"{source} holds no videos (looked for {', '.join(FOLDER_VIDEOS)})")
    targets = folder_outputs(videos, output)
    with folder_run(output):
        make_output_folder(output, source=source, targets=targets, overwrite=overwrite)
        say_backend_note(cfg, quiet=quiet)
        before = {target: _identity(target) for target in targets.values()}
        try:
            frames, skipped = _run_folder(list(targets.items()), cfg=cfg, quiet=quiet)
        except KeyboardInterrupt as err:
            # what stands there now, not only what was counted: a signal may land between a video's
            # output moving into place and its count
            kept = [t for t, was in before.items() if _identity(t) not in (None, was)]
            if kept:
                err.kept = f"the {len(kept)} finished video{'s' if len(kept) > 1 else ''} in {output}"
            raise
    if not quiet:
        print(f"facezoom: wrote {len(videos) - skipped} of {len(videos)} videos into {output} ({frames} frames)", file=sys.stderr)
    return report_skipped(skipped, len(videos), what="videos")


def _run_folder(jobs: list[tuple[Path, Path]], *, cfg, quiet: bool) -> tuple[int, int]:
    """Run the folder's jobs. Returns (frames, skipped)."""
    from tqdm import tqdm

    from pipeline.engines import run
    from pipeline.stages.chunk import FaceProcessor

    skipped, frames = 0, 0
    with tqdm(total=len(jobs), unit="video", desc="videos", disable=quiet, dynamic_ncols=True, position=0) as overall:
        def skip(path, err):
            nonlocal skipped
            skipped += 1
            log.warning("skipped %s: %s", path, err)
            overall.update(1)

        if cfg.engine.engine == "ray":  # engine.videos_in_parallel at once, one SR actor pool for all
            from pipeline.engines.ray import run_videos_ray

            def done(report):
                nonlocal frames
                frames += report["frames_out"]
                overall.update(1)

            run_videos_ray(jobs, cfg=cfg, progress=not quiet, skip=skip, done=done)
        else:  # one after the other in this process, the models loaded once
            shared = FaceProcessor(cfg)
            for path, target in jobs:
                try:
                    result = run(path, target, cfg=cfg, progress=not quiet, processor=FaceProcessor(cfg, like=shared))
                except RunAborted:  # the model, not this video: every other one would fail the same way
                    raise
                except (UserError, ModelError) as err:
                    skip(path, err)
                    continue
                frames += result["frames_out"]
                overall.update(1)
    return frames, skipped


def _check_paths(input_path: Path, output_path: Path, *, report: Path | None = None, overwrite: bool,
                 settings: dict[str, Path] | None = None) -> None:
    """Everything about the paths that can be known before a run, so a run never ends in an error
    that was there from the start (leaving its output behind, or none after an hour)."""
    from pipeline.media.files import check_distinct, check_output_video, check_outputs

    if not input_path.exists():
        raise InputError(f"input not found: {input_path}")
    outputs = {"the output": output_path, **({"the report (--report)": report} if report is not None else {})}
    inputs = {"the input": input_path, **(settings or {})}
    check_distinct(inputs, outputs)
    check_output_video(output_path)  # a name it cannot write is refused before "exists, pass -y"
    check_outputs(inputs, outputs, overwrite=overwrite)
