"""The README works as written: every command it shows parses, and every one this machine can run
runs, from a fresh folder, and gives what the README says (the ones that need a camera or a
network source are parsed only; `make test` is what .ci/run runs)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.commands.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
FACEZOOM = Path(sys.executable).with_name("facezoom")
PLACEHOLDER = re.compile(r"\[|\.\.\.|\b[A-Z][A-Z0-9_]*\b/?")  # a synopsis: IN, OUT, NAME, FACES/, [...], ...


def readme_commands() -> list[str]:
    """Every `facezoom` or `make` command in the README: fenced and indented blocks, and code spans."""
    lines = []
    fenced = False
    for line in README.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            lines.append(line.strip())
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    lines += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]  # a span may wrap
    commands = []
    for line in lines:
        command = line.split(" #")[0].strip().replace("\\|", "|")
        if re.match(r"(facezoom|make) \S", command) and command not in commands:
            commands.append(command)
    return commands


COMMANDS = [c for c in readme_commands()  # less a command named in prose (`facezoom video` does ...)
            if not (len(c.split()) == 2 and any(o.startswith(c + " ") for o in readme_commands()))]
CONCRETE = [c for c in COMMANDS if c.startswith("facezoom ") and not PLACEHOLDER.search(c.split(" ", 1)[1])]
NEED_A_SOURCE = [c for c in CONCRETE if c.startswith("facezoom live ") and not c.split()[2].endswith(".mp4")]  # a camera, a stream


def test_the_readme_shows_the_commands_this_test_runs():
    assert "facezoom sample -o sample.mp4" in CONCRETE and "facezoom video sample.mp4 -o out.mp4 --report report.json" in CONCRETE
    assert "make demo" in COMMANDS and "make test" in COMMANDS and "make docs" in COMMANDS
    assert len(CONCRETE) >= 8, CONCRETE


OPTIONAL = re.compile(r"\[[^]]*]")  # a synopsis' optional parts
SYNOPSES = [c for c in COMMANDS if c.startswith("facezoom ") and c not in CONCRETE]
PREFIXES = [c for c in SYNOPSES if "..." in OPTIONAL.sub("", c).split()]  # `facezoom -q video ...`: how flags are written


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("facezoom ") and c not in PREFIXES])
def test_every_facezoom_command_in_the_readme_parses(command):
    """Concrete commands as they are; synopses with their optional parts dropped and each
    placeholder (IN, OUT, NAME, ...) given a value."""
    words = shlex.split(OPTIONAL.sub("", command))[1:]
    words = ["x.mp4" if re.fullmatch(r"[A-Z][A-Z0-9_]*/?", w) else w for w in words]
    try:
        build_parser().parse_args(words)
    except SystemExit as stop:
        pytest.fail(f"the README's `{command}` does not parse (exit {stop.code})")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_every_command_in_the_readme_that_needs_no_camera_runs_as_written(tmp_path):
    """In the order the README gives them, in an empty folder, with the files they name made first."""
    from PIL import Image

    from pipeline.media.sample import astronaut
    from synth import make_video

    Image.fromarray(astronaut()).save(tmp_path / "astronaut.png")
    Image.fromarray(astronaut()).resize((128, 128)).save(tmp_path / "astronaut_small.png")
    (tmp_path / "docs").mkdir()
    make_video(tmp_path / "clip.mp4", frames=12)
    ran = []
    for command in CONCRETE:
        if command in NEED_A_SOURCE:
            continue
        if "--preview 8080" in command and not _port_free(8080):
            pytest.skip("port 8080, which the README's live example uses, is taken on this machine")
        words = shlex.split(command)
        done = subprocess.run([str(FACEZOOM), *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"`{command}` exited {done.returncode}: {done.stderr[-2000:]}"
        ran.append(command)
    assert len(ran) >= 6, ran
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["frames_out"] > 0 and report["faces"]  # the README's main job found and wrote the sample's face
    assert (tmp_path / "docs" / "zoom.gif").stat().st_size > 0 and (tmp_path / "docs" / "enhance.png").stat().st_size > 0


@pytest.mark.slow
def test_make_demo_writes_what_the_readme_says(tmp_path):
    """`make demo` on a checkout whose .venv is built (as `make test` leaves it), twice; its outputs to a temporary folder."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    stamp = ROOT / ".venv" / ".installed-stamp"
    if not stamp.exists():
        pytest.skip("no .venv built by the Makefile here")
    out = tmp_path / "out"
    for _ in range(2):  # again over its own outputs, as a user reruns it
        done = subprocess.run(["make", "-C", str(ROOT), "demo", f"OUT={out}", "-o", str(stamp.relative_to(ROOT))],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["sample.mp4", "sample_face.png", "sample_facezoom.mp4", "sample_invented.png",
                                                     "sample_report.json", "sample_side_by_side.mp4"]
    assert json.loads((out / "sample_report.json").read_text())["faces"]
    assert "no face model ran" in done.stderr  # the classical default at scale 1: said, with what to pass instead
    from PIL import Image

    grid = np.asarray(Image.open(out / "sample_invented.png").convert("RGB")).astype(float)
    assert grid.shape[1] == 3 * 64 + 2 * 4 and grid.shape[0] > 3 * 64 + 2 * 4  # 3 samples x (input + 2 passes), and the caption

    def cell(row: int, col: int) -> np.ndarray:
        return grid[row * 68 : row * 68 + 64, col * 68 : col * 68 + 64]

    # A face model ran: each first pass is a new picture, and the three samples invented three different faces.
    assert all(np.abs(cell(r, 1) - cell(r, 0)).mean() > 5 for r in range(3))
    assert np.abs(cell(0, 1) - cell(1, 1)).mean() > 5 and np.abs(cell(1, 1) - cell(2, 1)).mean() > 5


def test_every_flag_of_every_command_is_in_the_readme():
    import argparse

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = {name: [a.option_strings for a in sub._actions
                      if a.option_strings and "--help" not in a.option_strings and not any(f"`{o}" in README or f"[{o}" in README or f" {o} " in README for o in a.option_strings)]
               for name, sub in commands.items()}
    assert not {k: v for k, v in missing.items() if v}, missing
