"""Damaged inputs (mp4 with its index first, fragmented or last; mkv; cut short or bit-flipped):
every frame a plain single-threaded decode recovers is kept, whatever the decoder's thread count,
at its time; the damage is said in one line even under -q and in the report; `--strict` makes it
exit 2 with nothing written; a file that cannot be read at all is one line and leaves nothing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import pytest

from pipeline.commands.cli import main
from pipeline.media.reader import VideoReader
from synth import make_video, video_frames, write_bytes


def _remux(src: Path, dst: Path, **options) -> Path:
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=options) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in (inp.streams.video[0], inp.streams.audio[0])}
        for packet in inp.demux(inp.streams.video[0], inp.streams.audio[0]):
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst


def _plain_decode_times(path: Path) -> list[float]:
    """The times (s) of what a single-threaded decode keeps, skipping what it cannot read (FFmpeg's own behaviour)."""
    times = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        try:
            for packet in container.demux(stream):
                try:
                    times += [float(frame.pts * frame.time_base) for frame in packet.decode()]
                except av.error.InvalidDataError:
                    pass
        except av.error.FFmpegError:
            pass
    return times


def _all_within(wanted: list[float], times: list[float], tolerance: float = 1e-3) -> bool:
    """Whether each time of `wanted` is one of `times` (to the ms: containers round time bases)."""
    return all(any(abs(w - t) < tolerance for t in times) for w in wanted)


# The same 75 frames laid out as each container lays them out.
CONTAINERS = {
    "faststart.mp4": {"movflags": "faststart"},  # the index (moov) first
    "fragmented.mp4": {"movflags": "frag_keyframe+empty_moov"},  # an index per fragment
    "moov-at-end.mp4": {},  # the index written last, FFmpeg's default: a cut file has none
    "plain.mkv": {},
}
DAMAGES = ("cut30", "cut60", "flipped")


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """Each container cut at 30% and at 60% of its bytes, and with every 97th byte of its middle
    third flipped: "cut30-faststart.mp4", ..., "flipped-plain.mkv"."""
    folder = tmp_path_factory.mktemp("damaged")
    src = make_video(folder / "src.mp4", frames=75, width=160, height=120)
    out = {}
    for name, options in CONTAINERS.items():
        data = _remux(src, folder / f"whole-{name}", **options).read_bytes()
        for cut in (30, 60):
            out[f"cut{cut}-{name}"] = write_bytes(folder / f"cut{cut}-{name}", data[: len(data) * cut // 100])
        flipped = bytearray(data)
        for i in range(len(data) // 3, 2 * len(data) // 3, 97):
            flipped[i] ^= 0xFF
        out[f"flipped-{name}"] = write_bytes(folder / f"flipped-{name}", bytes(flipped))
    return out


READABLE = [f"{damage}-{name}" for damage in DAMAGES for name in CONTAINERS if not (damage.startswith("cut") and name == "moov-at-end.mp4")]


@pytest.mark.parametrize("name", READABLE)
def test_every_thread_count_keeps_what_one_thread_recovers(damaged, name):
    """FFmpeg's threads alone lose frames that one thread recovers, and say nothing (flipped-faststart.mp4
    at 64 threads: 33 frames where one thread gives 57); the reader's single-threaded take-over keeps them."""
    one = _read(damaged[name], threads=1)
    assert _all_within(_plain_decode_times(damaged[name]), one)
    for threads in (0, 8, 64):
        assert _read(damaged[name], threads=threads) == one, threads


def _read(path: Path, *, threads: int) -> list[float]:
    """The times (s) of the frames `VideoReader` yields, checked to come once each, in order."""
    with VideoReader(path, threads=threads, warn=False) as reader:
        frames = list(reader)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(a.pts < b.pts for a, b in zip(frames, frames[1:]))
    return [f.seconds for f in frames]


@pytest.mark.parametrize("name", [n for n in READABLE if n.startswith("cut")])
@pytest.mark.parametrize("threads", [0, 1])
def test_a_truncated_input_keeps_what_a_plain_decode_recovers_and_says_so(damaged, name, threads, tmp_path, caplog):
    src = damaged[name]
    out, report = tmp_path / ("out" + src.suffix), tmp_path / "r.json"
    assert main(["-q", "video", str(src), "-o", str(out), "--report", str(report), "--set", f"video.decode_threads={threads}"]) == 0
    err = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    data = json.loads(report.read_text())
    times = video_frames(out)[0]
    assert data["frames_out"] == data["frames_in"] == len(times)
    assert _all_within(_plain_decode_times(src), times)  # every frame a plain decode recovers, at its time
    if "fragmented" not in name:  # a fragmented file declares no frame count (and no duration) up front
        assert abs(data["frames_expected"] - 75) <= 1  # mkv: from its duration
    assert len(err) == 1 and "damaged input" in err[0] and f"read {data['frames_in']} frames" in err[0], err
    assert data["warnings"] == err


@pytest.mark.parametrize("cut", ["cut30", "cut60"])
def test_an_mp4_cut_before_its_index_is_one_line_and_leaves_nothing(damaged, cut, tmp_path, capsys, caplog):
    """No frame of it can be found without the index: exit 2, one line that says so and what to do."""
    src = damaged[f"{cut}-moov-at-end.mp4"]
    before = src.read_bytes()
    assert main(["-q", "video", str(src), "-o", str(tmp_path / "out.mp4"), "--report", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(src) in err[0] and "moov" in err[0] and "cut short" in err[0], err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert list(tmp_path.iterdir()) == []
    assert src.read_bytes() == before


@pytest.mark.parametrize("name", [f"flipped-{name}" for name in CONTAINERS])
def test_flipped_bytes_keep_every_readable_frame(damaged, name, tmp_path, caplog):
    src = damaged[name]
    out, report = tmp_path / ("out" + src.suffix), tmp_path / "r.json"
    assert main(["-q", "video", str(src), "-o", str(out), "--report", str(report)]) == 0
    err = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    data = json.loads(report.read_text())
    times = video_frames(out)[0]
    assert data["frames_out"] == data["frames_in"] == len(times)
    assert _all_within(_plain_decode_times(src), times)
    assert data["warnings"] == err and len(err) <= 1, err
    if data["frames_expected"] and data["frames_out"] < data["frames_expected"] - 2:
        assert len(err) == 1 and "damaged input" in err[0], err  # frames missing are never silent


@pytest.mark.parametrize("name", ["cut30-faststart.mp4", "cut30-plain.mkv", "flipped-faststart.mp4"])
def test_strict_turns_damage_into_exit_2_with_nothing_written(damaged, name, tmp_path, capsys):
    src = damaged[name]
    out = tmp_path / ("out" + src.suffix)
    assert main(["-q", "video", str(src), "-o", str(out), "--report", str(tmp_path / "r.json"), "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "damaged input" in err[0] and "--strict" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_an_intact_input_has_no_warning(tmp_path, capsys):
    src = make_video(tmp_path / "in.mp4", frames=30)
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    assert main(["-q", "video", str(src), "-o", str(out), "--report", str(report), "--strict"]) == 0
    assert capsys.readouterr().err == ""
    data = json.loads(report.read_text())
    assert data["warnings"] == [] and data["frames_expected"] == data["frames_out"] == 30


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_an_intact_variable_rate_input_with_a_pause_has_no_warning(tmp_path, capsys, suffix):
    """Screen recordings pause: 20 frames over 2.3 s at a nominal 30 fps are all there is, not 70
    with 50 lost (the duration times the rate, which an mkv declares instead of a count)."""
    pts = [*range(0, 330, 33), *range(2000, 2330, 33)]  # ms: ten frames, a 1.7-s pause, ten more
    src = make_video(tmp_path / f"in{suffix}", frames=len(pts), pts=pts, time_base=Fraction(1, 1000), fps=30, audio=())
    out, report = tmp_path / f"out{suffix}", tmp_path / "r.json"
    assert main(["-q", "video", str(src), "-o", str(out), "--report", str(report), "--strict"]) == 0
    assert capsys.readouterr().err == ""
    assert json.loads(report.read_text())["warnings"] == []
    assert video_frames(out)[0] == pytest.approx([p / 1000 for p in pts], abs=1e-3)
    if suffix == ".mkv":  # (an mp4 cut short has lost its index: another error, tested above)
        with VideoReader(write_bytes(tmp_path / "cut.mkv", src.read_bytes()[: src.stat().st_size * 2 // 5]), warn=False) as reader:
            assert len(list(reader)) < len(pts) and reader.damage  # the same file cut short still says so


def test_under_q_the_damage_is_the_one_line_on_stderr(damaged, tmp_path):
    """As a user runs it (a real process, its own stderr): one warning line, exit 0."""
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "out.mp4"
    done = subprocess.run([sys.executable, str(root / "run_pipeline.py"), "video", str(damaged["cut30-faststart.mp4"]), "-o", str(out), "-q"],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(root)), timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facezoom: WARNING: ") and "damaged input: read 22 frames of the 75" in lines[0], lines


def _bframes_avi(path: Path, frames: int = 30) -> Path:
    """x264 with B-frames in AVI, as cameras and old tools write it: AVI stores no presentation
    times, so FFmpeg numbers the packets in decode order."""
    from synth import pattern

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"bf": "3", "crf": "10", "preset": "fast"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, 96, 64), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_an_avi_with_b_frames_is_written_whole_in_presentation_order(tmp_path, capsys, suffix):
    from synth import pattern, psnr

    src = _bframes_avi(tmp_path / "camera.avi")
    out = tmp_path / f"out{suffix}"
    assert main(["-q", "video", str(src), "-o", str(out), "--strict"]) == 0, capsys.readouterr().err
    times, images = video_frames(out)
    assert len(times) == 30 and times == sorted(times) and len(set(times)) == 30
    assert times[1] - times[0] == pytest.approx(0.04, abs=1e-3)
    assert all(psnr(image, pattern(i, 96, 64)) > 30 for i, image in enumerate(images))  # frame i is picture i


def _late_mkv(path: Path) -> Path:
    """Intact: the sound starts at 0, the picture 1 s later (a camera warming up), both end at 3 s."""
    return make_video(path, frames=50, fps=25, pts=[25 + i for i in range(50)], audio_seconds=3.0)


def _millisecond_avi(path: Path) -> Path:
    """Intact: an AVI whose time base is 1/1000 (its header counts 1000 ticks a second, not frames)."""
    return make_video(path, frames=25, fps=25, time_base=Fraction(1, 1000), pts=[i * 40 for i in range(25)], codec="mpeg4", audio=())


@pytest.mark.parametrize("make, kept", [(_late_mkv, 0.4), (_millisecond_avi, 0.4), (_bframes_avi, 0.75)],  # kept: a cut inside the frames
                         ids=["late-start.mkv", "ms-timebase.avi", "bframes.avi"])
def test_intact_files_pass_strict_and_the_same_files_cut_short_still_warn(tmp_path, capsys, make, kept):
    suffix = ".mkv" if make is _late_mkv else ".avi"
    src = make(tmp_path / f"in{suffix}")
    out, report = tmp_path / "out.mkv", tmp_path / "r.json"
    assert main(["-q", "video", str(src), "-o", str(out), "--report", str(report), "--strict"]) == 0
    assert capsys.readouterr().err == ""
    data = json.loads(report.read_text())
    assert data["warnings"] == [] and data["frames_out"] == data["frames_expected"], data["frames_expected"]
    cut = write_bytes(tmp_path / f"cut{suffix}", src.read_bytes()[: int(src.stat().st_size * kept)])
    with VideoReader(cut, warn=False) as reader:
        assert len(list(reader)) < data["frames_out"] and reader.damage, "a cut copy must still be called damaged"


@pytest.mark.parametrize("name, codec, audio", [("in.mp4", "libx264", "aac"), ("in.mkv", "libx264", "aac"), ("in.mov", "libx264", "aac"),
                                                ("in.webm", "libvpx-vp9", "libopus"), ("in.avi", "mpeg4", "libmp3lame")])
def test_an_intact_file_in_every_listed_container_passes_strict_and_a_cut_one_warns(tmp_path, capsys, name, codec, audio):
    src = make_video(tmp_path / name, frames=40, codec=codec, audio=(audio,))
    out = tmp_path / "out.mkv"
    assert main(["-q", "video", str(src), "-o", str(out), "--strict"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().err == "" and len(video_frames(out)[0]) == 40
    if name.endswith((".mp4", ".mov")):  # cut, they lose their index (written last): another error, tested above
        return
    cut = write_bytes(tmp_path / f"cut{Path(name).suffix}", src.read_bytes()[: src.stat().st_size // 2])
    with VideoReader(cut, warn=False) as reader:
        assert len(list(reader)) < 40 and reader.damage
