"""Temporal stability: shot cuts, id switches, holes and jitter, per detector cadence.

Clips made here from the public-domain astronaut (tests/face_scenes.py):
- `shots`: two shots with a hard cut, a still face, a moving one, a face covered by a card for
  20 frames, one that leaves the frame and comes back (`face_scenes.shots`);
- `cuts`: eight shots of 17 frames on different backgrounds, with things that are not cuts:
  a camera pan, a one-frame flash, a brightness ramp.

Per cadence (`detect.every`) and setting, with MTCNN's detections jittered by up to 15% of the
face width (the astronaut on clean synthetic frames hardly jitters; real footage does):
- cut recall and precision (a reported cut within one frame of a true one);
- id switches: ids per person beyond one (person 4 leaves the frame: its second id is fair);
  ids across cut: ids found on both sides of the cut (a track carried onto the next shot's people);
- holes: frames where a visible face shown at full weight on the frame before is missing;
- jitter: the still face's largest and mean frame-to-frame move, % of its width;
- ms/frame of the face stages.
"old" turns off what issue 13 added that a setting controls (cuts, fusion, fades).

    python benchmarks/temporal.py [--every 1 5 10] [--json PATH]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from common import ROOT, parser, table, write_json

sys.path.insert(0, str(ROOT / "tests"))

from face_scenes import Face, background, render, shots  # noqa: E402
from pipeline.stages.detect import DetectConfig, Detections, FaceDetector  # noqa: E402
from pipeline.stages.faces import FaceAnalyzer  # noqa: E402
from pipeline.stages.track import TrackConfig, iou_matrix  # noqa: E402

OLD = dict(cut_threshold=0.0, detection_gain=1.0, fade=1)


class Jittered:
    """MTCNN with its boxes and landmarks shifted by up to `jitter` face widths, per detection."""

    def __init__(self, detector, jitter: float, seed: int = 0):
        self.detector, self.jitter, self.rng = detector, jitter, np.random.default_rng(seed)

    def detect(self, frames):
        return [self._jitter(found) for found in self.detector.detect(frames)]

    def detect_regions(self, frame, boxes):
        return self._jitter(self.detector.detect_regions(frame, boxes))

    def near(self, frame, shown, hidden, anchors):
        return self._jitter(self.detector.near(frame, shown, hidden, anchors))

    def _jitter(self, found):
        """The boxes and landmarks moved; where O-net looked (`anchors`) and searched (`regions`) kept."""
        if len(found.boxes):
            widths = found.boxes[:, 2] - found.boxes[:, 0]
            shift = self.rng.uniform(-self.jitter, self.jitter, (len(widths), 2)) * widths[:, None]
            found = Detections(found.boxes + np.tile(shift, 2), found.scores, found.landmarks + shift[:, None, :],
                               regions=found.regions, anchors=found.anchors)
        return found


def cuts_clip(height=240, width=320, shot=17, seed=3):
    """Eight shots, a face in each; a pan, a flash and a brightness ramp that are not cuts."""
    rng = np.random.default_rng(seed)
    frames, cuts = [], []
    for k in range(8):
        if k:
            cuts.append(len(frames))
        wide = background(height, width + 8 * shot, seed + 40 + k)
        for i in range(shot):
            x = 8 * i if k == 2 else 0  # shot 3 pans
            bg = np.ascontiguousarray(wide[:, x : x + width])
            frame = render(bg, [Face(cx=90 + 25 * (k % 4), cy=120, width=56)]).astype(np.float32)
            if k == 4 and i == 8:
                frame += 60  # a flash
            if k == 6:
                frame *= 1.0 + 0.03 * i  # the lights come up
            frame += rng.normal(0, 3, frame.shape)
            frames.append(np.clip(np.round(frame), 0, 255).astype(np.uint8))
    return frames, cuts


def process(frames, detector, every, track):
    analyzer = FaceAnalyzer(DetectConfig(every=every), TrackConfig(**track), 128, detector=detector)
    out, cuts = [], []
    start = time.perf_counter()
    for s in range(0, len(frames), 8):
        out += analyzer.process(frames[s : s + 8], s)
        cuts += analyzer.last_cuts
    analyzer.close()
    return out, cuts, (time.perf_counter() - start) / len(frames) * 1000


def _who(faces, face):
    if not faces:
        return None
    iou = iou_matrix(face.box()[None], np.stack([f.box for f in faces]))[0]
    j = int(np.argmax(iou))
    return faces[j] if iou[j] >= 0.5 else None


def cut_scores(found, true):
    hits = sum(any(abs(f - t) <= 1 for f in found) for t in true)
    right = sum(any(abs(f - t) <= 1 for t in true) for f in found)
    return hits / max(1, len(true)), right / max(1, len(found)) if found else 1.0


def measure(detector, every: int, track: dict) -> dict:
    frames, truth, true_cuts = shots()
    out, cuts, ms = process(frames, detector, every, track)
    ids: dict[int, set[int]] = {}
    holes = 0
    still = []
    for i in range(len(frames)):
        for person in truth[i]:
            now = _who(out[i], person.face)
            if now is not None and person.visible:
                ids.setdefault(person.person, set()).add(now.track_id)
            before = next((p for p in truth[i - 1] if p.person == person.person), None) if i else None
            then = _who(out[i - 1], before.face) if before is not None else None
            if person.visible and before is not None and before.visible and then is not None and then.weight == 1.0 and now is None:
                holes += 1
            if person.person == 1 and now is not None:
                still.append((now.box[:2] + now.box[2:]) / 2)
    steps = np.linalg.norm(np.diff(np.array(still), axis=0), axis=1) / truth[0][0].face.width * 100
    cut = true_cuts[0]
    spanning = {f.track_id for faces in out[:cut] for f in faces} & {f.track_id for faces in out[cut:] for f in faces}
    clip, clip_cuts = cuts_clip()
    _, found, _ = process(clip, detector, every, track)
    recall, precision = cut_scores(found + cuts, clip_cuts + true_cuts)
    return {
        "cut_recall": round(recall, 3), "cut_precision": round(precision, 3),
        "id_switches": sum(len(v) - 1 for v in ids.values()), "ids_across_cut": len(spanning), "holes": holes,
        "jitter_max_pct": round(float(steps.max()), 2), "jitter_mean_pct": round(float(steps.mean()), 3),
        "ms_per_frame": round(ms, 1),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--every", type=int, nargs="+", default=[1, 5, 10])
    p.add_argument("--thresholds", type=float, nargs="+", default=[15.0, 27.0, 40.0], help="cut thresholds to compare (cadence 5)")
    args = p.parse_args()
    torch.set_num_threads(2)
    mtcnn = FaceDetector(DetectConfig(device="cpu"))
    rows = []
    for every in args.every:
        for name, track in (("default", {}), ("old", OLD)):
            rows.append({"every": every, "setting": name, **measure(Jittered(mtcnn, 0.15), every, track)})
    print("shots + cuts clips, MTCNN with 15% jitter; jitter: the still face's moves, % of its width")
    print(table(rows, ["every", "setting", "cut_recall", "cut_precision", "id_switches", "ids_across_cut", "holes", "jitter_max_pct", "jitter_mean_pct", "ms_per_frame"]))
    thresholds = []
    clip, clip_cuts = cuts_clip()
    for threshold in args.thresholds:
        _, found, _ = process(clip, mtcnn, 5, {"cut_threshold": threshold})
        recall, precision = cut_scores(found, clip_cuts)
        thresholds.append({"cut_threshold": threshold, "found": str(found), "recall": round(recall, 3), "precision": round(precision, 3)})
    print(f"\ncut threshold on the cuts clip (true cuts {clip_cuts}; a pan in shot 3, a flash at {4 * 17 + 8}, a brightness ramp in shot 7)")
    print(table(thresholds, ["cut_threshold", "recall", "precision", "found"]))
    write_json(args.json, {"rows": rows, "thresholds": thresholds})


if __name__ == "__main__":
    main()
