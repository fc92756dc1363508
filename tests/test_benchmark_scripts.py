"""The GPU figures script runs anywhere (`--quick`), so a lent GPU machine's few minutes are not spent on a broken script."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_benchmark_runs_quick_on_the_cpu_and_writes_its_figures(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--quick", "--device", "cpu", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["quick"] and {r["dtype"] for r in data["pulse"]} == {"fp32", "bf16"}
    assert all(r["ms_per_step"] > 0 and r["cold_faces_per_s"] > 0 for r in data["pulse"])
    assert data["pfsr_faces_per_s"] > 0 and all(v["faces"] >= 1 for v in data["mtcnn"].values())
