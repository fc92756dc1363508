"""Issue 5's benchmark: the Ray engine against one process, and against itself with more actors.

    python benchmarks/engine.py [--seconds 6] [--json out.json]

In one run, on the same clips (made here):
1. engine overhead, classical backend, 1080p with faces: local vs Ray with 1 and 2 SR actors
   (goal: Ray <= 15% slower than local). Throughput is frames over the job's time after its
   one-time set-up (starting Ray and the actors, loading the detector), which is shown apart;
2. a compute-heavy backend, a small PULSE (a StyleGAN2 of the real architecture at 32 px, wide
   enough that its cost grows with the batch, random weights, a fixed budget of 10 cold and 5
   warm steps, one torch thread per actor), on a clip with 4 faces: Ray with 1 vs 2 SR actors
   (goal: 2 actors >= 1.6x the throughput of 1 on a 2-core machine);
3. peak memory of the whole process tree (driver, Ray, actors) for a clip and one 4x longer
   (goal: <= 1.1x apart).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, make_clip, parser, stylegan2_checkpoint, table, write_json



def run_job(clip: Path, out: Path, overrides: list[str]) -> dict:
    """`facezoom video` in a fresh process; returns its report and the tree's peak memory."""
    report = out.with_suffix(".json")
    cmd = [sys.executable, str(ROOT / "run_pipeline.py"), "--quiet", "-y", "video", str(clip), "-o", str(out),
           "--report", str(report), *[a for o in overrides for a in ("--set", o)]]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"job failed ({' '.join(overrides)}): {proc.stderr.read()[-2000:]}")
    data = json.loads(report.read_text())
    setup = data["stage_seconds"].get("setup", 0.0)
    return {"seconds": seconds, "job_seconds": data["job_seconds"], "setup_seconds": setup,
            "fps": data["frames_out"] / (data["job_seconds"] - setup), "frames": data["frames_out"],
            "crops": len(data["faces"]), "peak_mb": peak / 2**20,
            "steps": sum(f["steps"] for f in data["faces"])}


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=6.0)
    args = p.parse_args()
    work = Path(args.workdir)
    fast = ["video.preset=veryfast"]
    results: dict[str, list[dict]] = {}

    # 1. Engine overhead with the classical backend.
    clip = make_clip(work / f"engine_1080p_{args.seconds:g}s.mp4", width=1920, height=1080, seconds=args.seconds, faces=2)
    rows = []
    for name, extra in [("local", ["engine.engine=local"]),
                        ("ray, 1 SR actor", ["engine.engine=ray", "engine.sr_actors=1"]),
                        ("ray, 2 SR actors", ["engine.engine=ray", "engine.sr_actors=2"])]:
        rows.append({"engine": name, **run_job(clip, work / "engine_out.mp4", fast + extra)})
    for r in rows:
        r["vs_local"] = r["fps"] / rows[0]["fps"]
    results["classical_1080p"] = rows
    print(f"1) classical backend, 1080p, {rows[0]['frames']} frames, 2 faces; fps after set-up")
    print(table(rows, ["engine", "seconds", "setup_seconds", "job_seconds", "fps", "vs_local", "peak_mb"]))

    # 2. A compute-heavy backend: a small PULSE, one torch thread per SR actor.
    # ~40 ms per crop-step on one thread whatever the batch: a narrower generator costs the same
    # for 1 or 4 crops, which would hide whether the engine runs actors side by side.
    checkpoint = stylegan2_checkpoint(work, channels=(256, 256, 128, 64))
    small = make_clip(work / "engine_4faces_1.5s_15fps.mp4", width=640, height=360, seconds=1.5, fps=15, faces=4)
    pulse = ["sr.backend=pulse", f"sr.generator={checkpoint}", "sr.out_size=32", "sr.steps=10", "sr.warm_steps=5",
             "sr.eps=1e-9", "sr.fidelity=0", "engine.sr_threads=1", "engine.engine=ray"]  # fidelity 0: the model runs on every face
    rows = []
    for actors in (1, 2):
        rows.append({"engine": f"ray, {actors} SR actor(s)", **run_job(small, work / "pulse_out.mp4",
                                                                      fast + pulse + [f"engine.sr_actors={actors}"])})
    for r in rows:
        r["speedup"] = r["fps"] / rows[0]["fps"]
    results["small_pulse"] = rows
    print(f"\n2) small PULSE (StyleGAN2 32 px, 10/5 steps), 640x360, {rows[0]['frames']} frames, 4 faces, 1 torch thread per actor")
    print(table(rows, ["engine", "setup_seconds", "job_seconds", "fps", "crops", "steps", "speedup"]))

    # 3. Peak memory does not grow with length.
    long = make_clip(work / f"engine_1080p_{4 * args.seconds:g}s.mp4", width=1920, height=1080, seconds=4 * args.seconds, faces=2)
    rows = []
    for name, extra in [("local", ["engine.engine=local"]), ("ray", ["engine.engine=ray", "engine.sr_actors=2"])]:
        short_run = run_job(clip, work / "mem_out.mp4", fast + extra)
        long_run = run_job(long, work / "mem_out.mp4", fast + extra)
        rows.append({"engine": name, "frames_1x": short_run["frames"], "peak_mb_1x": short_run["peak_mb"],
                     "frames_4x": long_run["frames"], "peak_mb_4x": long_run["peak_mb"],
                     "ratio": long_run["peak_mb"] / short_run["peak_mb"]})
    results["memory"] = rows
    print("\n3) peak memory of the process tree, clip vs 4x longer clip (goal ratio <= 1.1)")
    print(table(rows, ["engine", "frames_1x", "peak_mb_1x", "frames_4x", "peak_mb_4x", "ratio"]))
    write_json(args.json, results)


if __name__ == "__main__":
    main()
