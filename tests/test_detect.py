"""Detection with MTCNN on a real face (the astronaut) in synthetic scenes."""

import numpy as np
import pytest

from crowd_scenes import CrowdClip
from face_scenes import Face, background, render
from pipeline.stages.detect import DetectConfig, Detections, FaceDetector, working_scale
from pipeline.stages.track import iou_matrix


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(DetectConfig(device="cpu"))  # MTCNN picks its own thread count (detect.threads)


def _assert_found(dets: Detections, faces: list[Face]):
    assert len(dets) == len(faces), f"found {len(dets)} faces, expected {len(faces)}"
    iou = iou_matrix(np.stack([f.box() for f in faces]), dets.boxes)
    for i, face in enumerate(faces):
        j = int(iou[i].argmax())
        assert iou[i, j] > 0.6, f"face {i}: best IoU {iou[i, j]:.2f}"
        error = np.abs(dets.landmarks[j] - face.landmarks()).max() / face.width
        assert error < 0.08, f"face {i}: landmarks off by {error:.1%} of its width"


def test_finds_several_copies_at_several_sizes_with_landmarks(detector):
    faces = [Face(70, 80, 36), Face(200, 110, 64), Face(390, 180, 110)]
    frame = render(background(300, 480, seed=1), faces)
    (dets,) = detector.detect([frame])
    assert dets.boxes.dtype == np.float32 and dets.landmarks.shape == (3, 5, 2)
    assert (np.diff(dets.scores) <= 0).all()  # best first
    _assert_found(dets, faces)
    # MTCNN's landmark order: left eye, right eye, nose, mouth left, mouth right (image left).
    for lm in dets.landmarks:
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0] and lm[0, 1] < lm[2, 1] < lm[3, 1]


def test_large_frames_are_detected_at_working_size_and_mapped_back(detector):
    faces = [Face(300, 250, 130), Face(1000, 450, 90)]
    frame = render(background(720, 1280, seed=2), faces)
    small = FaceDetector(DetectConfig(working_size=320, min_face=48, device="cpu"))
    (dets,) = small.detect([frame])
    _assert_found(dets, faces)  # boxes and landmarks in source pixels
    assert working_scale(720, 1280, small.cfg) == (0.25, 48.0)


def test_working_size_caps_the_detection_scale_and_sets_the_smallest_face():
    # The smallest face is min_face or 12 working pixels, whichever is larger.
    assert working_scale(720, 1280, DetectConfig(working_size=640, min_face=20)) == (0.5, 24.0)
    assert working_scale(720, 1280, DetectConfig(working_size=640, min_face=40)) == (0.5, 40.0)
    assert working_scale(240, 320, DetectConfig(working_size=640)) == (1.0, 20.0)
    assert working_scale(2160, 3840, DetectConfig(working_size=0, min_face=20)) == (1.0, 20.0)
    assert working_scale(1080, 1920, DetectConfig(working_size=640)) == (1 / 3, 36.0)


def test_batch_gives_the_same_faces_as_one_frame_at_a_time(detector):
    bg = background(240, 320, seed=3)
    frames = [render(bg, [Face(100 + 20 * i, 120, 60 + 5 * i)]) for i in range(3)]
    frames.insert(1, render(background(200, 260, seed=4), [Face(130, 100, 70)]))  # another size
    frames.insert(3, bg)  # no face
    batched = FaceDetector(DetectConfig(batch_size=2, device="cpu")).detect(frames)
    assert [len(d) for d in batched] == [1, 1, 1, 0, 1]
    for frame, together in zip(frames, batched):
        (alone,) = detector.detect([frame])
        np.testing.assert_allclose(together.boxes, alone.boxes, atol=1e-2)
        np.testing.assert_allclose(together.landmarks, alone.landmarks, atol=1e-2)


def test_faces_below_min_face_are_dropped(detector):
    faces = [Face(80, 120, 32), Face(230, 120, 90)]
    frame = render(background(240, 320, seed=5), faces)
    (all_faces,) = detector.detect([frame])
    assert len(all_faces) == 2
    (big_only,) = FaceDetector(DetectConfig(min_face=60, device="cpu")).detect([frame])
    _assert_found(big_only, faces[1:])


def test_no_face_gives_empty_arrays_of_the_right_shape(detector):
    (dets,) = detector.detect([background(240, 320, seed=6)])
    assert dets.boxes.shape == (0, 4) and dets.scores.shape == (0,) and dets.landmarks.shape == (0, 5, 2)
    assert detector.detect([]) == []


def test_frames_smaller_than_the_smallest_face_have_no_faces(detector):
    """8x8, 17x13 or a 2000x16 strip: no face of min_face pixels fits, and MTCNN is not asked."""
    for height, width in [(8, 8), (13, 17), (16, 2000), (19, 40)]:  # 19: just under min_face=20
        (dets,) = detector.detect([np.full((height, width, 3), 128, np.uint8)])
        assert len(dets) == 0


def test_bad_frames_raise_with_got_and_expected(detector):
    with pytest.raises(ValueError, match=r"frames\[1\] must be \[H, W, 3\] uint8 RGB, got shape \[240, 320\]"):
        detector.detect([np.zeros((240, 320, 3), np.uint8), np.zeros((240, 320), np.uint8)])
    with pytest.raises(ValueError, match=r"frames\[0\] must be \[H, W, 3\] uint8 RGB, got dtype float64"):
        detector.detect([np.zeros((240, 320, 3))])


@pytest.mark.parametrize(
    "kwargs, key",
    [({"every": 0}, "every"), ({"working_size": 10}, "working_size"), ({"min_face": 2}, "min_face"),
     ({"thresholds": (0.6, 0.7, 1.2)}, "thresholds"), ({"batch_size": 0}, "batch_size"), ({"device": "tpu"}, "device")],
)
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=rf"^{key} must be .*, got"):
        DetectConfig(**kwargs)


def test_detect_regions_finds_the_face_near_a_box_as_the_whole_frame_does_and_only_there(detector):
    faces = [Face(80, 120, 60), Face(240, 130, 64)]
    frame = render(background(240, 320, seed=7), faces)
    (whole,) = detector.detect([frame])
    near = detector.detect_regions(frame, [faces[1].box()])
    assert len(near) == 1 and near.covers(faces[1].box()) and not near.covers(faces[0].box())
    j = int(iou_matrix(near.boxes, whole.boxes)[0].argmax())
    np.testing.assert_allclose(near.boxes[0], whole.boxes[j], atol=0.01)  # the same face, with the same box
    np.testing.assert_allclose(near.landmarks[0], whole.landmarks[j], atol=0.01)
    assert Detections.empty().covers(faces[0].box())  # no regions: the whole frame was looked at


def test_detect_regions_gives_a_crowds_faces_the_whole_frames_boxes_at_any_offset(detector):
    # MTCNN's box for a small face moves by several % of its width with the pixel phase of its
    # input; regions are made of the whole frame's pyramid cells, so wherever a region starts, a
    # face in it gets the whole frame's box (a 1080p crowd, detected at the 640 px working size).
    crowd = CrowdClip(1080, 1920, shots=1, shot_length=2, people=7, sizes=(44, 64), seed=2)
    frame = crowd.frame(0)
    (whole,) = detector.detect([frame])
    assert len(whole) >= 5
    for shift in (0.0, 1.0, 7.3):  # regions start at different source (and working) pixels
        near = detector.detect_regions(frame, [b + np.array([shift, shift, 0, 0], np.float32) for b in whole.boxes])
        assert len(near) == len(whole)
        order = iou_matrix(whole.boxes, near.boxes).argmax(1)
        np.testing.assert_allclose(near.boxes[order], whole.boxes, atol=0.01)
        np.testing.assert_allclose(near.scores[order], whole.scores, atol=1e-5)


def test_detect_regions_reaches_the_frame_edge(detector):
    # A frame whose sides are not multiples of the regions' grid, a face against its right and
    # bottom edges: its region runs to the edge, so the face is found.
    face = Face(293, 213, 56)
    frame = render(background(250, 330, seed=8), [face])
    near = detector.detect_regions(frame, [face.box()])
    assert len(near) == 1 and iou_matrix(near.boxes, face.box()[None])[0, 0] > 0.6


def test_refine_gives_a_still_crowd_the_whole_frames_boxes_from_their_anchors_and_finds_nothing_where_no_face_is(detector):
    # On frames between whole-frame scans, a followed face is checked with O-net alone, shown the
    # square it saw when found: a face that stayed put gets the very box and landmarks again.
    crowd = CrowdClip(1080, 1920, shots=1, shot_length=2, people=7, sizes=(44, 64), seed=2)
    frame = crowd.frame(0)
    (whole,) = detector.detect([frame])
    assert len(whole) >= 5 and whole.anchors.shape == (len(whole), 4)
    checked = detector.refine(frame, whole.boxes, whole.anchors)
    assert len(checked) == len(whole)
    order = iou_matrix(whole.boxes, checked.boxes).argmax(1)
    np.testing.assert_allclose(checked.boxes[order], whole.boxes, atol=0.01)
    np.testing.assert_allclose(checked.landmarks[order], whole.landmarks, atol=0.01)
    assert all(checked.covers(b) for b in whole.boxes)
    # Without its square (a box squared instead), the face is still found, within a few % of its width.
    squared = detector.refine(frame, whole.boxes)
    widths = whole.boxes[:, 2] - whole.boxes[:, 0]
    assert len(squared) == len(whole)
    assert (np.abs(squared.boxes[iou_matrix(whole.boxes, squared.boxes).argmax(1)] - whole.boxes).max(1) < 0.15 * widths).all()
    # Where no face is, nothing is found, and the box was looked at.
    empty = np.array([[40.0, 40.0, 100.0, 110.0]])
    assert not any(iou_matrix(empty, whole.boxes)[0] > 0)
    nothing = detector.refine(frame, empty)
    assert len(nothing) == 0 and nothing.covers(empty[0])


def test_near_checks_lone_faces_and_searches_around_overlapping_edge_and_hidden_ones(detector, monkeypatch):
    faces = [Face(70, 120, 60), Face(200, 120, 60), Face(240, 140, 60)]  # the last two overlap
    frame = render(background(240, 320, seed=9), faces)
    calls = {}

    def counted(name):
        real = getattr(detector, name)

        def run(frame, boxes, *rest):
            calls[name] = len(boxes)
            return real(frame, boxes, *rest)
        return run

    monkeypatch.setattr(detector, "refine", counted("refine"))
    monkeypatch.setattr(detector, "detect_regions", counted("detect_regions"))
    boxes = [f.box() for f in faces]
    found = detector.near(frame, boxes, [], [None] * 3)
    assert calls == {"refine": 1, "detect_regions": 2}
    assert all(found.covers(b) for b in boxes) and len(found) >= 2
    # A face whose square the frame's edge cuts (O-net would see it stretched) is searched for too.
    edge, inside = Face(20, 120, 60), Face(220, 120, 60)
    frame = render(background(240, 320, seed=10), [edge, inside])
    calls.clear()
    found = detector.near(frame, [edge.box(), inside.box()], [], [None, None])
    assert calls == {"refine": 1, "detect_regions": 1} and edge.box()[0] < 0
    assert found.covers(inside.box()) and len(found) >= 1
