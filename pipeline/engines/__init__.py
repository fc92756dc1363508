"""Run a video job with the engine the config names.

The one entry point the CLI, the benchmarks and the tests share: `run(input, output, cfg=...)`
returns the run's report (a JSON-ready dict).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run(input_path: str | Path, output_path: str | Path, *, cfg, progress: bool = True, processor=None) -> dict[str, Any]:
    """`processor`: the local engine's `FaceProcessor` to run with (a folder's videos share the
    models of one); the Ray engine builds its own actors."""
    if cfg.engine.engine == "ray":
        from pipeline.engines.ray import run_video_ray

        return run_video_ray(input_path, output_path, cfg=cfg, progress=progress)
    from pipeline.engines.local import run_video

    return run_video(input_path, output_path, cfg=cfg, progress=progress, processor=processor)
