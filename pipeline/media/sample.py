"""The built-in sample clip: a real face, filmed by a virtual camera, with sound.

The face is scikit-image's astronaut photograph (Eileen Collins, NASA; public domain), placed
on a plain background and filmed by a camera that pans and zooms in, so the face is small at
first (the case facezoom exists for) and grows. The sound is a two-tone chord in stereo AAC,
so a run on the sample also shows that audio comes through untouched.

Everything is made in code: no media file ships with facezoom.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from pipeline.config.sections import VideoConfig
from pipeline.media.writer import VideoWriter

AUDIO_RATE = 48000


def astronaut() -> np.ndarray:
    """scikit-image's public-domain astronaut photo: `[512, 512, 3] uint8 RGB`."""
    from skimage import data

    return data.astronaut()


def camera_frames(*, seconds: float = 4.0, fps: int = 25, width: int = 640, height: int = 360):
    """Yield `[height, width, 3] uint8 RGB` frames of the virtual camera, one per 1/fps s."""
    photo = astronaut()
    canvas_w, canvas_h = 1920, 1080
    canvas = np.empty((canvas_h, canvas_w, 3), np.uint8)
    canvas[:] = (58, 74, 96)  # a plain blue-grey wall
    x0, y0 = (canvas_w - 512) // 2, (canvas_h - 512) // 2
    canvas[y0 : y0 + 512, x0 : x0 + 512] = photo
    face_x, face_y = x0 + 215, y0 + 130  # the astronaut's face, in canvas pixels
    n = max(1, round(seconds * fps))
    for i in range(n):
        t = i / max(1, n - 1)  # 0 -> 1 over the clip
        ease = 0.5 - 0.5 * math.cos(math.pi * t)
        view_w = canvas_w * (1.0 - 0.72 * ease)  # zoom in: the face goes from ~40 px to ~140 px tall
        cx = canvas_w / 2 + (face_x - canvas_w / 2) * ease + 30 * math.sin(2 * math.pi * t)
        cy = canvas_h / 2 + (face_y - canvas_h / 2) * ease
        scale = width / view_w
        matrix = np.array([[scale, 0, width / 2 - cx * scale], [0, scale, height / 2 - cy * scale]])
        yield cv2.warpAffine(canvas, matrix, (width, height), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


def write_sample(path: str | Path, *, seconds: float = 4.0, fps: int = 25, width: int = 640, height: int = 360) -> Path:
    """Write the sample clip (H.264 video + stereo AAC audio) to `path`; returns the path."""
    path = Path(path)
    time_base = Fraction(1, fps)
    # The video goes through facezoom's own writer; the audio is a separate file it copies from.
    audio_path = path.with_name(f".{path.stem}.audio.m4a")
    try:
        _write_tone(audio_path, seconds=seconds)
        with VideoWriter(
            path, width=width, height=height, time_base=time_base, rate=Fraction(fps),
            cfg=VideoConfig(crf=20, preset="fast"), audio_from=audio_path,
        ) as out:
            for i, image in enumerate(camera_frames(seconds=seconds, fps=fps, width=width, height=height)):
                out.write(image, i)
    finally:
        audio_path.unlink(missing_ok=True)
    return path


def _write_tone(path: Path, *, seconds: float) -> None:
    """A soft A-major chord, stereo AAC, `seconds` long."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        chunk = 1024
        total = int(seconds * AUDIO_RATE)
        for start in range(0, total, chunk):
            t = np.arange(start, min(total, start + chunk)) / AUDIO_RATE
            left = 0.2 * np.sin(2 * np.pi * 440 * t)
            right = 0.2 * np.sin(2 * np.pi * 554.37 * t)
            frame = av.AudioFrame.from_ndarray(np.stack([left, right]).astype(np.float32), format="fltp", layout="stereo")
            frame.sample_rate = AUDIO_RATE
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
