"""`facezoom video` end to end on the built-in sample clip (a real face): found, tracked, put back."""

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.engines import run
from synth import audio_packets, video_frames


@pytest.fixture(scope="module")
def result(sample_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("video") / "out.mp4"
    # Fidelity 0 (the model's face whole), so the paste shows; the default keeps these faces' pixels.
    report = run(sample_clip, out, cfg=load_config(overrides=["video.preset=ultrafast", "sr.fidelity=0"]), progress=False)
    return sample_clip, out, report


def test_the_face_is_found_in_almost_every_frame_with_one_track_id(result):
    _, _, report = result
    frames = report["frames_out"]
    assert len({f["frame"] for f in report["faces"]}) >= 0.95 * frames
    assert {f["track_id"] for f in report["faces"]} == {1}
    assert report["tracks"] == [{"id": 1, "first_frame": 0, "last_frame": frames - 1}]
    assert report["detections"] and all(len(d["landmarks"][0]) == 5 for d in report["detections"] if d["boxes"])


def test_the_composited_face_lands_where_the_face_was(result):
    src, out, report = result
    _, before = video_frames(src)
    _, after = video_frames(out)
    boxes = {f["frame"]: f["box"] for f in report["faces"]}
    for i in range(0, len(before), 7):
        if i not in boxes:
            continue
        diff = np.abs(after[i].astype(int) - before[i].astype(int)).sum(-1)
        x0, y0, x1, y1 = boxes[i]
        w, h = x1 - x0, y1 - y0
        inside = np.zeros(diff.shape, bool)  # the box, grown by half its size for hair and chin
        inside[max(0, int(y0 - h / 2)) : int(y1 + h / 2), max(0, int(x0 - w / 2)) : int(x1 + w / 2)] = True
        changed = diff > 24  # more than re-encoding noise (~8 levels per channel)
        assert changed[inside].sum() >= 0.9 * changed.sum(), f"frame {i}: changes outside the face"
        assert changed[inside].any(), f"frame {i}: the face was not replaced"


def test_frame_count_timestamps_and_audio_are_unchanged(result):
    src, out, report = result
    times_in, _ = video_frames(src)
    times_out, _ = video_frames(out)
    assert report["frames_in"] == report["frames_out"] == len(times_in)
    assert times_out == pytest.approx(times_in, abs=1e-4)
    assert audio_packets(out) == audio_packets(src)
