"""The local engine: streams chunks through the face stages, encodes beside them, and fails cleanly."""

import pytest

from pipeline.config import load_config
from pipeline.engines.local import run_video
from synth import audio_packets, make_video, video_frames


class Scripted:
    """A stand-in for FaceProcessor: returns frames as they are, or misbehaves on chunk `fail_at`."""

    class backend:
        name = "scripted"

    def __init__(self, fail_at=None, error=None, bad_shape=False):
        self.calls, self.fail_at, self.error, self.bad_shape = 0, fail_at, error, bad_shape

    def __call__(self, frames, timer):
        self.calls += 1
        if self.calls == self.fail_at:
            if self.error is not None:
                raise self.error
            if self.bad_shape:
                return [f.image[:-2] for f in frames]  # the encoder must refuse these
        return [f.image for f in frames]

    def prefetch(self, frames, timer):
        pass  # no detection thread to start

    def finish(self):
        return {}


@pytest.fixture
def clip(tmp_path):
    return make_video(tmp_path / "in.mp4", frames=40, width=64, height=48)


def cfg():
    return load_config(overrides=["engine.chunk=4", "video.preset=ultrafast"])


def test_every_frame_is_written_once_in_order(clip, tmp_path):
    report = run_video(clip, tmp_path / "out.mp4", cfg=cfg(), processor=Scripted(), progress=False)
    assert report["frames_in"] == report["frames_out"] == 40
    assert video_frames(tmp_path / "out.mp4")[0] == pytest.approx(video_frames(clip)[0], abs=1e-4)
    assert audio_packets(tmp_path / "out.mp4") == audio_packets(clip)


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failing_stage_leaves_no_output(clip, tmp_path, error):
    with pytest.raises(type(error)):
        run_video(clip, tmp_path / "out.mp4", cfg=cfg(), processor=Scripted(fail_at=5, error=error), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_an_encoder_error_on_its_thread_reaches_the_caller_and_leaves_no_output(clip, tmp_path):
    with pytest.raises(ValueError, match=r"frames must be \[48, 64, 3\] uint8"):
        run_video(clip, tmp_path / "out.mp4", cfg=cfg(), processor=Scripted(fail_at=3, bad_shape=True), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_stage_seconds_are_reported_per_stage(clip, tmp_path):
    report = run_video(clip, tmp_path / "out.mp4", cfg=cfg(), processor=Scripted(), progress=False)
    assert {"setup", "decode", "encode"} <= set(report["stage_seconds"])
    assert all(v >= 0 for v in report["stage_seconds"].values())
