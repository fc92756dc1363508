"""Issue 2's benchmark: facezoom's video I/O path against a plain PyAV loop, same encoder settings.

    python benchmarks/io_overhead.py [--seconds 5] [--json out.json]

Both decode a 1080p clip (made here, with audio) to RGB arrays and encode it again with the
default encoder settings, copying the audio. facezoom's path is `run_video` with the face
stages replaced by a passthrough, so what is measured is its reader, writer, chunking and
progress accounting. Goal: facezoom >= 0.9x the plain loop's throughput.
"""

from __future__ import annotations

import time
from pathlib import Path

from common import make_clip, parser, plain_loop, table, write_json

from pipeline.config import load_config
from pipeline.engines.local import run_video


class Passthrough:
    """The face stages left out: frames go straight from decoder to encoder."""

    class backend:
        name = "none"

    def __call__(self, frames, timer):
        return [f.image for f in frames]

    def prefetch(self, frames, timer):
        pass  # no detection thread to start

    def finish(self):
        return {}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=2, help="runs of each; the best is kept")
    args = p.parse_args()
    clip = make_clip(Path(args.workdir) / f"io_1080p_{args.seconds:g}s.mp4",
                     width=1920, height=1080, seconds=args.seconds)
    cfg = load_config()
    frames = round(args.seconds * 30)
    plain, ours = [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(clip, clip.with_name("plain_out.mp4"), cfg.video))
        start = time.perf_counter()
        run_video(clip, clip.with_name("facezoom_out.mp4"), cfg=cfg, processor=Passthrough(), progress=False)
        ours.append(time.perf_counter() - start)
    rows = [
        {"path": "plain PyAV loop", "seconds": min(plain), "fps": frames / min(plain)},
        {"path": "facezoom video I/O", "seconds": min(ours), "fps": frames / min(ours)},
    ]
    ratio = min(plain) / min(ours)
    print(f"1080p, {frames} frames, {cfg.video.codec} crf {cfg.video.crf} preset {cfg.video.preset}")
    print(table(rows, ["path", "seconds", "fps"]))
    print(f"throughput ratio facezoom / plain = {ratio:.3f}  (goal >= 0.9)")
    write_json(args.json, {"frames": frames, "rows": rows, "ratio": ratio, "goal": 0.9})


if __name__ == "__main__":
    main()
