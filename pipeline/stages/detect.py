"""Face detection: the first face stage, run on every k-th frame (the tracker fills the gaps).

MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", IEEE SPL 2016) as packaged by facenet-pytorch, with the weights that
ship inside its wheel (nothing is downloaded; models/networks/mtcnn.py), run by
pipeline/stages/mtcnn.py: facenet-pytorch's cascade with each stage's candidates cut out at
once. It returns a box, a score and five landmarks per face. Frames are detected in batches:
MTCNN runs its three networks on a batch of equal-size images at once, so frames are grouped by
size and fed `batch_size` at a time.

Large frames are shrunk to a working size for detection (its cost grows with the pixel count)
and the boxes and landmarks are mapped back to source pixels. `working_size` is the speed knob:
detection never runs above it, so the smallest face found is `min_face` source pixels or 12
working pixels (the smallest MTCNN's first network sees), whichever is larger: 20 px in a
640x360 frame, 36 px in 1080p by default. Set `working_size` higher (0 = native) to find smaller
faces in large frames; finding 20 px faces in 1080p costs about 3x the default.

Contracts: frames in are `[H, W, 3] uint8 RGB`; boxes out are `x0, y0, x1, y1` float32 in
source pixels, landmarks `[N, 5, 2]` float32 (left eye, right eye, nose, mouth left, mouth
right; "left" = image left) in source pixels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import threading
from typing import Sequence

import numpy as np
import cv2

from pipeline.stages.align import check_frame
from pipeline.config.sections import DetectConfig

log = logging.getLogger(__name__)

MTCNN_MIN_FACE = 12  # px: PNet's window; smaller faces are only found by upsampling the frame


@dataclasses.dataclass
class Detections:
    """The faces found in one frame, best score first. All coordinates in source pixels.

    `regions`: where the detector looked, `[K, 4]` boxes, or None for the whole frame. A face
    outside every region was not looked for: its absence says nothing (the tracker leaves it be).
    """

    boxes: np.ndarray  # [N, 4] float32: x0, y0, x1, y1
    scores: np.ndarray  # [N] float32 in (0, 1]
    landmarks: np.ndarray  # [N, 5, 2] float32: x, y of left eye, right eye, nose, mouth left, mouth right
    regions: np.ndarray | None = None  # [K, 4] float64: x0, y0, x1, y1 searched; None = the whole frame
    # [N, 4] float64: the square O-net was shown for each face (where `FaceDetector.refine` looks
    # again, once moved with the face); None where not known
    anchors: np.ndarray | None = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32)
        n = len(self.boxes)
        if self.boxes.shape != (n, 4):
            raise ValueError(f"Detections.boxes must be [N, 4] (x0, y0, x1, y1), got shape {list(self.boxes.shape)}")
        if self.scores.shape != (n,):
            raise ValueError(f"Detections.scores must be [N] = [{n}], got shape {list(self.scores.shape)}")
        if self.landmarks.shape != (n, 5, 2):
            raise ValueError(f"Detections.landmarks must be [N, 5, 2] = [{n}, 5, 2], got shape {list(self.landmarks.shape)}")
        if self.regions is not None:
            self.regions = np.asarray(self.regions, dtype=np.float64).reshape(-1, 4)
        if self.anchors is not None:
            self.anchors = np.asarray(self.anchors, dtype=np.float64)
            if self.anchors.shape != (n, 4):
                raise ValueError(f"Detections.anchors must be [N, 4] = [{n}, 4], got shape {list(self.anchors.shape)}")

    def take(self, keep: np.ndarray) -> "Detections":
        """These detections where `keep` (a mask or indices), over the same regions."""
        return Detections(self.boxes[keep], self.scores[keep], self.landmarks[keep], regions=self.regions,
                          anchors=None if self.anchors is None else self.anchors[keep])

    @classmethod
    def join(cls, parts: Sequence["Detections"]) -> "Detections":
        """Detections of one frame from searches of different regions, together."""
        anchors = [p.anchors if p.anchors is not None else np.full((len(p), 4), np.nan) for p in parts]
        whole = any(p.regions is None for p in parts)  # one part looked at the whole frame: so did they all
        return cls(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.landmarks for p in parts]),
                   regions=None if whole else np.concatenate([p.regions for p in parts]), anchors=np.concatenate(anchors))

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.boxes)

    def covers(self, box: np.ndarray) -> bool:
        """Whether the detector looked everywhere `box` (x0, y0, x1, y1) lies."""
        if self.regions is None:
            return True
        r = self.regions
        return bool(((r[:, 0] <= box[0]) & (r[:, 1] <= box[1]) & (r[:, 2] >= box[2]) & (r[:, 3] >= box[3])).any())


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes `a` [N, 4] and `b` [M, 4] (x0, y0, x1, y1): `[N, M]`."""
    a, b = np.asarray(a, np.float64)[:, None, :], np.asarray(b, np.float64)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def _squares(boxes: Sequence[np.ndarray], anchors: Sequence[np.ndarray | None]) -> np.ndarray:
    """Where O-net is shown each face: its anchor square where known (finite), else its box: `[K, 4]`."""
    return np.array([b if a is None or not np.isfinite(a).all() else a for b, a in zip(boxes, anchors)], np.float64).reshape(-1, 4)


def detection_threads(cfg: DetectConfig) -> int:
    """Torch threads MTCNN runs with: `cfg.threads`, or half the cores left after the encoder's.

    Detection runs beside decoding and encoding (a thread in the local engine, other processes
    on Ray); OpenMP threads that outnumber the cores spin against each other. On 2 cores, two
    detection threads beside the encoder made detection 56% slower than one.
    """
    return cfg.threads or max(1, ((os.cpu_count() or 2) - 1) // 2)


def working_scale(height: int, width: int, cfg: DetectConfig) -> tuple[float, float]:
    """The factor frames of this size are resized by for detection (<= 1; 1 = native), and the
    smallest face, in source pixels, that can be found at it: `min_face`, or 12 working pixels
    (MTCNN's smallest) if that is larger."""
    scale = 1.0 if cfg.working_size == 0 else min(1.0, cfg.working_size / max(height, width))
    return scale, max(float(cfg.min_face), MTCNN_MIN_FACE / scale)


class FaceDetector:
    """MTCNN over batches of frames. Builds its networks in the constructor (weights from the wheel)."""

    def __init__(self, cfg: DetectConfig):
        # Imported here so that importing this module (e.g. for DetectConfig) does not load torch.
        import torch

        from models.backends.base import resolve_device
        from models.networks.mtcnn import load_mtcnn

        self.cfg = cfg
        self.device = resolve_device(cfg.device, "detect.device")
        self.threads = detection_threads(cfg)
        self.pnet, self.rnet, self.onet = load_mtcnn(self.device)
        # NHWC weights: oneDNN runs MTCNN's networks faster on CPU than NCHW (1.23x on a batch of
        # 16 frames, boxes equal to 1e-4 px: benchmarks/detect_layout.py). The convolutions take
        # their layout from the weights, so the inputs need no change.
        for net in (self.pnet, self.rnet, self.onet):
            net.to(memory_format=torch.channels_last)
        self._warned_sizes: set[tuple[int, int]] = set()
        self._lock = threading.Lock()

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detect faces in each frame: one `Detections` per frame, in order.

        Frames may differ in size; frames of equal size are batched together, `batch_size` per
        MTCNN call.
        """
        if isinstance(frames, np.ndarray) and frames.ndim == 4:
            frames = list(frames)
        for i, frame in enumerate(frames):
            check_frame(frame, f"frames[{i}]")
        results: list[Detections | None] = [None] * len(frames)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, frame in enumerate(frames):
            by_shape.setdefault(frame.shape, []).append(i)
        for (height, width, _), indices in by_shape.items():
            for start in range(0, len(indices), self.cfg.batch_size):
                batch = indices[start : start + self.cfg.batch_size]
                for i, dets in zip(batch, self._detect_batch([frames[i] for i in batch], height, width)):
                    results[i] = dets
        return results  # type: ignore[return-value]

    def _run_mtcnn(self, batch: np.ndarray, min_face: float, regions=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """MTCNN on `batch` `[B, H, W, 3] uint8` (`pipeline/stages/mtcnn.py`: facenet-pytorch's cascade,
        its candidates cut out all at once). Per frame: boxes `[N, 9]` (with the score, then the square O-net
        saw) and points `[N, 5, 2]`."""
        import torch

        from pipeline.stages.mtcnn import detect_faces

        with self._networks():
            return detect_faces(torch.from_numpy(batch).to(self.device), self.pnet, self.rnet, self.onet, min_face=min_face,
                                thresholds=self.cfg.thresholds, factor=self.cfg.factor, regions=regions)

    @contextlib.contextmanager
    def _networks(self):
        """Around a run of the networks: one run at a time (a detection thread and the tracker's own
        re-detections share them: torch's thread settings are not made to change under a running
        network), with `detection_threads` torch threads (the caller's count is restored), no autograd."""
        import torch

        with self._lock:
            before = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                with torch.no_grad():
                    yield
            finally:
                torch.set_num_threads(before)

    def detect_regions(self, frame: np.ndarray, boxes: Sequence[np.ndarray]) -> Detections:
        """Detect faces near `boxes` only (x0, y0, x1, y1 source px): each box and a face width
        around it. The frame is shrunk to the whole frame's working size and P-net looks only in
        those regions, on the whole frame's pyramid cells there (`pipeline/stages/mtcnn.py`), so a
        face inside one gets the very box a whole-frame scan gives it, at a fraction of the cost.
        Faces outside the regions are not looked for (`Detections.regions`); a face cut by a
        region's edge is left out."""
        check_frame(frame)
        height, width = frame.shape[:2]
        regions = []
        for box in boxes:
            w, h = box[2] - box[0], box[3] - box[1]
            x0, y0 = max(0.0, float(box[0] - w)), max(0.0, float(box[1] - h))
            x1, y1 = min(float(width), float(box[2] + w)), min(float(height), float(box[3] + h))
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                regions.append((x0, y0, x1, y1))
        searched = np.array(regions, np.float64).reshape(-1, 4)
        if not regions:
            return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)), regions=searched)
        (dets,) = self._mtcnn_at([frame], *working_scale(height, width, self.cfg), regions=[regions])
        b, r = dets.boxes[:, None, :], searched[None, :, :]  # [N, 1, 4], [1, K, 4]
        inside = ((b[..., 0] >= r[..., 0] - 1) & (b[..., 1] >= r[..., 1] - 1) & (b[..., 2] <= r[..., 2] + 1)
                  & (b[..., 3] <= r[..., 3] + 1)).any(1)
        dets.regions = searched
        return dets.take(inside)

    def _detect_batch(self, frames: list[np.ndarray], height: int, width: int) -> list[Detections]:
        scale, smallest = working_scale(height, width, self.cfg)
        if smallest > self.cfg.min_face and (height, width) not in self._warned_sizes:
            self._warned_sizes.add((height, width))
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            log.info(
                "detecting %dx%d frames at %dx%d (detect.working_size=%d): faces under %.0f px are not found; "
                "raise working_size (0 = native size) to find faces down to detect.min_face=%d px, at a higher cost",
                width, height, size[0], size[1], self.cfg.working_size, smallest, self.cfg.min_face,
            )
        return self._mtcnn_at(frames, scale, smallest)

    def near(self, frame: np.ndarray, shown: Sequence[np.ndarray], hidden: Sequence[np.ndarray],
             anchors: Sequence[np.ndarray | None] | None = None) -> Detections:
        """Detection around a tracker's faces, on a frame between whole-frame scans: each face the
        flow followed to this frame (`shown`, with the square O-net saw when it was last found,
        moved with it: `anchors`) is checked where it now is (`refine`); around each other face
        (hidden, lost: its place is a guess), and a followed face that overlaps another (O-net on
        its square could take the other's face) or whose square the frame's edge cuts, MTCNN
        searches (`detect_regions`)."""
        shown = [np.asarray(b, np.float64) for b in shown]
        anchors = list(anchors) if anchors is not None else [None] * len(shown)
        others = np.stack(shown + [np.asarray(b, np.float64) for b in hidden]) if shown or len(hidden) else np.zeros((0, 4))
        height, width = frame.shape[:2]
        inside = [bool(q[0] >= 0 and q[1] >= 0 and q[2] <= width - 1 and q[3] <= height - 1) for q in _squares(shown, anchors)]
        # O-net sees a square cut by the frame's edge stretched (the cascade's crops are clipped):
        # such a face, and one that overlaps another, is searched for around instead.
        alone = [(iou_matrix(b[None], others)[0] > 0).sum() == 1 and fits for b, fits in zip(shown, inside)]
        search = [b for b, a in zip(shown, alone) if not a] + list(hidden)
        found = [self.refine(frame, [b for b, a in zip(shown, alone) if a], [c for c, a in zip(anchors, alone) if a])]
        found += [self.detect_regions(frame, search)] if search else []
        return Detections.join(found)

    def refine(self, frame: np.ndarray, boxes: Sequence[np.ndarray], anchors: Sequence[np.ndarray | None] | None = None) -> Detections:
        """Check faces where a tracker expects them (`boxes`, x0, y0, x1, y1 source px, on this frame):
        MTCNN's last network alone on each (`pipeline/stages/mtcnn.py`'s `refine_faces`), on the whole
        frame's working size, shown its `anchors` square where given (the square it saw when the
        face was found, moved with the face: a still face then gets the very box it got), else its
        box squared. A face is found where O-net still scores it as one, with O-net's box and
        landmarks, if that box stays on the face's (IoU >= 0.5); nothing else is looked for
        (`Detections.regions`: each box and its square, a pixel wider). The face must be there,
        within O-net's reach: the tracker's flow puts it there; a lost face, whose place is a
        guess, is searched for with `detect_regions`."""
        import torch

        from pipeline.stages.mtcnn import refine_faces

        check_frame(frame)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        anchors = list(anchors) if anchors is not None else [None] * len(boxes)
        squares = _squares(boxes, anchors)
        regions = np.concatenate([np.minimum(boxes[:, :2], squares[:, :2]) - 1, np.maximum(boxes[:, 2:], squares[:, 2:]) + 1], axis=1)
        if len(boxes) == 0:
            return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)), regions=regions, anchors=np.zeros((0, 4)))
        height, width = frame.shape[:2]
        batch, sx, sy = self._working([frame], working_scale(height, width, self.cfg)[0])
        working = (squares + 0.5) * np.array([sx, sy, sx, sy]) - 0.5
        with self._networks():
            found, points, origin = refine_faces(torch.from_numpy(batch).to(self.device), self.onet, [working],
                                                 threshold=self.cfg.thresholds[2])
        # O-net's box for a face stays near the box it was checked for: one moved far off took
        # something else (a neighbour's face), and says nothing of this one.
        (dets,) = self._to_source(found, points, sx, sy, keep_order=True)
        same = np.array([iou_matrix(d[None], boxes[i][None])[0, 0] >= 0.5 for d, i in zip(dets.boxes, origin[0])], bool)
        same &= np.maximum(dets.boxes[:, 2] - dets.boxes[:, 0], dets.boxes[:, 3] - dets.boxes[:, 1]) >= self.cfg.min_face
        dets.regions = regions
        dets = dets.take(same)
        return dets.take(np.argsort(-dets.scores, kind="stable"))

    @staticmethod
    def _working(frames: list[np.ndarray], scale: float) -> tuple[np.ndarray, float, float]:
        """Equal-size `frames` shrunk by `scale` (area averaging: no aliasing), `[B, h, w, 3]` uint8, and
        the factors they were shrunk by across and down."""
        height, width = frames[0].shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if size == (width, height):
            return np.stack(frames), 1.0, 1.0
        return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]), size[0] / width, size[1] / height

    def _mtcnn_at(self, frames: list[np.ndarray], scale: float, smallest: float, regions=None) -> list[Detections]:
        """MTCNN on equal-size `frames` shrunk by `scale`, faces from `smallest` source px; source coordinates out.
        `regions`: per frame, the source-px rectangles P-net looks in (None: the whole frames)."""
        # 1. Resize to the working size.
        batch, sx, sy = self._working(frames, scale)
        size = (batch.shape[2], batch.shape[1])
        # 2. MTCNN on the whole batch; its minimum face in working pixels (>= 12).
        min_face = smallest * min(sx, sy)
        if min(size) * (MTCNN_MIN_FACE / min_face) < MTCNN_MIN_FACE:  # no face that large fits:
            # MTCNN would have no pyramid level (the test is its own, float for float)
            return [Detections.empty() for _ in frames]
        if regions is not None:  # to working px, widened to whole pixels
            regions = [[(max(0, math.floor((x0 + 0.5) * sx - 0.5)), max(0, math.floor((y0 + 0.5) * sy - 0.5)),
                         min(size[0], math.ceil((x1 + 0.5) * sx - 0.5)), min(size[1], math.ceil((y1 + 0.5) * sy - 0.5)))
                        for x0, y0, x1, y1 in rects] for rects in regions]
        boxes, points = self._run_mtcnn(batch, min_face, regions)
        return self._to_source(boxes, points, sx, sy)

    def _to_source(self, boxes: list[np.ndarray], points: list[np.ndarray], sx: float, sy: float, *,
                   keep_order: bool = False) -> list[Detections]:
        """MTCNN's per-frame boxes `[N, 9]` and points in working px, mapped back to source pixels
        (pixel centres aligned, as cv2.resize does), those under `min_face` left out, best first
        (`keep_order`: all of them, in the order given)."""
        out = []
        for b, p in zip(boxes, points):
            if len(b) == 0:
                out.append(Detections.empty())
                continue
            s = np.asarray(b[:, 4], dtype=np.float64)
            b = np.asarray(b[:, [0, 1, 2, 3, 5, 6, 7, 8]], dtype=np.float64)  # the box, and the square O-net saw
            p = np.asarray(p, dtype=np.float64).reshape(-1, 5, 2)
            b[:, 0::2] = (b[:, 0::2] + 0.5) / sx - 0.5
            b[:, 1::2] = (b[:, 1::2] + 0.5) / sy - 0.5
            p[..., 0] = (p[..., 0] + 0.5) / sx - 0.5
            p[..., 1] = (p[..., 1] + 0.5) / sy - 0.5
            if keep_order:
                keep, order = np.ones(len(b), bool), np.arange(len(b))
            else:
                keep = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) >= self.cfg.min_face
                order = np.argsort(-s[keep], kind="stable")
            b = b[keep][order]
            out.append(Detections(b[:, :4], s[keep][order], p[keep][order], anchors=b[:, 4:]))
        return out
