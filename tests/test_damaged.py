"""Damaged inputs: every frame a plain decode recovers is kept, the damage is said in one line even
under -q and in the report, and `--strict` makes it exit 2 with nothing written."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from pipeline.commands.cli import main
from synth import make_video, video_frames


def _remux(src: Path, dst: Path, **options) -> Path:
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=options) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in (inp.streams.video[0], inp.streams.audio[0])}
        for packet in inp.demux(inp.streams.video[0], inp.streams.audio[0]):
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst


def _plain_decode_count(path: Path) -> int:
    """What a single-threaded decode keeps, skipping what it cannot read (FFmpeg's own behaviour)."""
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        try:
            for packet in container.demux(stream):
                try:
                    n += len(packet.decode())
                except av.error.InvalidDataError:
                    pass
        except av.error.FFmpegError:
            pass
    return n


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A faststart mp4, a fragmented mp4 and an mkv, each cut at 30% of its bytes, and an mp4 with
    bytes flipped in the middle of its picture data."""
    folder = tmp_path_factory.mktemp("damaged")
    src = make_video(folder / "src.mp4", frames=75, width=160, height=120)
    files = {
        "faststart.mp4": _remux(src, folder / "fast.mp4", movflags="faststart"),
        "fragmented.mp4": _remux(src, folder / "frag.mp4", movflags="frag_keyframe+empty_moov"),
        "cut.mkv": _remux(src, folder / "whole.mkv"),
    }
    out = {}
    for name, path in files.items():
        data = path.read_bytes()
        cut = folder / f"cut-{name}"
        cut.write_bytes(data[: int(len(data) * 0.3)])
        out[name] = cut
    data = bytearray(src.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 400, 7):
        data[i] ^= 0xFF
    (folder / "flipped.mp4").write_bytes(bytes(data))
    out["flipped.mp4"] = folder / "flipped.mp4"
    return out


@pytest.mark.parametrize("name", ["faststart.mp4", "fragmented.mp4", "cut.mkv"])
@pytest.mark.parametrize("threads", [0, 1])
def test_a_truncated_input_keeps_what_a_plain_decode_recovers_and_says_so(damaged, name, threads, tmp_path, caplog):
    src = damaged[name]
    out, report = tmp_path / ("out" + src.suffix), tmp_path / "r.json"
    assert main(["-q", "video", str(src), "-o", str(out), "--report", str(report), "--set", f"video.decode_threads={threads}"]) == 0
    err = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    data = json.loads(report.read_text())
    assert data["frames_out"] == data["frames_in"] >= _plain_decode_count(src)
    assert len(video_frames(out)[0]) == data["frames_out"]
    if name != "fragmented.mp4":  # a fragmented file declares no frame count (and no duration) up front
        assert abs(data["frames_expected"] - 75) <= 1  # mkv: from its duration
    assert len(err) == 1 and "damaged input" in err[0] and f"read {data['frames_in']} frames" in err[0], err
    assert data["warnings"] == err


def test_flipped_bytes_keep_every_readable_frame(damaged, tmp_path, capsys):
    src = damaged["flipped.mp4"]
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    assert main(["-q", "video", str(src), "-o", str(out), "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["frames_out"] >= _plain_decode_count(src)
    assert len(video_frames(out)[0]) == data["frames_out"]


@pytest.mark.parametrize("name", ["faststart.mp4", "cut.mkv"])
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


def test_under_q_the_damage_is_the_one_line_on_stderr(damaged, tmp_path):
    """As a user runs it (a real process, its own stderr): one warning line, exit 0."""
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "out.mp4"
    done = subprocess.run([sys.executable, str(root / "run_pipeline.py"), "video", str(damaged["faststart.mp4"]), "-o", str(out), "-q"],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(root)), timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facezoom: WARNING: ") and "damaged input: read 22 frames of the 75" in lines[0], lines
