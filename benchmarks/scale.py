#!/usr/bin/env python3
"""Scale out one face: keyframe-anchored warm starts (`sr.segment`) against the frame-by-frame chain.

    python benchmarks/scale.py [--json out/scale.json] [--quick]

In one run:
1. One track, one process: a StyleGAN2 of the real architecture (narrow, 64 px, random weights)
   renders a smooth trajectory of known latents, shrunk to 16x16 (as benchmarks/warm_start.py);
   the crops go through the crop scheduler and the PULSE backend with `sr.segment` = 1 (the
   chain) and larger segments, with PULSE's real eps. Per schedule: mean steps per frame, share
   reaching eps, flicker (mean |out_t - out_t-1| / mean |gt_t - gt_t-1|), cold restarts, the
   mean batch the schedule fills, and faces per second (one torch thread);
   `steps_vs_chain` (goal <= 1.25) and `flicker_vs_chain` (goal <= 1.1) compare with the chain.
2. The Ray engine on a one-face clip made here, a compute-bound small PULSE (a StyleGAN2 of the
   published layout at 32 px, wide enough that a crop-step costs the same whatever else runs, a
   fixed budget so that both sides do the same work, one torch thread per actor): 1 SR actor
   against 2, chain and keyframe schedule: `single_track_speedup` = fps with 2 actors over 1
   (goal >= 1.6 for the keyframe schedule; the chain cannot use a second actor).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import make_clip, parser, stylegan2_checkpoint, table, write_json  # noqa: E402
from engine import run_job  # noqa: E402
from warm_start import flicker, make_generator, trajectory  # noqa: E402

from models.backends.pulse import PulseBackend  # noqa: E402
from models.generators import compute_gaussian_fit  # noqa: E402
from pipeline.stages.scheduler import CropJob, CropScheduler, crop_seed  # noqa: E402


def run_schedule(backend: PulseBackend, lr: torch.Tensor, gt: torch.Tensor, segment: int, batch_size: int) -> dict:
    """One track of crops `lr` [T, 3, 16, 16] through the scheduler and the backend; per-frame results."""
    scheduler = CropScheduler(stateful=True, batch_size=batch_size, segment=segment)
    for frame in range(lr.shape[0]):
        scheduler.add(CropJob(frame, 1, crop_seed(0, 1, frame), payload=frame))
    scheduler.end_track(1)
    images, steps, success, budget, batches = {}, {}, {}, {}, []
    start = time.perf_counter()
    while (batch := scheduler.next_batch()) is not None:
        frames = [job.payload for job in batch.jobs]
        result = backend.super_resolve(lr[frames], batch.states, seeds=[job.seed for job in batch.jobs], gaps=batch.gaps)
        scheduler.commit(batch, [{k: v.detach().cpu() for k, v in s.items()} for s in result.states])
        for i, frame in enumerate(frames):
            images[frame], steps[frame], success[frame] = result.images[i], int(result.steps[i]), bool(result.success[i])
            rounds = max(1, min(batch.gaps[i], backend.steps // backend.warm_steps))
            budget[frame] = backend.warm_steps * rounds if batch.states[i] is not None else backend.steps
        batches.append(len(frames))
    seconds = time.perf_counter() - start
    order = sorted(images)
    restarts = sum(steps[f] > budget[f] for f in steps if f > 0)  # a warm start that missed eps ran cold too
    return {
        "segment": segment, "schedule": "chain" if segment == 1 else f"keyframe every {segment}",
        "steps_per_frame": statistics.mean(steps.values()), "reached_eps": sum(success.values()) / len(success),
        "flicker": flicker(torch.stack([images[f] for f in order]), gt), "cold_restarts": restarts,
        "mean_batch": statistics.mean(batches), "faces_per_s": len(order) / seconds, "seconds": seconds,
    }


def track_part(args) -> list[dict]:
    ns = argparse.Namespace(seed=0, resolution=args.resolution, narrow=args.narrow, rgb_scale=0.6, noise_strength=0.1, frames=args.frames)
    g = make_generator(ns)
    fit = compute_gaussian_fit(g, samples=args.fit_samples, seed=0)
    gt, lr = trajectory(g, fit, args.turns, ns)
    backend = PulseBackend(g, fit, in_size=16, out_size=args.resolution, steps=100, warm_steps=20, eps=2e-3)
    rows = [run_schedule(backend, lr, gt, segment, args.batch_size) for segment in args.segments]
    chain = rows[0]
    for row in rows:
        row["steps_vs_chain"] = row["steps_per_frame"] / chain["steps_per_frame"]
        row["flicker_vs_chain"] = row["flicker"] / chain["flicker"]
        row["speed_vs_chain"] = row["faces_per_s"] / chain["faces_per_s"]
    return rows


def ray_part(args) -> list[dict]:
    work = Path(args.workdir)
    checkpoint = stylegan2_checkpoint(work, channels=(256, 256, 128, 64))
    clip = make_clip(work / f"scale_1face_{args.seconds:g}s_15fps.mp4", width=640, height=360, seconds=args.seconds, fps=15, faces=1)
    pulse = ["video.preset=veryfast", "sr.backend=pulse", f"sr.generator={checkpoint}", "sr.out_size=32", "sr.steps=10",
             "sr.warm_steps=5", "sr.eps=1e-9", "sr.fidelity=0", "engine.sr_threads=1", "engine.engine=ray"]
    rows = []
    for segment in (1, args.ray_segment):
        for actors in (1, 2):
            run = run_job(clip, work / "scale_out.mp4", pulse + [f"sr.segment={segment}", f"engine.sr_actors={actors}"])
            if not run["steps"]:
                raise SystemExit("the model ran on no face: nothing was measured")
            rows.append({"schedule": "chain" if segment == 1 else f"keyframe every {segment}", "sr_actors": actors, **run})
    for one, two in (rows[0:2], rows[2:4]):
        one["speedup"], two["speedup"] = 1.0, two["fps"] / one["fps"]
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few frames and a tiny generator: checks that the script runs")
    p.add_argument("--segments", type=int, nargs="+", default=[1, 2, 4, 8], help="sr.segment values of part 1 (the first must be 1)")
    p.add_argument("--ray-segment", type=int, default=8, help="sr.segment of part 2's keyframe schedule")
    p.add_argument("--seconds", type=float, default=2.0, help="part 2's clip length")
    p.add_argument("--turns", type=float, default=1.0, help="part 1's motion, in quarter turns over the track (warm_start.py's)")
    p.add_argument("--skip-ray", action="store_true", help="part 1 only")
    args = p.parse_args()
    args.resolution, args.narrow, args.frames, args.fit_samples, args.batch_size = (
        (32, 0.0625, 12, 2000, 8) if args.quick else (64, 0.125, 40, 100_000, 8))
    if args.segments[0] != 1:
        p.error("--segments must start with 1 (the chain every other schedule is compared with)")
    torch.set_num_threads(1)
    results = {"track": track_part(args)}
    print(f"1) one track, {args.frames} frames -> 16x16, motion {args.turns:g} quarter turn(s), PULSE eps 2e-3 (cold 100 / warm 20 steps), batch up to {args.batch_size}, 1 thread")
    print(table(results["track"], ["schedule", "steps_per_frame", "steps_vs_chain", "reached_eps", "flicker", "flicker_vs_chain",
                                   "cold_restarts", "mean_batch", "faces_per_s", "speed_vs_chain"]))
    if not args.skip_ray:
        results["ray"] = ray_part(args)
        print(f"\n2) Ray engine, one face, {results['ray'][0]['frames']} frames, small PULSE (StyleGAN2 32 px, 10/5 steps, fixed budget), "
              "1 torch thread per SR actor")
        print(table(results["ray"], ["schedule", "sr_actors", "setup_seconds", "job_seconds", "fps", "crops", "steps", "speedup"]))
        results["single_track_speedup"] = results["ray"][3]["speedup"]
    write_json(args.json, results)


if __name__ == "__main__":
    main()
