#!/usr/bin/env python3
"""Frames per second of the whole-frame upscalers (composite.upscaler) on this machine's CPU.

Each model is its published architecture, built from spandrel's own classes with random weights
(the cost is the architecture's, not the weights') and loaded through spandrel's detection, as a
user's file is: RealESRGAN_x4plus and x2plus (RRDBNet, 23 blocks of 64 features; x2 runs its body
on the frame pixel-unshuffled by 2), realesr-general-x4v3 (SRVGGNetCompact, 32 convs) and SPAN x4
(48 channels, the published spanx4_ch48).

A whole 1080p frame through RRDBNet takes minutes on a CPU, so each model is timed on one window
of the tiling the default settings (composite.upscaler_tile 256, overlap 16) cut a 360p and a
1080p frame into, and the frame's time is that times the number of windows (extrapolated, and
said so). Time is CPU seconds of the process (`time.process_time`), which a shared machine's other
work inflates much less than wall time (caches are still shared); with one torch thread (the
default) it is about what one idle core takes. Models named by `--check` are also timed on a whole
360p frame through `upscale_frames`, to show the two agree. Peak memory is the process's resident
peak while the windows run (each model in its own process), less what it held after loading.

`--ray` compares frames per second through 1 and 2 Ray actors that each call `upscale_frames`
on chunks of frames (what the Ray engine will do: frames are independent), one torch thread each.

    python benchmarks/frame_sr.py --json /tmp/frame_sr.json [--check realesr-general-x4v3] [--ray]
    python benchmarks/frame_sr.py --quick        # tiny widths: checks in seconds that it runs
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, parser, peak_rss_mb, table, write_json  # noqa: E402,F401  (ROOT: the repo on sys.path)

SIZES = {"360p": (640, 360), "1080p": (1920, 1080)}
QUICK_SIZES = {"90p": (160, 90), "180p": (320, 180)}  # --quick: tiny frames too, tile 64


def network(name: str, quick: bool):
    """The published architecture `name` (tiny widths with `quick`), random weights, seed 0."""
    import torch
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SPAN import SPAN

    nf, nb = (8, 1) if quick else (64, 23)
    build = {
        "RealESRGAN_x4plus": lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=nf, num_blocks=nb, scale=4),
        "RealESRGAN_x2plus": lambda: ESRGAN(in_nc=12, out_nc=3, num_filters=nf, num_blocks=nb, scale=4, shuffle_factor=2),
        "realesr-general-x4v3": lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=nf, num_conv=2 if quick else 32, upscale=4),
        "SPAN x4 ch48": lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8 if quick else 48, upscale=4),
    }[name]
    torch.manual_seed(0)
    return build().eval()


def descriptor(name: str, quick: bool):
    """The network as spandrel detects it from its state dict (what a user's file gives)."""
    import spandrel

    return spandrel.ModelLoader("cpu").load_from_state_dict(network(name, quick).state_dict())


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([128 + 90 * np.sin(x / 9.0), 128 + 90 * np.cos(y / 7.0), 100 + (x + y) % 97], -1)
    return np.clip(base + rng.normal(0, 15, base.shape), 0, 255).astype(np.uint8)


def measure(name: str, *, quick: bool, tile: int, overlap: int, threads: int, check: bool) -> list[dict]:
    """In a fresh process: per input size, seconds per window and per frame (windows x that), peak memory."""
    import torch

    from models.frame_sr import FrameUpscaler, upscale_frames

    torch.set_num_threads(threads)
    model = descriptor(name, quick)
    params = sum(p.numel() for p in model.model.parameters())
    upscale_frames([textured(32, 32)], model, tile=0)  # warm-up: first-call allocations stay out of the timing
    loaded = peak_rss_mb()
    rows = []
    sizes = QUICK_SIZES if quick else SIZES
    for size, (width, height) in sizes.items():
        (wy, wx), tiles = FrameUpscaler(model, name, tile=tile, overlap=overlap, batch=1).plan(height, width)
        window = textured(wy, wx, seed=1)
        wall, cpu = time.perf_counter(), time.process_time()
        upscale_frames([window], model, tile=0)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        row = {"model": name, "params_M": round(params / 1e6, 2), "input": size, "windows": len(tiles), "window": f"{wx}x{wy}",
               "cpu_s_per_window": round(cpu, 2), "cpu_s_per_frame": round(cpu * len(tiles), 1), "fps_per_core": round(1 / (cpu * len(tiles)), 4),
               "wall_s_per_frame": round(wall * len(tiles), 1), "how": "extrapolated", "peak_MiB_over_model": round(peak_rss_mb() - loaded)}
        rows.append(row)
        if check and size == next(iter(sizes)):
            frame = textured(height, width, seed=2)
            wall, cpu = time.perf_counter(), time.process_time()
            upscale_frames([frame], model, tile=tile, overlap=overlap, batch=1)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rows.append({**row, "cpu_s_per_window": None, "cpu_s_per_frame": round(cpu, 1), "fps_per_core": round(1 / cpu, 4),
                         "wall_s_per_frame": round(wall, 1), "how": "measured (whole frame)", "peak_MiB_over_model": round(peak_rss_mb() - loaded)})
    return rows


def ray_rows(name: str, *, quick: bool, frames: int, size: tuple[int, int], chunk: int) -> list[dict]:
    """Frames per second through N Ray actors calling `upscale_frames` on chunks, N = 1 and 2, one torch
    thread each (two threads in one actor spun against the machine's other work: 5x slower, not faster)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")

    @ray.remote
    class FrameSRActor:
        def __init__(self, threads: int):
            import torch

            from models.frame_sr import upscale_frames

            torch.set_num_threads(threads)
            self.model = descriptor(name, quick)
            upscale_frames([textured(32, 32)], self.model, tile=0)  # warm-up, outside the timing

        def run(self, images):
            from models.frame_sr import upscale_frames

            return upscale_frames(images, self.model, tile=256, overlap=16, batch=1)

    width, height = size
    images = [textured(height, width, seed=i) for i in range(frames)]
    rows = []
    for n in (1, 2):
        actors = [FrameSRActor.options(num_cpus=1).remote(1) for _ in range(n)]
        ray.get([a.__ray_ready__.remote() for a in actors])
        start = time.perf_counter()
        pending = [actors[k % n].run.remote(images[i:i + chunk]) for k, i in enumerate(range(0, frames, chunk))]
        done = sum(len(out) for out in ray.get(pending))
        wall = time.perf_counter() - start
        rows.append({"model": name, "actors": n, "threads_each": 1, "frames": done, "input": f"{width}x{height}",
                     "seconds": round(wall, 1), "fps": round(done / wall, 3)})
        for a in actors:
            ray.kill(a)
    ray.shutdown()
    rows[1]["vs_1_actor"] = round(rows[1]["fps"] / rows[0]["fps"], 2)
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[1])
    p.add_argument("--quick", action="store_true", help="tiny widths: checks that the script runs, in seconds")
    p.add_argument("--models", nargs="*", default=["realesr-general-x4v3", "SPAN x4 ch48", "RealESRGAN_x2plus", "RealESRGAN_x4plus"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: CPU seconds are per core, and hold on a busy machine)")
    p.add_argument("--tile", type=int, default=None, help="core side (default 256; 64 with --quick)")
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--check", nargs="*", default=[], metavar="MODEL", help="also time these models on a whole 360p frame")
    p.add_argument("--ray", action="store_true", help="1 vs 2 Ray actors on realesr-general-x4v3, 320x180 frames")
    args = p.parse_args()
    args.tile = args.tile or (64 if args.quick else 256)
    spawn = multiprocessing.get_context("spawn")  # each model in a fresh process: its own peak memory
    rows = []
    for name in args.models:
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            rows += pool.submit(measure, name, quick=args.quick, tile=args.tile, overlap=args.overlap, threads=args.threads,
                                check=name in args.check or args.quick).result()
        print(f"{name}: done", file=sys.stderr, flush=True)
    if rows:
        print(f"whole-frame upscalers on the CPU ({args.threads} torch threads{', --quick: tiny widths' if args.quick else ''}), "
              f"tile {args.tile}, overlap {args.overlap}, 1 window per call")
        print(table(rows, ["model", "params_M", "input", "windows", "window", "cpu_s_per_window", "cpu_s_per_frame", "fps_per_core",
                           "wall_s_per_frame", "how", "peak_MiB_over_model"]))
    ray = []
    if args.ray:
        ray = ray_rows("realesr-general-x4v3", quick=args.quick, frames=8 if args.quick else 12, size=(320, 180), chunk=2)
        print("\nRay actors, each calling upscale_frames on chunks of 2 frames")
        print(table(ray, ["model", "actors", "threads_each", "frames", "input", "seconds", "fps", "vs_1_actor"]))
    write_json(args.json, {"quick": args.quick, "threads": args.threads, "tile": args.tile, "overlap": args.overlap, "rows": rows, "ray": ray})


if __name__ == "__main__":
    main()
