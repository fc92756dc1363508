"""Issue 7's benchmark: latency and drops of `facezoom live` at 640x480, 30 fps.

    python benchmarks/live.py [--seconds 20] [--json out.json]

The source is a network camera made here (tests/live_server.py): MPEG-TS over TCP on 127.0.0.1,
H.264 at 640x480 and 30 fps, of a real face filmed by a moving camera. Its encoder runs in this
process, so it takes CPU a real camera would not: the figures are conservative.

Rows, each one `run_live` of `--seconds` after the models loaded:
1. the classical backend, default settings (goal on a 2-core machine: p95 <= 150 ms, no
   growing backlog);
2. a tiny PULSE (a StyleGAN2 of the real architecture at 32 px, random weights: every warm start
   misses eps and is cold-started, the worst case) with the adaptive budget;
3. the same without adaptation, to show what adapting buys.

Columns: latency p50/p95/max (read -> output, ms); the worst one-second p95 in each half of the
run (a growing backlog makes the second larger); fps out; drop rate (frames read but never
processed, after start-up); source lag (how far the reader fell behind the camera's clock: a
backlog in socket or demuxer buffers shows here); the rung the budget ended on.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common import ROOT, parser, stylegan2_checkpoint, table, write_json

sys.path.insert(0, str(ROOT / "tests"))

from live_server import TSServer  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.live.loop import LiveConfig, run_live  # noqa: E402
from pipeline.live.spec import parse_source  # noqa: E402


def run(name: str, overrides: list[str], live: LiveConfig, seconds: float) -> dict:
    cfg = load_config(overrides=overrides)
    with TSServer(width=640, height=480, fps=30, seconds=seconds + 120) as server:
        report = run_live(parse_source(server.url), cfg=cfg, live=live, duration=seconds)
    steady_in = report["frames_in"] - report["frames_dropped_at_start"] - 1
    steady_dropped = report["frames_dropped"] - report["frames_dropped_at_start"]
    budget = report["budget"]
    rung = f"{budget['level']}/{budget['levels'] - 1}: every {budget['detect_every']}"
    if budget["steps"] is not None:
        rung += f", steps {budget['steps']}/{budget['warm_steps']}"
    per_second = report["latency_ms_p95_per_second"]
    half = len(per_second) // 2
    return {
        "run": name,
        "p50_ms": report["latency_ms_p50"],
        "p95_ms": report["latency_ms_p95"],
        "max_ms": report["latency_ms_max"],
        "p95_1st_half": max(per_second[:half], default=None),
        "p95_2nd_half": max(per_second[half:], default=None),
        "fps": report["fps"],
        "drop_rate": round(steady_dropped / max(1, steady_in), 3),
        "lag_max_ms": report["source_lag_ms_max"],
        "rung": rung,
        "report": report,
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="length of each run (default 20)")
    args = p.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    pulse = ["sr.backend=pulse", f"sr.generator={stylegan2_checkpoint(workdir, channels=(64, 64, 32, 16))}"]
    rows = [
        run("classical", [], LiveConfig(), args.seconds),
        run("tiny PULSE, adaptive", pulse, LiveConfig(), args.seconds),
        run("tiny PULSE, fixed 100/20 steps", pulse, LiveConfig(adapt=False), args.seconds),
    ]
    columns = ["run", "p50_ms", "p95_ms", "max_ms", "p95_1st_half", "p95_2nd_half", "fps", "drop_rate", "lag_max_ms", "rung"]
    print(f"live, 640x480 at 30 fps over TCP, {args.seconds:g} s per run; latency = read -> output")
    print(table(rows, columns))
    write_json(args.json, {"seconds": args.seconds, "rows": rows})


if __name__ == "__main__":
    main()
