#!/usr/bin/env python3
"""Face restorers (`sr.backend=restore`): faces per second on the CPU, and flicker with and without the stabiliser.

1. Throughput. GFPGAN v1.x (clean), RestoreFormer and CodeFormer at their published
   architectures (spandrel's classes, random weights: a forward pass costs the same whatever the
   values), loaded through models/zoo.py from files in their published layouts, each run
   through the backend exactly as the pipeline calls it: a 64x64 low-res crop enlarged to
   512x512, the model, the consistency check. Seconds are CPU time per face (one torch thread by
   default, so a busy shared machine does not skew them); wall-clock beside them.
2. Flicker. scikit-image's astronaut aligned to the FFHQ template at 512x512 drifts slowly
   (`--drift` crop pixels per frame, a little rotation and zoom) for `--frames` frames: the truth.
   Each frame is shrunk to `--lr` pixels (a face that small in the video) and restored, with
   `sr.temporal_blend` 0 and each of `--blends`. flicker = mean |out_t - out_t-1| minus the
   truth's, on the face region (0..255 scale); error = mean |out - truth| there. The model runs
   once per frame (its outputs are cached; the stabiliser runs on them in the backend as in a
   video). The model is RestoreFormer at its published size (`--flicker-model`): with random
   weights its faces change a great deal from frame to frame, real flicker for the stabiliser to
   remove, though not a trained model's (which flickers less, in finer detail). A random GFPGAN's
   faces hardly follow their input at all (they change less than the truth does): nothing to remove.

    python benchmarks/restorers.py --json out/restorers.json

Ratios measured in one run on one machine are what to compare; absolute rates are this CPU's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import ROOT, parser, table, write_json  # noqa: E402  (common puts the repository on sys.path)

sys.path.insert(0, str(ROOT / "tests"))

from models import zoo  # noqa: E402
from models.backends.restore import RestoreBackend  # noqa: E402
from pipeline.stages.superres import to_images, to_tensor  # noqa: E402
from restorer_models import ARCHS, astronaut_track, build, change, face_mask, flicker, save_published  # noqa: E402


def load(arch: str, folder: Path, *, small: bool = False):
    published = not small or arch == "GFPGAN"  # spandrel recognises GFPGAN at its published size only
    path = folder / f"{arch}{'' if published else '-small'}.pth"
    if not path.exists():
        save_published(build(arch, published=published), arch, path)
    return zoo.load_model(str(path), "face")


def throughput(arch: str, folder: Path, *, batch: int, calls: int, small: bool) -> dict:
    backend = RestoreBackend(load(arch, folder, small=small), in_size=64)
    lr = backend.downscale(to_tensor(backend, astronaut_track(batch, 512)))
    backend.super_resolve(lr, [None] * batch, seeds=[0] * batch)  # warm-up
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(calls):
        backend.super_resolve(lr, [None] * batch, seeds=[0] * batch)
    cpu, wall = (time.process_time() - cpu0) / calls / batch, (time.perf_counter() - wall0) / calls / batch
    params = sum(p.numel() for p in backend.model.model.parameters())
    return {"model": arch, "params_m": round(params / 1e6, 1), "batch": batch, "cpu_s_per_face": round(cpu, 2),
            "faces_per_cpu_s": round(1 / cpu, 3), "wall_s_per_face": round(wall, 2)}


class _Cached(torch.nn.Module):
    """The model's forward, computed once per distinct input (the blends differ only after the model)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.cache = net, {}

    def forward(self, x, **kwargs):
        key = hash(x.cpu().numpy().tobytes())
        if key not in self.cache:
            self.cache[key] = self.net(x, **kwargs)
        return self.cache[key]


class _CachedModel:
    """A face model (spandrel descriptor) whose network is `_Cached`: what RestoreBackend needs of it."""

    def __init__(self, descriptor):
        self.architecture, self.model = descriptor.architecture, _Cached(descriptor.model)

    def to(self, device):
        return self


def flicker_rows(model, args) -> list[dict]:
    model = _CachedModel(model)
    truth = astronaut_track(args.frames, 512, drift=args.drift)
    mask = face_mask(512)
    rows = []
    for blend in [0.0, *args.blends]:
        backend = RestoreBackend(model, in_size=args.lr, temporal_blend=blend)
        outs, state, start = [], None, time.process_time()
        for crop in truth:
            lr = backend.downscale(to_tensor(backend, [crop]))
            result = backend.super_resolve(lr, [state], seeds=[0])
            state = result.states[0]
            outs.append(to_images(result.images)[0])
        error = np.mean([np.abs(o.astype(np.float32) - t)[mask].mean() for o, t in zip(outs, truth)])
        rows.append({"temporal_blend": blend, "change": round(change(outs), 2), "truth_change": round(change(truth), 2),
                     "flicker": round(flicker(outs, truth), 2), "error": round(float(error), 1),
                     "cpu_s_per_frame": round((time.process_time() - start) / len(truth), 2)})
    for r in rows:
        r["flicker_vs_off"] = round(r["flicker"] / rows[0]["flicker"], 2) if rows[0]["flicker"] > 0 else None
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[1])
    p.add_argument("--archs", nargs="*", default=list(ARCHS), choices=ARCHS, help="models to time (none: flicker only)")
    p.add_argument("--batches", nargs="+", type=int, default=[1])
    p.add_argument("--calls", type=int, default=2, help="timed calls per row, after one warm-up")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    # RestoreFormer: with random weights GFPGAN's faces hardly follow the input (its output changes less
    # than the truth's, so there is no flicker to remove); RestoreFormer's and CodeFormer's do.
    p.add_argument("--flicker-model", default="RestoreFormer", choices=ARCHS)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--drift", type=float, default=1.6, help="crop pixels per frame at 512")
    p.add_argument("--lr", type=int, default=32, help="the low-res face side")
    p.add_argument("--blends", nargs="+", type=float, default=[0.3, 0.6])
    p.add_argument("--small", action="store_true", help="the smallest settings spandrel recognises (a quick check that it runs)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = Path(args.workdir) / "restorers"
    folder.mkdir(parents=True, exist_ok=True)
    speed = [throughput(a, folder, batch=b, calls=args.calls, small=args.small) for a in args.archs for b in args.batches]
    if speed:
        print(f"face restorers on the CPU, 64 -> 512, {args.threads} torch thread(s); random weights, published architectures")
        print(table(speed, ["model", "params_m", "batch", "cpu_s_per_face", "faces_per_cpu_s", "wall_s_per_face"]))
    rows = flicker_rows(load(args.flicker_model, folder, small=args.small), args)
    print(f"\nflicker of {args.flicker_model} on {args.frames} frames of a {args.lr}px face drifting {args.drift} px/frame at 512 "
          "(0..255 on the face, minus the truth's)")
    print(table(rows, ["temporal_blend", "change", "truth_change", "flicker", "flicker_vs_off", "error", "cpu_s_per_frame"]))
    write_json(args.json, {"throughput": speed, "flicker": rows, "flicker_model": args.flicker_model, "frames": args.frames,
                           "lr": args.lr, "drift": args.drift, "threads": args.threads})
    return 0


if __name__ == "__main__":
    sys.exit(main())
