"""Run a video job with the engine the config names.

The one entry point the CLI, the benchmarks and the tests share: `run(input, output, cfg=...)`
returns the run's report (a JSON-ready dict), its times counted from when the user started
waiting (`started_at`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def run(input_path: str | Path, output_path: str | Path, *, cfg, progress: bool = True, processor=None,
        started_at: float | None = None) -> dict[str, Any]:
    """`processor`: the local engine's `FaceProcessor` to run with (a folder's videos share the
    models of one); the Ray engine builds its own actors.

    `started_at`: `time.time()` when the user started waiting (the CLI passes its process's start,
    `pipeline/startup.py`); default now. The report's `wall_seconds` counts from it to the end, and
    `startup` says how much of that came before the job (`seconds`) and before its first frame
    entered the pipeline (`first_frame_seconds`: imports, checks, the models' set-up, the first
    decode); the engine's own `job_seconds` are the rest."""
    from pipeline.media.memory import setup_without_gc

    with setup_without_gc():  # the engine's imports and set-up; it calls `setup_done` once its models are made
        if cfg.engine.engine == "ray":
            from pipeline.engines.ray import run_video_ray as engine

            shared = {}  # its actors hold their own models
        else:
            from pipeline.engines.local import run_video as engine

            shared = {"processor": processor}
        called = time.time()  # (after the engine's imports: torch and the rest are start-up too)
        started_at = called if started_at is None else started_at
        report = engine(input_path, output_path, cfg=cfg, progress=progress, **shared)
    job = report.pop("wall_seconds")
    first = report.pop("first_frame_seconds", None)
    before = called - started_at
    report["wall_seconds"] = round(time.time() - started_at, 3)
    report["job_seconds"] = job
    report["startup"] = {"seconds": round(before, 3), "first_frame_seconds": None if first is None else round(before + first, 3)}
    return report
