"""Tracking, fed exact or noisy detections made from ground truth (no detector needed)."""

import numpy as np
import pytest

from face_scenes import Face, background, render
from pipeline.stages.detect import Detections
from pipeline.stages.track import FaceTracker, OneEuroFilter, TrackConfig, TrackRecord

H, W = 240, 320


def _detections(faces, rng=None, noise=0.0) -> Detections:
    boxes, marks = [], []
    for f in faces:
        jitter = rng.normal(0, noise, (6, 2)) if rng is not None else np.zeros((6, 2))
        boxes.append(f.box() + np.tile(jitter[5], 2))
        marks.append(f.landmarks() + jitter[:5])
    return Detections(np.array(boxes).reshape(-1, 4), np.full(len(faces), 0.99), np.array(marks).reshape(-1, 5, 2))


def _ids(out):
    return [f.track_id for f in out]


def test_flow_carries_landmarks_between_detections():
    bg = background(H, W, seed=11)
    tracker = FaceTracker(TrackConfig(smooth=False))
    errors = []
    for i in range(40):
        face = Face(cx=90 + 3.0 * i, cy=120 + 1.0 * i, width=70 + 0.5 * i)  # drifting and growing
        out = tracker.update(render(bg, [face]), _detections([face]) if i % 8 == 0 else None, i)
        assert _ids(out) == [1], f"frame {i}: {_ids(out)}"
        if i % 8:
            errors.append(np.abs(out[0].landmarks - face.landmarks()).max() / face.width)
            assert not out[0].detected
    # Without flow the landmarks would trail by up to 7 frames x 3 px = 21 px (30% of the face).
    assert max(errors) < 0.04, f"flowed landmarks off by up to {max(errors):.1%} of the face width"


def test_without_flow_tracks_coast_at_the_detected_velocity():
    bg = background(H, W, seed=12)
    tracker = FaceTracker(TrackConfig(flow=False, smooth=False))
    for i in range(25):
        face = Face(cx=80 + 4.0 * i, cy=120, width=60)
        out = tracker.update(render(bg, [face]), _detections([face]) if i % 5 == 0 else None, i)
        if i > 5:  # velocity known after two detections
            assert np.abs(out[0].landmarks - face.landmarks()).max() < 1.0


def test_two_faces_keep_their_ids_when_they_cross():
    # Face a passes behind face b; the detector misses a while it is covered.
    bg = background(H, W, seed=13)
    tracker = FaceTracker(TrackConfig())
    seen = {"a": set(), "b": set()}
    for i in range(50):
        t = i / 49
        a = Face(cx=W * (0.15 + 0.7 * t), cy=115, width=64)
        b = Face(cx=W * (0.85 - 0.7 * t), cy=125, width=64)
        frame = render(bg, [a, b])
        detections = None
        if i % 3 == 0:
            covered = abs(a.cx - b.cx) < 70
            detections = _detections([b] if covered else [a, b])
        for face in tracker.update(frame, detections, i):
            centre = (face.box[:2] + face.box[2:]) / 2
            who = "a" if np.hypot(*(centre - (a.cx, a.cy))) < np.hypot(*(centre - (b.cx, b.cy))) else "b"
            seen[who].add(face.track_id)
    assert seen["a"] and seen["b"]
    assert len(seen["a"]) == 1 and len(seen["b"]) == 1 and seen["a"] != seen["b"], seen


def test_track_survives_an_occlusion_and_ends_after_a_long_absence():
    bg = background(H, W, seed=14)
    tracker = FaceTracker(TrackConfig(max_age=20))
    k = 3
    log = []
    for i in range(100):
        face = Face(cx=100 + 1.5 * i, cy=120, width=70)
        covered = 21 <= i < 30
        present = i < 60
        if present and covered:
            frame = render(bg, [face], [(int(face.cx - 60), 40, int(face.cx + 60), 200)])
        else:
            frame = render(bg, [face]) if present else bg
        dets = None if i % k else (_detections([face]) if present and not covered else Detections.empty())
        log.append([(f.track_id, f.weight) for f in tracker.update(frame, dets, i)])
        if i in (40, 75):  # alive through the occlusion, and for max_age frames after the last detection (57)
            assert tracker.pop_finished() == []
    fade = TrackConfig().fade
    assert all(entry == [(1, 1.0)] for entry in log[:21])
    # Covered at 21: it fades out where it was last seen (1 - 1/fade, ...), then nothing is pasted.
    assert [entry[0][1] for entry in log[21 : 20 + fade]] == pytest.approx([1 - k / fade for k in range(1, fade)])
    assert all(entry == [] for entry in log[20 + fade : 30])
    # Found again at 30: the same id, fading back in.
    assert [entry[0] for entry in log[30 : 30 + fade]] == [(1, pytest.approx(k / fade)) for k in range(1, fade + 1)]
    assert all(entry == [(1, 1.0)] for entry in log[30 + fade : 60])
    assert all(entry == [] for entry in log[59 + fade :])  # gone at 60: faded out, then ended
    finished = tracker.pop_finished()
    assert finished == [TrackRecord(track_id=1, first_frame=0, last_frame=58 + fade)]
    assert tracker.pop_finished() == []  # handed over once
    # A face that comes back after the track ended is a new track.
    face = Face(cx=150, cy=120, width=70)
    assert _ids(tracker.update(render(bg, [face]), _detections([face]), 102)) == [2]
    assert tracker.close() == [TrackRecord(2, 102, 102)]


def test_track_ends_when_the_face_leaves_the_frame():
    bg = background(H, W, seed=15)
    tracker = FaceTracker(TrackConfig(max_age=1000, flow=False))
    for i in range(40):
        face = Face(cx=200 + 12.0 * i, cy=120, width=60)
        present = face.cx < W + 40
        dets = None if i % 4 else (_detections([face]) if face.cx < W - 40 else Detections.empty())
        tracker.update(render(bg, [face]) if present else bg, dets, i)
    assert [r.track_id for r in tracker.pop_finished()] == [1]  # gone, despite max_age


def test_detections_in_regions_leave_the_faces_outside_them_as_they_are():
    faces = [Face(80, 120, 60), Face(240, 130, 64)]
    frame = render(background(H, W, seed=3), faces)
    tracker = FaceTracker(TrackConfig(flow=False, min_hits=1))
    tracker.update(frame, _detections(faces), 0)
    # The detector looked only around face 2, and found nothing there: face 2 is lost, face 1 stays.
    nothing_near_2 = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)), regions=[faces[1].box() + [-60, -60, 60, 60]])
    out = tracker.update(frame, nothing_near_2, 1)
    assert [f.visible for f in out] == [True, False] and _ids(out) == [1, 2]
    assert len(tracker.lost_boxes) == 1 and tracker.wants_detection  # and it asks to look again, there
    # A face found in a region comes back under its id; nothing outside the regions starts a track.
    found = _detections(faces[1:])
    out = tracker.update(frame, Detections(found.boxes, found.scores, found.landmarks, regions=nothing_near_2.regions), 2)
    assert [f.visible for f in out] == [True, True] and _ids(out) == [1, 2]


def test_ids_belong_to_the_tracker_instance():
    bg = background(H, W, seed=16)
    face = Face(cx=160, cy=120, width=60)
    frame = render(bg, [face])
    first, second = FaceTracker(TrackConfig()), FaceTracker(TrackConfig())
    assert _ids(first.update(frame, _detections([face]), 0)) == [1]
    assert _ids(second.update(frame, _detections([face]), 0)) == [1]


def test_min_hits_hides_one_off_detections():
    bg = background(H, W, seed=17)
    face = Face(cx=160, cy=120, width=60)
    tracker = FaceTracker(TrackConfig(min_hits=2))
    assert tracker.update(render(bg, [face]), _detections([face]), 0) == []
    assert tracker.update(bg, Detections.empty(), 1) == []  # a false positive: never confirmed
    assert tracker.close() == []
    tracker = FaceTracker(TrackConfig(min_hits=2))
    tracker.update(render(bg, [face]), _detections([face]), 0)
    assert _ids(tracker.update(render(bg, [face]), _detections([face]), 1)) == [1]


def test_smoothing_steadies_a_still_face_and_follows_a_moving_one():
    rng = np.random.default_rng(0)
    bg = background(H, W, seed=18)
    still = Face(cx=160, cy=120, width=80)
    frame = render(bg, [still])
    raw, smooth = FaceTracker(TrackConfig(smooth=False)), FaceTracker(TrackConfig())
    raw_out, smooth_out = [], []
    for i in range(60):
        dets = _detections([still], rng, noise=0.8)  # detector noise of 1% of the face width
        raw_out.append(raw.update(frame, dets, i)[0].landmarks)
        smooth_out.append(smooth.update(frame, dets, i)[0].landmarks)
    raw_jitter = np.diff(np.array(raw_out[20:]), axis=0).std()
    smooth_jitter = np.diff(np.array(smooth_out[20:]), axis=0).std()
    assert smooth_jitter < raw_jitter / 3, (raw_jitter, smooth_jitter)
    # A face moving at 4 px/frame: smoothing must not leave it behind.
    tracker = FaceTracker(TrackConfig(flow=False))
    for i in range(40):
        face = Face(cx=40 + 4.0 * i, cy=120, width=80)
        out = tracker.update(bg, _detections([face]), i)
    lag = np.abs(out[0].landmarks - face.landmarks()).max()
    assert lag < 2.0, f"smoothed landmarks trail the face by {lag:.1f} px"


def test_one_euro_filter_adapts_its_cutoff_to_speed():
    # For a 100 px face: a 0.1 px step (noise) is mostly filtered out, a 50 px one followed.
    f = OneEuroFilter(min_cutoff=0.02, beta=10.0, d_cutoff=0.2)
    f(np.zeros(4), 1.0, 100.0)
    slow = f(np.full(4, 0.1), 1.0, 100.0)[0] / 0.1
    g = OneEuroFilter(min_cutoff=0.02, beta=10.0, d_cutoff=0.2)
    g(np.zeros(4), 1.0, 100.0)
    fast = g(np.full(4, 50.0), 1.0, 100.0)[0] / 50.0
    assert slow < 0.2 and fast > 0.8


def test_contract_violations_raise():
    tracker = FaceTracker(TrackConfig())
    frame = np.zeros((H, W, 3), np.uint8)
    with pytest.raises(ValueError, match=r"frame must be \[H, W, 3\] uint8 RGB, got shape \[240, 320\]"):
        tracker.update(frame[..., 0], None, 0)
    with pytest.raises(ValueError, match="detections must be Detections, a function or None, got list"):
        tracker.update(frame, [], 0)
    tracker.update(frame, None, 5)
    with pytest.raises(ValueError, match="frame_index must increase: got 5 after 5"):
        tracker.update(frame, None, 5)
    with pytest.raises(ValueError, match=r"Detections.landmarks must be \[N, 5, 2\] = \[1, 5, 2\], got shape \[1, 68, 2\]"):
        Detections(np.zeros((1, 4)), np.ones(1), np.zeros((1, 68, 2)))


@pytest.mark.parametrize(
    "kwargs, key",
    [({"iou_match": 1.5}, "iou_match"), ({"max_age": -1}, "max_age"), ({"min_hits": 0}, "min_hits"),
     ({"smooth_min_cutoff": 0.0}, "smooth_min_cutoff"), ({"flow_points": 2}, "flow_points")],
)
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=rf"^{key} must be .*, got"):
        TrackConfig(**kwargs)


def test_the_tracker_matches_as_scipy_does_ties_included_without_importing_scipy():
    """`assign` gives `scipy.optimize.linear_sum_assignment`'s matching, ties broken alike, on square
    and rectangular matrices (the tracker's IoU and distance costs: many ties at 0 and at 1e6)."""
    import subprocess
    import sys

    from scipy.optimize import linear_sum_assignment

    from pipeline.stages.assign import assign

    rng = np.random.default_rng(7)
    for k in range(3000):
        n, m = rng.integers(1, 9, 2)
        cost = [rng.integers(0, 3, (n, m)).astype(float), rng.random((n, m)),
                -np.round(rng.random((n, m)), 1) * (rng.random((n, m)) > 0.5),
                np.where(rng.random((n, m)) > 0.6, rng.random((n, m)), 1e6)][k % 4]
        expected, got = linear_sum_assignment(cost), assign(cost)
        assert np.array_equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]), cost
    rows, cols = assign(np.zeros((0, 3)))
    assert len(rows) == len(cols) == 0
    with pytest.raises(ValueError, match="finite"):
        assign(np.array([[np.inf, 1.0]]))
    # the tracker's start-up: scipy.optimize alone took 0.23-0.45 s of a 1.8 s one
    code = "import sys, pipeline.stages.track; sys.exit('scipy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
