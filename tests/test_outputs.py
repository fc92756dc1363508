"""No run overwrites its input or another of its outputs, and a missing input is reported at once."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.commands.cli import main
from synth import make_video


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def clip(tmp_path):
    return make_video(tmp_path / "in.mp4", frames=4)


@pytest.mark.parametrize("report_is", ["input", "output"])
def test_report_on_the_input_or_the_output_is_refused_before_anything_is_written(clip, tmp_path, capsys, report_is):
    before = _digest(clip)
    out = tmp_path / "out.mp4"
    report = clip if report_is == "input" else out
    assert main(["-q", "video", str(clip), "-o", str(out), "--report", str(report)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--report" in err[0], err
    assert _digest(clip) == before
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]  # nothing beside it either


def test_a_hard_link_or_a_relative_spelling_of_the_input_is_the_input(clip, tmp_path, capsys, monkeypatch):
    link = tmp_path / "link.mp4"
    os.link(clip, link)
    assert main(["-q", "video", str(clip), "-o", str(link)]) == 2
    assert "is the input" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "video", "in.mp4", "-o", "./sub/../in.mp4"]) == 2
    assert "is the input" in capsys.readouterr().err
    assert main(["-q", "video", "in.mp4", "-o", "o.mp4", "--report", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_a_missing_input_is_reported_without_importing_torch(tmp_path):
    """Parsing and the path checks import no heavy library (measured by what is imported, not by time)."""
    code = (
        "import sys\n"
        "from pipeline.commands.cli import main\n"
        f"code = main(['video', {str(tmp_path / 'missing.mp4')!r}, '-o', {str(tmp_path / 'o.mp4')!r}])\n"
        "heavy = sorted(m for m in ('torch', 'av', 'cv2', 'scipy', 'ray', 'facenet_pytorch') if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "2 []", (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines() == [f"facezoom: error: input not found: {tmp_path / 'missing.mp4'}"]


def test_a_report_that_cannot_be_written_fails_before_the_run(clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    assert main(["-q", "video", str(clip), "-o", str(out), "--report", "/proc/facezoom-report.json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/proc" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_a_report_lost_to_a_full_disk_takes_the_video_with_it(clip, tmp_path, capsys, monkeypatch):
    """All of a run's outputs or none: the report is written after the video, so the video goes."""
    import errno
    import pathlib

    real = pathlib.Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name.endswith(".partial.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full_disk)
    out = tmp_path / "out.mp4"
    assert main(["-q", "video", str(clip), "-o", str(out), "--report", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "removed too" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.parametrize("setting", ["sr.device=cuda:7", "detect.device=cuda"])
def test_a_gpu_this_machine_lacks_is_the_user_s_to_fix(clip, tmp_path, capsys, setting):
    import torch

    if torch.cuda.is_available() and setting.endswith("cuda"):
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out.mp4"
    assert main(["-q", "video", str(clip), "-o", str(out), "--set", setting]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and setting.split("=")[0] in err[0] and "internal error" not in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.parametrize("audio, suffix, named", [("libopus", ".mov", "opus audio"), ("libmp3lame", ".webm", "mp3 audio")])
def test_audio_a_container_cannot_hold_is_named_by_its_codec(tmp_path, capsys, audio, suffix, named):
    src = make_video(tmp_path / "in.mkv", frames=6, audio=(audio,))
    assert main(["-q", "video", str(src), "-o", str(tmp_path / f"out{suffix}")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and ".mkv" in err[0] and "mp3float" not in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]


def test_enhance_refuses_a_grid_on_its_output_and_outputs_in_proc(tmp_path, capsys):
    from PIL import Image

    from pipeline.media.sample import astronaut

    src = tmp_path / "in.png"
    Image.fromarray(astronaut()).save(src)
    out = tmp_path / "out.png"
    for args in (["-o", str(out), "--grid", str(tmp_path / "." / "out.png")], ["-o", "/proc/facezoom.png"]):
        assert main(["-q", "enhance", str(src), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("facezoom: error:"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_zoom_into_a_frames_folder_in_proc_is_a_clean_error(tmp_path, capsys):
    from PIL import Image

    from pipeline.media.sample import astronaut

    src = tmp_path / "in.png"
    Image.fromarray(astronaut()).save(src)
    assert main(["-q", "zoom", str(src), "-o", "/proc/facezoom-frames", "--duration", "0.4", "--fps", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/proc" in err[0] and "internal error" not in err[0], err


def test_a_folder_of_videos_gives_a_folder_of_outputs_and_skips_bad_files(tmp_path, capsys, caplog, monkeypatch):
    from pipeline.stages import chunk
    from synth import video_frames

    src = tmp_path / "in"
    src.mkdir()
    make_video(src / "a.mp4", frames=5)
    make_video(src / "b.mkv", frames=7)
    (src / "broken.mp4").write_bytes(b"not a video")
    (src / "notes.txt").write_text("not a video either")
    built = []
    real = chunk.create_backend
    monkeypatch.setattr(chunk, "create_backend", lambda cfg: (built.append(1), real(cfg))[1])
    out = tmp_path / "out"
    assert main(["-q", "video", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("skipped" in r.getMessage() and "broken.mp4" in r.getMessage() for r in caplog.records)
    assert err == ["facezoom: error: 1 of 3 videos were skipped (see the warnings above)"]
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mkv"]
    assert len(video_frames(out / "a.mp4")[0]) == 5 and len(video_frames(out / "b.mkv")[0]) == 7
    assert built == [1]  # the models were loaded once for the folder
    assert main(["-q", "video", str(src), "-o", str(src)]) == 2  # the input folder itself: refused


def test_enhance_output_goes_if_its_grid_cannot_be_written(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from pipeline.creative import enhance
    from pipeline.errors import UserError
    from pipeline.media.sample import astronaut

    src = tmp_path / "in.png"
    Image.fromarray(astronaut()).save(src)
    real = enhance.write_output

    def grid_fails(path, *args, **kwargs):
        if path.name == "grid.png":
            raise UserError(f"cannot write {path}: No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(enhance, "write_output", grid_fails)
    assert main(["-q", "enhance", str(src), "-o", str(tmp_path / "out.gif"), "--grid", str(tmp_path / "grid.png"), "--iterations", "1"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


@pytest.fixture
def small_disk(tmp_path_factory):
    """A 256 KiB tmpfs, unmounted afterwards; skipped where this process may not mount one."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    disk = tmp_path_factory.mktemp("disk")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)]).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)])


def _noise_video(path: Path, *, frames: int = 48) -> Path:
    """A clip of random pixels, which no encoder compresses: its output is about as big as the pixels."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.options = {"crf": "30", "preset": "ultrafast"}
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_disk_that_fills_up_during_the_encode_is_one_line_and_leaves_nothing(small_disk, tmp_path, capsys, caplog, suffix):
    """The output outgrows a 256 KiB disk mid-run: exit 2, one line saying the disk is full at the
    output the user named (not its hidden temporary file), nothing left there, the input untouched."""
    src = _noise_video(tmp_path / "in.mp4")
    before = _digest(src)
    out = small_disk / f"out{suffix}"
    assert main(["-q", "video", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot write {out}: the disk is full" in err[0] and "partial" not in err[0], err
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert list(small_disk.iterdir()) == []
    assert _digest(src) == before and sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_a_report_on_a_full_disk_is_refused_before_the_run(small_disk, clip, tmp_path, capsys):
    """An empty file still fits on a full disk, so the report's reservation alone would not tell:
    the free space does, before any work, and the video is never made."""
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, bytes(65536)):
            pass
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)
    report = small_disk / "r.json"
    assert main(["-q", "video", str(clip), "-o", str(tmp_path / "out.mp4"), "--report", str(report)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot write {report}: the disk is full" in err[0], err
    assert [p.name for p in small_disk.iterdir()] == ["filler"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
