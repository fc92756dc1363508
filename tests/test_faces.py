"""The face stages end to end on real faces: detect every k frames, track, align, chunk by chunk."""

import threading

import numpy as np
import pytest

from crowd_scenes import CrowdClip
from face_scenes import Face, background, moving_face, render
from pipeline.stages.align import template_points, transform_points
from pipeline.stages.detect import DetectConfig, FaceDetector
from pipeline.stages.faces import FaceAnalyzer
from pipeline.stages.track import TrackConfig, TrackRecord

CROP = 64


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(DetectConfig(device="cpu"))  # MTCNN picks its own thread count (detect.threads)


def _analyzer(detector, every=3, **track):
    return FaceAnalyzer(DetectConfig(every=every), TrackConfig(**track), CROP, detector=detector)


def _run(analyzer, frames, chunk=16):
    out = []
    for start in range(0, len(frames), chunk):
        out += analyzer.process(frames[start : start + chunk], start)
    return out


def test_moving_face_is_found_in_almost_every_frame_with_one_id(detector):
    frames, truth = moving_face(60, seed=21)
    analyzer = _analyzer(detector)
    result = _run(analyzer, frames)
    assert len(result) == 60
    found = [faces for faces in result if len(faces) == 1]
    assert len(found) >= 0.95 * 60, f"face found in {len(found)} of 60 frames"
    assert {f.track_id for faces in result for f in faces} == {1}
    for faces, face in zip(result, truth):
        for crop in faces:
            assert crop.crop.shape == (CROP, CROP, 3) and crop.crop.dtype == np.uint8
            assert crop.matrix.shape == (2, 3)
            # The crop is aligned: the true landmarks land on the template, within 6% of the crop.
            error = np.abs(transform_points(crop.matrix, face.landmarks()) - template_points(CROP)).max()
            assert error < 0.06 * CROP, f"frame {crop.frame_index}: landmarks {error:.1f} px off the template"
    assert sum(f.detected for faces in result for f in faces) == 20  # detection every 3rd frame
    assert analyzer.close() == [TrackRecord(1, 0, 59)]


def test_two_faces_keep_two_ids_after_crossing(detector):
    bg = background(240, 360, seed=22)
    frames, truth = [], []
    for i in range(45):
        t = i / 44
        a = Face(360 * (0.2 + 0.6 * t), 110, 64)  # moves right, behind b
        b = Face(360 * (0.8 - 0.6 * t), 128, 72)  # moves left, in front
        frames.append(render(bg, [a, b]))
        truth.append((a, b))
    result = _run(_analyzer(detector), frames)
    ids = {"a": set(), "b": set()}
    for faces, (a, b) in zip(result, truth):
        for f in faces:
            centre = (f.box[:2] + f.box[2:]) / 2
            who = "a" if np.hypot(*(centre - (a.cx, a.cy))) < np.hypot(*(centre - (b.cx, b.cy))) else "b"
            ids[who].add(f.track_id)
    assert len(ids["a"]) == 1 and len(ids["b"]) == 1 and ids["a"] != ids["b"], ids
    # Both are seen on both sides of the crossing.
    for faces, (a, b) in [(result[2], truth[2]), (result[-3], truth[-3])]:
        assert len(faces) == 2


def test_track_survives_occlusion_and_ends_cleanly_after_a_long_absence(detector):
    bg = background(240, 320, seed=23)
    frames = []
    for i in range(80):
        face = Face(90 + 1.5 * i, 120, 70)
        if i < 45:
            cover = [(int(face.cx - 60), 40, int(face.cx + 60), 200)] if 18 <= i < 26 else []
            frames.append(render(bg, [face], cover))
        else:
            frames.append(bg.copy())
    analyzer = _analyzer(detector, max_age=15)
    result, finished = [], []
    for start in range(0, 80, 10):
        result += analyzer.process(frames[start : start + 10], start)
        finished += analyzer.pop_finished_tracks()
    fade = 4  # TrackConfig().fade
    assert {f.track_id for faces in result for f in faces} == {1}  # the same face after the cover
    assert all(len(result[i]) == 1 for i in range(18)) and all(len(result[i]) == 1 for i in range(27, 45))
    # Covered: it fades out within `fade` frames, so nothing is pasted over the cover after that.
    assert all(f.weight < 1 for i in range(18, 26) for f in result[i])
    assert all(result[i] == [] for i in range(18 + fade, 26))
    assert all(result[i] == [] for i in range(44 + fade, 80))
    assert finished == [TrackRecord(1, 0, 43 + fade)]  # ended within the stream (after its fade out), reported once
    assert analyzer.close() == []


def test_chunk_size_does_not_change_the_result(detector):
    frames, _ = moving_face(30, seed=24)
    one = _run(_analyzer(detector), frames, chunk=30)
    many = _run(_analyzer(detector), frames, chunk=7)
    assert [[f.track_id for f in faces] for faces in one] == [[f.track_id for f in faces] for faces in many]
    for a, b in zip(one, many):
        for fa, fb in zip(a, b):
            np.testing.assert_allclose(fa.landmarks, fb.landmarks, atol=1e-3)
            # (MTCNN's boxes differ by ~1e-5 px between batch sizes, facenet-pytorch's own as well: a
            # crop pixel on a rounding edge may move by one level.)
            assert np.abs(fa.crop.astype(int) - fb.crop).max() <= 1


def test_raw_detections_are_those_of_the_latest_chunk(detector):
    frames, _ = moving_face(20, seed=25)
    analyzer = _analyzer(detector, every=4)
    analyzer.process(frames[:10], 0)
    assert [d.frame_index for d in analyzer.last_detections] == [0, 4, 8]
    analyzer.process(frames[10:], 10)
    assert [d.frame_index for d in analyzer.last_detections] == [12, 16]
    assert all(len(d.detections) == 1 for d in analyzer.last_detections)
    assert analyzer.active_tracks() == [TrackRecord(1, 0, 19)]


def test_chunks_must_follow_each_other(detector):
    frames, _ = moving_face(4, seed=26)
    analyzer = _analyzer(detector)
    analyzer.process(frames[:2], 100)
    with pytest.raises(ValueError, match="start_index must continue the stream: expected 102, got 103"):
        analyzer.process(frames[2:], 103)
    with pytest.raises(ValueError, match=r"frames\[0\] must be \[H, W, 3\] uint8 RGB, got shape \[240, 320, 4\]"):
        analyzer.process([np.zeros((240, 320, 4), np.uint8)], 102)
    with pytest.raises(ValueError, match="crop_size must be an integer in 8..4096, got 4"):
        FaceAnalyzer(DetectConfig(), TrackConfig(), 4, detector=detector)


def test_detection_frames_between_full_scans_look_around_the_tracked_faces(detector):
    # A face from the start, and a second one that appears on frame 4: every=3, full_every=3 scans
    # the whole frame on 0, 9, 18, and only around the tracked faces on 3, 6, 12, 15.
    bg = background(240, 320, seed=26)
    first, second = Face(80, 120, 60), Face(240, 120, 60)
    frames = [render(bg, [first] + ([second] if i >= 4 else [])) for i in range(19)]
    analyzer = FaceAnalyzer(DetectConfig(every=3, full_every=3), TrackConfig(), CROP, detector=detector)
    out = analyzer.process(frames, 0)
    regions = {d.frame_index: d.detections.regions for d in analyzer.last_detections}
    assert regions[0] is None and regions[9] is None and regions[18] is None
    assert all(regions[i] is not None and len(regions[i]) >= 1 for i in (3, 6, 12, 15))
    assert all(f.detected for i in (3, 6, 12, 15) for f in out[i])  # the tracked face, checked as often as before
    assert [len(out[i]) for i in (8, 9)] == [1, 2] and len({f.track_id for f in out[18]}) == 2  # the new one: at the next full scan


def test_scans_prefetched_on_the_detection_thread_give_the_same_faces(detector):
    # The local engine hands each chunk to `prefetch` one chunk ahead: the shot cuts and whole-frame
    # scans run on the detection thread while the chunk before is tracked. Cuts, faces, ids, boxes
    # and the raw detections are those of a run without it; the thread stops at close().
    clip = CrowdClip(240, 320, shots=2, shot_length=14, people=4, sizes=(28, 40), seed=3)
    frames = [clip.frame(i) for i in range(clip.frames)]
    plain, ahead = _analyzer(detector, every=3), _analyzer(detector, every=3)
    chunks = [(s, frames[s : s + 5]) for s in range(0, len(frames), 5)]
    want, got, want_dets, got_dets, want_cuts, got_cuts = [], [], [], [], [], []
    for s, chunk in chunks:
        want += plain.process(chunk, s)
        want_dets += plain.last_detections
        want_cuts += plain.last_cuts
    ahead.prefetch(chunks[0][1], 0)
    for k, (s, chunk) in enumerate(chunks):
        if k + 1 < len(chunks):
            ahead.prefetch(chunks[k + 1][1], chunks[k + 1][0])
        got += ahead.process(chunk, s)
        got_dets += ahead.last_detections
        got_cuts += ahead.last_cuts
    assert got_cuts == want_cuts == clip.cuts  # found on the detection thread, one chunk ahead
    assert any(t.name.startswith("facezoom-detect") for t in threading.enumerate())
    assert sum(map(len, want)) >= 0.8 * 4 * len(frames) // 2
    assert [[(f.track_id, f.detected) for f in faces] for faces in got] == [[(f.track_id, f.detected) for f in faces] for faces in want]
    for a, b in zip((f for faces in got for f in faces), (f for faces in want for f in faces)):
        np.testing.assert_allclose(a.box, b.box, atol=1e-3)
    assert [d.frame_index for d in got_dets] == [d.frame_index for d in want_dets]
    assert ahead.close() == plain.close()
    assert not any(t.name.startswith("facezoom-detect") for t in threading.enumerate())


def test_a_face_that_grows_between_full_scans_keeps_its_id_and_its_detections(detector):
    # A face coming towards the camera, 36 -> 110 px over 31 frames; every=3, full_every=3: the
    # detection frames between full scans look only around it, on every pyramid level, so it is
    # detected there at each new size, and never lost or given a new id.
    bg = background(240, 320, seed=27)
    frames = [render(bg, [Face(160, 120, 36 + 74 * i / 30)]) for i in range(31)]
    analyzer = FaceAnalyzer(DetectConfig(every=3, full_every=3), TrackConfig(), CROP, detector=detector)
    out = analyzer.process(frames, 0)
    regions = {d.frame_index: d.detections.regions for d in analyzer.last_detections}
    between = [i for i in range(0, 31, 3) if i % 9]
    assert all(regions[i] is not None for i in between)
    assert all(len(out[i]) == 1 and out[i][0].detected for i in between)
    assert all(len(faces) == 1 for faces in out) and {f.track_id for faces in out for f in faces} == {1}
    for i in (12, 30):  # the box follows the growth
        width = out[i][0].box[2] - out[i][0].box[0]
        assert abs(width / (36 + 74 * i / 30) - 1) < 0.3
