#!/usr/bin/env python3
"""Warm- vs cold-started PULSE search along a face track, and batch throughput.

A StyleGAN2 generator of the real architecture (BasicSR layout, w_dim 512, 8 mapping layers,
modulated convolutions, noise inputs, skip RGB heads), narrow and small enough for a CPU, with
random weights (RGB heads scaled so renders stay near [-1, 1], noise strengths set as a trained
network's are, non-zero), renders a smooth trajectory of known latents: each layer's latent
moves along a great circle between two gaussian draws, so every frame is a valid N(0, I)
latent; `--turns` sets how far it travels (in quarter turns) over the clip, i.e. how fast the
face changes. Each frame is shrunk to 16x16 with PULSE's downscaler and recovered three ways:
- cold, new seed: PULSE as published, run per frame (a fresh random start every frame);
- cold, track seed: PULSE from the same seed every frame (what facezoom does without warm starts);
- warm: each frame starts from the previous frame's state (cut -> cold start).
Printed per speed: median steps to eps, share of frames reaching eps, seconds per frame,
flicker = mean |out_t - out_t-1| / mean |gt_t - gt_t-1|, cuts; then throughput at batch 1, 4, 16.

    python benchmarks/warm_start.py --json out/warm_start.json

Compare ratios measured in one run; absolute seconds are this machine's.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.downscale import bicubic_downscale  # noqa: E402
from models.generators import compute_gaussian_fit  # noqa: E402
from models.search import draw_start, pulse_search  # noqa: E402
from models.networks.stylegan2 import StyleGAN2Config, StyleGAN2Generator  # noqa: E402

MODES = ("cold, new seed", "cold, track seed", "warm")


def make_generator(args: argparse.Namespace) -> StyleGAN2Generator:
    torch.manual_seed(args.seed)
    g = StyleGAN2Generator(StyleGAN2Config.basicsr(args.resolution, channel_multiplier=1, narrow=args.narrow))
    with torch.no_grad():
        for head in [g.to_rgb1, *g.to_rgbs]:  # random RGB heads overshoot [-1, 1]; trained ones do not
            head.modulated_conv.weight.mul_(args.rgb_scale)
        for conv in [g.style_conv1, *g.style_convs]:  # BasicSR initialises noise strengths to 0
            conv.weight.fill_(args.noise_strength)
    return g.eval().requires_grad_(False)


def trajectory(g: StyleGAN2Generator, fit, turns: float, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth renders `[T, 3, R, R]` and their 16x16 inputs `[T, 3, 16, 16]`."""
    start, noise = draw_start(g, args.seed + 1, render_size=args.resolution)
    end, _ = draw_start(g, args.seed + 2, render_size=args.resolution)
    angles = torch.linspace(0, turns * math.pi / 2, args.frames).tolist()
    latents = torch.stack([math.cos(a) * start + math.sin(a) * end for a in angles])  # [T, L, D]
    device = next(g.parameters()).device
    with torch.no_grad():
        ws = F.leaky_relu(latents.to(device) * fit.std + fit.mean, 0.2)
        gt = g.synthesize(ws, [m[None].expand(args.frames, -1, -1, -1).to(device) for m in noise]).clamp(-1, 1).cpu()  # [T, 3, R, R]
    return gt, bicubic_downscale(gt, 16).clamp(-1, 1)


def flicker(out: torch.Tensor, gt: torch.Tensor) -> float:
    return float((out[1:] - out[:-1]).abs().mean() / (gt[1:] - gt[:-1]).abs().mean())


def run_track(g, fit, lr: torch.Tensor, gt: torch.Tensor, mode: str, args: argparse.Namespace) -> dict:
    images, steps, ok, cuts, state = [], [], [], 0, None
    t0 = time.perf_counter()
    for frame in range(lr.shape[0]):
        seed = args.seed + 1000 + frame if mode == "cold, new seed" else args.seed
        res = pulse_search(
            g, lr[frame:frame + 1], fit=fit, seeds=[seed], states=[state] if mode == "warm" else None,
            steps=args.steps, warm_steps=args.warm_steps, eps=args.eps,
            warm_learning_rate=args.warm_lr, temporal_weight=args.temporal_weight, device="cpu",
        )
        images.append(res.images[0, 0])
        steps.append(int(res.steps[0, 0]))
        ok.append(bool(res.success[0, 0]))
        cuts += int(res.cut[0, 0])
        state = res.states[0][0]
    seconds = time.perf_counter() - t0
    reached = [s for s, o in zip(steps, ok) if o]
    return {
        "mode": mode,
        "median_steps_to_eps": statistics.median(reached) if reached else None,
        "reached_eps": sum(ok) / len(ok),
        "seconds_per_frame": seconds / len(steps),
        "flicker": flicker(torch.stack(images), gt),
        "cuts": cuts,
        "steps": steps,
    }


def throughput(g, fit, lr: torch.Tensor, batch: int, args: argparse.Namespace) -> float:
    """Crop-steps per second: `batch` cold searches for a fixed number of steps (eps unreachable)."""
    crops = lr[torch.arange(batch) % lr.shape[0]]
    t0 = time.perf_counter()
    pulse_search(g, crops, fit=fit, seeds=list(range(batch)), steps=args.throughput_steps, eps=1e-12, device="cpu")
    return batch * args.throughput_steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--resolution", type=int, default=64, help="generator and render side (power of two)")
    p.add_argument("--narrow", type=float, default=0.125, help="BasicSR channel scale (1 = the published widths)")
    p.add_argument("--rgb-scale", type=float, default=0.6, help="scale of the random RGB heads")
    p.add_argument("--noise-strength", type=float, default=0.1, help="noise strength of every layer")
    p.add_argument("--frames", type=int, default=40, help="trajectory length (>= 30)")
    p.add_argument("--turns", type=float, nargs="+", default=[1.0, 4.0], help="motion over the clip, in quarter turns; one run each")
    p.add_argument("--steps", type=int, default=100, help="cold budget (PULSE's 100)")
    p.add_argument("--warm-steps", type=int, default=20, help="warm budget (sr.warm_steps)")
    p.add_argument("--warm-lr", type=float, default=0.05, help="peak learning rate of warm starts")
    p.add_argument("--temporal-weight", type=float, default=0.0, help="lambda of the temporal prior (sr.temporal_weight)")
    p.add_argument("--eps", type=float, default=2e-3)
    p.add_argument("--fit-samples", type=int, default=100_000)
    p.add_argument("--throughput-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids OpenMP spin-waits on a busy machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if args.frames < 30:
        p.error("--frames must be >= 30")
    torch.set_num_threads(args.threads)

    g = make_generator(args)
    fit = compute_gaussian_fit(g, samples=args.fit_samples, seed=0)
    print(f"PULSE along a track: StyleGAN2 {args.resolution}px (narrow {args.narrow}, w_dim 512), {args.frames} frames -> 16x16, "
          f"eps {args.eps}, budgets cold {args.steps} / warm {args.warm_steps}, warm lr {args.warm_lr}, "
          f"temporal weight {args.temporal_weight}, {args.threads} thread(s)")
    print(f"{'motion':>7} {'input change':>12}  {'mode':<17}{'median steps to eps':>20}{'reached eps':>12}{'s/frame':>9}{'flicker':>9}{'cuts':>6}")
    runs = []
    for turns in args.turns:
        gt, lr = trajectory(g, fit, turns, args)
        change = float(((lr[1:] - lr[:-1]) / 2).pow(2).flatten(1).mean(1).median())  # [0, 1] scale MSE, like eps
        by_mode = {mode: run_track(g, fit, lr, gt, mode, args) for mode in MODES}
        cold, warm = by_mode["cold, track seed"], by_mode["warm"]
        ratio = warm["median_steps_to_eps"] / cold["median_steps_to_eps"] if cold["median_steps_to_eps"] and warm["median_steps_to_eps"] else None
        for mode, r in by_mode.items():
            steps = "-" if r["median_steps_to_eps"] is None else f"{r['median_steps_to_eps']:.1f}"
            print(f"{turns:>7.2f} {change / args.eps:>10.2f}e  {mode:<17}{steps:>20}{r['reached_eps']:>12.0%}"
                  f"{r['seconds_per_frame']:>9.2f}{r['flicker']:>9.2f}{r['cuts']:>6}")
        verdict = "-" if ratio is None else f"{ratio:.2f} ({'meets' if ratio <= 0.2 else 'misses'} <= 0.20)"
        print(f"{'':>7} warm/cold steps {verdict}; warm flicker {warm['flicker']:.2f} ({'meets' if warm['flicker'] <= 1.5 else 'misses'} <= 1.50)")
        runs.append({"turns": turns, "input_change_mse": change, "warm_over_cold_steps": ratio, "modes": list(by_mode.values())})
    rates = {b: throughput(g, fit, trajectory(g, fit, 1.0, args)[1], b, args) for b in (1, 4, 16)}
    print("input change: median MSE between consecutive 16x16 inputs, in units of eps (e)")
    print(f"{'batch':>7}{'crop-steps/s':>14}{'s per 100-step crop':>21}")
    for b, rate in rates.items():
        print(f"{b:>7}{rate:>14.1f}{100 / rate:>21.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "runs": runs,
                  "throughput_crop_steps_per_s": {str(b): r for b, r in rates.items()}}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
