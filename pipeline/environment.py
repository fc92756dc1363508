"""What a bug report needs to know about this installation (`facezoom doctor`).

`describe()` returns ordered (label, value) pairs: versions of facezoom and the libraries it
runs on, the CPU and GPUs it sees, which registry weights are cached and whether they verify,
and where presets and weights are looked for. Nothing is downloaded or started (no Ray).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> list[tuple[str, str]]:
    import av
    import torch

    from models import weights

    rows = [("facezoom", _version("facezoom")), ("python", f"{platform.python_version()} ({sys.executable})"),
            ("platform", platform.platform())]
    for dist in ("torch", "torchvision", "av", "ray", "numpy", "opencv-python-headless", "facenet-pytorch", "pillow",
                 "spandrel", "spandrel_extra_arches"):  # the last two: the optional facezoom[restore]
        rows.append((dist, _version(dist)))
    rows.append(("ffmpeg (PyAV's)", ", ".join(f"{k} {'.'.join(map(str, v))}" for k, v in sorted(av.library_versions.items()))))
    rows.append(("cpu", f"{os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads"))
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    rows.append(("gpu", ", ".join(gpus) if gpus else "none that torch can use (CPU only)"))
    for name in weights.REGISTRY:
        report = weights.verify(name)[0]  # missing (with where to put it, or the pip command), ok, recorded or mismatch
        rows.append((f"weights {name}", f"{report.status} ({report.path})" if report.status != "missing" else f"not cached: {report.detail}"))
    rows.append(("weights cache", f"{weights.cache_dir() / 'weights'} (FACEZOOM_HOME moves it)"))
    from importlib import resources

    rows.append(("presets", f"{resources.files('configs')} (--config NAME), or any --config PATH"))
    return rows
