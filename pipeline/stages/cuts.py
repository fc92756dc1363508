"""Shot cuts in a stream: the frames where the picture changes to another shot.

A cut ends every face track (the face after it is another face, even where it sits in the same
place), makes the detector run on the cut's first frame whatever the `detect.every` cadence,
and so starts a stateful backend cold for the new shot's faces (their tracks are new).

The detector is PySceneDetect's `ContentDetector` (Castellano, scenedetect.com): the mean change
of hue, saturation and luminance between consecutive frames, a cut where it exceeds
`track.cut_threshold`. It is fed frame by frame, as a stream comes, in its `SUPPRESS` flash
mode, which reports a cut on the very frame it happens and ignores a second one within
`track.cut_min_shot` frames (a flash, a strobe) instead of waiting to merge them: a streaming
pipeline cannot take back a frame it has processed. Frames are shrunk about CUT_WIDTH pixels
wide first: the score is a mean over pixels, and a small frame costs a fraction of a
millisecond. The shrink is by a whole factor (area averaging over k x k blocks, the last few rows
and columns left out): OpenCV's area filter at a fractional ratio cost 22-30 ms on a 1080p
frame, more than the rest of the tracking; a whole factor costs a third of that.

Contract: call `detector(frame, index)` once per frame, in order, with `[H, W, 3] uint8 RGB`
frames; it returns True on the first frame of a new shot (never on a stream's first frame).
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.config.sections import TrackConfig

CUT_WIDTH = 256  # px: frames are scored at this width or up to twice it (a whole factor smaller)


class CutDetector:
    """Shot-cut detection over a stream of frames (see the module docstring)."""

    def __init__(self, cfg: TrackConfig):
        from scenedetect.detectors import ContentDetector
        from scenedetect.scene_detector import FlashFilter

        self._enabled = cfg.cut_threshold > 0
        self._detector = ContentDetector(
            threshold=cfg.cut_threshold or 1.0, min_scene_len=cfg.cut_min_shot, filter_mode=FlashFilter.Mode.SUPPRESS,
        )

    def __call__(self, frame: np.ndarray, index: int) -> bool:
        if not self._enabled:
            return False
        height, width = frame.shape[:2]
        k = min(width // CUT_WIDTH, height)
        if k > 1:
            frame = cv2.resize(frame[: height // k * k, : width // k * k], (width // k, height // k), interpolation=cv2.INTER_AREA)
        # (A stream's first frame has nothing before it: the detector never reports a cut there.)
        return bool(self._detector.process_frame(index, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)))
