"""MTCNN with NHWC (channels_last) weights, as `pipeline.stages.detect` runs it, against NCHW.

    python benchmarks/detect_layout.py [--frames 16] [--repeats 5] [--nhwc-first] [--json out.json]

Every 5th frame of the 1080p, 3-face clip of benchmarks/faces.py, shrunk to the detector's working
size, goes through one batched MTCNN call per layout (best of `--repeats`, one torch thread).
Prints the seconds per layout and how far apart their boxes and landmarks are.
"""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import torch
from common import make_clip, parser, table, write_json

from pipeline.stages.detect import DetectConfig, FaceDetector


LAYOUTS = (torch.contiguous_format, torch.channels_last)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--nhwc-first", action="store_true", help="time NHWC before NCHW (to see order effects)")
    args = p.parse_args()
    clip = make_clip(Path(args.workdir) / "faces3_1080p_4s.mp4", width=1920, height=1080, seconds=4, faces=3)
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i % 5 == 0][: args.frames]
    torch.set_num_threads(1)
    detector = FaceDetector(DetectConfig(threads=1))
    results, rows = {}, []
    for layout in (LAYOUTS[::-1] if args.nhwc_first else LAYOUTS):
        for net in (detector.pnet, detector.rnet, detector.onet):
            net.to(memory_format=layout)
        detector.detect(frames[:2])  # warm-up
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            results[layout] = detector.detect(frames)
            seconds.append(time.perf_counter() - start)
        rows.append({"weights": "NHWC" if layout == torch.channels_last else "NCHW", "seconds": min(seconds),
                     "faces": sum(len(d) for d in results[layout])})
    rows.sort(key=lambda r: r["weights"])  # NCHW, NHWC
    rows[1]["speedup"] = rows[0]["seconds"] / rows[1]["seconds"]
    nchw, nhwc = results[torch.contiguous_format], results[torch.channels_last]
    same = all(len(a) == len(b) for a, b in zip(nchw, nhwc))
    box = max(float(np.abs(a.boxes - b.boxes).max(initial=0)) for a, b in zip(nchw, nhwc)) if same else float("nan")
    mark = max(float(np.abs(a.landmarks - b.landmarks).max(initial=0)) for a, b in zip(nchw, nhwc)) if same else float("nan")
    print(f"MTCNN on {len(frames)} frames of 1920x1080 (3 faces), detected at {detector.cfg.working_size} px, 1 thread, "
          f"best of {args.repeats}")
    print(table(rows, ["weights", "seconds", "faces", "speedup"]))
    print(f"same faces per frame: {same}; largest box difference {box:.2g} px, landmark difference {mark:.2g} px")
    write_json(args.json, {"rows": rows, "same_faces": same, "box_px": box, "landmark_px": mark})


if __name__ == "__main__":
    main()
