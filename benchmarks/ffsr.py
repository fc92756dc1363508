#!/usr/bin/env python3
"""The feed-forward `ffsr` backend (PFSR) against PULSE: faces per second, and flicker with and
without temporal blending.

1. Throughput. PFSR at the published widths (512, 256, 128, 64; random weights: a forward
   pass costs the same whatever the values), 16 -> 128, at batch 1, 8 and 32: the backend's
   downscale + super_resolve of aligned 128x128 crops, exactly what the pipeline calls per
   batch. Against it, the `pulse` backend on the default generator's architecture (StyleGAN2
   FFHQ 512, channel multiplier 1, random weights) rendering 128x128, at batch 1 and 8. A
   PULSE step is one forward and backward pass of the generator, whatever the weights, so its
   seconds per step are measured over `--pulse-steps` steps (eps set out of reach so no crop
   stops early) and scaled to its budgets: 100 steps for a cold start, 20 for a warm one.
   Rates are per second of CPU time (one torch thread by default), so a busy shared machine
   does not skew them; wall-clock rates are printed beside them.
2. Flicker. A narrow PFSR (64, 32, 16, 8) is trained with `pipeline.training.train` on the astronaut
   photo placed at random sizes, angles and places on a wall (faces found and aligned by the
   pipeline's detector), unless `--generator CKPT` names a stage-3 checkpoint. The built-in
   sample clip (4 s, 25 fps, the camera zooming in) is then detected, tracked and aligned, and
   its track super-resolved frame by frame with `sr.temporal_blend` 0 and the `--blends`.
   flicker = mean |out_t - out_t-1| / mean |crop_t - crop_t-1| (the aligned 128x128 crops
   that the inputs are made from), as in benchmarks/warm_start.py; PSNR of each output
   against its crop shows what the blend costs in fidelity.

    python benchmarks/ffsr.py --json out/ffsr.json

Ratios measured in one run on one machine are what to compare; absolute rates are this CPU's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import parser, table, write_json  # noqa: E402  (common puts the repository on sys.path)
from models.backends.ffsr import FFSRBackend  # noqa: E402
from models.networks.pfsr import PUBLISHED_CHANNELS, PFSRGenerator, load_pfsr  # noqa: E402

NARROW = (64, 32, 16, 8)


def time_calls(fn, *, min_seconds: float, min_calls: int = 2) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per call of `fn()`, after one warm-up call.

    CPU time (`time.process_time`, all of this process's threads) is what the work costs: on a
    shared machine other processes stretch the wall clock but not it. With one torch thread it
    is the wall time the call would take on a core of its own.
    """
    fn()
    calls, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    while calls < min_calls or time.process_time() - cpu0 < min_seconds:
        fn()
        calls += 1
    return (time.process_time() - cpu0) / calls, (time.perf_counter() - wall0) / calls


def ffsr_rates(batches: list[int], args) -> dict[int, tuple[float, float]]:
    """Faces per CPU second and per wall second of the published-width backend, per batch size."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        backend = FFSRBackend(PFSRGenerator(PUBLISHED_CHANNELS))
    rates = {}
    for b in batches:
        crops = torch.rand(b, 3, 128, 128, generator=torch.Generator().manual_seed(b)) * 2 - 1  # [B, 3, 128, 128]

        def call():
            with torch.no_grad():
                lr = backend.downscale(crops)
            backend.super_resolve(lr, [None] * b, seeds=list(range(b)))

        cpu, wall = time_calls(call, min_seconds=args.min_seconds)
        rates[b] = (b / cpu, b / wall)
    return rates


def pulse_step_seconds(batches: list[int], args) -> dict[int, tuple[float, float]]:
    """(CPU, wall) seconds per optimisation step of the `pulse` backend, per batch size."""
    from models.generators import compute_gaussian_fit
    from models.backends.pulse import PulseBackend
    from models.networks.stylegan2 import StyleGAN2Config, StyleGAN2Generator

    with torch.random.fork_rng():
        torch.manual_seed(0)
        g = StyleGAN2Generator(StyleGAN2Config.basicsr(512, channel_multiplier=1)).eval().requires_grad_(False)
    fit = compute_gaussian_fit(g, samples=4096)  # statistics only shift the start point, not the cost
    seconds = {}
    for b in batches:
        backend = PulseBackend(g, fit, out_size=128, steps=args.pulse_steps, eps=1e-12)  # eps out of reach: every step runs
        lr = torch.rand(b, 3, 16, 16, generator=torch.Generator().manual_seed(b)) * 2 - 1
        cpu, wall = time_calls(lambda: backend.super_resolve(lr, [None] * b, seeds=list(range(b))), min_seconds=0, min_calls=1)
        seconds[b] = (cpu / args.pulse_steps, wall / args.pulse_steps)
    return seconds


def training_faces(folder: Path, *, count: int, seed: int) -> list[Path]:
    """`count` 640x360 images of the astronaut photo, jittered in size, angle, place and exposure."""
    import cv2

    from pipeline.media.sample import astronaut

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photo = astronaut()
    paths = []
    for i in range(count):
        scale, angle = rng.uniform(0.55, 1.15), rng.uniform(-12, 12)
        centre = (rng.uniform(200, 440), rng.uniform(130, 230))
        m = cv2.getRotationMatrix2D((215.0, 130.0), angle, scale)  # about the face
        m[:, 2] += np.array(centre) - (215.0, 130.0)
        canvas = cv2.warpAffine(photo, m, (640, 360), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT, borderValue=(58, 74, 96))
        canvas = np.clip(canvas.astype(np.float32) * rng.uniform(0.85, 1.15) + rng.uniform(-12, 12), 0, 255).astype(np.uint8)
        path = folder / f"face{i:03d}.png"
        cv2.imwrite(str(path), canvas[:, :, ::-1])
        paths.append(path)
    return paths


def train_narrow(workdir: Path, args) -> Path:
    from models.pfsr_train import TrainConfig
    from pipeline.stages.detect import DetectConfig, FaceDetector
    from pipeline.training.train import collect_faces, train_pfsr

    paths = training_faces(workdir / "train_faces", count=args.train_images, seed=args.seed)
    faces = collect_faces(paths, FaceDetector(DetectConfig(device="cpu")), min_face=40)
    ckpt = workdir / "ffsr_narrow.ckpt"
    ckpt.unlink(missing_ok=True)
    cfg = TrainConfig(batch_size=8, stage_iters=args.stage_iters, fade_iters=args.fade_iters, save_every=10**9, seed=args.seed)
    summary = train_pfsr(faces, ckpt, cfg=cfg, channels=NARROW, device="cpu", progress=True)
    print(f"trained {list(NARROW)} on {len(faces)} faces for {summary['iterations']} steps: loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f}",
          file=sys.stderr)
    return ckpt


def sample_track(seconds: float) -> list[np.ndarray]:
    """The aligned 128x128 crops of the sample clip's face track, in frame order."""
    from pipeline.stages.detect import DetectConfig
    from pipeline.stages.faces import FaceAnalyzer
    from pipeline.media.sample import camera_frames
    from pipeline.stages.track import TrackConfig

    frames = list(camera_frames(seconds=seconds, fps=25))
    analyzer = FaceAnalyzer(DetectConfig(device="cpu"), TrackConfig(), crop_size=128)
    crops: dict[int, list[np.ndarray]] = {}
    for start in range(0, len(frames), 8):
        for frame_crops in analyzer.process(frames[start:start + 8], start):
            for c in frame_crops:
                crops.setdefault(c.track_id, []).append(c.crop)
    return max(crops.values(), key=len)


def flicker_rows(ckpt: Path, crops: list[np.ndarray], blends: list[float]) -> list[dict]:
    from pipeline.stages.fidelity import replacement
    from pipeline.stages.superres import SRRequest, run_batch

    loaded = load_pfsr(ckpt)
    gt = np.stack(crops).astype(np.float32)  # [T, 128, 128, 3]
    truth_change = np.abs(np.diff(gt, axis=0)).mean()
    rows = []
    for blend in blends:
        backend = FFSRBackend(loaded.generator, step=loaded.step, alpha=loaded.alpha, temporal_blend=blend)
        state, outs, start = None, [], time.perf_counter()
        for crop in crops:
            result = run_batch(backend, SRRequest([crop], [state], [0], [replacement(backend.in_size)]))
            outs.append(result.faces[0])
            state = result.states[0]
        seconds = time.perf_counter() - start
        out = np.stack(outs).astype(np.float32)
        mse = ((out - gt) ** 2).reshape(len(out), -1).mean(1)
        rows.append({
            "temporal_blend": blend,
            "flicker": float(np.abs(np.diff(out, axis=0)).mean() / truth_change),
            "psnr_db": float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10)))),
            "ms_per_face": 1000 * seconds / len(crops),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,8,32", help="ffsr batch sizes")
    p.add_argument("--pulse-batches", default="1,8", help="pulse batch sizes")
    p.add_argument("--pulse-steps", type=int, default=2, help="PULSE steps timed per batch size")
    p.add_argument("--min-seconds", type=float, default=3.0, help="time each ffsr batch size at least this long")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids OpenMP spin-waits on a busy machine)")
    p.add_argument("--generator", type=Path, help="a stage-3 PFSR checkpoint for the flicker figures (default: train a narrow one)")
    p.add_argument("--blends", default="0.5,0.8", help="temporal_blend values compared with 0")
    p.add_argument("--seconds", type=float, default=4.0, help="length of the sample clip the flicker is measured on")
    p.add_argument("--train-images", type=int, default=48)
    p.add_argument("--stage-iters", type=int, default=500, help="narrow model: steps per stage")
    p.add_argument("--fade-iters", type=int, default=250, help="narrow model: steps per fade")
    p.add_argument("--skip-pulse", action="store_true")
    p.add_argument("--skip-flicker", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"threads": args.threads, "torch": torch.__version__}

    # 1. Throughput.
    ffsr = ffsr_rates([int(b) for b in args.batches.split(",")], args)
    pulse = {} if args.skip_pulse else pulse_step_seconds([int(b) for b in args.pulse_batches.split(",")], args)
    results["ffsr_faces_per_second_cpu_wall"] = ffsr
    results["pulse_seconds_per_step_cpu_wall"] = pulse
    cold_1 = 1 / (100 * pulse[1][0]) if 1 in pulse else None  # PULSE's faces/s, cold, one crop at a time
    rows = [{"backend": "ffsr (PFSR 512-256-128-64)", "batch": b, "faces/s": cpu, "ms/face": 1000 / cpu,
             "x pulse cold b1": cpu / cold_1 if cold_1 else None, "wall faces/s": wall} for b, (cpu, wall) in ffsr.items()]
    for budget, label in ((100, "pulse cold (100 steps)"), (20, "pulse warm (20 steps)")):
        rows += [{"backend": label, "batch": b, "faces/s": b / (budget * cpu), "ms/face": 1000 * budget * cpu / b,
                  "x pulse cold b1": b / (budget * cpu) / cold_1 if cold_1 else None, "wall faces/s": b / (budget * wall)}
                 for b, (cpu, wall) in pulse.items()]
    results["throughput"] = rows
    print(f"faces per second of CPU time, 16 -> 128, {args.threads} torch thread(s), torch {torch.__version__}")
    print(table(rows, ["backend", "batch", "faces/s", "ms/face", "x pulse cold b1", "wall faces/s"]))
    if pulse:
        print(f"(pulse: StyleGAN2-512 channel multiplier 1 rendering 128; {args.pulse_steps} steps timed per batch, scaled to the budget)")

    # 2. Flicker with and without temporal blending.
    if not args.skip_flicker:
        ckpt = args.generator if args.generator else train_narrow(workdir, args)
        crops = sample_track(args.seconds)
        rows = flicker_rows(ckpt, crops, [0.0] + [float(b) for b in args.blends.split(",")])
        results["flicker"] = {"generator": str(ckpt), "frames": len(crops), "rows": rows}
        source = "--generator" if args.generator else f"narrow {list(NARROW)} trained {args.stage_iters * 3 + args.fade_iters * 2} steps on the jittered astronaut"
        print(f"\nflicker on the sample clip's track ({len(crops)} frames; model: {source})")
        print(table(rows, ["temporal_blend", "flicker", "psnr_db", "ms_per_face"]))
        print("flicker = mean |out_t - out_t-1| / mean |crop_t - crop_t-1|; PSNR of each face against its aligned crop")

    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
