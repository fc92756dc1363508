"""Face tracking: stable ids across frames, and steady landmarks between detections.

The second face stage. Detection runs only on every k-th frame; this tracker carries each face
through the frames in between and keeps one id per face for as long as it is on screen.

- Between detections each visible face is followed with pyramidal Lucas-Kanade optical flow
  (`pipeline/stages/flow.py`: corners flowed forward and back, a similarity fitted to those that
  agree), which moves the landmarks and the box.
- On detection frames, tracks are matched to detections SORT-style (Bewley et al., "Simple
  Online and Realtime Tracking", ICIP 2016): Hungarian assignment on IoU between each track's
  predicted box and the detections (`pipeline/stages/assign.py`), then a second
  round for the tracks left over (back from an occlusion or a miss), by centre distance in
  face widths between faces of similar size: within `reacquire_distance`, or within
  `reid_distance` where the two look alike (the correlation of their aligned 16x16 grey faces,
  `appearance`, at least `reid_similarity`), so a face covered for a while gets its id back.
  A new detection starts a new track.
- Detections are fused with the flow (a constant-gain Kalman update): a face the flow followed
  to this frame moves `detection_gain` of the way to its detection, so the detector's own
  jitter does not make a still face snap on detection frames, while the flow keeps up with a
  moving one; a face the flow did not follow (new, hidden, predicted) takes the detection.
- A track that cannot be followed (missed by the detector, or its flow fails) is hidden: not
  reported, and predicted from its last detection at its velocity: the flow's motion
  averaged over the last frames it was followed (precise, unlike differences of jittering
  detections), or, without flow, the detections' (the flow after a loss is not trusted: it may
  have followed whatever covered the face). It ends once `max_age` frames pass without a matching detection, or once it leaves
  the frame.
- Reported landmarks and boxes are smoothed with a One Euro filter (Casiez et al., CHI 2012;
  `pipeline/stages/smooth.py`):
  strong smoothing when a face is still, little lag when it moves. One speed is measured per
  face, in face widths per frame, so all points share one cutoff (the face keeps its shape) and
  the settings mean the same for a 20 px face and a 500 px one.
- Each reported face carries a `weight` in [0, 1] for the compositor, which moves by 1/`fade`
  per frame towards 1 while the face is shown and towards 0 when it is not: a face found
  mid-shot fades in; a face lost (missed, covered, turned away) fades out at its predicted place
  instead of vanishing; so does a face covered by a larger one in front of it (the one behind
  is not pasted over it) and an implausible one (mostly outside the frame, not shaped like a
  face, a profile the aligner cannot handle: `plausible`). Faces on a shot's first frame start
  at full weight: the cut itself changes the whole picture.
- `cut(frame_index)` ends every track at a shot cut (`pipeline/stages/cuts.py`); flow does not
  cross it.

Ids belong to the tracker instance and start at 1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import cv2

from pipeline.stages.align import check_frame, similarity_transform, transform_box, transform_points, warp_face
from pipeline.stages.assign import assign
from pipeline.stages.detect import Detections, iou_matrix
from pipeline.stages.flow import FaceFlow
from pipeline.stages.smooth import OneEuroFilter
from pipeline.config.sections import TrackConfig


@dataclasses.dataclass(frozen=True)
class TrackedFace:
    """One face on one frame, as the tracker reports it (coordinates in source pixels)."""

    track_id: int
    box: np.ndarray  # [4] float64: x0, y0, x1, y1, smoothed
    landmarks: np.ndarray  # [5, 2] float64, smoothed; MTCNN's order
    score: float  # the score of the track's latest matching detection
    detected: bool  # a detection matched this track on this very frame
    first_frame: int  # the first frame the track was reported on
    weight: float = 1.0  # how much of its super-resolved face to paste, in [0, 1] (fades)
    visible: bool = True  # False while it fades out after its face was lost


@dataclasses.dataclass(frozen=True)
class TrackRecord:
    """A track's lifetime, for the run report: the first and last frame it was reported on."""

    track_id: int
    first_frame: int
    last_frame: int


class _Track:
    """A track's mutable state (internal to FaceTracker)."""

    def __init__(self, track_id: int, box: np.ndarray, landmarks: np.ndarray, score: float, frame: int, cfg: TrackConfig):
        self.id = track_id
        self.box = box.astype(np.float64)  # [4] raw estimate (detection, then flowed)
        self.landmarks = landmarks.astype(np.float64)  # [5, 2] raw estimate
        self.score = float(score)
        self.hits = 1
        # The latest matching detection, and the velocity (px/frame of the box centre): where a
        # hidden track is predicted to be.
        self.last_detected = frame
        self.detected_box, self.detected_landmarks = self.box.copy(), self.landmarks.copy()
        self.velocity = np.zeros(2)
        self.raw_centre = (self.box[:2] + self.box[2:]) / 2  # the latest detection's own centre
        self.visible = True  # reported on the current frame (when confirmed)
        self.first_reported: int | None = None
        self.last_reported: int | None = None
        self.filter = OneEuroFilter(cfg.smooth_min_cutoff, cfg.smooth_beta, cfg.smooth_d_cutoff)
        self.followed = False  # the flow moved it to the current frame
        self.motion = 0.0  # px its centre moved to the current frame by flow or prediction (not by detection)
        self.weight: float | None = None  # presence for the compositor; set when first reported
        self.appearance: np.ndarray | None = None  # [256] unit vector: its aligned face at the latest detection
        self.anchor: np.ndarray | None = None  # [4]: the square O-net saw at the latest detection, moved with the face

    def hide(self, frame: int) -> None:
        """Lose sight of the face: stop reporting it, and predict it from its last detection (the
        flow since then was not confirmed, and may have followed whatever covered the face).
        Smoothing restarts when it is found again."""
        self.visible = False
        self.filter.value = None
        self.predict(frame)

    def detect(self, box: np.ndarray, landmarks: np.ndarray, score: float, frame: int, gain: float) -> None:
        """Fuse a matching detection into the face's position: `gain` of the way from where the flow
        put it (a constant-gain Kalman update), all the way where the flow did not follow it."""
        elapsed = frame - self.last_detected
        centre = (box[:2] + box[2:]) / 2
        if not self.followed:  # no flow measured it: the detections' own motion, averaged
            moved = (centre - self.raw_centre) / elapsed  # between raw detections: the fused ones lag
            self.velocity = moved if self.hits == 1 else (1 - VELOCITY_WEIGHT) * self.velocity + VELOCITY_WEIGHT * moved
        self.raw_centre = centre
        # The gain: `gain` for an offset the size of a detector's jitter, rising to 1 for one well
        # beyond it (a face the flow lost, or that moved): that is motion, not noise.
        offset = float(np.linalg.norm(centre - (self.box[:2] + self.box[2:]) / 2)) / self.width
        g = gain + (1.0 - gain) * min(1.0, max(0.0, (offset - JITTER) / JITTER))
        if not (self.followed and self.visible):
            g = 1.0
        box, landmarks = self.box + g * (box - self.box), self.landmarks + g * (landmarks - self.landmarks)
        self.box, self.landmarks, self.score = box.astype(np.float64), landmarks.astype(np.float64), float(score)
        self.detected_box, self.detected_landmarks = self.box.copy(), self.landmarks.copy()
        self.last_detected, self.hits, self.visible = frame, self.hits + 1, True

    @property
    def width(self) -> float:
        return max(1.0, float(np.sqrt(max(self.box[2] - self.box[0], 1.0) * max(self.box[3] - self.box[1], 1.0))))

    def move(self, matrix: np.ndarray) -> None:
        """Apply a similarity (previous frame -> this frame) to the landmarks and the box."""
        centre = (self.box[:2] + self.box[2:]) / 2
        new_centre = transform_points(matrix, centre)
        self.motion = float(np.linalg.norm(new_centre - centre))
        self.velocity = (1 - VELOCITY_WEIGHT) * self.velocity + VELOCITY_WEIGHT * (new_centre - centre)
        self.landmarks = transform_points(matrix, self.landmarks)
        self.box = transform_box(matrix, self.box)
        if self.anchor is not None:
            self.anchor = transform_box(matrix, self.anchor)

    def predict(self, frame: int) -> None:
        """Place the face where its last detection and velocity put it on `frame`."""
        self.anchor = None
        shift = self.velocity * (frame - self.last_detected)
        self.motion = float(np.linalg.norm(self.velocity))
        self.box = self.detected_box + np.tile(shift, 2)
        self.landmarks = self.detected_landmarks + shift


def _anchor(detections: Detections, j: int) -> np.ndarray | None:
    """Detection j's square O-net saw, where known."""
    a = None if detections.anchors is None else detections.anchors[j]
    return None if a is None or not np.isfinite(a).all() else a.copy()


VELOCITY_WEIGHT = 0.2  # each new motion measurement's share of the velocity (an average over ~5)
JITTER = 0.2  # face widths: offsets of a detection from the flow up to this are the detector's noise
COVERED = 0.4  # a face with this share of its box under a larger face's box is behind it: not pasted
INSIDE = 0.6  # least share of a plausible face's box inside the frame
ASPECT = (0.8, 2.0)  # plausible height / width of a face box (MTCNN's are ~1.2)


def plausible(box: np.ndarray, landmarks: np.ndarray, width: int, height: int) -> bool:
    """Whether a face can be pasted: most of its box inside the frame, shaped like a face box, and
    not a profile the 5-point alignment cannot handle (eyes at least a fifth of the box width
    apart, the nose between them, give or take half their distance)."""
    w, h = box[2] - box[0], box[3] - box[1]
    if w <= 0 or h <= 0 or not ASPECT[0] <= h / w <= ASPECT[1]:
        return False
    iw = min(box[2], width) - max(box[0], 0.0)
    ih = min(box[3], height) - max(box[1], 0.0)
    if iw <= 0 or ih <= 0 or iw * ih < INSIDE * w * h:
        return False
    left, right, nose = landmarks[0], landmarks[1], landmarks[2]
    eyes = right - left
    span = float(eyes @ eyes)
    if span < (0.2 * w) ** 2:
        return False
    t = float((nose - left) @ eyes) / span  # the nose along the eye line: 0 at the left eye, 1 at the right
    return -0.5 <= t <= 1.5


APPEARANCE_SIZE = 16  # px: the aligned face an appearance is measured on


def appearance(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A face's look, to tell it again after an occlusion: its aligned grey face at 16x16 (the
    aligner's crop), zero-mean and unit-norm, `[256]` (the correlation of two is their dot product)."""
    crop = warp_face(frame, similarity_transform(landmarks, APPEARANCE_SIZE), APPEARANCE_SIZE)
    v = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float64).ravel()
    v -= v.mean()
    return v / max(float(np.linalg.norm(v)), 1e-9)


class FaceTracker:
    """Multi-face tracker: detections every k frames, optical flow in between, stable ids.

    Contract of `update` (SORT-style): call it once per frame, in frame order, with that frame;
    pass the frame's `Detections` on detection frames (an empty `Detections` when the detector
    found nothing; faces outside its `regions`, where it did not look, are left as they are) and
    None on frames the detector skipped; or a function `near(shown, hidden, anchors)` that detects
    once the tracks have moved to this frame, given the boxes of the faces the flow followed here
    and of the others, and for the followed ones the square O-net saw at their latest detection
    (`Detections.anchors`), moved with them, or None (`FaceDetector.near`: a check of each followed
    face where it now is). Boxes are `x0, y0, x1, y1` in
    source pixels, landmarks `[5, 2]` in MTCNN's order. Frame indices must increase; a gap is
    allowed (tracks coast over it). Tracks that end are collected until `pop_finished()`; at the
    end of a stream, `close()` ends the rest.
    """

    def __init__(self, cfg: TrackConfig):
        self.cfg = cfg
        self._tracks: list[_Track] = []
        self._finished: list[TrackRecord] = []
        self._next_id = 1
        self._flow = FaceFlow(cfg.flow_points, cfg.flow_max_error)
        self._prev_gray: np.ndarray | None = None
        self._prev_index: int | None = None
        self._shot_start: int | None = None  # the first frame of the current shot
        self.wants_detection = False  # a face was lost on the latest frame: detect on the next one
        self.lost_boxes: list[np.ndarray] = []  # where (`[4]` boxes): `FaceDetector.detect_regions` looks there

    def cut(self, frame_index: int) -> None:
        """A shot cut before frame `frame_index`: every track ends, and flow does not cross it."""
        for track in self._tracks:
            self._end(track)
        self._tracks, self._prev_gray, self._shot_start = [], None, frame_index

    def update(self, frame: np.ndarray, detections: Detections | Callable[..., Detections] | None, frame_index: int
               ) -> list[TrackedFace]:
        """Advance to `frame` (index `frame_index`); return the faces on it (shown or fading out), by track id."""
        check_frame(frame)
        if detections is not None and not (isinstance(detections, Detections) or callable(detections)):
            raise ValueError(f"detections must be Detections, a function or None, got {type(detections).__name__}")
        if self._prev_index is not None and frame_index <= self._prev_index:
            raise ValueError(f"frame_index must increase: got {frame_index} after {self._prev_index}")
        if self._shot_start is None:
            self._shot_start = frame_index
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        same_size = self._prev_gray is not None and self._prev_gray.shape == gray.shape

        # 1. Predict: optical flow for visible tracks; from the last detection for the rest.
        lost = self._predict(gray, same_size, frame_index)
        if callable(detections):
            detections = detections([t.box.copy() for t in self._tracks if t.followed],
                                    [t.box.copy() for t in self._tracks if not t.followed],
                                    [t.anchor for t in self._tracks if t.followed])
            if not isinstance(detections, Detections):
                raise ValueError(f"the detections function must return Detections, got {type(detections).__name__}")

        # 2. Associate on detection frames (with the tracks the detector looked for: `Detections.regions`).
        seen = {t.id for t in self._tracks if t.visible}
        looked = {t.id for t in self._tracks if detections is not None and detections.covers(t.box)}
        matched: set[int] = set()
        if detections is not None:
            matched = self._associate(detections, frame_index, frame, looked)
        # A face lost on this frame (its flow failed, or the detector missed it): detect on the next, near it.
        self.lost_boxes = [t.box.copy() for t in self._tracks if (t.id in seen or t.id in lost) and not t.visible]
        self.wants_detection = bool(self.lost_boxes)

        # 3. End tracks that left the frame, and, on detection frames (the only frames that can
        #    tell a face is gone), tracks unmatched for over max_age frames or still unconfirmed.
        height, width = gray.shape
        self._end_gone(width, height, looked - matched, frame_index)

        # 4. Report the confirmed tracks that are shown or still fading out, smoothed.
        behind = self._covered()
        faces = []
        for track in sorted(self._tracks, key=lambda t: t.id):
            if track.hits < self.cfg.min_hits:
                continue
            shown = track.visible and track.id not in behind and plausible(track.box, track.landmarks, width, height)
            if track.weight is None:  # first report: at full weight on a shot's first frame, else fade in
                track.weight = 1.0 if frame_index == self._shot_start else 0.0
            step = 1.0 / self.cfg.fade
            track.weight = min(1.0, track.weight + step) if shown else max(0.0, track.weight - step)
            if track.visible or track.weight > 0:
                faces.append(self._report(track, frame_index, detected=track.id in matched))
        self._prev_gray, self._prev_index = gray, frame_index
        return faces

    def _predict(self, gray: np.ndarray, same_size: bool, frame_index: int) -> set[int]:
        """Move each track: along the optical flow where it is visible, else from its last detection.
        Returns the tracks whose flow failed on this frame (lost sight: occluded, turned away)."""
        visible = {t.id: t.box for t in self._tracks if t.visible}
        flowed = {}
        if self.cfg.flow and same_size and visible:
            flowed = self._flow(self._prev_gray, gray, visible)
        lost = set()
        for track in self._tracks:
            track.followed = flowed.get(track.id) is not None
            if track.followed:
                track.move(flowed[track.id])
            elif track.id in flowed:
                track.hide(frame_index)
                lost.add(track.id)
            else:
                track.predict(frame_index)
        return lost

    def _end_gone(self, width: int, height: int, missed: set[int], frame_index: int) -> None:
        """End the tracks that left the frame, and the `missed` ones (looked for, not matched) that
        went unmatched for over max_age frames or are still unconfirmed."""
        alive = []
        for track in self._tracks:
            gone = track.box[2] < 0 or track.box[3] < 0 or track.box[0] > width or track.box[1] > height
            too_old = track.id in missed and frame_index - track.last_detected > self.cfg.max_age
            missed_tentative = track.id in missed and track.hits < self.cfg.min_hits
            if gone or too_old or missed_tentative:
                self._end(track)
            else:
                alive.append(track)
        self._tracks = alive

    def pop_finished(self) -> list[TrackRecord]:
        """The tracks that ended since the last call (each reported at least once)."""
        finished, self._finished = self._finished, []
        return finished

    def boxes(self) -> list[np.ndarray]:
        """Where every live track is (shown, or predicted while hidden): `[4]` boxes on the latest frame."""
        return [t.box.copy() for t in self._tracks]

    def active(self) -> list[TrackRecord]:
        """The live tracks that have been reported so far, with their frames up to now."""
        return [
            TrackRecord(t.id, t.first_reported, t.last_reported)
            for t in sorted(self._tracks, key=lambda t: t.id)
            if t.first_reported is not None
        ]

    def close(self) -> list[TrackRecord]:
        """End every track (the stream is over); return all ended tracks not yet popped."""
        for track in self._tracks:
            self._end(track)
        self._tracks = []
        self._prev_gray = None
        return self.pop_finished()

    # -- internals ---------------------------------------------------------------------------

    def _end(self, track: _Track) -> None:
        if track.first_reported is not None:
            self._finished.append(TrackRecord(track.id, track.first_reported, track.last_reported))

    def _report(self, track: _Track, frame_index: int, detected: bool) -> TrackedFace:
        state = np.concatenate([track.landmarks.ravel(), track.box])  # [14]
        if self.cfg.smooth and track.visible:  # (the filter restarts itself after `hide`)
            dt = 1.0 if track.last_reported is None else float(frame_index - track.last_reported)
            state = track.filter(state, dt, track.width, track.motion if track.followed else None)
        if track.first_reported is None:
            track.first_reported = frame_index
        track.last_reported = frame_index
        return TrackedFace(
            track_id=track.id,
            box=state[10:].copy(),
            landmarks=state[:10].reshape(5, 2).copy(),
            score=track.score,
            detected=detected,
            first_frame=track.first_reported,
            weight=float(track.weight),
            visible=track.visible,
        )

    def _associate(self, detections: Detections, frame_index: int, frame: np.ndarray, looked: set[int]) -> set[int]:
        tracks = [t for t in self._tracks if t.id in looked]
        det_boxes = detections.boxes.astype(np.float64)
        pairs: list[tuple[int, int]] = []
        free_tracks, free_dets = list(range(len(tracks))), list(range(len(det_boxes)))
        if tracks and len(det_boxes):
            # Round 1: IoU between predicted boxes and detections (SORT).
            iou = iou_matrix(np.stack([t.box for t in tracks]), det_boxes)
            rows, cols = assign(-iou)
            pairs = [(r, c) for r, c in zip(rows, cols) if iou[r, c] >= self.cfg.iou_match]
            free_tracks = [i for i in range(len(tracks)) if i not in {r for r, _ in pairs}]
            free_dets = [j for j in range(len(det_boxes)) if j not in {c for _, c in pairs}]
            # Round 2: tracks left over (back from an occlusion or a miss, or drifted), by centre
            # distance in face widths, for faces of a similar size.
            if free_tracks and free_dets and max(self.cfg.reacquire_distance, self.cfg.reid_distance) > 0:
                looks = {j: appearance(frame, detections.landmarks[j]) for j in free_dets}
                cost = np.full((len(free_tracks), len(free_dets)), np.inf)
                for a, i in enumerate(free_tracks):
                    t = tracks[i]
                    centre = (t.box[:2] + t.box[2:]) / 2
                    for b, j in enumerate(free_dets):
                        d = det_boxes[j]
                        det_width = math.sqrt(max(d[2] - d[0], 1.0) * max(d[3] - d[1], 1.0))
                        ratio = det_width / t.width
                        dist = float(np.linalg.norm((d[:2] + d[2:]) / 2 - centre)) / t.width
                        alike = t.appearance is not None and float(t.appearance @ looks[j]) >= self.cfg.reid_similarity
                        near = dist <= self.cfg.reacquire_distance or (alike and dist <= self.cfg.reid_distance)
                        if near and 2 / 3 <= ratio <= 1.5:
                            cost[a, b] = dist
                if np.isfinite(cost).any():
                    rows, cols = assign(np.where(np.isfinite(cost), cost, 1e6))
                    extra = [(free_tracks[r], free_dets[c]) for r, c in zip(rows, cols) if np.isfinite(cost[r, c])]
                    pairs += extra
                    free_dets = [j for j in free_dets if j not in {c for _, c in extra}]
        # Update matched tracks with their detections.
        matched = set()
        for i, j in pairs:
            tracks[i].detect(det_boxes[j], detections.landmarks[j], detections.scores[j], frame_index, self.cfg.detection_gain)
            tracks[i].appearance = appearance(frame, detections.landmarks[j])
            tracks[i].anchor = _anchor(detections, j)
            matched.add(tracks[i].id)
        # Unmatched tracks are hidden until a detection finds them again.
        for t in tracks:
            if t.id not in matched:
                t.hide(frame_index)
        # Unmatched detections start tracks.
        for j in free_dets:
            track = _Track(self._next_id, det_boxes[j], detections.landmarks[j], detections.scores[j], frame_index, self.cfg)
            track.appearance = appearance(frame, detections.landmarks[j])
            track.anchor = _anchor(detections, j)
            self._next_id += 1
            self._tracks.append(track)
            matched.add(track.id)
        return matched

    def _covered(self) -> set[int]:
        """Ids of visible faces mostly covered by a larger visible face (the one in front)."""
        visible = [t for t in self._tracks if t.visible]
        behind = set()
        for t in visible:
            area = max(1e-9, (t.box[2] - t.box[0]) * (t.box[3] - t.box[1]))
            for other in visible:
                if other is t or other.width <= t.width:
                    continue
                iw = min(t.box[2], other.box[2]) - max(t.box[0], other.box[0])
                ih = min(t.box[3], other.box[3]) - max(t.box[1], other.box[1])
                if iw > 0 and ih > 0 and iw * ih >= COVERED * area:
                    behind.add(t.id)
        return behind
