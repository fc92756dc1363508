"""`facezoom live`: a webcam or network stream, super-resolved with bounded latency.

The loop is `pipeline/live/loop.py`'s `run_live`; this module parses, opens the preview, calls it and prints the status."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from pipeline.config.sections import LiveConfig
from pipeline.commands.common import setting_inputs
from pipeline.errors import UserError
from pipeline.live.loop import run_live

log = logging.getLogger(__name__)


def register(commands, add_config_args) -> None:
    d = LiveConfig()
    p = commands.add_parser(
        "live", help="super-resolve the faces of a webcam or network stream in real time, with a browser preview",
        description="Process a live source with bounded latency: the newest frame is always the one processed, "
                    "stale frames are dropped, and the super-resolution budget adapts to keep up.",
    )
    p.add_argument("source", metavar="SOURCE",
                   help="a webcam (/dev/video0, camera:0), a stream URL (rtsp://, udp://, tcp://, http(s):// incl. HLS .m3u8, "
                        "rtmp://, srt://), or a video file with --realtime")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="record the processed stream (.mp4, .mkv) with the source's sound, in sync; complete and playable after Ctrl-C")
    p.add_argument("--audio-input", metavar="DEVICE",
                   help="record the sound of this audio device instead of the source's (a webcam has none): "
                        "Linux ALSA (default, hw:1,0; N = card N), macOS avfoundation (N = audio device N), "
                        "Windows dshow (the device's name); needs -o")
    p.add_argument("--preview", metavar="[HOST:]PORT", help="serve a page with the input and the processed video side by side "
                                                            "(host 127.0.0.1 unless given; port 0 picks a free one)")
    p.add_argument("--report", metavar="R.json", help="write latency, fps and drop figures as JSON when the run ends")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: at Ctrl-C, or when a file ends)")
    p.add_argument("--realtime", action="store_true", help="hand out frames at the source's frame rate (needed for files)")
    p.add_argument("--budget-ms", type=float, metavar="MS", help=f"p95 latency target, read to output (default {d.budget_ms:g})")
    p.add_argument("--no-adapt", action="store_true", help="keep the configured SR steps and detection rate even over budget")
    p.add_argument("--reconnect", type=float, metavar="S", help="reopen a dropped network source for up to S seconds (default: stop with an error)")
    p.add_argument("--open-timeout", type=float, metavar="S", help=f"give up opening the source after S seconds (default {d.open_timeout:g})")
    p.add_argument("--read-timeout", type=float, metavar="S", help=f"the source has dropped after S seconds without data (default {d.read_timeout:g})")
    p.add_argument("--input-format", metavar="FMT", help="FFmpeg input format (v4l2, avfoundation, dshow, mpegts, ...); default: from SOURCE")
    p.add_argument("--input-option", dest="input_options", action="append", default=[], metavar="KEY=VALUE",
                   help="FFmpeg option for the source, e.g. video_size=640x480, framerate=30, rtsp_transport=tcp (repeatable)")
    add_config_args(p, fidelity=True)
    p.set_defaults(handler=cmd_live)


def cmd_live(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.live.spec import parse_audio_input, parse_source

    cfg = load_config(args.config, args.overrides)
    live = _live_config(cfg.live, args)
    if args.duration is not None and not 0 < args.duration <= 7 * 86_400:
        raise UserError(f"--duration must be in (0, 604800] seconds, got {args.duration:g}")
    options = {}
    for item in args.input_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--input-option expects KEY=VALUE, e.g. video_size=640x480; got {item!r}")
        options[key] = value
    spec = parse_source(args.source, input_format=args.input_format, options=options, realtime=args.realtime)
    audio_input = None
    if args.audio_input is not None:
        if not args.output:
            raise UserError("--audio-input records sound into the recording: give -o FILE too")
        audio_input = parse_audio_input(args.audio_input)
    _check_paths(spec, output=Path(args.output) if args.output else None, report=Path(args.report) if args.report else None,
                 overwrite=args.overwrite, settings=setting_inputs(args, cfg))  # before the source is opened and the models loaded
    from pipeline.report import ReportFile

    report_file = ReportFile(Path(args.report)) if args.report else None  # reserved now: written with the recording
    try:
        return _run(args, spec, cfg=cfg, live=live, audio_input=audio_input, report_file=report_file)
    finally:
        if report_file is not None:
            report_file.discard()


def _check_paths(spec, *, output: Path | None, report: Path | None, overwrite: bool, settings: dict[str, Path]) -> None:
    """The output policy for a live run (as `video`'s): the recording and the report are neither
    the source (a file played with --realtime, a device) nor each other, and may be written."""
    from pipeline.media.files import check_distinct, check_output_video, check_outputs

    inputs = {**({"the source": Path(spec.url)} if spec.kind == "file" or spec.url.startswith("/dev/") else {}), **settings}
    outputs = {**({"the recording (-o)": output} if output is not None else {}),
               **({"the report (--report)": report} if report is not None else {})}
    check_distinct(inputs, outputs)
    if output is not None:
        check_output_video(output, what="the recording (-o)")
    check_outputs(inputs, outputs, overwrite=overwrite)


def _run(args: argparse.Namespace, spec, *, cfg, live: LiveConfig, audio_input, report_file) -> int:
    """The live loop with its preview; the report written with the recording."""
    preview = None
    if args.preview:
        from pipeline.live.preview import PreviewServer, parse_address

        preview = PreviewServer(*parse_address(args.preview))  # bound now: a port in use fails before the models load

    def say_preview() -> None:  # once the source is open: an address that would show nothing is not given
        if preview is not None:
            print(f"facezoom: preview at {preview.url}", file=sys.stderr, flush=True)

    try:
        report = run_live(spec, cfg=cfg, live=live, output=args.output, preview=preview, duration=args.duration, on_open=say_preview,
                          audio_input=audio_input, on_status=None if args.quiet or not sys.stderr.isatty() else _print_status)
    finally:
        if preview is not None:
            preview.close()
    if report_file is not None:
        report_file.commit(report, together=(Path(report["output"]),) if report["output"] else ())
    if not args.quiet:
        sound = f" and {report['audio']['seconds']:.1f} s of {report['audio']['codec']} sound" if report["audio"] else ""
        recorded = f"; recorded {report['frames_recorded']} frames{sound} to {report['output']}" if report["output"] else ""
        print(f"\rfacezoom: live: {report['frames_in']} frames in, {report['frames_out']} out, {report['frames_dropped']} dropped; "
              f"{report['fps']:.1f} fps; latency p50 {_ms(report['latency_ms_p50'])} ms, p95 {_ms(report['latency_ms_p95'])} ms{recorded}",
              file=sys.stderr)
    if report["error"]:
        raise UserError(report["error"] + (f" (the recording up to then is in {report['output']})" if report["output"] else ""))
    return 0


def _live_config(base: LiveConfig, args: argparse.Namespace) -> LiveConfig:
    flags = {"budget_ms": args.budget_ms, "reconnect": args.reconnect, "open_timeout": args.open_timeout, "read_timeout": args.read_timeout}
    changes = {k: v for k, v in flags.items() if v is not None}
    if args.no_adapt:
        changes["adapt"] = False
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as err:
        raise UserError(f"live.{err} (see facezoom live --help)") from None


def _ms(value: float | None) -> str:
    """A latency for the terminal: '-' before any frame was measured."""
    return "-" if value is None else f"{value:.0f}"


def _print_status(status: dict) -> None:
    print(f"\rfacezoom: live: {status['fps']:.1f} fps, latency p50 {_ms(status['latency_ms_p50'])} ms "
          f"p95 {_ms(status['latency_ms_p95'])} ms, {status['frames_dropped']} dropped, {status['budget']}   ",
          end="", file=sys.stderr, flush=True)
