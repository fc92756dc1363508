"""The command line: exit codes, one-line errors, reports, progress, and no half-written output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from pipeline.commands.cli import main
from synth import audio_only, audio_packets, make_video, video_frames, write_bytes

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args):
    """Run `python run_pipeline.py ARGS` in a fresh process, as a user would."""
    return subprocess.run(
        [sys.executable, str(ROOT / "run_pipeline.py"), *map(str, args)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )


def test_video_command_writes_output_and_report(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=20, width=160, height=96)
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    assert main(["--quiet", "video", str(src), "-o", str(out), "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["frames_in"] == data["frames_out"] == 20
    assert data["input"] == str(src) and data["output"] == str(out)
    assert data["wall_seconds"] > 0
    assert {"decode", "detect_track", "encode"} <= set(data["stage_seconds"])
    assert {"detections", "faces", "tracks"} <= set(data)
    assert len(video_frames(out)[0]) == 20
    assert audio_packets(out) == audio_packets(src)


@pytest.mark.slow
def test_run_pipeline_script_reports_progress_on_stderr(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=10, width=64, height=48)
    result = run_cli("video", src, "-o", tmp_path / "out.mp4", "--set", "video.preset=ultrafast")
    assert result.returncode == 0, result.stderr
    assert "frame" in result.stderr and "10/10" in result.stderr  # the progress bar
    assert "classical" in result.stderr  # says which backend ran, and that it invents nothing
    quiet = run_cli("--quiet", "video", src, "-o", tmp_path / "out2.mp4")
    assert quiet.returncode == 0 and quiet.stderr == ""  # --quiet: nothing but errors


def test_sample_command_writes_a_clip_with_a_face_and_audio(tmp_path):
    out = tmp_path / "sample.mp4"
    assert main(["--quiet", "sample", "-o", str(out), "--seconds", "1"]) == 0
    with av.open(str(out)) as container:
        assert container.streams.video[0].frames == 25
        assert container.streams.audio
        assert container.streams.video[0].width == 640


def _truncated(tmp_path):
    src = make_video(tmp_path / "full.mp4", frames=30)
    path = tmp_path / "truncated.mp4"
    path.write_bytes(src.read_bytes()[:2000])
    return path


@pytest.mark.parametrize(
    "make_input,message",
    [
        (lambda d: d / "missing.mp4", "input not found"),
        (lambda d: write_bytes(d / "zero.mp4", b""), "empty file"),
        (lambda d: write_bytes(d / "notes.mp4", b"these are my notes\n" * 100), "cannot read"),
        (_truncated, "cannot read"),
        (lambda d: audio_only(d / "song.m4a"), "no video stream"),
    ],
)
def test_bad_inputs_exit_2_with_one_line_and_no_output(tmp_path, capsys, make_input, message):
    out = tmp_path / "out.mp4"
    code = main(["--quiet", "video", str(make_input(tmp_path)), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_unwritable_output_folder_exits_2(tmp_path, capsys):
    src = make_video(tmp_path / "in.mp4", frames=4)
    if os.geteuid() == 0:  # root writes anywhere on disk; /proc refuses new files even to root
        target = Path("/proc/facezoom-test-out.mp4")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "out.mp4"
    assert main(["--quiet", "video", str(src), "-o", str(target)]) == 2
    assert f"cannot write the output {target}" in capsys.readouterr().err
    assert main(["--quiet", "video", str(src), "-o", str(tmp_path / "no" / "such" / "out.mp4")]) == 2
    assert "the folder " + str(tmp_path / "no" / "such") + " does not exist" in capsys.readouterr().err
    assert main(["--quiet", "video", str(src), "-o", str(src / "out.mp4")]) == 2  # a file where a folder is needed
    assert capsys.readouterr().err.strip() == f"facezoom: error: cannot write the output {src / 'out.mp4'}: {src} is a file, not a folder"


def test_output_paths_are_checked_before_the_run(tmp_path, capsys):
    """An unknown container or a report into a missing folder is refused up front: no run, no output."""
    src = make_video(tmp_path / "in.mp4", frames=4)
    for argv, message in [
        (["-o", str(tmp_path / "out.xyz")], "must end in .mp4, .mkv, .mov, .webm"),
        (["-o", str(tmp_path / "out")], "must end in .mp4"),
        (["-o", str(tmp_path / "o.mp4"), "--report", str(tmp_path / "no" / "r.json")], "cannot write the report (--report)"),
    ]:
        assert main(["--quiet", "video", str(src), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert [p.name for p in tmp_path.iterdir()] == ["in.mp4"]


@pytest.mark.parametrize("setting, message", [
    ("sr.batch_size=0", "sr.batch_size must be in 1..1024"),
    ("video.decode_threads=100000", "video.decode_threads must be in 0..256"),  # an upper bound: refused before the run, not 28 s into it
    ("engine.max_frames_in_flight=1000000000", "engine.max_frames_in_flight must be in 8 (chunk)..10000"),
    ("sr.eps=1e12", "sr.eps must be in (0, 1]"),
])
def test_bad_setting_exits_2_naming_the_key(tmp_path, capsys, setting, message):
    src = make_video(tmp_path / "in.mp4", frames=4)
    assert main(["video", str(src), "-o", str(tmp_path / "o.mp4"), "--set", setting]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("facezoom: error: ") and message in err[0], err
    assert [p.name for p in tmp_path.iterdir()] == ["in.mp4"]


def test_output_equal_to_input_is_refused(tmp_path, capsys):
    src = make_video(tmp_path / "in.mp4", frames=4)
    assert main(["video", str(src), "-o", str(src)]) == 2
    assert "is the input" in capsys.readouterr().err


def test_subprocess_bad_input_has_no_traceback(tmp_path):
    result = run_cli("video", tmp_path / "missing.mp4", "-o", tmp_path / "o.mp4")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"facezoom: error: input not found: {tmp_path / 'missing.mp4'}"]


def test_usage_errors_exit_2():
    assert run_cli("video").returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_side_by_side_and_boxes_make_a_before_after_video(sample_clip, tmp_path):
    out = tmp_path / "sbs.mp4"
    assert main(["--quiet", "video", str(sample_clip), "-o", str(out), "--side-by-side", "--draw-boxes",
                 "--set", "video.preset=ultrafast"]) == 0
    _, before = video_frames(sample_clip)
    _, after = video_frames(out)
    assert after[0].shape == (before[0].shape[0], 2 * before[0].shape[1], 3)
    width = before[0].shape[1]
    left = after[-1][:, :width].astype(int)
    right = after[-1][:, width:].astype(int)
    assert abs(left - before[-1]).mean() < 3  # the left half is the input
    assert abs(right - before[-1]).mean() > abs(left - before[-1]).mean()  # the right half has faces replaced, boxes drawn


def test_the_closing_line_says_when_no_face_model_ran(sample_clip, tmp_path, capsys):
    """The sample at scale 1 with the defaults: its sharp face keeps its own pixels, so nothing was
    super-resolved; the last line says so and what to pass. At scale 2 the model runs and nothing is said."""
    assert main(["video", str(sample_clip), "-o", str(tmp_path / "same.mp4"), "--set", "video.preset=ultrafast"]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"facezoom: wrote {tmp_path / 'same.mp4'}") and "no face model ran" in last and "-s 4" in last
    assert main(["video", str(sample_clip), "-o", str(tmp_path / "larger.mp4"), "-s", "2", "--set", "video.preset=ultrafast"]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"facezoom: wrote {tmp_path / 'larger.mp4'}") and "no face model ran" not in last


def test_sample_command_writes_its_first_frame_as_a_still(tmp_path):
    from PIL import Image

    assert main(["--quiet", "sample", "-o", str(tmp_path / "face.png")]) == 0
    with Image.open(tmp_path / "face.png") as still:
        assert still.size == (640, 360) and still.mode == "RGB"
    assert main(["--quiet", "sample", "-o", str(tmp_path / "face.gif")]) == 2  # neither a clip nor a still it writes


@pytest.mark.parametrize("user_set, expected", [(None, "1 1"), ("2", "2 2"), ("", "1 1")])
def test_the_command_line_runs_opencv_and_openblas_on_one_thread_unless_the_user_says(user_set, expected):
    # Their worker threads only spin beside the pipeline's own (BENCHMARKS.md); a count the user set
    # wins, an empty one (OpenCV fails on it: "stoull") counts as none.
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_FOR_THREADS_NUM", "OPENBLAS_NUM_THREADS")}
    if user_set is not None:
        env.update(OPENCV_FOR_THREADS_NUM=user_set, OPENBLAS_NUM_THREADS=user_set)
    code = ("import os, pipeline.commands.cli, cv2; "
            "print(cv2.getNumThreads(), os.environ['OPENBLAS_NUM_THREADS'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == expected.split()
