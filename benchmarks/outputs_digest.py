"""What a user sees, as digests: every decoded output frame (a hash of its pixels and its pts) and
every report (less its timings), for the runs a refactor must leave unchanged.

    python benchmarks/outputs_digest.py OUT.json          # record
    python benchmarks/outputs_digest.py OUT.json --against BEFORE.json   # and compare: a table, exit 1 on a difference

Runs (each through the `facezoom` command, as a user runs it): video on the built-in sample
(local and Ray; the classical backend, and PULSE on a tiny random StyleGAN2 at fidelity 1 and
0), zoom of a picture and of a video, enhance of a picture, and live on a file (its frames go
through the same face stages; without --realtime every frame is read, so its output is
deterministic). Timings (`*_seconds`, latency and fps figures) are dropped before hashing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
FACEZOOM = [sys.executable, str(ROOT / "run_pipeline.py")]
TIMING_WORDS = ("seconds", "latency", "fps", "_ms", "wall", "elapsed")
PLACEMENT = ("sr_actors", "video_actors")  # Ray's node ids: new in every run


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not any(w in k for w in TIMING_WORDS)}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _shape(value):
    """The keys of a report, without its values."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return type(value).__name__ if value is not None else None


def _frames(path: Path) -> list[str]:
    import av
    import numpy as np

    if path.is_dir():
        import cv2

        return [hashlib.sha256(cv2.imread(str(p)).tobytes()).hexdigest()[:16] for p in sorted(path.glob("*.png"))]
    if path.suffix in (".png", ".jpg"):
        import cv2

        return [hashlib.sha256(cv2.imread(str(path)).tobytes()).hexdigest()[:16]]
    with av.open(str(path)) as container:
        return [f"{f.pts}:{hashlib.sha256(np.ascontiguousarray(f.to_ndarray(format='rgb24')).tobytes()).hexdigest()[:16]}"
                for f in container.decode(video=0)]


def _run(args: list[str]) -> None:
    done = subprocess.run([*FACEZOOM, "-q", "-y", *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"facezoom {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-800:]}")


def runs(work: Path) -> dict[str, tuple[list[str], Path, Path | None]]:
    """name -> (facezoom arguments, output, report or None)."""
    from synth import tiny_stylegan2_checkpoint

    sample, picture, tiny = work / "sample.mp4", work / "face.png", work / "tiny.pth"
    if not (sample.exists() and picture.exists() and tiny.exists()):  # kept in --workdir: both records from the same inputs
        _run(["sample", "-o", str(sample), "--seconds", "2"])
        _run(["sample", "-o", str(picture)])
        tiny_stylegan2_checkpoint(tiny)
    pulse = ["--set", "sr.backend=pulse", "--set", f"sr.generator={tiny}", "--set", "sr.out_size=32",
             "--set", "sr.steps=6", "--set", "sr.warm_steps=3"]
    ray = ["--set", "engine.engine=ray", "--set", "engine.sr_actors=2"]
    table = {}

    def video(name, *extra):
        out = work / f"{name}.mp4"
        table[name] = (["video", str(sample), "-o", str(out), "--report", str(work / f"{name}.json"), *extra], out, work / f"{name}.json")

    video("video_local_classical")
    video("video_ray_classical", *ray)
    video("video_local_classical_s2", "-s", "2")
    video("video_local_pulse_w1", *pulse, "-s", "2")
    video("video_local_pulse_w0", *pulse, "-w", "0")
    video("video_ray_pulse_w0", *pulse, "-w", "0", *ray)
    video("video_local_pulse_seg3", *pulse, "-w", "0", "--set", "sr.segment=3")
    table["zoom_picture"] = (["zoom", str(picture), "-o", str(work / "zoom_picture.mp4"), "--duration", "1", "--fps", "8", *pulse, "-w", "0"],
                             work / "zoom_picture.mp4", None)
    table["zoom_picture_w1"] = (["zoom", str(picture), "-o", str(work / "zoom_picture_w1.mp4"), "--duration", "1", "--fps", "8", *pulse],
                                work / "zoom_picture_w1.mp4", None)
    table["zoom_video"] = (["zoom", str(sample), "-o", str(work / "zoom_video.mp4"), *pulse, "-w", "0"], work / "zoom_video.mp4", None)
    table["enhance"] = (["enhance", str(picture), "-o", str(work / "enhance.png"), "--iterations", "2", "--samples", "2", *pulse],
                        work / "enhance.png", None)
    table["enhance_w1"] = (["enhance", str(picture), "-o", str(work / "enhance_w1.png"), "--iterations", "2", "--samples", "2", *pulse,
                            "-w", "1"], work / "enhance_w1.png", None)
    # Live plays the file at its frame rate and drops what it cannot keep up with; the classical
    # backend keeps up on a quiet machine (run twice to see that the record repeats).
    table["live_file"] = (["live", str(sample), "--realtime", "-o", str(work / "live.mp4"), "--report", str(work / "live.json"), "--no-adapt"],
                          work / "live.mp4", work / "live.json")
    return table


def record(work: Path, only: list[str] | None = None) -> dict[str, dict]:
    digests = {}
    for name, (args, output, report) in runs(work).items():
        if only and name not in only:
            continue
        try:
            _run(args)
        except SystemExit as err:
            digests[name] = {"error": str(err)}
            print(f"{name}: {err}", file=sys.stderr)
            continue
        entry = {"frames": _frames(output)}
        if name == "live_file":  # its drops depend on the machine's speed: compare the report's shape
            entry = {"frames": ["(not compared)"], "report": hashlib.sha256(json.dumps(_shape(json.loads(report.read_text())),
                                                                                         sort_keys=True).encode()).hexdigest()[:16]}
        elif report is not None and report.exists():
            data = _untimed(json.loads(report.read_text()))
            for key in ("input", "output", *PLACEMENT):
                data.pop(key, None)
            entry["report"] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
            entry["report_data"] = data
        digests[name] = entry
        print(f"{name}: {len(entry['frames'])} frames", file=sys.stderr)
    return digests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--against", type=Path, help="an earlier record: print what differs, exit 1 if anything does")
    parser.add_argument("--only", nargs="+", metavar="RUN", help="these runs only")
    parser.add_argument("--workdir", type=Path, help="keep the inputs (and outputs) here, and reuse the inputs found there: "
                                                     "records to compare should share them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        work = args.workdir or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        digests = record(work, args.only)
    args.output.write_text(json.dumps(digests, indent=1) + "\n")
    if args.against is None:
        return 0
    before = json.loads(args.against.read_text())
    print("| run | frames | frames equal | report equal |\n|---|---|---|---|")
    same = True
    for name in sorted(set(before) | set(digests)):
        a, b = before.get(name, {}), digests.get(name, {})
        frames_equal = a.get("frames") == b.get("frames") and "frames" in a
        report_equal = a.get("report") == b.get("report")
        same &= frames_equal and report_equal
        print(f"| {name} | {len(b.get('frames', []))} | {'yes' if frames_equal else 'NO'} | "
              f"{('yes' if report_equal else 'NO') if a.get('report') or b.get('report') else '-'} |")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
