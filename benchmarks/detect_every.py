"""How often to detect: detection every k frames, tracking in between, against ground truth.

For each k, runs the face stages (`pipeline.stages.faces.FaceAnalyzer`: MTCNN every k-th frame, the
tracker on every frame, alignment) over synthetic clips of the astronaut's face with known
positions (tests/face_scenes.py), and prints per clip and k:

- ms/frame: wall time of the face stages per frame; det share: the part spent in MTCNN;
- recall: the share of (frame, face) pairs reported with a box of IoU >= 0.5 with the truth;
- id sw: extra track ids beyond one per true face (0 = every face kept its id);
- err: mean landmark error, % of the face's width;
- jitter: RMS frame-to-frame change of that error, % of the face's width (what flickers).

Usage: python benchmarks/detect_every.py [--k 1 2 3 5 8] [--frames 120] [--threads 1] [--json PATH]
Timings are ratios within one run; absolute numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from face_scenes import Face, background, moving_face, render  # noqa: E402
from pipeline.stages.detect import DetectConfig, FaceDetector  # noqa: E402
from pipeline.stages.faces import FaceAnalyzer  # noqa: E402
from pipeline.stages.track import TrackConfig, iou_matrix  # noqa: E402

log = logging.getLogger("detect_every")


def clips(n: int) -> dict[str, tuple[list[np.ndarray], list[list[Face]]]]:
    """Synthetic 640x360 clips with their ground truth (a list of faces per frame)."""
    frames, truth = moving_face(n, height=360, width=640, seed=1)
    out = {"moving": (frames, [[f] for f in truth])}
    # A small face (about 30-45 px wide), drifting and bobbing: the case facezoom exists for.
    bg = background(360, 640, seed=2)
    small = [Face(120 + 3.0 * i, 180 + 30 * np.sin(i / 9), 30 + 15 * i / n) for i in range(n)]
    out["small"] = ([render(bg, [f]) for f in small], [[f] for f in small])
    # Two faces crossing: one passes behind the other.
    bg = background(360, 640, seed=3)
    pairs = [
        [Face(640 * (0.15 + 0.7 * i / (n - 1)), 170, 80), Face(640 * (0.85 - 0.7 * i / (n - 1)), 190, 90)]
        for i in range(n)
    ]
    out["crossing"] = ([render(bg, p) for p in pairs], pairs)
    return out


def measure(detector: FaceDetector, frames, truth, k: int, smooth: bool, chunk: int = 16) -> dict[str, float]:
    analyzer = FaceAnalyzer(DetectConfig(every=k), TrackConfig(smooth=smooth), 64, detector=detector)
    start = time.perf_counter()
    result = []
    for s in range(0, len(frames), chunk):
        result += analyzer.process(frames[s : s + chunk], s)
    seconds = time.perf_counter() - start
    hits, total = 0, 0
    ids: dict[int, set[int]] = {}
    errors: dict[int, dict[int, np.ndarray]] = {}  # true face -> frame -> [5, 2] error / width
    for index, (faces, gt) in enumerate(zip(result, truth)):
        total += len(gt)
        if not faces:
            continue
        iou = iou_matrix(np.stack([g.box() for g in gt]), np.stack([f.box for f in faces]))
        for g, j in zip(*linear_sum_assignment(-iou)):  # one report per true face at most
            if iou[g, j] >= 0.5:
                hits += 1
                ids.setdefault(g, set()).add(faces[j].track_id)
                errors.setdefault(g, {})[index] = (faces[j].landmarks - gt[g].landmarks()) / gt[g].width
    err, steps = [], []
    for per_frame in errors.values():
        for index, e in per_frame.items():
            err.append(np.linalg.norm(e, axis=1).mean())
            if index - 1 in per_frame:
                steps.append(np.linalg.norm(e - per_frame[index - 1], axis=1) ** 2)
    return {
        "ms_per_frame": 1000 * seconds / len(frames),
        "detect_share": analyzer.seconds["detect"] / seconds,
        "recall": hits / total,
        "id_switches": sum(len(s) - 1 for s in ids.values()),
        "landmark_error_pct": 100 * float(np.mean(err)) if err else float("nan"),
        "jitter_pct": 100 * float(np.sqrt(np.mean(steps))) if steps else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 4, 5, 8, 12])
    parser.add_argument("--frames", type=int, default=120, help="frames per clip")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a small shared CPU)")
    parser.add_argument("--no-smooth", action="store_true", help="turn off One Euro smoothing")
    parser.add_argument("--factor", type=float, default=DetectConfig.factor, help="MTCNN pyramid step (detect.factor)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    detector = FaceDetector(DetectConfig(device="cpu", factor=args.factor))
    rows = []
    for name, (frames, truth) in clips(args.frames).items():
        detector.detect(frames[:1])  # warm up
        for k in args.k:
            row = {"clip": name, "k": k, **measure(detector, frames, truth, k, smooth=not args.no_smooth)}
            rows.append(row)
            log.info("%s k=%d done", name, k)

    header = f"{'clip':<9} {'k':>3} {'ms/frame':>9} {'det share':>9} {'recall':>7} {'id sw':>5} {'err %':>6} {'jitter %':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['clip']:<9} {r['k']:>3} {r['ms_per_frame']:>9.1f} {r['detect_share']:>9.0%} {r['recall']:>7.1%} "
            f"{r['id_switches']:>5d} {r['landmark_error_pct']:>6.2f} {r['jitter_pct']:>8.2f}"
        )
    if args.json:
        settings = {"frames": args.frames, "threads": args.threads, "smooth": not args.no_smooth, "size": [640, 360]}
        args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
        log.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
