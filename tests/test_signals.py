"""SIGTERM is Ctrl-C for `facezoom video`: nothing left at or beside the output, exit 143 (130 for SIGINT),
and with Ray no process of the run outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _start(args, cwd):
    """The run, in its own session, with Ctrl-C's default action whatever this suite inherited (a suite
    started in the background of a script ignores SIGINT, and so would the run: Python installs no
    KeyboardInterrupt handler for a signal ignored at its start)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(ROOT / "run_pipeline.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_partial(folder: Path, proc, timeout=120.0, *, written=True) -> None:
    """Until the run has written into its temporary output beside the final one (it is mid-run), or
    (`written=False`) made it: the Ray engine's driver makes the empty file as its actors start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.name.endswith(".partial.mp4") and (p.stat().st_size > 0 or not written) for p in folder.iterdir()):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it was signalled: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("the run never started writing")


def _ray_processes_of(session: int) -> list[str]:
    """Processes still alive in the run's process group (its embedded Ray's raylet, workers...), as
    "pid state command" lines. A zombie has ended (only its exit status waits for a parent, and
    once the run is gone that parent is whatever the machine's init is, which may never reap it)."""
    out = subprocess.run(["ps", "-ww", "-o", "pgid=,pid=,stat=,args=", "-e"], capture_output=True, text=True).stdout  # -ww: whole commands, whatever COLUMNS says
    rows = (line.split(None, 3) for line in out.splitlines())
    return [" ".join(r)[:200] for r in rows if len(r) >= 3 and int(r[0]) == session and not r[2].startswith("Z")]


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """The sample at 8 s: a run at preset veryslow lasts long enough to be caught mid-run even when
    the test's own process gets little CPU beside it (1.5 s was once written whole between two polls)."""
    from pipeline.media.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("long") / "sample.mp4", seconds=8)


HALF_MADE = """
import sys
from pipeline.commands import cli, video

class Bar:  # a progress bar Ctrl-C stopped inside its constructor: its __del__ needs what __init__ never set
    def __init__(self):
        raise KeyboardInterrupt
    def __del__(self):
        self.pos

def handler(args):
    Bar()

video.cmd_video = handler
sys.exit(cli.main(["video", "in.mp4", "-o", "out.mp4"]))
"""


def test_what_an_interrupt_left_half_made_says_nothing_after_the_closing_line(tmp_path):
    """The Ray run caught a Ctrl-C inside tqdm's constructor: when the traceback holding the bar
    went, after the closing line, its `__del__` printed "Exception ignored ..." as the last words."""
    proc = subprocess.run([sys.executable, "-c", HALF_MADE], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.splitlines() == ["facezoom: interrupted; no output was written"]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "ray"])
@pytest.mark.parametrize("sig, code, whom, written", [
    (signal.SIGTERM, 143, "process", True), (signal.SIGTERM, 143, "process, then group", True),
    (signal.SIGTERM, 143, "process, then group", False), (signal.SIGINT, 130, "group", True),
], ids=["kill", "timeout", "timeout-at-set-up", "ctrl-c"])
def test_a_signal_mid_run_leaves_nothing_and_exits_with_its_code(long_clip, tmp_path, engine, sig, code, whom, written):
    """Ctrl-C reaches the whole process group; `timeout` signals the process and then its group, so
    Ray's own processes get it too, and the run a second SIGTERM (which cut its clean-up short: a
    partial file left, or Ray's driver aborted), as service managers' group signals do."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _start(["video", str(long_clip), "-o", str(out_dir / "out.mp4"), "--report", str(out_dir / "r.json"),
                   "--engine", engine, "--set", "video.preset=veryslow"], cwd=tmp_path)
    try:
        _wait_for_partial(out_dir, proc, written=written)
        time.sleep(0 if written else 0.5)  # at set-up: while the encoder starts, not in the instant the file is made
        if whom != "group":
            proc.send_signal(sig)
        if whom != "process":
            os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, err
    assert list(out_dir.iterdir()) == []
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("facezoom: ") and ("terminated" in lines[-1] or "interrupted" in lines[-1]), err
    deadline = time.monotonic() + 30
    while _ray_processes_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ray_processes_of(proc.pid) == []


def test_a_second_sigterm_does_not_cut_the_clean_up_short():
    """`timeout` signals the process and then its group: the second SIGTERM raised a second
    `Terminated` inside the clean-up the first had started."""
    from pipeline.errors import TERMINATED, Terminated, terminate_as_interrupt

    import math

    previous = signal.getsignal(signal.SIGTERM)
    TERMINATED.update(received=False, at=-math.inf)
    terminate_as_interrupt()
    try:
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        os.kill(os.getpid(), signal.SIGTERM)  # the same signal to the group, as the clean-up runs
        time.sleep(0.01)
        # a later one is another signal: it acts (the first `Terminated` may have been lost in a `__del__`)
        TERMINATED["at"] -= 1.0
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    finally:
        signal.signal(signal.SIGTERM, previous)
        TERMINATED.update(received=False, at=-math.inf)


def _wait_for_ray_starting(proc, timeout=120.0) -> None:
    """Until the run's embedded Ray has started its first process: `ray.init` is under way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any("gcs_server" in p or "raylet" in p for p in _ray_processes_of(proc.pid)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before Ray started: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("Ray never started")


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, said", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_while_ray_starts_ends_the_run_with_one_line_and_no_process_left(sample_clip, tmp_path, sig, code, said):
    """Ray's own handlers once took over here: exit 15 with nothing said, or a C stack dump and
    -6, and its dashboard and agents outliving the run."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _start(["-q", "video", str(sample_clip), "-o", str(out_dir / "out.mp4"), "--engine", "ray"], cwd=tmp_path)
    try:
        _wait_for_ray_starting(proc)
        os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"facezoom: {said}; no output was written"], err
    assert list(out_dir.iterdir()) == []
    deadline = time.monotonic() + 30
    while _ray_processes_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ray_processes_of(proc.pid) == []


def _wait_for_a_finished_output(folder: Path, proc, *, next_started: bool, timeout=300.0) -> None:
    """Until the folder run has written one output whole (and, with `next_started`, has the next
    one's temporary file beside it: it is mid-run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        if any(not n.startswith(".") for n in names) and (not next_started or any(".partial" in n for n in names)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it was signalled: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("the run never finished an output")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Three portraits (the astronaut at 256x256), a folder input for zoom and enhance."""
    import cv2
    from PIL import Image

    from pipeline.media.sample import astronaut

    folder = tmp_path_factory.mktemp("pictures")
    for name in ("a", "b", "c"):
        Image.fromarray(cv2.resize(astronaut(), (256, 256), interpolation=cv2.INTER_AREA)).save(folder / f"{name}.png")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("command", ["zoom", "enhance", "video --engine ray"])
def test_a_sigterm_mid_folder_keeps_the_finished_outputs_and_says_so(pictures, sample_clip, tmp_path, command):
    """The finished outputs stay, the one being written goes, and the last line says which (not
    "no output was written"), exit 143; with Ray, no process of the run outlives it."""
    out_dir = tmp_path / "out"
    if command == "video --engine ray":
        videos = tmp_path / "videos"
        videos.mkdir()
        for name in ("a", "b", "c"):
            (videos / f"{name}.mp4").write_bytes(sample_clip.read_bytes())
        args, noun = ["video", str(videos), "-o", str(out_dir), "--engine", "ray", "--set", "video.preset=veryslow"], "video"
    elif command == "zoom":  # each zoom an mp4 of 6 s at 512x512, written slowly: the next one is caught mid-run
        args, noun = ["zoom", str(pictures), "-o", str(out_dir), "--duration", "6", "--size", "512x512",
                      "--set", "video.preset=veryslow"], "zoom"
    else:  # a picture is written whole at its end: the signal follows the first one, while the next one's 100 passes run
        args, noun = ["enhance", str(pictures), "-o", str(out_dir), "--iterations", "100"], "result"
    proc = _start(["-q", *args], cwd=tmp_path)
    try:
        _wait_for_a_finished_output(out_dir, proc, next_started=command != "enhance")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err
    kept = sorted(p.name for p in out_dir.iterdir())
    assert 1 <= len(kept) < 3 and all(not name.startswith(".") for name in kept), kept  # no partial file left
    n = len(kept)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1:] == [f"facezoom: terminated; the {n} finished {noun}{'s' if n > 1 else ''} in {out_dir} kept, "
                          "the unfinished one removed"], err
    deadline = time.monotonic() + 30
    while _ray_processes_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ray_processes_of(proc.pid) == []


@pytest.mark.parametrize("interrupts", [1, 3])
def test_a_worker_is_waited_for_through_ctrl_c_until_its_work_is_done(interrupts):
    # Thread.join on Python 3.11, interrupted by a signal handler's exception, marked the thread
    # ended while it ran: the local engine closed its writer under the encoder thread (a segfault).
    import threading

    from pipeline.errors import Worker

    release, done = threading.Event(), []
    worker = Worker(lambda: (release.wait(5), done.append(True)), name="test-worker")
    sent = []

    def interrupt(signum, frame):
        sent.append(signum)
        if len(sent) == interrupts:
            release.set()
        else:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(KeyboardInterrupt):
            worker.wait()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert len(sent) == interrupts and done == [True]  # wait() returned only once the work was done


def test_a_signal_after_the_video_is_in_place_takes_it_with_the_report(tmp_path, monkeypatch, capsys):
    # The video was moved into place before the report was: a signal between kept the video alone
    # while the closing line said that no output was written.
    from pipeline.commands.cli import main
    from pipeline.report import ReportFile
    from synth import make_video

    src, out, report = make_video(tmp_path / "in.mp4", frames=4, width=64, height=48), tmp_path / "out.mp4", tmp_path / "r.json"

    def interrupted(self, data, together=()):
        raise KeyboardInterrupt

    monkeypatch.setattr(ReportFile, "commit", interrupted)
    assert main(["-q", "video", str(src), "-o", str(out), "--report", str(report)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "facezoom: interrupted; no output was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
    out.write_bytes(b"last week's")  # an output that was there before the run stays, -y or not, when the signal came first
    monkeypatch.setattr("pipeline.engines.run", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(["-q", "-y", "video", str(src), "-o", str(out), "--report", str(report)]) == 130
    assert out.read_bytes() == b"last week's" and not report.exists()
