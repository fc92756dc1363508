"""The live loop: faces in a webcam or network stream, super-resolved with bounded latency.

`run_live` is the library function; the `facezoom live` command is `pipeline/commands/live.py`.

Tools that queue every frame fall further behind the longer they run (10-15 s at 640x480 with
an enhancer on). Here nothing queues:

1. the source is decoded on its own thread, which keeps only the newest frame
   (`pipeline/live/source.py`); a frame not taken before the next one arrives is dropped;
2. the loop takes the newest frame and runs the face stages on it (`FaceProcessor`, one frame
   per call, frames numbered 0, 1, 2, ... as they are processed);
3. the processed frame is output: offered to the browser preview (`pipeline/live/preview.py`),
   which serves only the newest, and to the recorder (`pipeline/live/recorder.py`), whose short
   queue drops frames rather than grow (they are counted);
4. the frame's latency — from the moment it was read to now — feeds the budget controller
   (`pipeline/live/budget.py`), which spends fewer SR steps and detects less often while the
   p95 latency is over budget, and more again when there is room.

Ctrl-C stops the loop between frames; the recording is then closed normally, complete and
playable. Its frames are stamped with their time on the run's clock (each frame's own timestamp
mapped onto the reader's monotonic clock, `pipeline/live/clock.py`), so it plays at real time
whatever was dropped; the source's audio packets (or an `--audio-input` device's), collected by
the reader, go into it by the same clock, so sound stays with the picture (`pipeline/live/audio.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from pipeline.config.sections import LiveConfig
from pipeline.live.recorder import Recorder
from pipeline.media.memory import setup_done

log = logging.getLogger(__name__)

STATUS_SECONDS = 1.0  # how often the figures are refreshed for the preview and the terminal


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
    audio_input=None,
    on_open: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Process the live source `spec` (a `spec.SourceSpec`) until `duration` s have passed,
    `stop` is set (Ctrl-C sets it), a file ends or the source drops; returns the report.

    `preview` is a `preview.PreviewServer` to publish to; `on_status` gets the figures about
    once a second. A source that drops (and is not reopened) ends the run with `stopped` =
    "source dropped" and its message in `error`; the recording so far is kept. `stop` set while
    the source is still opening raises KeyboardInterrupt: nothing was read, nothing recorded.
    The recording (`output`) takes the source's sound, or that of `audio_input` (a
    `spec.AudioInputSpec`, opened before the source, so a wrong device fails at once).
    `on_open()` is called once the source is open (the CLI says the preview's address then).
    A camera that does not exist or a host that does not resolve fails before anything else, and a
    source that opens but sends nothing at `live.open_timeout`: the source opens before the models
    load (`_run`).
    """
    from pipeline.live.audio import AudioDevice
    from pipeline.live.source import LiveSource, preflight

    preflight(spec, timeout=min(live.open_timeout, 5.0))
    stop = stop or threading.Event()
    recording = output is not None
    with _stop_on_interrupt(stop), contextlib.ExitStack() as opened:
        device = None
        if recording and audio_input is not None:
            device = opened.enter_context(AudioDevice(audio_input, open_timeout=live.open_timeout, read_timeout=live.read_timeout))
        # A recording's audio stream is made from the source's before its reader starts (`_run` starts it).
        source = opened.enter_context(LiveSource(
            spec, open_timeout=live.open_timeout, read_timeout=live.read_timeout, reconnect=live.reconnect, interrupt=stop,
            audio=recording and device is None, autostart=False,
        ))
        if on_open is not None:
            on_open()
        run = _LiveRun(spec, source, cfg=cfg, live=live, preview=preview, on_status=on_status)
        run.device = device
        _run(run, output, stop, duration)
    return run.report()


def _ready_processor(cfg, live: LiveConfig):
    """The face stages, built and warmed up (MTCNN's first call costs far more than the next)."""
    from pipeline.stages.chunk import FaceProcessor

    # The detector sets its own thread count per call (detect.threads); unless that is pinned, it gets live's too.
    if live.torch_threads and not cfg.detect.threads:
        cfg = dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, threads=live.torch_threads))
    processor = FaceProcessor(cfg, report=False)
    setup_done()
    processor.warm_up()
    return processor


def _run(run: "_LiveRun", output, stop: threading.Event, duration: float | None) -> None:
    """The loop, recording to `output`; the recording is finished however the loop ends.

    The models load (and the detector runs once) once the source is open: a source that sends
    nothing fails at its open time-out, not after the models. Their modules are imported before the
    reader starts (torch's C libraries load holding the GIL for seconds, which would starve its
    read time-out); what the source sent meanwhile waits in its buffers and is read at once. The
    reader runs while the models are built, dropping what comes (newest frame wins), so the first
    frame processed is a fresh one. A stop (Ctrl-C) before they are ready is a KeyboardInterrupt:
    nothing was processed."""
    try:
        with _torch_threads(run.live.torch_threads):  # imports torch
            from pipeline.stages import chunk  # noqa: F401 - and the face stages' other modules

            if output is not None:
                run.open_recorder(output)
            run.source.start()
            if run.device is not None:
                run.device.start(video_lead=lambda: run.source.lead)
            start = time.monotonic()
            processor = _ready_processor(run.cfg, run.live)
            if stop.is_set():
                raise KeyboardInterrupt
            run.ready(processor, models_ms=round((time.monotonic() - start) * 1000, 1))
            run.loop(stop, duration)
    except KeyboardInterrupt:  # a second Ctrl-C: abandon the frame in hand, keep what was recorded
        if run.processor is None:
            raise
        run.stopped = "aborted"
    finally:
        if run.recorder is not None:
            run.recorder.close()


class _LiveRun:
    """One live run's state: the face stages, the budget controller, the figures, the recorder."""

    def __init__(self, spec, source, *, cfg, live: LiveConfig, preview, on_status):
        self.spec, self.source, self.cfg, self.live, self.preview, self.on_status = spec, source, cfg, live, preview, on_status
        # Made by `ready`, as the modules they come from import torch (seconds) and the reader starts first.
        self.processor = self.controller = self.stats = self.timer = None  # the face stages, their budget, the figures
        self.width, self.height = source.width, source.height
        self.stopped, self.error, self.recorder = "interrupted", None, None
        self.frames_out, self.startup_ms, self.t0, self.dropped_at_start = 0, None, None, 0
        self.clock0: float | None = None  # the first processed frame's time on the run's clock: its pts 0
        self.device = None  # an --audio-input device (`audio.AudioDevice`), whose sound replaces the source's
        self.last_status, self.resized = time.monotonic(), False
        self.opened = time.monotonic()  # --duration counts from `ready`: the source open, the models loaded
        self.models_ms: float | None = None

    def ready(self, processor, *, models_ms: float) -> None:
        """The face stages are built and warmed up: the loop can start."""
        from pipeline.live.budget import BudgetController, LiveStats
        from pipeline.stages.chunk import StageTimer

        self.processor, self.models_ms = processor, models_ms
        self.stats, self.timer = LiveStats(), StageTimer()
        max_every = min(self.live.max_detect_every, self.cfg.track.max_age or 1)  # tracks must outlive the gap between detections
        self.controller = BudgetController(processor, budget_ms=self.live.budget_ms, max_detect_every=max_every, enabled=self.live.adapt)
        self.opened = self.last_status = time.monotonic()

    def open_recorder(self, output: str | Path) -> None:
        out_width, out_height = self.cfg.composite.output_size(self.width, self.height)
        audio = self.device.feed if self.device is not None else self.source.audio
        self.recorder = Recorder(output, width=out_width, height=out_height, video_cfg=self.cfg.video, audio=audio)
        sound = self.recorder.audio_report()
        if sound is not None:
            how = "copied" if sound["copied"] else f"encoded to {sound['codec']}"
            log.info("recording the sound of %s with the video (%s, %s)", sound["from"], sound["source_codec"], how)
        else:
            hint = " (--audio-input DEVICE records a microphone with it)" if self.spec.kind == "camera" else ""
            log.warning("%s sends no sound: the recording holds the video only%s", self.spec.label, hint)

    def loop(self, stop: threading.Event, duration: float | None) -> None:
        """Frame after frame until a stop: the newest frame (older ones were dropped by the reader), processed."""
        while not stop.is_set():
            if duration is not None and time.monotonic() - self.opened >= duration:
                self.stopped = "duration"
                return
            item = self._take()
            if item is False:
                return
            if item is not None:
                self._process(item)

    def _take(self):
        """The newest frame; None if none came in time; False when the source has ended or dropped."""
        from pipeline.live.source import SourceError

        try:
            return self.source.take(timeout=0.5)
        except EOFError:
            self.stopped = "end of file"
        except SourceError as err:
            self.stopped, self.error = "source dropped", str(err)
        return False

    def _process(self, item) -> None:
        """The face stages on one frame, then output, accounting and adaptation."""
        from pipeline.media.reader import Frame

        self.t0 = item.read_time if self.t0 is None else self.t0
        self.clock0 = item.clock if self.clock0 is None else self.clock0
        image = self._sized(item.image())
        ms = round((item.clock - self.clock0) * 1000)
        out = self.processor([Frame(image=image, pts=ms, time_base=Fraction(1, 1000), index=self.frames_out)], self.timer)[0]
        if self.recorder is not None:
            self.recorder.write(out, item.clock)
        done = time.monotonic()
        self.frames_out += 1
        if self.startup_ms is None:  # the first frame pays for the models' first call: reported apart
            self.startup_ms = round((done - item.read_time) * 1000, 1)
            self.dropped_at_start = self.source.frames_dropped
        else:
            self.stats.add(latency_s=done - item.read_time, output_time=done, lag_s=item.lag)
            self.controller.update((done - item.read_time) * 1000, now=done)
        self._show(image, out, done)

    def _sized(self, image):
        """A reconnect may bring another size: frames keep the first one."""
        if image.shape[:2] == (self.height, self.width):
            return image
        import cv2

        if not self.resized:
            log.warning("the source's frames changed size to %dx%d; scaling them to %dx%d",
                        image.shape[1], image.shape[0], self.width, self.height)
        self.resized = True
        return cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)

    def _show(self, image, out, now: float) -> None:
        status = None
        if self.preview is not None:
            status = _status(self.stats, self.source, self.frames_out, self.controller, now)
            self.preview.publish(image, out, status)
        if self.on_status is not None and now - self.last_status >= STATUS_SECONDS:
            self.on_status(status or _status(self.stats, self.source, self.frames_out, self.controller, now))
            self.last_status = now

    def report(self) -> dict[str, Any]:
        stats, source, recorder = self.stats, self.source, self.recorder
        return {
            "source": self.spec.label,
            "backend": self.processor.backend.name,
            "output": None if recorder is None or not recorder.frames_written else str(recorder.path),
            "stopped": self.stopped,
            "error": self.error,
            "budget_ms": self.live.budget_ms,
            "latency_ms_p50": stats.percentile(50),
            "latency_ms_p95": stats.percentile(95),
            "latency_ms_max": round(stats.latency_max_ms, 1),
            "latency_ms_p95_per_second": list(stats.p95_per_second),
            "models_ms": self.models_ms,  # building and warming up the face stages, once the source was open
            "startup_ms": self.startup_ms,
            "frames_in": source.frames_read,
            "frames_out": self.frames_out,
            "frames_dropped": source.frames_dropped,
            "frames_dropped_at_start": self.dropped_at_start,  # while the models loaded and ran their first frame
            "fps": round(stats.fps(), 2),
            "seconds": round(stats.last_output - self.t0, 3) if stats.last_output and self.t0 else 0.0,
            "source_lag_ms_max": round(stats.lag_max_ms, 1),
            "reconnects": source.reconnects,
            "damaged_packets": source.damaged_packets,
            "frames_recorded": recorder.frames_written if recorder else 0,
            "frames_not_recorded": recorder.frames_skipped if recorder else 0,
            "audio": recorder.audio_report() if recorder else None,  # the recording's sound: codec, copied, packets, seconds
            "budget": self.controller.to_dict(),
            "stage_seconds": {k: round(v, 3) for k, v in self.timer.seconds.items()},
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
