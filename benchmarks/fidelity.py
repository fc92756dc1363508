"""Fidelity: sharpness (out / in) and consistency per `sr.fidelity` setting, on clips made here.

For each clip, output scale and fidelity, every face of every frame goes through the face
stages as `facezoom video` runs them (`FaceProcessor`), and per face:
- sharpness: the variance of the Laplacian inside the face's box, output over input (at scale
  2 the input is first enlarged bicubically: the reference a user would otherwise get);
- blurrier: the share of faces whose sharpness fell below 0.95 of the reference;
- fine: the energy above the reference's resolution, output over reference (> 1: detail added);
- consistency: the report's figure (MSE, [0, 1] scale, at the kept resolution);
- model: the share of faces the model ran for (the others kept their pixels).

Backends: `classical` (the default, weight-free) and `inventing`, a stand-in for a generative
model that the CPU runs at once: the bicubic face plus a fixed noise texture per seed, i.e.
invented detail at every frequency. It shows where the detail transfer lets invention through.

    python benchmarks/fidelity.py [--frames 20] [--json PATH]
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from common import parser, table, write_json  # importing common puts the project on sys.path
from models.backends.classical import ClassicalBackend
from pipeline.config import load_config
from pipeline.media.reader import Frame
from pipeline.media.sample import astronaut, camera_frames
from pipeline.stages.chunk import FaceProcessor, StageTimer


class InventingBackend(ClassicalBackend):
    """The bicubic face plus a fixed noise texture per seed: invented detail at every frequency."""

    def super_resolve(self, lr, states, *, seeds, gaps=None):
        result = super().super_resolve(lr, states, seeds=seeds)
        for i, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            result.images[i] = (result.images[i] + 0.15 * torch.randn(result.images.shape[1:], generator=g)).clamp(-1, 1)
        return result


def sample_clip(frames: int) -> list[np.ndarray]:
    """The built-in sample's virtual camera (640x360): the astronaut's face from ~60 to ~150 px."""
    return [f for _, f in zip(range(frames), camera_frames(seconds=frames / 25 + 1, fps=25))]


def crowd_clip(frames: int) -> list[np.ndarray]:
    """Twelve real 25x25 faces (scikit-image's LFW subset) shown at 40-64 px on a 640x360 wall,
    drifting: small faces, and enlarged ones, which hold less detail than their pixel size."""
    from skimage import data

    faces = (data.lfw_subset()[:12] * 255).astype(np.uint8)
    rng = np.random.default_rng(1)
    wall = cv2.resize(rng.integers(60, 180, (23, 40, 3), dtype=np.uint8), (640, 360), interpolation=cv2.INTER_CUBIC)
    out = []
    for t in range(frames):
        frame = wall.copy()
        for k, face in enumerate(faces):
            side = 40 + 2 * k
            x = 30 + (k % 6) * 100 + int(4 * math.sin(t / 6 + k))
            y = 40 + (k // 6) * 160 + int(3 * math.cos(t / 7 + k))
            frame[y:y + side, x:x + side] = cv2.cvtColor(cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2RGB)
        out.append(frame)
    return out


def portrait_clip(frames: int) -> list[np.ndarray]:
    """The 512x512 astronaut photo, still: a sharp face of ~170 px across its crop."""
    return [astronaut()] * frames


def _lap(image: np.ndarray, box) -> float:
    x0, y0, x1, y1 = (max(0, int(round(v))) for v in box)
    grey = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var()) if grey.size > 9 else float("nan")


def _fine(image: np.ndarray, box) -> float:
    x0, y0, x1, y1 = (max(0, int(round(v))) for v in box)
    patch = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float64)
    if min(patch.shape) < 8:
        return float("nan")
    low = cv2.resize(cv2.resize(patch, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), patch.shape[::-1], interpolation=cv2.INTER_CUBIC)
    return float(((patch - low) ** 2).mean())


def measure(frames: list[np.ndarray], *, backend: str, scale: int, fidelity: float) -> dict:
    cfg = load_config(overrides=[f"composite.scale={scale}", f"sr.fidelity={fidelity}", "detect.min_face=12", "detect.working_size=0"])
    processor = FaceProcessor(cfg)
    if backend == "inventing":
        processor.backend = InventingBackend(out_size=processor.backend.out_size)
    outputs = []
    for start in range(0, len(frames), 8):
        chunk = [Frame(f, i, 1, i) for i, f in zip(range(start, start + 8), frames[start:start + 8])]
        outputs += processor(chunk, StageTimer())
    faces = processor.finish()["faces"]
    sharp, fine = [], []
    for face in faces:
        ref = frames[face["frame"]]
        if scale > 1:
            ref = cv2.resize(ref, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        box = np.array(face["box"]) * scale
        sharp.append(_lap(outputs[face["frame"]], box) / max(_lap(ref, box), 1e-9))
        fine.append(_fine(outputs[face["frame"]], box) / max(_fine(ref, box), 1e-9))
    sharp, fine = np.array(sharp), np.array(fine)
    return {
        "faces": len(faces),
        "native_px": round(float(np.median([f["native_px"] for f in faces])), 1) if faces else 0,
        "sharpness": round(float(np.nanmean(sharp)), 3) if faces else None,
        "sharpness_min": round(float(np.nanmin(sharp)), 3) if faces else None,
        "blurrier": round(float(np.mean(sharp < 0.95)), 3) if faces else None,
        "fine": round(float(np.nanmean(fine)), 3) if faces else None,
        "consistency": float(f"{np.mean([f['consistency'] for f in faces]):.2e}") if faces else None,
        "model": round(float(np.mean([f["model_ran"] for f in faces])), 3) if faces else None,
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20, help="frames per clip")
    args = p.parse_args()
    torch.set_num_threads(2)
    clips = {"sample": sample_clip(args.frames), "crowd": crowd_clip(args.frames), "portrait": portrait_clip(args.frames)}
    rows = []
    for clip, frames in clips.items():
        for backend in ("classical", "inventing"):
            for scale in (1, 2):
                for fidelity in (1.0, 0.5, 0.0):
                    rows.append({"clip": clip, "backend": backend, "scale": scale, "fidelity": fidelity,
                                 **measure(frames, backend=backend, scale=scale, fidelity=fidelity)})
    columns = ["clip", "backend", "scale", "fidelity", "faces", "native_px", "sharpness", "sharpness_min", "blurrier", "fine", "consistency", "model"]
    print(f"{args.frames} frames per clip; sharpness and fine: output / input (bicubic-enlarged at scale 2)")
    print(table(rows, columns))
    write_json(args.json, {"frames": args.frames, "rows": rows})


if __name__ == "__main__":
    main()
