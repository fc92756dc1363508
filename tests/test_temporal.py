"""Temporal stability: shot cuts, no faces dropping out, no snaps, ids kept, no implausible pastes.

On `face_scenes.shots()`: the public-domain astronaut composited into two shots with a hard cut,
a still face, a moving one, a face covered by a card for 20 frames, and one that leaves the frame
and comes back; MTCNN finds the faces, as in a real run.
"""

import numpy as np
import pytest

from face_scenes import Face, background, render, shots
from pipeline.stages.detect import DetectConfig, Detections, FaceDetector
from pipeline.stages.faces import FaceAnalyzer
from pipeline.stages.track import FaceTracker, TrackConfig, iou_matrix, plausible

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(DetectConfig(device="cpu"))


@pytest.fixture(scope="module")
def scene():
    return shots()


class Tampered:
    """A detector that misses every face on some frames and jitters the boxes it finds, as real
    detectors do on real footage (the astronaut on clean synthetic frames hardly jitters)."""

    def __init__(self, detector, frames, *, miss=(), jitter=0.0, seed=0):
        self.detector, self.miss, self.jitter = detector, set(miss), jitter
        self.index = {id(f): i for i, f in enumerate(frames)}
        self.rng = np.random.default_rng(seed)

    def detect(self, frames):
        return [self._tamper(frame, found) for frame, found in zip(frames, self.detector.detect(frames))]

    def detect_regions(self, frame, boxes):
        return self._tamper(frame, self.detector.detect_regions(frame, boxes))

    def near(self, frame, shown, hidden, anchors):
        return self._tamper(frame, self.detector.near(frame, shown, hidden, anchors))

    def _tamper(self, frame, found):
        if self.index[id(frame)] in self.miss:
            return found.take(np.zeros(len(found), bool))
        if self.jitter and len(found.boxes):
            widths = found.boxes[:, 2] - found.boxes[:, 0]
            shift = self.rng.uniform(-self.jitter, self.jitter, (len(widths), 2)) * widths[:, None]
            found = Detections(found.boxes + np.tile(shift, 2), found.scores, found.landmarks + shift[:, None, :],
                               regions=found.regions, anchors=found.anchors)
        return found


def run(frames, detector, *, every=5, chunk=8, **track):
    analyzer = FaceAnalyzer(DetectConfig(every=every), TrackConfig(**track), 128, detector=detector)
    out, cuts, finished = [], [], []
    for start in range(0, len(frames), chunk):
        out += analyzer.process(frames[start : start + chunk], start)
        cuts += analyzer.last_cuts
        finished += analyzer.pop_finished_tracks()
    finished += analyzer.close()
    return out, cuts, finished


def who(faces, person_face):
    """The reported face on a frame that is this person's (IoU >= 0.5 with the truth), or None."""
    if not faces:
        return None
    iou = iou_matrix(person_face.box()[None], np.stack([f.box for f in faces]))[0]
    j = int(np.argmax(iou))
    return faces[j] if iou[j] >= 0.5 else None


@pytest.mark.parametrize("every", [1, 5, 8])
def test_no_track_spans_the_cut_and_the_new_shot_is_processed_from_its_first_frame(scene, detector, every):
    frames, truth, true_cuts = scene
    out, cuts, finished = run(frames, detector, every=every)
    assert cuts == true_cuts  # 43: off every one of these cadences
    cut = true_cuts[0]
    for record in finished:
        assert record.last_frame < cut or record.first_frame >= cut, record
    first = out[cut]
    for person in truth[cut]:
        face = who(first, person.face)
        assert face is not None and face.weight == 1.0, f"person {person.person} not processed on the cut's frame"
    assert not {f.track_id for f in out[cut - 1]} & {f.track_id for f in first}


@pytest.mark.slow
def test_visible_faces_never_drop_out_and_a_covered_face_keeps_its_id(scene, detector):
    frames, truth, _ = scene
    out, _, _ = run(frames, detector, every=5)
    ids: dict[int, set[int]] = {}
    for i in range(1, len(frames)):
        for person in truth[i]:
            before = next((p for p in truth[i - 1] if p.person == person.person), None)
            now, then = who(out[i], person.face), who(out[i - 1], before.face) if before else None
            if person.visible and before is not None and before.visible and then is not None and then.weight == 1.0:
                assert now is not None, f"frame {i}: person {person.person} dropped out while visible"
            if now is not None and person.visible:
                ids.setdefault(person.person, set()).add(now.track_id)
    assert len(ids[3]) == 1, f"person 3, covered for 20 frames, got ids {ids[3]}"
    assert all(len(v) == 1 for p, v in ids.items() if p != 4), ids  # person 4 left the frame: a new id is fair


def test_a_missed_detection_asks_for_the_next_frame_and_the_face_dips_instead_of_vanishing(scene, detector):
    frames, truth, _ = scene
    frames = frames[:30]
    out, _, _ = run(frames, Tampered(detector, frames, miss={10}), every=5)
    weights = [who(out[i], truth[i][0].face).weight for i in range(5, 20)]  # person 1, still
    assert min(weights) >= 1 - 1 / TrackConfig().fade  # one step down, then back: no frame without it
    assert weights[-1] == 1.0


def test_a_still_face_does_not_snap_on_detection_frames(scene, detector):
    frames, truth, true_cuts = scene
    frames = frames[: true_cuts[0]]

    def worst_step(**track):
        out, _, _ = run(frames, Tampered(detector, frames, jitter=0.15), every=5, **track)
        centres = np.array([(lambda b: (b[:2] + b[2:]) / 2)(who(out[i], truth[i][0].face).box) for i in range(len(frames))])
        return float(np.linalg.norm(np.diff(centres, axis=0), axis=1).max() / truth[0][0].face.width)

    assert worst_step() < 0.06
    assert worst_step(detection_gain=1.0, smooth=False) > 0.06  # the same detector taken as it is: snaps


def test_a_moving_face_is_still_followed_closely():
    bg = background(240, 320, seed=5)
    rng = np.random.default_rng(1)
    tracker = FaceTracker(TrackConfig())
    errors = []
    for i in range(60):
        face = Face(cx=80 + 3 * i, cy=120, width=60)
        frame = np.clip(render(bg, [face]) + rng.normal(0, 3, (240, 320, 3)), 0, 255).astype(np.uint8)
        dets = None
        if i % 5 == 0:  # jittery detections
            shift = rng.uniform(-0.15, 0.15, 2) * face.width
            dets = Detections((face.box() + np.tile(shift, 2))[None], np.array([0.99]), (face.landmarks() + shift)[None])
        (out,) = tracker.update(frame, dets, i)
        errors.append(np.hypot(*((out.box[:2] + out.box[2:]) / 2 - (face.cx, face.cy))) / face.width)
    assert np.mean(errors[10:]) < 0.08


def _dets(faces):
    return Detections(np.stack([f.box() for f in faces]), np.full(len(faces), 0.99), np.stack([f.landmarks() for f in faces]))


def test_a_face_behind_a_larger_one_is_not_pasted_over_it():
    bg = background(240, 320, seed=8)
    tracker = FaceTracker(TrackConfig(flow=False))  # (the pasted photos overlap: flow would follow the front one's)
    fade = TrackConfig().fade
    weights = []
    for i in range(40):
        front = Face(cx=160, cy=120, width=90)
        back = Face(cx=40 + 4 * i, cy=115, width=50)  # walks behind the front face from frame ~15 to ~35
        frame = render(bg, [back, front])
        out = {f.track_id: f for f in tracker.update(frame, _dets([front, back]) if i % 5 == 0 else None, i)}
        weights.append(out[2].weight if 2 in out else 0.0)
    covered = [i for i in range(40) if abs(40 + 4 * i - 160) < 0.5 * 90]
    assert weights[0] == 1.0 and max(weights[covered[0] + fade : covered[-1]]) == 0.0  # faded out while behind


def test_implausible_boxes_fade_out_and_plausible_faces_pass():
    face = Face(cx=160, cy=120, width=60)
    assert plausible(face.box(), face.landmarks(), 320, 240)
    off = Face(cx=10, cy=-20, width=60)  # mostly above and left of the frame
    assert not plausible(off.box(), off.landmarks(), 320, 240)
    tall = face.box() + np.array([0, -60, 0, 60])  # 222x366-like: not a face's shape
    assert not plausible(tall, face.landmarks(), 320, 240)
    profile = face.landmarks().copy()
    profile[1] = profile[0] + (3.0, 0.0)  # the eyes one on the other: a profile
    assert not plausible(face.box(), profile, 320, 240)
    # In the tracker: a face that moves mostly out of the frame fades out before it leaves.
    bg = background(240, 320, seed=9)
    tracker = FaceTracker(TrackConfig())
    weights = []
    for i in range(30):
        f = Face(cx=100 - 5 * i, cy=120, width=60)
        out = tracker.update(render(bg, [f]), _dets([f]) if i % 3 == 0 else None, i)
        weights.append(out[0].weight if out else 0.0)
    inside = [max(0.0, min(f_x + 30, 320) - max(f_x - 30, 0)) / 60 for f_x in (100 - 5 * i for i in range(30))]
    assert all(w == 0.0 for w, share in zip(weights, inside) if share < 0.3)
    assert np.all(np.abs(np.diff(weights)) <= 1 / TrackConfig().fade + 1e-9)  # by steps, never a pop


def test_the_report_lists_the_cuts(scene, tmp_path):
    from pipeline.config import load_config
    from pipeline.media.reader import Frame
    from pipeline.stages.chunk import FaceProcessor, StageTimer

    frames, _, true_cuts = scene
    processor = FaceProcessor(load_config())
    for start in range(0, 60, 8):
        processor([Frame(f, i, 1, i) for i, f in zip(range(start, start + 8), frames[start : start + 8])], StageTimer())
    report = processor.finish()
    assert report["cuts"] == true_cuts
    assert all(0 <= f["weight"] <= 1 for f in report["faces"])
