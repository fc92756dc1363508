"""`facezoom live`: real-time policy, time-outs, reconnects, recording, and the command.

The sources are made here, on 127.0.0.1 (`live_server.py`): an MPEG-TS stream of a real face
from a moving camera at 640x480, 30 fps, as a network camera would send it (with sound that
beeps while the picture is white, to check that the recording keeps them together).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import types
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from live_server import BEEP_HZ, SilentServer, TSServer, UDPSender, free_udp_port
from pipeline.commands.cli import main
from pipeline.config import load_config
from pipeline.stages.detect import DetectConfig
from pipeline.errors import InputError, UserError
from pipeline.live.audio import AudioDevice
from pipeline.live.clock import Timeline
from pipeline.live.loop import LiveConfig, run_live
from pipeline.live.budget import BudgetController, LiveStats, Rung, ladder
from pipeline.live.source import LiveSource
from pipeline.live.spec import AudioInputSpec, parse_audio_input, parse_source
from pipeline.stages import chunk
from synth import make_video

ROOT = Path(__file__).resolve().parent.parent
CLASSICAL = load_config()


def _recording(path: Path) -> list[float]:
    """The frame times (s) of a recording, decoding every frame (it must be complete to decode)."""
    with av.open(str(path)) as container:
        return [frame.time for frame in container.decode(video=0)]


def _frames(path: Path) -> list[tuple[float, float]]:
    """(time s, mean brightness 0..255) of every frame of a recording."""
    with av.open(str(path)) as container:
        return [(frame.time, float(frame.to_ndarray(format="gray").mean())) for frame in container.decode(video=0)]


class Sound:
    """A recording's first audio stream, decoded and laid on its timeline (silence where it has no packet)."""

    def __init__(self, path: Path):
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            self.codec, self.rate = stream.codec_context.name, stream.codec_context.sample_rate
            self.starts = [float(p.pts * p.time_base) for p in container.demux(stream) if p.size]  # packets, in file order
        with av.open(str(path)) as container:
            pieces = [(frame.time, frame.to_ndarray()[0].astype(np.float32)) for frame in container.decode(audio=0)]
        self.start = pieces[0][0]  # s: the first sample's time
        self.end = max(t + len(x) / self.rate for t, x in pieces)
        self.decoded_s = sum(len(x) for _, x in pieces) / self.rate
        self.samples = np.zeros(round(self.end * self.rate) + 1, np.float32)  # channel 0, from time 0
        for t, x in pieces:
            i = round(t * self.rate)
            self.samples[i : i + len(x)] = x[: len(self.samples) - i]

    def rms(self, start: float, end: float) -> float:
        piece = self.samples[max(0, round(start * self.rate)) : round(end * self.rate)]
        return float(np.sqrt(np.mean(piece**2))) if len(piece) else 0.0

    def loud(self, window: float = 0.01) -> list[tuple[float, bool]]:
        """(start s, whether it sounds) of each `window`-long piece."""
        return [(t, self.rms(t, t + window) > 0.05) for t in np.arange(0.0, self.end - window, window)]

    def pitch(self) -> float:
        """The strongest frequency (Hz) of the sounding pieces."""
        sounding = np.concatenate([self.samples[round(t * self.rate) : round((t + 0.01) * self.rate)] for t, on in self.loud() if on])
        spectrum = np.abs(np.fft.rfft(sounding * np.hanning(len(sounding))))
        return float(np.argmax(spectrum) * self.rate / len(sounding))


@pytest.fixture
def takes(monkeypatch):
    """Every frame the live loop takes from its source, as (frames read before the take was asked
    for, the frame's own number): counts, not times, so they mean the same on any machine."""
    taken: list[tuple[int, int]] = []
    take = LiveSource.take

    def counted(self, timeout):
        before = self.frames_read
        item = take(self, timeout)
        if item is not None:
            taken.append((before, item.number))
        return item

    monkeypatch.setattr(LiveSource, "take", counted)
    return taken


# -- what SOURCE means ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "device,text,platform,url,fmt",
    [
        ("camera", "/dev/video2", "linux", "/dev/video2", "v4l2"),
        ("camera", "camera:1", "linux", "/dev/video1", "v4l2"),
        ("camera", "0", "linux", "/dev/video0", "v4l2"),
        ("camera", "camera:1", "darwin", "1:none", "avfoundation"),
        ("camera", "camera:Integrated Camera", "win32", "video=Integrated Camera", "dshow"),
        ("microphone", "default", "linux", "default", "alsa"),  # --audio-input
        ("microphone", "hw:1,0", "linux", "hw:1,0", "alsa"),
        ("microphone", "1", "linux", "plughw:1", "alsa"),
        ("microphone", "0", "darwin", ":0", "avfoundation"),
        ("microphone", "Microphone (USB Audio)", "win32", "audio=Microphone (USB Audio)", "dshow"),
    ],
)
def test_webcams_and_microphones_map_to_each_platforms_capture_input(device, text, platform, url, fmt):
    if device == "camera":
        spec = parse_source(text, platform=platform)
        assert spec.kind == "camera"
    else:
        spec = parse_audio_input(text, platform=platform)
    assert (spec.url, spec.format) == (url, fmt)


def test_sources_that_cannot_work_say_what_to_do(tmp_path):
    with pytest.raises(UserError, match="name the camera"):
        parse_source("camera:0", platform="win32")
    with pytest.raises(UserError, match="/dev/videoN"):
        parse_source("camera:FaceTime", platform="linux")
    with pytest.raises(UserError, match="rtsp://"):
        parse_source("ftp://example.org/x.ts")
    clip = make_video(tmp_path / "clip.mp4", frames=4)
    with pytest.raises(UserError, match="--realtime"):
        parse_source(str(clip))
    with pytest.raises(InputError, match="not found"):
        parse_source(str(tmp_path / "missing.mp4"), realtime=True)
    spec = parse_source("rtsp://127.0.0.1:8554/cam", options={"rtsp_transport": "tcp"})
    assert spec.kind == "network" and spec.format is None and spec.options == {"rtsp_transport": "tcp"}
    # HLS comes a segment at a time: it is played at its timestamps, as --realtime does
    assert parse_source("https://cdn.example.org/live/index.m3u8?token=1").realtime
    assert not parse_source("http://127.0.0.1:8080/stream.ts").realtime
    assert parse_source("http://127.0.0.1:8080/live", input_format="hls").realtime


def test_an_audio_input_that_cannot_work_says_what_to_do(tmp_path, capsys):
    with pytest.raises(UserError, match="name the audio device"):
        parse_audio_input("0", platform="win32")
    with pytest.raises(UserError, match="no audio input is known"):
        parse_audio_input("0", platform="sunos5")
    assert main(["live", "tcp://127.0.0.1:1", "--audio-input", "default"]) == 2  # sound for a recording that is not made
    assert "give -o FILE" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the device is named the ALSA way")
def test_an_audio_device_that_does_not_open_is_a_clear_error_before_the_source_opens(tmp_path, capsys):
    with pytest.raises(InputError, match=r"cannot open audio input facezoom-no-such-mic \(alsa device .*arecord -l"):
        AudioDevice(parse_audio_input("facezoom-no-such-mic"), open_timeout=1, read_timeout=1)
    # the command: the device fails first, not the source (nothing listens on port 1)
    assert main(["live", "tcp://127.0.0.1:1", "-o", str(tmp_path / "rec.mp4"), "--audio-input", "facezoom-no-such-mic"]) == 2
    err = capsys.readouterr().err
    assert "cannot open audio input facezoom-no-such-mic" in err and "connection refused" not in err
    assert not list(tmp_path.iterdir())  # no recording, no temporary file


def test_the_run_clock_follows_the_sources_timestamps_however_they_are_read():
    clock = Timeline()
    # a burst read at the open: items handed over together are due at their own times
    assert [clock.at(s, now=100.0) for s in (10.0, 10.1, 10.2)] == pytest.approx([100.0, 100.1, 100.2])
    # audio demuxed ahead of the video it goes with keeps its own time too
    assert clock.at(10.25, now=100.05, stream="audio") == pytest.approx(100.25)
    assert clock.lead == pytest.approx(0.2)  # the first item was read 0.2 s late: another input is moved by that
    # read a second late, steadily: still due at their own times, so the recording plays them evenly
    assert clock.at(12.0, now=103.0) == pytest.approx(102.0)
    # the timestamps jump (a sender counting from 0 again): mapped afresh, never before what was given
    restarted = clock.at(0.0, now=103.1)
    assert restarted == pytest.approx(103.1)
    assert clock.at(0.5, now=103.6) == pytest.approx(restarted + 0.5)
    assert clock.at(0.3, now=103.4, stream="audio") == pytest.approx(restarted + 0.3)  # audio made the same jump: still together
    # a reconnect starts afresh: the next item is due when read
    clock.restart()
    assert clock.at(500.0, now=110.0) == pytest.approx(110.0)
    assert clock.at(None, now=111.0) == 111.0  # an untimed item is due when read


# -- time-outs: a source must never hang the program ---------------------------------------


@pytest.mark.parametrize("scheme", ["tcp", "http", "rtsp"])
def test_a_source_that_accepts_but_never_sends_fails_at_the_open_timeout(scheme):
    with SilentServer() as server:
        start = time.monotonic()
        with pytest.raises(InputError, match="open time-out"):
            LiveSource(parse_source(f"{scheme}://127.0.0.1:{server.port}/cam"), open_timeout=1.0, read_timeout=1.0)
        # ~1.2 s here; without the time-out FFmpeg waits for ever. The margin is for a loaded machine.
        assert time.monotonic() - start < 10
        assert server.accepted >= 1  # it did connect: the time-out, not a refusal, ended it


def test_ctrl_c_while_a_source_opens_ends_the_wait_at_once():
    """FFmpeg's open blocks in C for up to the open time-out; a stop request abandons it."""
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()  # what the first Ctrl-C does
    with SilentServer() as server:
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            LiveSource(parse_source(f"tcp://127.0.0.1:{server.port}"), open_timeout=30.0, read_timeout=1.0, interrupt=stop)
        assert time.monotonic() - start < 10  # ~0.6 s here; far short of the 30 s open time-out it would otherwise wait out


@pytest.mark.slow
def test_a_udp_stream_plays_and_its_silence_ends_the_run_at_the_read_timeout():
    port = free_udp_port()
    with pytest.raises(InputError, match="open time-out"):  # nothing sent yet: no hang either
        LiveSource(parse_source(f"udp://127.0.0.1:{port}"), open_timeout=1.0, read_timeout=1.0)
    # 10 s: the sender starts first; run_live opens it, then builds its models (~1-5 s here) while reading it.
    with UDPSender(port, seconds=10.0) as sender:
        report = run_live(parse_source(sender.url), cfg=CLASSICAL, live=LiveConfig(read_timeout=1.0), duration=30)
    assert report["stopped"] == "source dropped" and "no data for 1 s" in report["error"]
    # at 30 fps, at least 2 s of frames were read; how many were processed depends on the machine's load
    assert report["frames_in"] >= 60 and report["frames_out"] >= 1, report


class AfterFrames:
    """Stands in for the preview: runs `action` on a thread once `count` frames were output."""

    def __init__(self, count, action):
        self.count, self.action, self.frames, self.thread = count, action, 0, None

    def publish(self, input_image, output_image, stats):
        self.frames += 1
        if self.frames == self.count:
            self.thread = threading.Thread(target=self.action)
            self.thread.start()

    def join(self):
        if self.thread is not None:
            self.thread.join()


@pytest.mark.slow
def test_a_source_that_stops_sending_ends_the_run_at_the_read_timeout(tmp_path):
    with TSServer(width=320, height=240) as server:
        trigger = AfterFrames(30, server.stall)
        report = run_live(parse_source(server.url), cfg=CLASSICAL, live=LiveConfig(read_timeout=1.0),
                          output=tmp_path / "rec.mp4", preview=trigger, duration=30)
        trigger.join()
    assert trigger.frames < 60  # not the 30 s asked for: the stall ended it
    assert report["stopped"] == "source dropped"
    assert "no data for 1 s" in report["error"] and "--reconnect" in report["error"]
    times = _recording(tmp_path / "rec.mp4")  # what came before the stall is kept, complete
    assert len(times) == report["frames_recorded"] > 10


# -- the real-time policy ----------------------------------------------------------------------


@pytest.mark.slow
def test_nothing_backs_up_over_10_seconds_of_the_default_live_case(tmp_path, takes):
    """640x480 at 30 fps, classical backend, default settings, recorded: the live case users run.

    Its speed (fps, latency p50/p95 against the 150 ms budget) is measured by benchmarks/live.py;
    this test checks what holds at any speed."""
    with TSServer() as server:
        report = run_live(parse_source(server.url), cfg=CLASSICAL, output=tmp_path / "live.mp4", duration=10)
    assert report["stopped"] == "duration" and report["error"] is None
    # Every frame read was either output or dropped as stale; none waits anywhere.
    assert report["frames_in"] == report["frames_out"] + report["frames_dropped"]
    assert all(number >= before - 1 for before, number in takes)  # each frame processed was the newest one read
    assert report["frames_in"] >= 0.8 * 30 * 10  # the reader keeps pace with the camera
    # A queue would grow latency by seconds over the run; without one, late seconds look like early
    # ones, give or take the noise of a loaded machine.
    per_second = report["latency_ms_p95_per_second"]
    assert len(per_second) >= 8
    early, late = statistics.median(per_second[:4]), statistics.median(per_second[-4:])
    assert late <= 2 * early + 500, per_second
    assert report["source_lag_ms_max"] < 1000  # nothing queued in socket or demuxer buffers either
    # The recording holds every output frame, at the stream's own times: the 10 s from the open,
    # plus what the open read ahead to probe the stream (the first frame, 0.35-0.7 s earlier here).
    times = _recording(tmp_path / "live.mp4")
    assert len(times) == report["frames_recorded"] == report["frames_out"] - report["frames_not_recorded"]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert 9.0 <= times[-1] - times[0] <= 10.5 + 1.0


SLOW_FRAME_S = 0.2  # 6 frames of a 30 fps source: at least this long per frame makes processing slower than the source anywhere


class SlowProcessor(chunk.FaceProcessor):
    """The real face stages, plus a pause per frame: slower than the source however fast the machine."""

    def __call__(self, frames, timer):
        time.sleep(SLOW_FRAME_S)
        return super().__call__(frames, timer)


@pytest.mark.slow
def test_when_processing_is_slower_than_the_source_frames_are_dropped_not_queued(monkeypatch, takes):
    """At most 5 frames a second are processed of the 30 sent, on any machine, with no adaptation."""
    monkeypatch.setattr(chunk, "FaceProcessor", SlowProcessor)
    with TSServer(width=320, height=240) as server:
        report = run_live(parse_source(server.url), cfg=CLASSICAL, live=LiveConfig(adapt=False), duration=5)
    assert report["stopped"] == "duration" and report["budget"]["changes"] == 0
    assert report["frames_in"] == report["frames_out"] + report["frames_dropped"]
    # ~5 of every 6 frames go unprocessed; they are dropped, more of them than were processed
    # (that needs the source to deliver only 10 of its 30 frames a second in time).
    assert report["frames_dropped"] - report["frames_dropped_at_start"] > report["frames_out"], report
    # No backlog: each frame taken was the newest one read when the loop asked (a queue would hand
    # out the oldest, ever further behind), so frames waiting never exceed the reader's one slot...
    assert len(takes) == report["frames_out"] and all(number >= before - 1 for before, number in takes), takes
    # ...and latency (about one frame's work) does not grow: a queue would add ~0.8 s each second.
    per_second = report["latency_ms_p95_per_second"]
    assert len(per_second) >= 3, report
    assert max(per_second[-2:]) <= 2 * max(per_second[:2]) + 500, per_second
    assert report["source_lag_ms_max"] < 1000  # the reader kept up: no backlog in socket buffers


@pytest.mark.slow
def test_an_impossible_budget_drives_the_real_face_stages_to_their_cheapest_rung():
    with TSServer(width=320, height=240) as server:
        report = run_live(parse_source(server.url), cfg=CLASSICAL, live=LiveConfig(budget_ms=1, max_detect_every=20), duration=4)
    budget = report["budget"]
    assert budget["level"] == budget["levels"] - 1 and budget["detect_every"] == 20  # 5 -> 10 -> 20
    assert budget["steps"] is None  # the classical backend has no step budget to spend


def _fake_processor(steps=100, warm_steps=20, every=5):
    """A FaceProcessor's knobs on stand-ins for its parts: the controller turns only `knobs` and `turn`."""
    from pipeline.stages.chunk import FaceProcessor

    processor = FaceProcessor.__new__(FaceProcessor)
    processor.backend = types.SimpleNamespace(steps=steps, warm_steps=warm_steps, name="fake")
    processor.analyzer = types.SimpleNamespace(detect_cfg=DetectConfig(every=every))
    return processor


def test_the_budget_spends_fewer_steps_when_late_and_more_again_when_calm():
    processor = _fake_processor()
    controller = BudgetController(processor, budget_ms=100, max_detect_every=20)
    t = 0.0
    for _ in range(40):  # a 1 s window at 30 fps, 130 ms each: over budget
        t += 1 / 30
        controller.update(130, now=t)
    assert processor.backend.warm_steps < 20 and processor.backend.steps < 100
    assert processor.analyzer.detect_cfg.every == 5  # steps go first
    for _ in range(30 * 20):  # 20 s well within budget
        t += 1 / 30
        controller.update(20, now=t)
    assert controller.level == 0 and (processor.backend.steps, processor.backend.warm_steps) == (100, 20)


def test_a_far_overshoot_skips_rungs_and_the_bottom_detects_less_often():
    processor = _fake_processor()
    controller = BudgetController(processor, budget_ms=100, max_detect_every=20)
    for i in range(4):  # 4 frames of 2 s each: a slow generative backend
        controller.update(2000, now=2.0 * i)
    assert controller.level == len(controller.rungs) - 1
    assert processor.analyzer.detect_cfg.every == 20 and processor.backend.warm_steps == 2


def test_backends_without_a_step_budget_adapt_by_detecting_less_often():
    rungs = ladder(Rung(5), max_detect_every=15)
    assert rungs == [Rung(5), Rung(10), Rung(15)]


def test_latency_percentiles_come_from_a_constant_size_histogram():
    stats = LiveStats()
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 20.0, 5000)  # ms
    for i, v in enumerate(values):
        stats.add(latency_s=v / 1000, output_time=i / 30)
    assert abs(stats.percentile(95) - np.percentile(values, 95)) <= 1.0
    assert abs(stats.fps() - 30) < 0.01
    assert 160 <= len(stats.p95_per_second) <= 167  # one p95 per second of output


# -- the source going away ------------------------------------------------------------------


def test_a_vanishing_source_is_a_clear_error_and_the_recording_is_kept(tmp_path):
    with TSServer(width=320, height=240) as server:
        trigger = AfterFrames(30, server.vanish)
        report = run_live(parse_source(server.url), cfg=CLASSICAL, output=tmp_path / "rec.mkv", preview=trigger, duration=20)
        trigger.join()
    assert report["stopped"] == "source dropped" and report["frames_out"] == trigger.frames
    assert server.url in report["error"] and "dropped" in report["error"]
    assert len(_recording(tmp_path / "rec.mkv")) == report["frames_recorded"] > 10


@pytest.mark.slow
def test_a_vanishing_source_is_reopened_when_reconnect_is_on():
    with TSServer(width=320, height=240) as server:
        def blink():
            server.vanish()
            time.sleep(1.0)
            server.restart()

        trigger = AfterFrames(30, blink)
        report = run_live(parse_source(server.url), cfg=CLASSICAL, live=LiveConfig(reconnect=10), preview=trigger, duration=8)
        trigger.join()
    assert report["stopped"] == "duration" and report["error"] is None
    assert report["reconnects"] == 1
    assert report["frames_out"] > 30 + 30  # frames came on both sides of the 1 s gap
    assert report["frames_in"] == report["frames_out"] + report["frames_dropped"]


# -- sound ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_streams_sound_is_recorded_in_step_with_its_picture(tmp_path):
    """The stream beeps while its picture is white (the first half of every second of its clock).

    The recording must hold that sound whole, from its first frame to its last, and beep exactly
    where its frames are white, however many frames were dropped on the way (on any machine:
    frames and sound are both placed by the stream's own timestamps)."""
    rec = tmp_path / "rec.mp4"
    with TSServer(width=320, height=240, audio="aac") as server:
        report = run_live(parse_source(server.url), cfg=CLASSICAL, output=rec, duration=6)
    assert report["stopped"] == "duration" and report["error"] is None
    audio = report["audio"]
    assert (audio["codec"], audio["copied"], audio["packets_lost"]) == ("aac", True, 0), audio
    frames, sound = _frames(rec), Sound(rec)
    times = [t for t, _ in frames]
    assert sound.codec == "aac" and len(sound.starts) == audio["packets"] > 100
    assert all(b > a for a, b in zip(sound.starts, sound.starts[1:]))  # timestamps only go forward
    assert 0.0 <= sound.starts[0] <= 0.05  # it starts with the first frame: what came before was cut
    # nothing missing in between (a frame dropped as stale keeps its sound) ...
    assert sound.decoded_s == pytest.approx(sound.end - sound.start, abs=0.05)
    # ... and it ends with the picture: the last frame lasts as long as the one before it
    assert sound.end == pytest.approx(times[-1] + (times[-1] - times[-2]), abs=2 / 30)
    # in step: away from the beeps' edges (40 ms: AAC smears an edge over a 21 ms frame), a frame is white where it beeps
    loud = sound.loud()
    edges = [t for (t, a), (_, b) in zip(loud, loud[1:]) if a != b]
    checked = [(brightness > 200, sound.rms(t, t + 0.02) > 0.05) for t, brightness in frames
               if all(abs(t - edge) > 0.04 for edge in edges)]
    assert sum(white for white, _ in checked) >= 5 and sum(not white for white, _ in checked) >= 5, checked
    assert all(white == beeps for white, beeps in checked), checked
    assert sound.pitch() == pytest.approx(BEEP_HZ, abs=5)  # the stream's own tone, not noise


def test_a_realtime_files_sound_is_kept_and_encoded_where_the_container_needs_it(tmp_path, capsys):
    """µ-law sound (a .mov's) cannot go into .mp4: the recording encodes it to AAC and keeps its place."""
    clip = make_video(tmp_path / "clip.mov", frames=45, width=160, height=96, fps=30, audio=("pcm_mulaw",))  # 1.5 s, 330 Hz
    rec, report_path = tmp_path / "rec.mp4", tmp_path / "r.json"
    assert main(["live", str(clip), "--realtime", "-o", str(rec), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["stopped"] == "end of file"
    audio = report["audio"]
    assert (audio["source_codec"], audio["codec"], audio["copied"]) == ("pcm_mulaw", "aac", False), audio
    assert f"and {audio['seconds']:.1f} s of aac sound to {rec}" in capsys.readouterr().err
    times, sound = _recording(rec), Sound(rec)
    assert sound.codec == "aac" and sound.pitch() == pytest.approx(330, abs=5)
    assert sound.rms(0.3, 1.2) > 0.15  # the clip's tone (0.3 peak, 0.21 RMS), not silence
    # A file plays from when the loop first asks for a frame: the first frame is shown until then,
    # and the sound starts with the frames that follow it.
    assert 0.0 <= sound.start <= times[1]
    assert sound.end == pytest.approx(times[-1] + (times[-1] - times[-2]), abs=2 / 30)


@pytest.mark.slow
def test_an_audio_input_gives_a_silent_source_its_sound(tmp_path):
    """A second input timed on the run's clock: FFmpeg's test tone, paced as a microphone sends
    (no audio device exists on the build machines), for a stream without sound, as a webcam is."""
    microphone = AudioInputSpec("test tone", "sine=frequency=440:sample_rate=48000,arealtime", "lavfi", "")
    rec = tmp_path / "rec.mp4"
    with TSServer(width=320, height=240) as server:
        report = run_live(parse_source(server.url), cfg=CLASSICAL, output=rec, duration=5, audio_input=microphone)
    audio = report["audio"]
    # raw PCM is encoded for .mp4, whose PCM tracks have no timestamps to keep a gap with
    assert (audio["from"], audio["source_codec"], audio["codec"], audio["packets_lost"]) == ("test tone", "pcm_s16le", "aac", 0), audio
    times, sound = _recording(rec), Sound(rec)
    assert all(b > a for a, b in zip(sound.starts, sound.starts[1:]))
    assert sound.pitch() == pytest.approx(440, abs=5) and sound.rms(sound.start + 0.1, sound.end - 0.1) > 0.06  # the tone: 1/8 peak, 0.088 RMS
    assert sound.decoded_s == pytest.approx(sound.end - sound.start, abs=0.05)  # whole, once it starts
    assert sound.start < times[-1] - 1.0 and sound.end == pytest.approx(times[-1] + (times[-1] - times[-2]), abs=2 / 30)


def test_a_recording_of_a_source_without_sound_says_so(tmp_path, caplog):
    clip = make_video(tmp_path / "silent.mp4", frames=10, width=160, height=96, fps=30, audio=())
    report = run_live(parse_source(str(clip), realtime=True), cfg=CLASSICAL, output=tmp_path / "rec.mp4", duration=30)
    assert report["audio"] is None and report["frames_recorded"] >= 1
    assert "sends no sound: the recording holds the video only" in caplog.text
    with av.open(str(tmp_path / "rec.mp4")) as container:
        assert container.streams.video and not container.streams.audio


# -- files at their frame rate ----------------------------------------------------------------


def test_a_file_with_realtime_plays_at_its_frame_rate(tmp_path, takes):
    clip = make_video(tmp_path / "clip.mp4", frames=60, width=160, height=96, fps=30)  # 2 s
    start = time.monotonic()
    report = run_live(parse_source(str(clip), realtime=True), cfg=CLASSICAL, duration=30)
    assert report["stopped"] == "end of file"
    assert 1.6 <= time.monotonic() - start  # not decoded as fast as possible (a lower bound: no machine plays it faster)
    assert report["frames_in"] == 60 == report["frames_out"] + report["frames_dropped"]
    # The file waited for the models to load: when the loop first asked for a frame, only the one
    # read at open had been read (a file played from the open would have read ~30 a second by then).
    assert takes[0][0] == 1, takes[:3]


# -- the command ------------------------------------------------------------------------------


def test_the_command_rejects_bad_sources_with_one_line(tmp_path, capsys):
    assert main(["live", str(tmp_path / "nope.mp4")]) == 2
    assert "live source not found" in capsys.readouterr().err
    clip = make_video(tmp_path / "clip.mp4", frames=4)
    assert main(["live", str(clip)]) == 2
    assert "--realtime" in capsys.readouterr().err
    assert main(["live", "tcp://127.0.0.1:1", "--preview", "x:y"]) == 2
    assert "--preview expects" in capsys.readouterr().err
    assert main(["live", "tcp://127.0.0.1:1", "--budget-ms", "0"]) == 2
    assert "budget_ms must be" in capsys.readouterr().err
    assert main(["live", "tcp://127.0.0.1:1", "--input-format", "bogus"]) == 2
    assert "no container format 'bogus'" in capsys.readouterr().err
    assert main(["live", "tcp://127.0.0.1:1", "-o", str(tmp_path / "rec.xyz")]) == 2  # refused before connecting
    assert "must end in .mp4" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["/dev/video97", "rtsp://camera.invalid/stream"])
def test_a_missing_camera_or_an_unknown_host_fails_at_once_and_says_no_preview(capsys, monkeypatch, source):
    """The system has already said no: one line naming the source, before the models load (seconds)
    and with no preview address printed for a page that would never show anything."""
    import socket

    def no_such_name(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)  # as a resolver answers for .invalid
    monkeypatch.setattr(chunk.FaceProcessor, "__init__", lambda *a, **k: pytest.fail("the models were loaded"))
    assert main(["-q", "live", source, "--preview", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot open live source {source}" in err[0], err
    assert ("no such camera" if source.startswith("/dev") else "'camera.invalid' does not resolve") in err[0]


def test_alsa_s_own_messages_stay_off_the_terminal(capfd):
    """alsa-lib writes to file descriptor 2 itself (eight lines for a missing card): they are kept
    for the error line and the debug log, not printed."""
    from pipeline.live.audio import _own_stderr

    lines: list[str] = []
    with _own_stderr(lines):
        os.write(2, b"ALSA lib pcm.c:2722:(snd_pcm_open_noupdate) Unknown PCM default\n")
    assert capfd.readouterr().err == ""
    assert lines == ["ALSA lib pcm.c:2722:(snd_pcm_open_noupdate) Unknown PCM default"]


def test_the_preview_address_is_said_once_the_source_is_open(tmp_path, capsys, monkeypatch):
    from pipeline.commands import live as live_command

    said = []

    def fake_run_live(spec, *, on_open, **kwargs):
        said.append(capsys.readouterr().err)  # before the source opens: nothing yet
        on_open()
        said.append(capsys.readouterr().err)
        return {"error": None, "output": None, "audio": None, "frames_in": 0, "frames_out": 0, "frames_dropped": 0, "fps": 0.0,
                "latency_ms_p50": None, "latency_ms_p95": None}

    monkeypatch.setattr(live_command, "run_live", fake_run_live)
    clip = make_video(tmp_path / "clip.mp4", frames=4)
    assert main(["-q", "live", str(clip), "--realtime", "--preview", "127.0.0.1:0"]) == 0
    assert said[0] == "" and said[1].startswith("facezoom: preview at http://127.0.0.1:")


@pytest.mark.slow
def test_a_jump_in_a_files_timestamps_does_not_freeze_realtime_play(tmp_path):
    """Paced play follows the timestamps; a splice that jumps them by minutes is paced afresh."""
    clip = make_video(tmp_path / "spliced.mkv", frames=20, width=160, height=96, fps=10, pts=[*range(10), *range(3600, 3610)])
    start = time.monotonic()
    report = run_live(parse_source(str(clip), realtime=True), cfg=CLASSICAL, duration=60)
    assert report["stopped"] == "end of file" and report["frames_in"] == 20
    assert time.monotonic() - start < 60  # ~10 s here; not the 6 minutes the timestamps jump over


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_cleanly_with_a_complete_recording_and_report(tmp_path, stop_signal):
    out, report_path = tmp_path / "live.mp4", tmp_path / "r.json"
    with TSServer(width=320, height=240) as server:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run_pipeline.py"), "live", server.url, "-o", str(out), "--report", str(report_path),
             "--preview", "127.0.0.1:0", "--set", "video.preset=veryfast"],
            stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        try:
            url = None
            for line in proc.stderr:  # "facezoom: preview at http://127.0.0.1:PORT/"
                if "preview at" in line:
                    url = line.split("preview at", 1)[1].strip()
                    break
            assert url, "the command never announced its preview"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until the loop runs (our Ctrl-C handler is set by then)
                stats = json.loads(urllib.request.urlopen(url + "stats.json", timeout=5).read() or b"{}")
                if stats.get("frames_out", 0) >= 30:
                    break
                time.sleep(0.2)
            proc.send_signal(stop_signal)  # SIGTERM: kill, timeout, docker stop, systemd
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    report = json.loads(report_path.read_text())
    assert report["stopped"] == "interrupted"
    times = _recording(out)
    assert len(times) == report["frames_recorded"] >= 30
    assert all(b > a for a, b in zip(times, times[1:]))
    assert not list(tmp_path.glob(".*partial*"))  # no temporary file left beside it


@pytest.mark.slow
def test_the_source_opens_before_the_models_load_and_what_it_sends_meanwhile_is_dropped(monkeypatch, takes):
    """A source that fails, fails before the models load; one that works is read while they load,
    newest frame wins, so the first frame processed is a fresh one, not the oldest of a backlog."""
    from pipeline.live import loop
    from pipeline.stages.detect import FaceDetector

    order = []
    ready, open_source, detect = loop._ready_processor, LiveSource.__init__, FaceDetector.detect

    def slow_models(cfg, live):  # a second more than they take here, so the stream sends ~30 frames meanwhile
        order.append("models")
        processor = ready(cfg, live)
        time.sleep(1.0)
        return processor

    monkeypatch.setattr(loop, "_ready_processor", slow_models)
    monkeypatch.setattr(FaceDetector, "detect", lambda self, frames: (order.append("detect"), detect(self, frames))[1])
    monkeypatch.setattr(LiveSource, "__init__", lambda self, *a, **k: (order.append("open"), open_source(self, *a, **k))[1])
    with TSServer(width=320, height=240) as server:
        report = run_live(parse_source(server.url), cfg=CLASSICAL, duration=1)
    assert order[:3] == ["open", "models", "detect"]  # opened, then built, the detector warmed up
    assert report["models_ms"] >= 1000 and report["frames_out"] >= 1
    first_before, first_number = takes[0]
    assert first_before >= 10, takes[:3]  # the reader ran while the models loaded...
    assert first_number >= first_before - 1, takes[:3]  # ...and the first frame processed was the newest it had read
    assert report["frames_dropped_at_start"] >= first_before - 2, report  # the others were dropped, counted
    assert report["frames_in"] == report["frames_out"] + report["frames_dropped"]


def test_a_source_that_sends_nothing_fails_at_its_open_timeout_before_the_models_load(monkeypatch, capsys):
    """`live udp://...` with nobody sending: one line, exit 2, at --open-timeout; the models (seconds:
    torch's import, the weights, the detector's first run) once loaded first and made it 53 s for 10."""
    from pipeline.live import loop

    monkeypatch.setattr(loop, "_ready_processor", lambda *a, **k: pytest.fail("the models were loaded"))
    url = f"udp://127.0.0.1:{free_udp_port()}"
    start = time.monotonic()
    assert main(["-q", "live", url, "--open-timeout", "2", "--preview", "127.0.0.1:0"]) == 2
    assert time.monotonic() - start >= 1.9  # it did wait for the sender, as long as it was told to
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"facezoom: error: cannot open live source {url}: no video within the 2 s open time-out "
                   "(is the sender running and sending?)"], err


def test_ctrl_c_while_the_models_load_is_an_interrupt_with_nothing_recorded(tmp_path, monkeypatch, sample_clip):
    from pipeline.live import loop

    stop = threading.Event()

    def loading(cfg, live):
        stop.set()  # what the first Ctrl-C does
        return object()  # never used: the run ends before its first frame

    monkeypatch.setattr(loop, "_ready_processor", loading)
    with pytest.raises(KeyboardInterrupt):
        run_live(parse_source(str(sample_clip), realtime=True), cfg=CLASSICAL, output=tmp_path / "rec.mp4", stop=stop, duration=5)
    assert list(tmp_path.iterdir()) == []  # no recording, no temporary file
