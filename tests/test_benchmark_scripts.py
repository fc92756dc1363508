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
    assert [r["segment"] for r in data["schedules"]] == [1, 4, 8] and all(r["reached_eps"] > 0 for r in data["schedules"])
    assert [r["batch"] for r in data["restorers"]] == [1, 2] and all(r["faces_per_s"] > 0 for r in data["restorers"])
    assert {r["model"] for r in data["frame_sr"]} == {"RealESRGAN_x4plus", "realesr-general-x4v3"}
    assert all(r["fps"] > 0 for r in data["frame_sr"])


@pytest.mark.slow
def test_frame_sr_benchmark_runs_quick_and_its_extrapolation_matches_a_whole_frame(tmp_path):
    out = tmp_path / "frame_sr.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "frame_sr.py"), "--quick", "--models", "realesr-general-x4v3",
                           "RealESRGAN_x2plus", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["model"], r["how"]) for r in rows} >= {("RealESRGAN_x2plus", "extrapolated"), ("RealESRGAN_x2plus", "measured (whole frame)")}
    assert all(r["fps_per_core"] > 0 and r["windows"] >= 6 for r in rows)


@pytest.mark.slow
def test_scale_benchmark_runs_quick_and_compares_every_schedule_with_the_chain(tmp_path):
    out = tmp_path / "scale.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--quick", "--skip-ray", "--segments", "1", "3",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["track"]
    assert [r["segment"] for r in rows] == [1, 3]
    assert rows[0]["steps_vs_chain"] == 1 and rows[0]["mean_batch"] == 1  # the chain runs one crop at a time
    assert rows[1]["mean_batch"] > 1  # the keyframe schedule fills batches with one face


@pytest.mark.slow
def test_real_prior_benchmark_runs_quick_through_the_video_path(tmp_path):
    out = tmp_path / "real_prior.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_prior.py"), "--quick", "--workdir", str(tmp_path), "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = {r["schedule"]: r for r in data["rows"]}
    assert list(rows) == ["cold", "chain", "segment 4", "segment 8"]
    # both drawn faces were found and tracked through the real detector, on every frame, in every schedule
    assert all(r["faces"] == 2 * data["frames"] and r["tracks"] == 2 for r in rows.values())
    assert rows["chain"]["steps_vs_chain"] == 1 and rows["cold"]["steps_vs_cold"] == 1
    assert all(r["truth_change"] > 0 and r["rmse_64"] > 0 for r in rows.values())
    assert {g["goal"] for g in data["goals"]} >= {"cold searches reaching eps", "warm steps / cold steps"}


@pytest.mark.slow
def test_real_footage_benchmark_runs_quick_and_measures_the_tracking_against_the_truth(tmp_path):
    out = tmp_path / "real.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_footage.py"), "--quick", "--clips", "stage360",
                           "--workdir", str(tmp_path), "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    (speed,), (tracking,) = data["speed"], data["tracking"]
    assert speed["frames"] == 16 and speed["ratio"] > 0 and speed["first_frame_s"] <= speed["facezoom_s"]
    assert tracking["cuts"] == "1/1 (+0)" and tracking["tracks_across_cuts"] == 0 and tracking["recall"] > 0.8
