"""One output policy for every command and mode: every output is checked against the inputs and
the other outputs before any work, an existing output is refused unless -y/--overwrite is given
(ffmpeg's convention), a folder run's outputs get distinct names and are all checked before its
first video runs, and what is kept after a signal is said as such."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.commands.cli import COMMANDS, build_parser, main
from synth import make_video, video_frames


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("facezoom: error: "), err
    return err[0]


@pytest.fixture
def sprite(tmp_path) -> Path:
    path = tmp_path / "sprite.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


def _commands(tmp_path: Path, sprite: Path) -> dict[str, list[str]]:
    clip = make_video(tmp_path / "in.mp4", frames=3)
    return {
        "video": ["video", str(clip), "-o", str(tmp_path / "out.mp4")],
        "zoom": ["zoom", str(sprite), "-o", str(tmp_path / "zoom.gif"), "--duration", "0.4", "--fps", "5"],
        "enhance": ["enhance", str(sprite), "-o", str(tmp_path / "enhanced.png"), "--iterations", "1"],
        "sample": ["sample", "-o", str(tmp_path / "sample.mp4"), "--seconds", "0.5"],
    }


@pytest.mark.parametrize("command", ["video", "zoom", "enhance", "sample"])
def test_an_existing_output_is_refused_unless_y_is_given_before_or_after_the_command(tmp_path, sprite, capsys, command):
    argv = _commands(tmp_path, sprite)[command]
    output = Path(argv[argv.index("-o") + 1])
    output.write_bytes(b"someone's file")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["-q", *argv]) == 2
    line = _one_error_line(capsys)
    assert str(output) in line and "exists" in line and "-y (--overwrite)" in line, line
    assert output.read_bytes() == b"someone's file" and sorted(p.name for p in tmp_path.iterdir()) == before
    assert main(["-q", "-y", *argv]) == 0  # before the command...
    assert output.read_bytes() != b"someone's file"
    assert main(["-q", *argv, "--overwrite"]) == 0  # ...or after it


def test_train_refuses_an_existing_checkpoint_unless_resumed_or_y(tmp_path, capsys):
    faces = tmp_path / "faces"
    faces.mkdir()
    ckpt = tmp_path / "pfsr.ckpt"
    ckpt.write_bytes(b"weeks of training")
    assert main(["-q", "train", str(faces), "-o", str(ckpt)]) == 2
    line = _one_error_line(capsys)
    assert "--resume" in line and "-y (--overwrite)" in line
    assert main(["-q", "-y", "train", str(faces), "-o", str(faces / "x" / "pfsr.ckpt")]) == 2  # its folder: before the faces are searched
    assert "cannot write the checkpoint (--output)" in _one_error_line(capsys)
    assert ckpt.read_bytes() == b"weeks of training"


def test_every_command_s_help_lists_y(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit):
            build_parser().parse_args([name, "--help"])
        assert "-y, --overwrite" in capsys.readouterr().out, name


def test_a_folder_run_gives_inputs_that_share_a_stem_distinct_outputs(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    make_video(src / "same.mkv", frames=4)
    make_video(src / "same.avi", frames=6, codec="mpeg4", audio=())
    assert main(["-q", "video", str(src), "-o", str(out)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["same.mkv", "same_avi.mkv"]  # same.mkv keeps its name
    assert len(video_frames(out / "same.mkv")[0]) == 4 and len(video_frames(out / "same_avi.mkv")[0]) == 6


def test_a_folder_run_checks_every_output_before_the_first_video(tmp_path, capsys, monkeypatch):
    from pipeline import engines

    ran = []
    monkeypatch.setattr(engines, "run", lambda *a, **k: ran.append(a) or pytest.fail("a video ran"))
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    make_video(src / "a.mp4", frames=3)
    make_video(src / "b.mp4", frames=3)
    out.mkdir()
    (out / "b.mp4").mkdir()  # an output name taken by a folder: found before a.mp4 is encoded
    assert main(["-q", "video", str(src), "-o", str(out)]) == 2
    assert f"the output of {src / 'b.mp4'} {out / 'b.mp4'} is a folder" in _one_error_line(capsys)
    (out / "b.mp4").rmdir()
    (out / "b.mp4").write_bytes(b"mine")  # an existing output: refused without -y
    assert main(["-q", "video", str(src), "-o", str(out)]) == 2
    assert "exists; pass -y (--overwrite)" in _one_error_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["b.mp4"] and ran == []


@pytest.mark.parametrize("make_target", [
    lambda tmp: tmp / "no" / "such" / "out",  # missing parents
    lambda tmp: Path("/proc/facezoom-test-out"),  # a folder nothing can be made in
    lambda tmp: tmp / "in" / "a.mp4" / "out",  # a file where a folder is needed
])
def test_an_output_folder_that_cannot_be_made_is_one_line_and_exit_2(tmp_path, capsys, make_target):
    src = tmp_path / "in"
    src.mkdir()
    make_video(src / "a.mp4", frames=3)
    target = make_target(tmp_path)
    assert main(["-q", "video", str(src), "-o", str(target)]) == 2
    line = _one_error_line(capsys)
    assert "internal error" not in line and str(target) in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_signal_in_a_folder_run_names_the_videos_it_kept(tmp_path, capsys, monkeypatch):
    from pipeline import engines
    from pipeline.errors import Terminated

    real = engines.run

    def run_then_terminate(path, target, **kwargs):
        if Path(path).name == "b.mp4":
            raise Terminated()
        return real(path, target, **kwargs)

    monkeypatch.setattr(engines, "run", run_then_terminate)
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    make_video(src / "a.mp4", frames=3)
    make_video(src / "b.mp4", frames=3)
    assert main(["-q", "video", str(src), "-o", str(out)]) == 143
    err = capsys.readouterr().err.strip()
    assert err == f"facezoom: terminated; the 1 finished video in {out} kept, the unfinished one removed", err
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4"]


def test_a_signal_just_after_a_video_is_in_place_still_names_it_kept(tmp_path, capsys, monkeypatch):
    """The signal lands after the output moved into place but before the run counted it (the Ray
    driver's `done` callback): the message said no output was written, with the video kept."""
    from pipeline import engines
    from pipeline.errors import Terminated

    real = engines.run

    def run_then_terminate(path, target, **kwargs):
        real(path, target, **kwargs)
        raise Terminated()

    monkeypatch.setattr(engines, "run", run_then_terminate)
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    make_video(src / "a.mp4", frames=3)
    assert main(["-q", "video", str(src), "-o", str(out)]) == 143
    err = capsys.readouterr().err.strip()
    assert err == f"facezoom: terminated; the 1 finished video in {out} kept, the unfinished one removed", err
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4"]


@pytest.mark.parametrize("command", ["video", "zoom", "enhance"])
def test_a_folder_run_that_writes_nothing_takes_away_the_folder_it_made(tmp_path, capsys, monkeypatch, command):
    """Stopped before its first result is finished, or with every input skipped: no empty folder is
    left behind; a folder that was there before stays."""
    from pipeline import engines
    from pipeline.commands import enhance, zoom
    from pipeline.errors import Terminated

    def terminated(*args, **kwargs):
        raise Terminated()

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    if command == "video":
        make_video(src / "a.mp4", frames=3)
        monkeypatch.setattr(engines, "run", terminated)
    else:
        Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(src / "a.png")
        monkeypatch.setattr(*((zoom, "zoom_picture") if command == "zoom" else (enhance, "_enhance_one")), terminated)
    args = ["-q", command, str(src), "-o", str(out)] + (["--iterations", "1"] if command == "enhance" else [])
    assert main(args) == 143
    assert capsys.readouterr().err.strip() == "facezoom: terminated; no output was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    monkeypatch.undo()
    next(src.iterdir()).write_bytes(b"not a video or a picture")  # skipped: exit 2
    assert main(args) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    out.mkdir()
    assert main(args) == 2
    assert out.is_dir() and list(out.iterdir()) == []


@pytest.mark.parametrize("case", ["output is the input", "report is the input", "report is the output",
                                  "report into /proc", "report is a folder", "output exists"])
def test_live_checks_its_paths_before_the_source_opens(tmp_path, capsys, monkeypatch, case):
    from pipeline.commands import live

    monkeypatch.setattr(live, "run_live", lambda *a, **k: pytest.fail("the source was opened"))
    clip = make_video(tmp_path / "in.mp4", frames=3)
    before = _digest(clip)
    out = tmp_path / "rec.mp4"
    extra = {
        "output is the input": ["-o", str(clip)],
        "report is the input": ["--report", str(clip)],
        "report is the output": ["-o", str(out), "--report", str(out)],
        "report into /proc": ["--report", "/proc/facezoom-report.json"],
        "report is a folder": ["--report", str(tmp_path)],
        "output exists": ["-o", str(clip.with_name("old.mp4"))],
    }[case]
    if case == "output exists":
        clip.with_name("old.mp4").write_bytes(b"yesterday's recording")
    assert main(["-q", "live", str(clip), "--realtime", *extra]) == 2
    line = _one_error_line(capsys)
    assert "output folder" not in line, line  # a report is not "the output folder"
    assert _digest(clip) == before and not out.exists()


def test_a_path_with_control_characters_is_printed_on_one_line(tmp_path, capsys):
    missing = tmp_path / "two\nlines\x1b[31m.mp4"
    assert main(["-q", "video", str(missing), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "two\\nlines\\x1b[31m.mp4" in _one_error_line(capsys)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_a_device_is_not_an_empty_file(tmp_path, capsys, kind):
    if kind == "fifo":
        source = tmp_path / "pipe.mp4"
        os.mkfifo(source)  # nobody writes it: opening it to read would block for ever
    else:
        source = Path("/dev/zero")
    assert main(["-q", "video", str(source), "-o", str(tmp_path / "o.mp4")]) == 2
    line = _one_error_line(capsys)
    assert "not a regular file" in line and "empty" not in line, line


def test_a_deeply_nested_config_is_a_config_error(tmp_path, capsys):
    config = tmp_path / "deep.yaml"
    config.write_text("sr: " + "[" * 20000 + "]" * 20000 + "\n")
    clip = make_video(tmp_path / "in.mp4", frames=3)
    assert main(["-q", "video", str(clip), "-o", str(tmp_path / "o.mp4"), "--config", str(config)]) == 2
    assert "nested too deeply" in _one_error_line(capsys)


def test_an_enhance_batch_refuses_an_existing_result_before_its_first_picture(tmp_path, capsys, sprite):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for name in ("a.png", "b.png"):
        (src / name).write_bytes(sprite.read_bytes())
    (out / "b.png").write_bytes(b"last week's")
    assert main(["-q", "enhance", str(src), "-o", str(out), "--iterations", "1"]) == 2
    assert f"the output of {src / 'b.png'} {out / 'b.png'} exists; pass -y" in _one_error_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["b.png"]  # a.png was not made either
    assert main(["-q", "enhance", str(src), "-o", str(out), "--iterations", "1", "-y"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"] and (out / "b.png").read_bytes() != b"last week's"


def test_no_output_replaces_the_config_or_the_weights_a_run_reads_even_with_y(tmp_path, capsys):
    clip = make_video(tmp_path / "in.mp4", frames=3)
    config = tmp_path / "mine.yaml"
    config.write_text("video:\n  crf: 20\n")
    weights = tmp_path / "g.ckpt"
    weights.write_bytes(b"weights")
    base = ["-q", "-y", "video", str(clip), "-o", str(tmp_path / "o.mp4")]
    assert main([*base, "--config", str(config), "--report", str(config)]) == 2
    assert "is the --config file" in _one_error_line(capsys)
    assert main([*base, "--set", f"sr.generator={weights}", "--report", str(weights)]) == 2
    assert "is the sr.generator checkpoint" in _one_error_line(capsys)
    assert config.read_text() == "video:\n  crf: 20\n" and weights.read_bytes() == b"weights"


def test_no_output_replaces_a_file_a_model_is_read_from_by_name_folder_or_cache(tmp_path, capsys, monkeypatch):
    # A hostile run wrote its --report over each of these and exited 0.
    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path / "home"))
    from models import weights

    clip = make_video(tmp_path / "in.mp4", frames=3)
    cached = weights.path_for("gfpgan-1.4")  # a registry name's file in the cache
    pulse = tmp_path / "pulse" / "cache"  # PULSE's folder: its split files and the fit above it
    upscaler, fit = tmp_path / "up.pth", weights.fit_cache_path(tmp_path / "g.pt")
    for path in (cached, pulse / ("0" * 32 + "_synthesis.pt"), pulse / "mapping.pt", pulse.parent / "gaussian_fit.pt",
                 upscaler, fit, weights.cache_dir() / "fits" / "abc.gaussian_fit.pt"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")
    cases = [
        (["--set", "sr.generator=gfpgan-1.4"], cached, "is the sr.generator checkpoint"),
        (["--set", f"sr.generator={pulse}"], pulse / "mapping.pt", "is a file of the sr.generator checkpoint (mapping.pt)"),
        (["--set", f"sr.generator={pulse}"], pulse.parent / "gaussian_fit.pt", "is a file of the sr.generator checkpoint"),
        (["--set", f"composite.upscaler={upscaler}"], upscaler, "is the composite.upscaler checkpoint"),
        (["--set", f"sr.generator={tmp_path / 'g.pt'}"], fit, "is a file of the sr.generator checkpoint (g.pt.gaussian_fit.pt)"),
        ([], weights.cache_dir() / "fits" / "abc.gaussian_fit.pt", "is a file of facezoom's model cache"),
    ]
    for settings, target, said in cases:
        assert main(["-q", "-y", "video", str(clip), "-o", str(tmp_path / "o.mp4"), *settings, "--report", str(target)]) == 2
        assert said in _one_error_line(capsys), (settings, target)
        assert target.read_bytes() == b"weights"
    assert not (tmp_path / "o.mp4").exists()
