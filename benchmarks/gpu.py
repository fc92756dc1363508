#!/usr/bin/env python3
"""Figures for a GPU: PULSE on a full-size StyleGAN2-512, PFSR, and MTCNN at 1080p. One command.

Run it on a lent GPU machine as it is (it takes a few minutes on one GPU and writes its
figures as JSON); `--quick` shrinks every model so a CPU checks in seconds (under 30 s) that it runs.

- PULSE: StyleGAN2-512 of the published (BasicSR) architecture with random weights (the cost
  is the architecture's, not the weights'), rendering 256 (facezoom's default out_size), at
  batch 1, 8 and 32: seconds per step, faces per second at the cold (100 steps) and warm (20)
  budgets, peak GPU memory. The same in bfloat16 autocast, and the
  steps each needs to reach eps on faces the generator itself rendered (so eps is reachable).
- PFSR (the `ffsr` backend's network at its published widths): faces per second at batch 32.
- MTCNN (facenet-pytorch) on a 1080p frame with one face: ms per frame, at detect.working_size
  640 (the default) and at native size.

- GFPGAN v1.x (clean, the `restore` backend's most used face model) at 512x512, published
  architecture, random weights: faces per second at batch 1, 8 and 16, peak memory (`--quick`: a
  small RestoreFormer at 64). Skipped where spandrel (`facezoom[restore]`) is not installed.
- One face along a track (benchmarks/scale.py's part 1 on this generator): the frame-by-frame
  chain against the keyframe schedule (`sr.segment` 4 and 8): steps per frame, flicker, faces per second.
- Whole-frame upscalers (composite.upscaler, issue 26) on a 1080p frame: RealESRGAN_x4plus (RRDBNet,
  23 blocks) and realesr-general-x4v3 (SRVGGNetCompact) at their published widths, random weights, in
  float16 as `models/frame_sr.py` runs them on a GPU: frames per second and peak memory for tiles of
  256 at batch 1, 4 and 8, tiles of 512, and the whole frame (tile 0; "OOM" where it does not fit).

    python benchmarks/gpu.py --json gpu.json           # on the GPU machine
    python benchmarks/gpu.py --quick --json /tmp/g.json  # anywhere, in seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from models.downscale import bicubic_downscale  # noqa: E402
from models.generators import compute_gaussian_fit  # noqa: E402
from models.networks.pfsr import PUBLISHED_CHANNELS, PFSRGenerator  # noqa: E402
from models.networks.stylegan2 import StyleGAN2Config, StyleGAN2Generator  # noqa: E402
from models.search import draw_start, pulse_search  # noqa: E402

FULL = dict(resolution=512, narrow=1.0, render=256, batches=(1, 8, 32), timed_steps=5, pfsr_channels=PUBLISHED_CHANNELS,
            pfsr_batch=32, frame=(1920, 1080), eps_faces=4, track_frames=32, mapping={}, fit_samples=20_000, pfsr_seconds=2.0,
            mtcnn_repeats=5, frame_sr=dict(frame=(1920, 1080), tiny=False, frames=2, settings=((256, 1), (256, 4), (256, 8), (512, 2), (0, 1))), restorer="GFPGAN", restorer_size=512, restorer_batches=(1, 8, 16), restorer_calls=3)
# --quick only checks that every part runs, on any CPU in well under 30 s beside other work (it took
# 204 s when it ran a 64 px generator with the full 512-wide mapping and 20,000-sample fits):
# a 32 px generator with a small mapping (as benchmarks/common.py's stand-ins), small fits, short tracks.
QUICK = dict(resolution=32, narrow=0.0625, render=32, batches=(1, 2), timed_steps=1, pfsr_channels=(16, 8, 8, 8),
             pfsr_batch=4, frame=(640, 360), eps_faces=2, track_frames=4, mapping=dict(w_dim=64, num_mlp=2), fit_samples=2_000,
             pfsr_seconds=0.2, mtcnn_repeats=1, frame_sr=dict(frame=(160, 96), tiny=True, frames=1, settings=((48, 2), (0, 1))), restorer="RestoreFormer", restorer_size=64, restorer_batches=(1, 2), restorer_calls=1)


def generator(resolution: int, narrow: float, device, mapping: dict | None = None) -> StyleGAN2Generator:
    torch.manual_seed(0)
    g = StyleGAN2Generator(StyleGAN2Config.basicsr(resolution, channel_multiplier=1, narrow=narrow, **(mapping or {})))
    with torch.no_grad():  # random RGB heads overshoot [-1, 1] and BasicSR starts noise at 0; trained ones do neither
        for head in [g.to_rgb1, *g.to_rgbs]:
            head.modulated_conv.weight.mul_(0.6)
        for conv in [g.style_conv1, *g.style_convs]:
            conv.weight.fill_(0.1)
    return g.eval().requires_grad_(False).to(device)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def known_faces(g, fit, n: int, render: int, device) -> torch.Tensor:
    """16x16 inputs of faces the generator renders: eps is reachable on them."""
    latents = torch.stack([draw_start(g, 100 + i, render_size=render)[0] for i in range(n)]).to(device)
    _, noise = draw_start(g, 99, render_size=render)  # one noise for all: the search finds its own anyway
    with torch.no_grad():
        ws = F.leaky_relu(latents * fit.std + fit.mean, 0.2)
        faces = g.synthesize(ws, [m[None].expand(n, -1, -1, -1).to(device) for m in noise], render_size=render).clamp(-1, 1)
    return bicubic_downscale(faces, 16).clamp(-1, 1)


def search_seconds_per_step(g, fit, lr, *, render, steps, device, autocast) -> float:
    """Seconds per optimisation step of a cold search over `lr` (eps unreachable, so every step
    runs). A warm step is the same forward and backward pass; warm and cold differ in budget."""
    kw = dict(fit=fit, seeds=list(range(len(lr))), eps=1e-12, render_size=render, out_size=render, device=device)
    context = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with context:
        pulse_search(g, lr, steps=1, **kw)  # compiles kernels, allocates: not timed
        sync(device)
        start = time.perf_counter()
        pulse_search(g, lr, steps=steps, **kw)
        sync(device)
    return (time.perf_counter() - start) / steps


def steps_to_eps(g, fit, lr, *, render, device, autocast) -> list[int | None]:
    context = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with context:
        found = pulse_search(g, lr, fit=fit, seeds=list(range(len(lr))), steps=100, render_size=render, out_size=render, device=device)
    return [int(s) if ok else None for s, ok in zip(found.steps[:, 0].tolist(), found.success[:, 0].tolist())]


def pulse_rows(size: dict, device) -> tuple[list[dict], dict]:
    g = generator(size["resolution"], size["narrow"], device, size["mapping"])
    fit = compute_gaussian_fit(g, samples=size["fit_samples"], seed=0)
    lr = known_faces(g, fit, max(size["batches"]), size["render"], device)
    rows = []
    for autocast in (False, True):
        for batch in size["batches"]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            per_step = search_seconds_per_step(g, fit, lr[:batch], render=size["render"], steps=size["timed_steps"],
                                               device=device, autocast=autocast)
            rows.append({
                "dtype": "bf16" if autocast else "fp32", "batch": batch, "ms_per_step": round(per_step * 1000, 2),
                "cold_faces_per_s": round(batch / (per_step * 100), 3), "warm_faces_per_s": round(batch / (per_step * 20), 3),
                "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
            })
    eps = {dtype: steps_to_eps(g, fit, lr[: size["eps_faces"]], render=size["render"], device=device, autocast=dtype == "bf16")
           for dtype in ("fp32", "bf16")}
    return rows, eps


def schedule_rows(size: dict, device) -> list[dict]:
    """Chain against keyframe schedule for one face (benchmarks/scale.py's part 1 on this generator)."""
    from models.backends.pulse import PulseBackend
    from scale import run_schedule
    from warm_start import trajectory

    g = generator(size["resolution"], size["narrow"], device, size["mapping"])
    fit = compute_gaussian_fit(g, samples=size["fit_samples"], seed=0)
    gt, lr = trajectory(g, fit, 1.0, argparse.Namespace(seed=0, resolution=size["resolution"], frames=size["track_frames"]))
    backend = PulseBackend(g, fit, in_size=16, out_size=size["render"], device=device)
    rows = [run_schedule(backend, lr, gt, segment, 32) for segment in (1, 4, 8)]
    for row in rows:
        row["steps_vs_chain"] = row["steps_per_frame"] / rows[0]["steps_per_frame"]
        row["flicker_vs_chain"] = row["flicker"] / rows[0]["flicker"]
        row["speed_vs_chain"] = row["faces_per_s"] / rows[0]["faces_per_s"]
    return rows


def pfsr_faces_per_second(size: dict, device) -> float:
    torch.manual_seed(0)
    net = PFSRGenerator(size["pfsr_channels"]).eval().to(device)
    x = torch.rand(size["pfsr_batch"], 3, 16, 16, device=device) * 2 - 1
    with torch.no_grad():
        net(x, 3, 1.0)
        sync(device)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < size["pfsr_seconds"] or n < 3:
            net(x, 3, 1.0)
            n += 1
        sync(device)
    return round(n * len(x) / (time.perf_counter() - start), 1)


def restorer_rows(size: dict, device) -> list[dict]:
    """Faces per second of `sr.backend=restore` on `size['restorer']` (random weights, through the backend)."""
    try:
        from spandrel import ModelLoader
    except ImportError:
        return []
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from models.backends.restore import RestoreBackend
    from restorer_models import build

    net = build(size["restorer"], published=size["restorer"] == "GFPGAN")
    model = ModelLoader().load_from_state_dict(net.state_dict())
    backend = RestoreBackend(model, in_size=32, size=size["restorer_size"], device=device)
    rows = []
    for batch in size["restorer_batches"]:
        lr = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        backend.super_resolve(lr, [None] * batch, seeds=[0] * batch)
        sync(device)
        start = time.perf_counter()
        for _ in range(size["restorer_calls"]):
            backend.super_resolve(lr, [None] * batch, seeds=[0] * batch)
        sync(device)
        rows.append({"model": size["restorer"], "size": size["restorer_size"], "batch": batch,
                     "faces_per_s": round(batch * size["restorer_calls"] / (time.perf_counter() - start), 2),
                     "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None})
    return rows


def mtcnn_ms(size: dict, device) -> dict:
    from pipeline.media.sample import astronaut
    from pipeline.stages.detect import DetectConfig, FaceDetector

    width, height = size["frame"]
    frame = np.full((height, width, 3), 90, np.uint8)
    face = astronaut()[: min(330, height - 20), 100:380]
    frame[10 : 10 + face.shape[0], 300 : 300 + face.shape[1]] = face
    out = {}
    for working in (640, 0):
        detector = FaceDetector(DetectConfig(device=str(device), working_size=working))
        detector.detect([frame])
        start = time.perf_counter()
        for _ in range(size["mtcnn_repeats"]):
            found = detector.detect([frame])
        out[f"working_size={working}"] = {"ms": round((time.perf_counter() - start) / size["mtcnn_repeats"] * 1000, 1),
                                          "faces": len(found[0].boxes)}
    return out


def frame_sr_rows(size: dict, device) -> list[dict]:
    """Frames per second of the frame upscalers on one frame size, per (tile, batch) setting."""
    from frame_sr import descriptor, textured

    from models.frame_sr import upscale_frames

    cfg = size["frame_sr"]
    width, height = cfg["frame"]
    frames = [textured(height, width, seed=i) for i in range(cfg["frames"])]
    rows = []
    for name in ("RealESRGAN_x4plus", "realesr-general-x4v3"):
        model = descriptor(name, cfg["tiny"]).to(device)
        upscale_frames(frames[:1], model, tile=64, overlap=16)  # kernels chosen, fp16 weights made: not timed
        for tile, batch in cfg["settings"]:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            row = {"model": name, "frame": f"{width}x{height}", "tile": tile, "batch": batch, "dtype": str(model.dtype).split(".")[-1]}
            try:
                sync(device)
                start = time.perf_counter()
                upscale_frames(frames, model, tile=tile, overlap=16, batch=batch)
                sync(device)
            except torch.OutOfMemoryError:
                rows.append({**row, "fps": "OOM"})
                continue
            seconds = (time.perf_counter() - start) / len(frames)
            rows.append({**row, "dtype": str(model.dtype).split(".")[-1], "s_per_frame": round(seconds, 3), "fps": round(1 / seconds, 3),
                         "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None})
        del model
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny models: checks on any machine that the script runs")
    p.add_argument("--json", metavar="PATH", help="write the figures here")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    args = p.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    size = QUICK if args.quick else FULL
    if args.quick:  # one thread: OpenMP threads spinning against other processes' made steps 60x slower on a shared 2-core CPU
        torch.set_num_threads(1)
    started = time.perf_counter()
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "quick": args.quick, "generator": f"StyleGAN2-{size['resolution']} narrow {size['narrow']}",
            "render": size["render"]}
    print(f"facezoom GPU figures on {info['device']} (torch {info['torch']}){' [--quick]' if args.quick else ''}")
    rows, eps = pulse_rows(size, device)
    print(f"\nPULSE, {info['generator']} rendering {size['render']}; faces/s at 100 cold / 20 warm steps")
    print(f"{'dtype':<6}{'batch':>6}{'ms/step':>10}{'cold faces/s':>14}{'warm faces/s':>14}{'peak GiB':>10}")
    for r in rows:
        print(f"{r['dtype']:<6}{r['batch']:>6}{r['ms_per_step']:>10}{r['cold_faces_per_s']:>14}{r['warm_faces_per_s']:>14}{str(r['peak_gib']):>10}")
    print(f"steps to eps on known faces: fp32 {eps['fp32']}, bf16 {eps['bf16']} (None: not within 100)")
    schedules = schedule_rows(size, device)
    print(f"\none face along {size['track_frames']} frames: chain vs keyframe schedule")
    for r in schedules:
        print(f"  {r['schedule']:<18} steps/frame {r['steps_per_frame']:.2f} (x{r['steps_vs_chain']:.2f})  flicker {r['flicker']:.3f} "
              f"(x{r['flicker_vs_chain']:.2f})  mean batch {r['mean_batch']:.1f}  faces/s {r['faces_per_s']:.2f} (x{r['speed_vs_chain']:.2f})")
    pfsr = pfsr_faces_per_second(size, device)
    print(f"\nPFSR {size['pfsr_channels']}: {pfsr} faces/s at batch {size['pfsr_batch']}")
    mtcnn = mtcnn_ms(size, device)
    print(f"MTCNN on a {size['frame'][0]}x{size['frame'][1]} frame: {mtcnn}")
    frame_sr = frame_sr_rows(size, device)
    print("\nwhole-frame upscalers (composite.upscaler), overlap 16")
    for r in frame_sr:
        print(f"  {r['model']:<22}{r['frame']:>10}  tile {r['tile']:>4}  batch {r['batch']:>2}  {r['dtype']:<8}  "
              f"fps {r['fps']}  s/frame {r.get('s_per_frame')}  peak GiB {r.get('peak_gib')}")
    restorers = restorer_rows(size, device)
    for r in restorers:
        print(f"{r['model']} at {r['size']}, batch {r['batch']}: {r['faces_per_s']} faces/s, peak {r['peak_gib']} GiB")
    if not restorers:
        print("face restorers: skipped (spandrel is not installed: pip install 'facezoom[restore]')")
    total = round(time.perf_counter() - started, 1)
    print(f"\n{total} s in all")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**info, "pulse": rows, "steps_to_eps": eps, "schedules": schedules, "pfsr_faces_per_s": pfsr,
                                               "mtcnn": mtcnn, "frame_sr": frame_sr, "restorers": restorers, "seconds": total}, indent=2) + "\n")


if __name__ == "__main__":
    main()
