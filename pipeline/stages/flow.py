"""How each face moved between two consecutive frames: pyramidal Lucas-Kanade optical flow.

Part of the tracker (`pipeline/stages/track.py`), which carries faces through the frames between
detections with it. Per face, corners inside its box (the inner 80%: the rim holds background)
are flowed forward and back (`cv2.calcOpticalFlowPyrLK`), points whose forward-backward error is
large are dropped (Kalal et al., "Forward-Backward Error", ICPR 2010), and a similarity fitted to
the rest with RANSAC is the face's motion. Where two faces overlap, each uses only corners
outside the other's box, so the face in front does not drag the one behind.

Each face is flowed within its own region of the frames (its box and a margin of a face width, at
least MARGIN px, on every side), not the whole frame: OpenCV builds an image pyramid of whatever
it is given, four per frame pair, and on 1080p frames that was most of the tracker's time. The
margin holds the search: LK's window at the coarsest of its LEVELS spans 8 x 15 px of the frame.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

WINDOW = (15, 15)
LEVELS = 3
CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)
MARGIN = 64  # px: the least margin around a face's box that its flow sees


class FaceFlow:
    """Per-face motion between consecutive greyscale frames; `flow_points` corners per face at most,
    `flow_max_error` px of forward-backward error at most per corner."""

    def __init__(self, flow_points: int, flow_max_error: float):
        self.flow_points, self.flow_max_error = flow_points, flow_max_error

    def __call__(self, prev: np.ndarray, cur: np.ndarray, boxes: dict[int, np.ndarray]) -> dict[int, np.ndarray | None]:
        """Per face (`boxes`: id -> `[4]` x0, y0, x1, y1 on `prev`), the similarity `[2, 3]` prev -> cur,
        or None where the flow failed (too few corners, or they disagree)."""
        result: dict[int, np.ndarray | None] = {face: None for face in boxes}
        height, width = prev.shape
        lk = dict(winSize=WINDOW, maxLevel=LEVELS, criteria=CRITERIA)
        for face, corners in self._corners(prev, boxes).items():
            box = boxes[face]
            size = max(1.0, math.sqrt(max(box[2] - box[0], 1.0) * max(box[3] - box[1], 1.0)))
            m = max(MARGIN, size)
            x0, y0 = max(0, int(box[0] - m)), max(0, int(box[1] - m))
            x1, y1 = min(width, int(math.ceil(box[2] + m))), min(height, int(math.ceil(box[3] + m)))
            before, after = prev[y0:y1, x0:x1], cur[y0:y1, x0:x1]
            p0 = (corners - (x0, y0)).astype(np.float32).reshape(-1, 1, 2)
            p1, st1, _ = cv2.calcOpticalFlowPyrLK(before, after, p0, None, **lk)
            p0b, st2, _ = cv2.calcOpticalFlowPyrLK(after, before, p1, None, **lk)
            fb = np.linalg.norm((p0 - p0b).reshape(-1, 2), axis=1)
            good = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < self.flow_max_error)
            if good.sum() < 4:
                continue
            src, dst = p0.reshape(-1, 2)[good] + (x0, y0), p1.reshape(-1, 2)[good] + (x0, y0)
            matrix, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=max(1.0, 0.02 * size))
            if matrix is None or inliers is None or inliers.sum() < max(4, 0.3 * good.sum()):
                continue
            scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
            if not 0.8 <= scale <= 1.25:  # a face does not change size by a quarter in one frame
                continue
            result[face] = matrix.astype(np.float64)
        return result

    def _corners(self, prev: np.ndarray, boxes: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Corners to follow in each face's box, `[n, 2]` frame px (faces with none left out)."""
        height, width = prev.shape
        out = {}
        for face, box in boxes.items():
            w, h = box[2] - box[0], box[3] - box[1]
            bx = box + 0.1 * np.array([w, h, -w, -h])  # the box's inner 80%
            x0, y0 = max(0, int(bx[0])), max(0, int(bx[1]))
            x1, y1 = min(width, int(math.ceil(bx[2]))), min(height, int(math.ceil(bx[3])))
            if x1 - x0 < 4 or y1 - y0 < 4:
                continue
            mask = np.full((y1 - y0, x1 - x0), 255, np.uint8)
            for other_face, other in boxes.items():  # corners where another face overlaps may belong to either
                if other_face == face:
                    continue
                ox0, oy0 = max(x0, int(other[0])), max(y0, int(other[1]))
                ox1, oy1 = min(x1, int(math.ceil(other[2]))), min(y1, int(math.ceil(other[3])))
                if ox1 > ox0 and oy1 > oy0:
                    mask[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0] = 0
            corners = cv2.goodFeaturesToTrack(prev[y0:y1, x0:x1], maxCorners=self.flow_points, qualityLevel=0.01,
                                              minDistance=max(1.0, (x1 - x0) / 15), mask=mask, blockSize=3)
            if corners is not None:
                out[face] = corners.reshape(-1, 2) + (x0, y0)
        return out
