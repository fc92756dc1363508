"""`facezoom live`: faces in a webcam or network stream, super-resolved with bounded latency.

Tools that queue every frame fall further behind the longer they run (10-15 s at 640x480 with
an enhancer on). Here nothing queues:

1. the source is decoded on its own thread, which keeps only the newest frame
   (`pipeline/live_source.py`); a frame not taken before the next one arrives is dropped;
2. the loop takes the newest frame and runs the face stages on it (`FaceProcessor`, one frame
   per call, frames numbered 0, 1, 2, ... as they are processed);
3. the processed frame is output: offered to the browser preview (`pipeline/preview.py`), which
   serves only the newest, and to the recorder, whose short queue drops frames rather than
   grow (they are counted);
4. the frame's latency — from the moment it was read to now — feeds the budget controller
   (`pipeline/live_budget.py`), which spends fewer SR steps and detects less often while the
   p95 latency is over budget, and more again when there is room.

Ctrl-C stops the loop between frames; the recording is then closed normally, complete and
playable. Its frames are stamped with the wall-clock milliseconds at which they were read, so
it plays at real time whatever was dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import queue
import signal
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import UserError
from pipeline.config.sections import LiveConfig

log = logging.getLogger(__name__)

RECORD_QUEUE = 30  # frames (1 s at 30 fps) the recorder may fall behind before it drops frames from the recording
STATUS_SECONDS = 1.0  # how often the figures are refreshed for the preview and the terminal


class Recorder:
    """Encodes output frames to `path` on a thread, at wall-clock milliseconds (time base 1/1000).

    `write` never blocks: with `RECORD_QUEUE` frames waiting, a frame is left out of the
    recording (`frames_skipped`). `close()` encodes what is queued and finishes the file; a
    recording with no frame is not left behind.
    """

    def __init__(self, path: str | Path, *, width: int, height: int, video_cfg):
        from pipeline.media.writer import VideoWriter

        self.path = Path(path)
        self.frames_written = self.frames_skipped = 0
        self._writer = VideoWriter(self.path, width=width, height=height, time_base=Fraction(1, 1000), rate=None, cfg=video_cfg,
                                   low_latency=True)  # B-frames would reorder irregular wall-clock timestamps
        self._queue: queue.Queue = queue.Queue(maxsize=RECORD_QUEUE)
        self._error: BaseException | None = None
        self._last_pts = -1
        self._thread = threading.Thread(target=self._run, name="facezoom-live-recorder", daemon=True)
        self._thread.start()

    def write(self, image, ms: int) -> None:
        pts = max(ms, self._last_pts + 1)  # strictly increasing, whatever the clock did
        try:
            self._queue.put_nowait((image, pts))
            self._last_pts = pts
        except queue.Full:
            self.frames_skipped += 1

    def close(self) -> None:
        self._queue.put((None, None))  # blocks only until the thread makes room
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            with self._writer:
                while (item := self._queue.get())[0] is not None:
                    self._writer.write(*item)
                    self.frames_written += 1
                if self.frames_written == 0:
                    raise _NothingRecorded  # leaving the block through an exception removes the file
        except _NothingRecorded:
            log.warning("no frame was processed, so nothing was recorded to %s", self.path)
        except BaseException as err:  # handed to close(), in the loop's thread
            log.error("recording to %s failed (%s); the live run goes on without it", self.path, err)
            self._error = err
            while self._queue.get()[0] is not None:  # unblock close()
                pass


class _NothingRecorded(Exception):
    pass


def run_live(
    spec,
    *,
    cfg,
    live: LiveConfig = LiveConfig(),
    output: str | Path | None = None,
    preview=None,
    duration: float | None = None,
    stop: threading.Event | None = None,
    on_status: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Process the live source `spec` (a `live_source.SourceSpec`) until `duration` s have passed,
    `stop` is set (Ctrl-C sets it), a file ends or the source drops; returns the report.

    `preview` is a `preview.PreviewServer` to publish to; `on_status` gets the figures about
    once a second. A source that drops (and is not reopened) ends the run with `stopped` =
    "source dropped" and its message in `error`; the recording so far is kept. `stop` set while
    the source is still opening raises KeyboardInterrupt: nothing was read, nothing recorded.
    """
    import cv2

    from pipeline.stages.chunk import FaceProcessor, StageTimer
    from pipeline.live.budget import BudgetController, LiveStats
    from pipeline.live.source import LiveSource, SourceError
    from pipeline.media.reader import Frame

    stop = stop or threading.Event()
    stats, timer = LiveStats(), StageTimer()
    stopped, error, recorder = "interrupted", None, None
    frames_out, startup_ms, t0, dropped_at_start = 0, None, None, 0
    with _torch_threads(live.torch_threads), _stop_on_interrupt(stop), LiveSource(
        spec, open_timeout=live.open_timeout, read_timeout=live.read_timeout, reconnect=live.reconnect, interrupt=stop
    ) as source:
        # 1. The face stages, and the controller that adapts their budget. The detector sets its own
        #    thread count per call (detect.threads); unless that is pinned, it gets live's too.
        if live.torch_threads and not cfg.detect.threads:
            cfg = dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, threads=live.torch_threads))
        processor = FaceProcessor(cfg, report=False)
        max_every = min(live.max_detect_every, cfg.track.max_age or 1)  # tracks must outlive the gap between detections
        controller = BudgetController(processor, budget_ms=live.budget_ms, max_detect_every=max_every, enabled=live.adapt)
        width, height = source.width, source.height
        try:
            if output is not None:
                out_width, out_height = cfg.composite.output_size(width, height)
                recorder = Recorder(output, width=out_width, height=out_height, video_cfg=cfg.video)
                if source.has_audio:
                    log.warning("%s has sound, which the recording leaves out: live recordings hold the processed video only",
                                spec.label)
            last_status, resized = time.monotonic(), False
            while not stop.is_set():
                # 2. The newest frame (older ones were dropped by the reader).
                if duration is not None and t0 is not None and time.monotonic() - t0 >= duration:
                    stopped = "duration"
                    break
                try:
                    item = source.take(timeout=0.5)
                except EOFError:
                    stopped = "end of file"
                    break
                except SourceError as err:
                    stopped, error = "source dropped", str(err)
                    break
                if item is None:
                    continue
                t0 = item.read_time if t0 is None else t0
                image = item.image()
                if image.shape[:2] != (height, width):  # a reconnect brought another size: keep the first
                    if not resized:
                        log.warning("the source's frames changed size to %dx%d; scaling them to %dx%d", image.shape[1], image.shape[0], width, height)
                    resized = True
                    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
                ms = round((item.read_time - t0) * 1000)
                # 3. The face stages, then output.
                out = processor([Frame(image=image, pts=ms, time_base=Fraction(1, 1000), index=frames_out)], timer)[0]
                if recorder is not None:
                    recorder.write(out, ms)
                done = time.monotonic()
                frames_out += 1
                # 4. Account, adapt, show.
                if startup_ms is None:  # the first frame pays for the models' first call: reported apart
                    startup_ms = round((done - item.read_time) * 1000, 1)
                    dropped_at_start = source.frames_dropped
                else:
                    stats.add(latency_s=done - item.read_time, output_time=done, lag_s=item.lag)
                    controller.update((done - item.read_time) * 1000, now=done)
                status = None
                if preview is not None:
                    status = _status(stats, source, frames_out, controller, done)
                    preview.publish(image, out, status)
                if on_status is not None and done - last_status >= STATUS_SECONDS:
                    on_status(status or _status(stats, source, frames_out, controller, done))
                    last_status = done
        except KeyboardInterrupt:  # a second Ctrl-C: abandon the frame in hand, keep what was recorded
            stopped = "aborted"
        finally:
            if recorder is not None:
                recorder.close()
    p50, p95 = stats.percentile(50), stats.percentile(95)
    return {
        "source": spec.label,
        "backend": processor.backend.name,
        "output": None if recorder is None or not recorder.frames_written else str(recorder.path),
        "stopped": stopped,
        "error": error,
        "budget_ms": live.budget_ms,
        "latency_ms_p50": p50,
        "latency_ms_p95": p95,
        "latency_ms_max": round(stats.latency_max_ms, 1),
        "latency_ms_p95_per_second": list(stats.p95_per_second),
        "startup_ms": startup_ms,
        "frames_in": source.frames_read,
        "frames_out": frames_out,
        "frames_dropped": source.frames_dropped,
        "frames_dropped_at_start": dropped_at_start,  # while the models loaded and ran their first frame
        "fps": round(stats.fps(), 2),
        "seconds": round(stats.last_output - t0, 3) if stats.last_output and t0 else 0.0,
        "source_lag_ms_max": round(stats.lag_max_ms, 1),
        "reconnects": source.reconnects,
        "damaged_packets": source.damaged_packets,
        "frames_recorded": recorder.frames_written if recorder else 0,
        "frames_not_recorded": recorder.frames_skipped if recorder else 0,
        "budget": controller.to_dict(),
        "stage_seconds": {k: round(v, 3) for k, v in timer.seconds.items()},
    }


def _status(stats, source, frames_out: int, controller, now: float) -> dict:
    return {
        **stats.recent(now),
        "frames_in": source.frames_read,
        "frames_out": frames_out,
        "frames_dropped": source.frames_dropped,
        "budget": controller.describe(),
    }


@contextlib.contextmanager
def _stop_on_interrupt(stop: threading.Event):
    """The first Ctrl-C, or a SIGTERM (`kill`, `timeout`, `docker stop`, systemd), sets `stop`: the
    loop ends after the current frame and the recording is finished. A second one interrupts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # no logging here: the interrupted code may hold the logging lock
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _torch_threads(count: int):
    import torch

    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# -- the command ------------------------------------------------------------------------------


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
    p.add_argument("-o", "--output", metavar="FILE", help="record the processed stream (.mp4, .mkv); complete and playable after Ctrl-C")
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
    add_config_args(p)
    p.set_defaults(handler=cmd_live)


def cmd_live(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.live.source import parse_source

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
    if args.output:
        from pipeline.media.files import check_output_video

        check_output_video(Path(args.output))  # before the source is opened and the models loaded
    preview = None
    if args.preview:
        from pipeline.live.preview import PreviewServer, parse_address

        preview = PreviewServer(*parse_address(args.preview))
        print(f"facezoom: preview at {preview.url}", file=sys.stderr, flush=True)
    try:
        report = run_live(spec, cfg=cfg, live=live, output=args.output, preview=preview, duration=args.duration,
                          on_status=None if args.quiet or not sys.stderr.isatty() else _print_status)
    finally:
        if preview is not None:
            preview.close()
    if args.report:
        from pipeline.report import write_report

        write_report(Path(args.report), report)
    if not args.quiet:
        recorded = f"; recorded {report['frames_recorded']} frames to {report['output']}" if report["output"] else ""
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
