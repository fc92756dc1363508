"""The Ray engine counts SR actor deaths, not the batches each death fails, against engine.max_restarts."""

from __future__ import annotations

import functools

import pytest

from pipeline.config import load_config
from pipeline.engines import run
from pipeline.errors import UserError
from synth import video_frames

pytestmark = pytest.mark.slow

FAST = ["video.preset=ultrafast", "engine.chunk=4", "engine.max_frames_in_flight=12", "sr.batch_size=4"]


class KillAt:
    """Kills the SR actor after the given committed batches (each death fails up to two queued batches)."""

    def __init__(self, ray, batches):
        self.ray, self.batches, self.killed = ray, set(batches), 0

    def after_batch(self, actor, batch_number):
        if batch_number in self.batches:
            self.ray.kill(actor, no_restart=False)
            self.killed += 1


@pytest.fixture(scope="module")
def local_output(sample_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "local.mp4"
    return out, run(sample_clip, out, cfg=load_config(overrides=FAST), progress=False)


def test_as_many_deaths_as_max_restarts_still_write_every_frame_once(ray_session, sample_clip, local_output, tmp_path):
    from pipeline.engines.ray import run_video_ray

    out = tmp_path / "ray.mp4"
    hooks = KillAt(ray_session, batches=(2, 4, 6))
    cfg = load_config(overrides=[*FAST, "engine.engine=ray", "engine.sr_actors=1", "engine.max_restarts=3"])
    report = run_video_ray(sample_clip, out, cfg=cfg, progress=False, hooks=hooks)
    assert hooks.killed == 3
    assert report["frames_out"] == local_output[1]["frames_out"]
    assert sorted((f["frame"], f["track_id"]) for f in report["faces"]) == sorted(
        (f["frame"], f["track_id"]) for f in local_output[1]["faces"]
    )
    times, frames = video_frames(out)
    want_times, want_frames = video_frames(local_output[0])
    assert times == want_times and all((a == b).all() for a, b in zip(frames, want_frames, strict=True))


def test_one_death_more_than_max_restarts_fails_the_job_and_leaves_no_output(ray_session, sample_clip, tmp_path):
    from pipeline.engines.ray import run_video_ray

    out = tmp_path / "ray.mp4"
    cfg = load_config(overrides=[*FAST, "engine.engine=ray", "engine.sr_actors=1", "engine.max_restarts=1"])
    with pytest.raises(UserError, match="died more than engine.max_restarts=1 times") as caught:
        run_video_ray(sample_clip, out, cfg=cfg, progress=False, hooks=KillAt(ray_session, batches=(2, 4)))
    assert "\n" not in str(caught.value)  # one line for the CLI, not Ray's dump
    assert list(tmp_path.iterdir()) == []


def test_under_quiet_the_raylets_error_paragraphs_stay_off_stdout(capfd, monkeypatch):
    """Past engine.max_restarts the CLI says one line on stderr; Ray's driver would also print the
    raylet's "A worker died..." paragraph on stdout. Under -q that paragraph is dropped; a worker's
    own log lines still come through."""
    from ray._private import worker

    from pipeline.engines.ray_start import quiet_raylet_errors

    monkeypatch.setattr(worker, "print_to_stdstream", worker.print_to_stdstream)  # restored after the test
    quiet_raylet_errors()
    quiet_raylet_errors()  # once is enough: no wrapper around the wrapper
    worker.print_to_stdstream({"lines": ["A worker died or was killed while executing a task"], "pid": "raylet", "is_err": False},
                              ignore_prefix=True)
    worker.print_to_stdstream({"lines": ["a warning an actor logged"], "pid": 4242, "is_err": True}, ignore_prefix=True)
    out, err = capfd.readouterr()
    assert "A worker died" not in out + err and "a warning an actor logged" in err


def test_under_quiet_the_raylets_log_lines_stay_off_stderr(capfd, monkeypatch):
    """The raylet's own log lines (on a nearly full disk, "... is over 95% full" every 10 s) reach
    the driver beside the workers' lines, through Ray's log handler: under -q they are dropped
    there too, also in a process where Ray was already running; a worker's lines come through."""
    from ray._private import worker

    from pipeline.engines.ray_start import quiet_raylet_errors

    dispatcher = worker.global_worker_stdstream_dispatcher
    monkeypatch.setattr(worker, "print_to_stdstream", worker.print_to_stdstream)
    monkeypatch.setattr(dispatcher, "handlers", [("ray_print_logs", functools.partial(worker.print_to_stdstream, ignore_prefix=True))])
    quiet_raylet_errors()
    quiet_raylet_errors()
    assert len(dispatcher.handlers) == 1
    dispatcher.emit({"lines": ["/tmp/ray/session_x is over 95% full"], "pid": "raylet", "is_err": True})
    dispatcher.emit({"lines": ["gcs says something"], "pid": "gcs_server", "is_err": True})
    dispatcher.emit({"lines": ["an actor's own line"], "pid": 4343, "is_err": True})
    out, err = capfd.readouterr()
    assert "95% full" not in out + err and "gcs says" not in out + err and "an actor's own line" in err
