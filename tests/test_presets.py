"""Presets by name from any folder, and the command line as people type it (flags after the command)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import pytest

from pipeline.commands.cli import main
from pipeline.config import load_config
from pipeline.config.presets import presets
from pipeline.errors import ConfigError
from synth import make_video


def test_a_preset_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert load_config("fast").detect.every == 8 and load_config("fast").video.preset == "veryfast"
    assert load_config("pulse").sr.backend == "pulse"
    assert set(presets()) >= {"default", "fast", "pulse", "restore", "enhance"} and all(presets().values())
    restore, enhance = load_config("restore"), load_config("enhance")
    assert restore.sr.in_size == "auto" and restore.sr.fidelity == 1 and restore.composite.scale == 2
    assert enhance.sr.fidelity == 0 and enhance.sr.in_size == 16


@pytest.mark.parametrize("text, message", [("nope", "no preset named 'nope'"), ("/dev/null", "not a regular file"),
                                           (".", "is a folder"), ("missing.yaml", "not found")])
def test_a_config_that_is_no_file_says_what_it_is(text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(text)


def test_a_binary_config_is_a_usage_error_not_an_internal_one(tmp_path):
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="not text"):
        load_config(junk)


def test_presets_command_lists_them(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "fast: " in out and "pulse: " in out


def test_global_flags_and_shortcuts_after_the_command(tmp_path, capsys):
    src = make_video(tmp_path / "in.mp4", frames=3, width=64, height=48)
    out = tmp_path / "out.mp4"
    assert main(["video", str(src), "-o", str(out), "-s", "2", "--backend", "classical", "--quiet", "--set", "video.preset=ultrafast"]) == 0
    assert capsys.readouterr().err == ""  # --quiet after the command silences the bar and the notes
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (128, 96)


def test_every_command_help_lists_the_global_flags():
    for command in ("video", "zoom", "enhance", "live", "train", "sample", "weights", "presets"):
        result = subprocess.run([sys.executable, "run_pipeline.py", command, "--help"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).resolve().parents[1])
        assert "--quiet" in result.stdout and "--debug" in result.stdout, command


def test_doctor_names_versions_devices_and_the_weights_cache(tmp_path, monkeypatch, capsys):
    from models import weights

    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path))
    cached = weights.path_for("stylegan1-ffhq-1024")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the published file")
    assert main(["doctor"]) == 0
    lines = {line.split()[0] if not line.startswith("weights ") else " ".join(line.split()[:2]): line
             for line in capsys.readouterr().out.splitlines()}
    import torch

    assert torch.__version__.split("+")[0] in lines["torch"] and "gpu" in lines and "ffmpeg" in lines
    assert weights.verify("stylegan1-ffhq-1024")[0].status in lines["weights stylegan1-ffhq-1024"]
    assert "not cached" in lines["weights stylegan2-ffhq-512"]
