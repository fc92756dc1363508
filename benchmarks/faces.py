"""Issue 3's benchmark: the full face pipeline (classical backend) against a plain PyAV loop.

    python benchmarks/faces.py [--seconds 4] [--faces 3] [--json out.json]

A 1080p clip with several faces (made here) goes through decode -> detect/track -> align ->
super-resolve (bicubic) -> composite -> encode in one process, and through a plain PyAV
decode-and-encode loop with the same encoder settings. Prints the throughput ratio and where
the time goes. Goal on a 2-core machine: >= 0.5x the plain loop.
"""

from __future__ import annotations

from pathlib import Path

from common import make_clip, parser, plain_loop, table, write_json

from pipeline.config import load_config
from pipeline.engines.local import run_video


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--faces", type=int, default=3)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override, repeatable")
    p.add_argument("--repeats", type=int, default=3, help="runs of each; the fastest is kept (this machine is noisy)")
    args = p.parse_args()
    clip = make_clip(Path(args.workdir) / f"faces{args.faces}_1080p_{args.seconds:g}s.mp4",
                     width=1920, height=1080, seconds=args.seconds, faces=args.faces)
    cfg = load_config(overrides=args.overrides)
    frames = round(args.seconds * 30)
    plain = min(plain_loop(clip, clip.with_name("plain_out.mp4"), cfg.video) for _ in range(args.repeats))
    reports = [run_video(clip, clip.with_name("faces_out.mp4"), cfg=cfg, progress=False) for _ in range(args.repeats)]
    report = min(reports, key=lambda r: r["wall_seconds"])
    ours = report["wall_seconds"]
    rows = [
        {"path": "plain PyAV loop", "seconds": plain, "fps": frames / plain},
        {"path": "facezoom (classical)", "seconds": ours, "fps": frames / ours},
    ]
    stages = [{"stage": k, "seconds": v, "share": v / ours} for k, v in report["stage_seconds"].items()]
    ratio = plain / ours
    setup = report["stage_seconds"].get("setup", 0.0)
    steady = plain / (ours - setup)  # once the detector and backend are loaded, as on a long video
    print(f"1080p, {frames} frames, {args.faces} faces, detect every {cfg.detect.every}, best of {args.repeats}, "
          f"{len(report['faces'])} face crops, {len(report['tracks'])} tracks")
    print(table(rows, ["path", "seconds", "fps"]))
    print()
    print(table(stages, ["stage", "seconds", "share"]))
    print(f"throughput ratio facezoom / plain = {ratio:.3f} wall, {steady:.3f} without the one-time setup  (goal >= 0.5)")
    write_json(args.json, {"frames": frames, "faces": args.faces, "rows": rows, "stages": stages, "ratio": ratio,
                           "ratio_without_setup": steady,
                           "crops": len(report["faces"]), "tracks": len(report["tracks"]), "goal": 0.5})


if __name__ == "__main__":
    main()
