#!/usr/bin/env python3
"""The heart on a real prior: PULSE's latent search and its warm starts on faces a trained generator drew.

    python benchmarks/real_prior.py [--frames 32] [--json out/real_prior.json] [--quick] [--skip-live]
                                    [--only-video | --skip-video | --only-framing] [--plain-framing]

The prior is `dcgan-digiface-64` (the gan-face-generate wheel: a DCGAN trained on DigiFace-1M's
rendered faces; `pip install -e '.[prior]'`). Because the faces come from the prior itself, the
ground truth is known exactly: a face the search could find.

1. Clips with known truth: two faces the prior draws, each moving along its own latent path (a
   great circle through z, so the face changes a little every frame), translating and growing,
   composited into 320x240 frames over a textured wall and written nearly losslessly. Each clip
   goes through the real `video` path (the local engine: MTCNN detection, tracking, alignment to
   the prior's own framing, the backend's bicubic downscaler to 16x16, the crop scheduler), with
   `sr.fidelity=0`, so each output face is the model's whole.
2. Per schedule, from the run's report and its decoded output: the share of searches reaching
   eps; steps per face; flicker = mean |out_t - out_t-1| over the face, sampled at the truth's
   own box each frame, relative to the truth's own change (`flicker_vs_truth`); error to the
   truth (RMSE, 0-255) over the face at 64x64 and shrunk to 16x16; faces per second (faces over
   the SR stage's busy seconds, on this CPU). Schedules: cold on every frame (the backend drops
   every track state: what per-frame tools do), the warm chain (`sr.segment=1`, the default) and
   keyframe segments of 4 and 8.
   Goals: warm steps <= 0.2x cold; warm flicker <= 1.5x the truth's change and <= 0.3x cold's;
   >= 85% of cold searches reach eps; segment 8 within 1.25x the chain's steps and 1.1x its flicker.
3. The same faces rendered and shrunk straight to 16x16 with the backend's downscaler (the
   prior's own framing: no detector, no alignment, no video coding), through the crop scheduler
   and the backend alone (benchmarks/scale.py's loop): what the search does when the input is
   exactly a face the prior can draw. The gap between parts 2 and 3 is the pipeline's alignment.
4. The framing (`--only-framing` runs this part alone): MTCNN's landmarks on 64 faces the prior
   draws, against the ArcFace template the prior's crops are aligned to (and FFHQ's), in crop
   sides; each face's crop against its drawn framing (scale, shift) with that template and with one
   fitted to MTCNN's mean landmarks; and on the clip's first frame, the pipeline's aligned crop
   against the crop the true geometry gives (scale and offset), each searched cold, the pipeline's
   crop also with the framing refined (models/reframe.py: the framing it found).
`--plain-framing` turns the framing refinement off (the prior's search as it was before it): the
before of a before/after.
5. Plain facts: the share of cold searches reaching eps within 100 steps on real photographs at
   16x16 (the astronaut, Grace Hopper, `lfw_subset` faces), and a live run's latency and fps
   with this prior on one real face (benchmarks/live.py's camera).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import parser, table, write_json  # noqa: E402

from models import reframe, weights  # noqa: E402
from models.generators import load_generator  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.config.sections import VideoConfig  # noqa: E402
from pipeline.media.writer import VideoWriter  # noqa: E402
from pipeline.stages import superres  # noqa: E402

PRIOR = "dcgan-digiface-64"
W, H, FPS = 320, 240, 25
REGION = 0.7  # the central share of a face's box that is measured (the model's face, not the tile's corners)
SCHEDULES = {"cold": ["sr.segment=1"], "chain": ["sr.segment=1"], "segment 4": ["sr.segment=4"], "segment 8": ["sr.segment=8"]}


def load_prior():
    e = weights.REGISTRY[PRIOR]
    return load_generator(weights.resolve(PRIOR), layout=e.layout, arch=dict(e.arch))


def face_paths(frames: int, *, seed: int) -> list[dict]:
    """Two faces' truths per frame: latent z_t [1, 1, 100] on a great circle, centre (x, y), side (px)."""
    rng = torch.Generator().manual_seed(seed)
    paths = []
    for f, (x0, dx, side0) in enumerate([(95.0, 0.5, 84.0), (228.0, -0.4, 92.0)]):
        a, b = torch.randn(2, 100, generator=rng)
        b = b - (b @ a) / (a @ a) * a  # orthogonal: z_t = cos(t w) a + sin(t w) b |a| / |b|
        b = b / b.norm() * a.norm()
        omega = 0.02  # radians a frame: the face changes a little every frame
        paths.append({
            "z": [(math.cos(t * omega) * a + math.sin(t * omega) * b).view(1, 1, 100) for t in range(frames)],
            "centre": [(x0 + dx * t, 118.0 + 3.0 * math.sin(t / 9)) for t in range(frames)],
            "side": [side0 + 12.0 * t / max(1, frames - 1) for t in range(frames)],
        })
    return paths


def render_clip(path: Path, prior, paths: list[dict], frames: int) -> None:
    """Write the clip: each face the prior renders at its z, enlarged to its side, over a textured wall."""
    rng = np.random.default_rng(1)
    wall = cv2.resize(rng.integers(60, 190, (H // 12, W // 12, 3), dtype=np.uint8), (W, H), interpolation=cv2.INTER_CUBIC)
    with VideoWriter(path, width=W, height=H, time_base=Fraction(1, FPS), rate=Fraction(FPS), cfg=VideoConfig(crf=6, preset="fast")) as out:
        for t in range(frames):
            frame = wall.copy()
            for p in paths:
                with torch.no_grad():
                    face = ((prior.synthesize(p["z"][t])[0] + 1) * 127.5).clamp(0, 255).byte().permute(1, 2, 0).numpy()
                (cx, cy), side = p["centre"][t], p["side"][t]
                m = np.array([[side / 64, 0, cx - side / 2], [0, side / 64, cy - side / 2]])  # face pixels -> frame pixels
                warped = cv2.warpAffine(face, m, (W, H), flags=cv2.INTER_CUBIC)
                inside = cv2.warpAffine(np.ones((64, 64), np.float32), m, (W, H), flags=cv2.INTER_LINEAR)[..., None]
                frame = (frame * (1 - inside) + warped * inside).round().astype(np.uint8)
            out.write(frame, t)


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def region(frame: np.ndarray, centre: tuple[float, float], side: float, size: int = 64) -> np.ndarray:
    """The central REGION of a face's true box, resampled to `size` x `size`: float32 [size, size, 3]."""
    s = side * REGION
    m = np.array([[size / s, 0, -(centre[0] - s / 2) * size / s], [0, size / s, -(centre[1] - s / 2) * size / s]])
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_AREA if s > size else cv2.INTER_LINEAR).astype(np.float32)


def measure(frames: list[np.ndarray], truth: list[np.ndarray], paths: list[dict]) -> dict:
    """Flicker, the truth's own change, and the error to the truth at 64 and at 16, over every face and frame."""
    flicker, change, err64, err16 = [], [], [], []
    for p in paths:
        out = [region(f, c, s) for f, c, s in zip(frames, p["centre"], p["side"])]
        gt = [region(f, c, s) for f, c, s in zip(truth, p["centre"], p["side"])]
        flicker += [np.abs(out[t] - out[t - 1]).mean() for t in range(1, len(out))]
        change += [np.abs(gt[t] - gt[t - 1]).mean() for t in range(1, len(gt))]
        err64 += [np.sqrt(((o - g) ** 2).mean()) for o, g in zip(out, gt)]
        small = [(cv2.resize(o, (16, 16), interpolation=cv2.INTER_AREA), cv2.resize(g, (16, 16), interpolation=cv2.INTER_AREA)) for o, g in zip(out, gt)]
        err16 += [np.sqrt(((o - g) ** 2).mean()) for o, g in small]
    return {"flicker": float(np.mean(flicker)), "truth_change": float(np.mean(change)),
            "rmse_64": float(np.mean(err64)), "rmse_16": float(np.mean(err16))}


class _Cold:
    """A backend that forgets every track state: each face is searched cold, as per-frame tools do."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def super_resolve(self, lr, states, *, seeds, gaps=None):
        return self._backend.super_resolve(lr, [None] * len(states), seeds=seeds, gaps=None)


def run_schedule(name: str, clip: Path, workdir: Path, *, steps: int) -> dict:
    """One `video` run of `clip` with schedule `name`; the report and the decoded output."""
    from pipeline.engines import run

    overrides = ["sr.backend=pulse", f"sr.generator={PRIOR}", "sr.fidelity=0", "video.crf=6", "sr.batch_size=8",
                 f"sr.steps={steps}", *SCHEDULES[name]]
    cfg = load_config(overrides=overrides)
    build = superres.BUILDERS["pulse"]
    if name == "cold":
        superres.BUILDERS["pulse"] = lambda c, d: _Cold(build(c, d))
    try:
        out = workdir / f"real_prior_{name.replace(' ', '')}.mkv"
        out.unlink(missing_ok=True)
        report = run(str(clip), str(out), cfg=cfg, progress=False)
    finally:
        superres.BUILDERS["pulse"] = build
    return {"report": report, "frames": decode(out)}


def video_rows(args, workdir: Path) -> list[dict]:
    prior = load_prior()
    paths = face_paths(args.frames, seed=args.seed)
    clip = workdir / f"real_prior_{args.frames}.mkv"
    render_clip(clip, prior, paths, args.frames)
    truth = decode(clip)
    rows = []
    for name in SCHEDULES:
        done = run_schedule(name, clip, workdir, steps=args.steps)
        faces = [f for f in done["report"]["faces"] if f["model_ran"]]
        sr_seconds = done["report"]["stage_seconds"].get("sr") or math.nan
        row = {"schedule": name, "faces": len(faces), "tracks": len(done["report"]["tracks"]),
               "reach_eps": round(sum(f["success"] for f in faces) / max(1, len(faces)), 3),
               "steps_per_face": round(float(np.mean([f["steps"] for f in faces])), 1) if faces else None,
               **{k: round(v, 2) for k, v in measure(done["frames"], truth, paths).items()},
               "faces_per_s": round(len(faces) / sr_seconds, 2)}
        row["flicker_vs_truth"] = round(row["flicker"] / row["truth_change"], 2)
        rows.append(row)
        print(f"  {name}: done in {done['report']['wall_seconds']:.0f} s", file=sys.stderr)
    return with_ratios(rows, flicker="flicker")


def with_ratios(rows: list[dict], *, flicker: str) -> list[dict]:
    """`rows` with each schedule's steps and flicker (the column `flicker`) over the cold search's and the chain's."""
    by = {r["schedule"]: r for r in rows}
    for r in rows:
        for base in ("cold", "chain"):
            r[f"steps_vs_{base}"] = round(r["steps_per_face"] / by[base]["steps_per_face"], 3)
            r[f"flicker_vs_{base}"] = round(r[flicker] / by[base][flicker], 3)
    return rows


def direct_rows(args) -> list[dict]:
    """Part 3: each face's renders shrunk to 16x16, per schedule through the scheduler and backend (no video path)."""
    from scale import run_schedule

    from pipeline.stages.superres import SRConfig, create_backend

    prior = load_prior()
    backend = create_backend(SRConfig(backend="pulse", generator=PRIOR, device="cpu", steps=args.steps))
    rows: dict[str, list[dict]] = {}
    for path in face_paths(args.frames, seed=args.seed):
        with torch.no_grad():
            gt = torch.cat([prior.synthesize(z) for z in path["z"]])  # [T, 3, 64, 64]
        lr = backend.downscale(gt)  # [T, 3, 16, 16]
        for name, segment in (("cold", 1), ("chain", 1), ("segment 4", 4), ("segment 8", 8)):
            run = run_schedule(_Cold(backend) if name == "cold" else backend, lr, gt, segment, 8)
            rows.setdefault(name, []).append(run)
    out = [{"schedule": name, "reach_eps": round(float(np.mean([r["reached_eps"] for r in runs])), 3),
            "steps_per_face": round(float(np.mean([r["steps_per_frame"] for r in runs])), 1),
            "flicker_vs_truth": round(float(np.mean([r["flicker"] for r in runs])), 2)} for name, runs in rows.items()]
    return with_ratios(out, flicker="flicker_vs_truth")


def framing_rows(args, workdir: Path) -> dict:
    """Part 4: how far MTCNN-based alignment frames the prior's faces from the way the prior drew them."""
    from pipeline.stages import align
    from pipeline.stages.detect import FaceDetector
    from pipeline.stages.faces import FaceAnalyzer
    from pipeline.stages.superres import SRConfig, create_backend, low_res

    prior = load_prior()
    cfg = load_config()
    with torch.no_grad():
        faces = ((prior.synthesize(torch.randn(64, 1, 100, generator=torch.Generator().manual_seed(args.seed))) + 1) * 127.5)
    faces = faces.clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    detector, pad, points = FaceDetector(cfg.detect), 64, []
    for face in faces:  # enlarged 4x on a plain border, so MTCNN sees a face of a size it was trained on
        canvas = np.full((256 + 2 * pad, 256 + 2 * pad, 3), 100, np.uint8)
        canvas[pad:pad + 256, pad:pad + 256] = cv2.resize(face, (256, 256), interpolation=cv2.INTER_CUBIC)
        found = detector.detect([canvas])[0]
        if len(found.scores):
            points.append((found.landmarks[int(np.argmax(found.scores))] - pad) / 256)
    points = np.asarray(points, np.float64)  # [n, 5, 2] in crop sides
    templates = {f"vs {name}": round(float(np.abs(points.mean(0) - t).max()), 3) for name, t in align.TEMPLATES.items()}
    result = {"drawn": len(faces), "detected": len(points), "mean_landmarks_max_offset": templates,
              "per_face_spread": round(float(points.std(0).max()), 3),
              "crops": [crop_error(points, name, t) for name, t in (("arcface", align.ARCFACE_TEMPLATE), ("mean of MTCNN's", points.mean(0)))]}
    # The clip's first frame: the pipeline's crop against the true geometry's, each searched cold.
    paths = face_paths(max(args.frames, 1), seed=args.seed)
    clip = workdir / f"real_prior_{args.frames}.mkv"
    if not clip.exists():
        render_clip(clip, prior, paths, args.frames)
    frame = decode(clip)[0]
    backend = create_backend(SRConfig(backend="pulse", generator=PRIOR, device="cpu", steps=args.steps))
    crops = FaceAnalyzer(cfg.detect, cfg.track, crop_size=64, framing=backend.framing).process([frame], 0)[0]
    rows = []
    for p in paths:
        (cx, cy), side = p["centre"][0], p["side"][0]
        crop = min(crops, key=lambda c: abs((c.box[0] + c.box[2]) / 2 - cx))
        true = np.array([[64 / side, 0, -(cx - side / 2) * 64 / side], [0, 64 / side, -(cy - side / 2) * 64 / side]])
        centre = np.linalg.solve(crop.matrix[:, :2], np.array([32.0, 32.0]) - crop.matrix[:, 2])  # the crop's centre in frame px
        searched = {}
        for name, image, refine in (("pipeline_crop", crop.crop, False), ("framing_refined", crop.crop, True),
                                    ("true_crop", align.warp_face(frame, true, 64), False)):
            backend.refine_framing = refine
            r = backend.super_resolve(low_res(backend, [image], pre_blur=False), [None], seeds=[0])
            searched[name] = f"{'eps' if bool(r.success[0]) else 'missed'} in {int(r.steps[0])} steps (L2 {float(r.consistency[0]):.2e})"
            if refine:
                found = reframe.to_pixels(r.states[0]["framing"], 64)
                searched["found_framing"] = f"x{float(found['scale']):.3f}, {float(found['degrees']):+.1f} deg, " \
                                            f"({float(found['shift_px'][0]):+.1f}, {float(found['shift_px'][1]):+.1f}) px"
        rows.append({"face": len(rows), "crop_scale_vs_true": round(align.matrix_scale(true) / align.matrix_scale(crop.matrix), 3),
                     "centre_offset_px": round(float(np.hypot(*(centre - (cx, cy)))), 1), **searched})
    result["first_frame"] = rows
    return result


def framing_prior_rows(prior_weights: list[float], args, workdir: Path) -> list[dict]:
    """`--sweep-framing-prior`: the pipeline's crops of frames 0, 10, 20, 30 of the clip, searched cold
    with the framing refined at each prior weight (-1: not refined); the share reaching eps, the
    steps, the error to the truth in the crop (RMSE at 64 px, 0-255, its central 3/4) and the
    scale found over the true one."""
    from pipeline.stages import align
    from pipeline.stages.faces import FaceAnalyzer
    from pipeline.stages.superres import SRConfig, create_backend, low_res

    prior, cfg, paths = load_prior(), load_config(), face_paths(32, seed=args.seed)
    clip = workdir / "real_prior_32.mkv"
    render_clip(clip, prior, paths, 32)
    frames = decode(clip)
    backend = create_backend(SRConfig(backend="pulse", generator=PRIOR, device="cpu", steps=args.steps))
    cases = []
    for t in (0, 10, 20, 30):
        crops = FaceAnalyzer(cfg.detect, cfg.track, crop_size=64, framing=backend.framing).process([frames[t]], 0)[0]
        for p in paths:
            (cx, cy), side = p["centre"][t], p["side"][t]
            crop = min(crops, key=lambda c: abs((c.box[0] + c.box[2]) / 2 - cx))
            true = np.array([[64 / side, 0, -(cx - side / 2) * 64 / side], [0, 64 / side, -(cy - side / 2) * 64 / side]])
            with torch.no_grad():
                drawn = ((prior.synthesize(p["z"][t])[0] + 1) * 127.5).clamp(0, 255).permute(1, 2, 0).numpy()
            m = align.compose(crop.matrix, align.invert(true))  # drawn face px -> the pipeline's crop px
            inside = cv2.warpAffine(np.ones((64, 64), np.float32), m, (64, 64)) > 0.99
            inside[:8], inside[-8:], inside[:, :8], inside[:, -8:] = False, False, False, False
            cases.append((m, crop.crop, cv2.warpAffine(drawn, m, (64, 64), flags=cv2.INTER_LINEAR), inside))
    rows = []
    for w in prior_weights:
        reframe.PRIOR_WEIGHT, backend.refine_framing = w, w >= 0
        ok, err, steps, scale = [], [], [], []
        for m, image, truth, inside in cases:
            r = backend.super_resolve(low_res(backend, [image], pre_blur=False), [None], seeds=[0])
            out = ((r.images[0] + 1) * 127.5).permute(1, 2, 0).numpy()
            ok.append(bool(r.success[0]))
            err.append(np.sqrt(((out - truth) ** 2)[inside].mean()))
            steps.append(int(r.steps[0]))
            scale += [float(torch.exp(r.states[0]["framing"][0])) / align.matrix_scale(m)] if w >= 0 else []
        rows.append({"prior_weight": w if w >= 0 else "not refined", "reach_eps": round(float(np.mean(ok)), 3), "steps": round(float(np.mean(steps)), 1),
                     "rmse_64": round(float(np.mean(err)), 1), "scale_found_vs_true": round(float(np.mean(scale)), 3) if scale else None})
    return rows


def crop_error(points: np.ndarray, name: str, template: np.ndarray) -> dict:
    """How far the crops aligned to `template` from MTCNN's landmarks `points` [n, 5, 2] (in drawn crop
    sides) are from the drawn framing: each crop's scale and centre shift (64 px crop) against the drawn one."""
    from pipeline.stages import align

    found = []
    for p in points:
        m = align.similarity_transform(p * 64 - 0.5, 64, template=template)  # drawn crop px -> pipeline crop px
        found.append([align.matrix_scale(m), *(align.transform_points(m, np.array([31.5, 31.5])) - 31.5)])
    found = np.asarray(found)
    return {"template": name, "scale_mean": round(float(found[:, 0].mean()), 3), "scale_std": round(float(found[:, 0].std()), 3),
            "shift_mean_px": round(float(np.hypot(*found[:, 1:].mean(0))), 2), "shift_std_px": round(float(found[:, 1:].std(0).max()), 2)}


def lr_rows(rates: list[float], *, steps: int, seed: int = 5) -> list[dict]:
    """`--sweep-lr`: cold searches on 16 faces the prior drew, shrunk straight to 16x16, per peak learning rate."""
    from models.downscale import bicubic_downscale
    from models.search import pulse_search

    prior = load_prior()
    with torch.no_grad():
        faces = prior.synthesize(torch.randn(16, 1, 100, generator=torch.Generator().manual_seed(seed)))
    lr = bicubic_downscale(faces, 16).clamp(-1, 1)
    rows = []
    for rate in rates:
        found = pulse_search(prior, lr, fit=None, seeds=list(range(16)), steps=steps, learning_rate=rate, device="cpu")
        rows.append({"learning_rate": rate, "reach_eps": round(float(found.success.float().mean()), 3),
                     "steps_per_face": round(float(found.steps.float().mean()), 1)})
    return rows


def goals(rows: list[dict]) -> list[dict]:
    by = {r["schedule"]: r for r in rows}
    checks = [
        ("cold searches reaching eps", by["cold"]["reach_eps"], ">= 0.85", by["cold"]["reach_eps"] >= 0.85),
        ("warm steps / cold steps", by["chain"]["steps_vs_cold"], "<= 0.2", by["chain"]["steps_vs_cold"] <= 0.2),
        ("warm flicker / truth's change", by["chain"]["flicker_vs_truth"], "<= 1.5", by["chain"]["flicker_vs_truth"] <= 1.5),
        ("warm flicker / cold flicker", by["chain"]["flicker_vs_cold"], "<= 0.3", by["chain"]["flicker_vs_cold"] <= 0.3),
        ("segment 8 steps / chain", by["segment 8"]["steps_vs_chain"], "<= 1.25", by["segment 8"]["steps_vs_chain"] <= 1.25),
        ("segment 8 flicker / chain", by["segment 8"]["flicker_vs_chain"], "<= 1.1", by["segment 8"]["flicker_vs_chain"] <= 1.1),
    ]
    return [{"goal": g, "measured": v, "target": t, "met": "yes" if ok else "NO"} for g, v, t, ok in checks]


def photo_faces() -> list[tuple[str, np.ndarray, bool]]:
    """(name, picture, whole): real photographs, and lfw_subset's 25x25 faces taken whole (too small to detect)."""
    from skimage import data

    photos = [("astronaut", data.astronaut(), False)]
    try:
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            from PIL import Image

            photos.append(("grace_hopper", np.asarray(Image.open(f).convert("RGB")), False))
    except ImportError:
        print("  (matplotlib is not installed: Grace Hopper left out)", file=sys.stderr)
    lfw = data.lfw_subset()[:20]  # [n, 25, 25] float grey, in [0, 1]
    photos += [(f"lfw_{i}", np.repeat((face * 255).astype(np.uint8)[..., None], 3, axis=2), True) for i, face in enumerate(lfw)]
    return photos


def photo_rows(steps: int) -> list[dict]:
    """Cold searches on real photographs' faces at 16x16 (aligned to the prior's framing, the backend's downscaler)."""
    from pipeline.creative import targets
    from pipeline.stages.superres import SRConfig, create_backend, low_res

    backend = create_backend(SRConfig(backend="pulse", generator=PRIOR, device="cpu", steps=steps))
    cfg = load_config()
    groups: dict[str, list[bool]] = {}
    for name, picture, whole in photo_faces():
        if whole:
            crop = cv2.resize(picture, (backend.out_size, backend.out_size), interpolation=cv2.INTER_CUBIC)
        else:
            spots = targets.find_faces([picture], cfg=cfg, crop_size=backend.out_size, framing=backend.framing)[0]
            if not spots:
                continue
            crop = targets.warp_face(picture, max(spots, key=lambda s: s.box[2] - s.box[0]).matrix, backend.out_size)
        result = backend.super_resolve(low_res(backend, [crop], pre_blur=False), [None], seeds=[0])
        groups.setdefault(name.split("_")[0] if whole else name, []).append(bool(result.success[0]))
    return [{"photos": k, "faces": len(v), "reach_eps": round(sum(v) / len(v), 3)} for k, v in groups.items()]


def live_row(seconds: float) -> dict:
    from live import run as run_live_bench

    from pipeline.live.loop import LiveConfig

    # sr.fidelity=0: the face is replaced, so the model runs on every processed frame (at 1 a sharp face keeps its pixels)
    row = run_live_bench("dcgan-digiface-64, -w 0, adaptive", ["sr.backend=pulse", f"sr.generator={PRIOR}", "sr.fidelity=0"], LiveConfig(), seconds)
    return {k: v for k, v in row.items() if k != "report"}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=32, help="frames of the clip (default 32)")
    p.add_argument("--steps", type=int, default=100, help="a cold search's budget (PULSE's 100)")
    p.add_argument("--seed", type=int, default=0, help="the faces' latent paths")
    p.add_argument("--live-seconds", type=float, default=15.0)
    p.add_argument("--skip-live", action="store_true", help="leave out the live row")
    p.add_argument("--only-framing", action="store_true", help="only part 4, the framing")
    p.add_argument("--only-video", action="store_true", help="only parts 1-2, the clip through the video path")
    p.add_argument("--skip-video", action="store_true", help="leave out parts 1-2 (the direct path, photos and live only)")
    p.add_argument("--plain-framing", action="store_true", help="the search keeps the pipeline's framing (no refinement): as before issue 22's fix")
    p.add_argument("--sweep-framing-prior", type=float, nargs="+", metavar="W", help="only: the clip's crops searched at each framing prior weight (-1: none)")
    p.add_argument("--sweep-lr", type=float, nargs="+", metavar="LR", help="only: cold searches at each peak learning rate")
    p.add_argument("--quick", action="store_true", help="6 frames, 10-step budgets, no photos or live: checks the script runs")
    args = p.parse_args()
    if args.quick:
        args.frames, args.steps, args.skip_live = 6, 10, True
    if args.only_video:
        args.skip_live = True
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.plain_framing:
        entry = weights.REGISTRY[PRIOR]
        weights.REGISTRY[PRIOR] = dataclasses.replace(entry, search=tuple((k, v) for k, v in entry.search if k != "refine_framing"))
    start = time.perf_counter()
    if args.sweep_framing_prior:
        rows = framing_prior_rows(args.sweep_framing_prior, args, workdir)
        print("the pipeline's crops of 8 faces of the clip, searched cold with the framing refined, per prior weight:")
        print(table(rows, ["prior_weight", "reach_eps", "steps", "rmse_64", "scale_found_vs_true"]))
        write_json(args.json, {"sweep_framing_prior": rows})
        return
    if args.sweep_lr:
        rows = lr_rows(args.sweep_lr, steps=args.steps)
        print(f"cold searches on 16 faces the prior drew, shrunk straight to 16x16, budget {args.steps}:")
        print(table(rows, ["learning_rate", "reach_eps", "steps_per_face"]))
        write_json(args.json, {"sweep_lr": rows})
        return
    if args.only_framing:
        framing = framing_rows(args, workdir)
        print(f"MTCNN on {framing['detected']} of {framing['drawn']} drawn faces: mean landmarks' largest offset from each template "
              f"{framing['mean_landmarks_max_offset']} (crop sides); per-face spread (std) up to {framing['per_face_spread']}")
        print("each face's crop against its drawn framing (scale > 1: the crop shows the face larger), aligned to:")
        print(table(framing["crops"], ["template", "scale_mean", "scale_std", "shift_mean_px", "shift_std_px"]))
        print(table(framing["first_frame"], ["face", "crop_scale_vs_true", "centre_offset_px", "pipeline_crop", "framing_refined", "found_framing",
                                             "true_crop"]))
        write_json(args.json, {"framing": framing})
        return
    result = {"frames": args.frames, "steps": args.steps}
    if not args.skip_video:
        rows = video_rows(args, workdir)
        columns = ["schedule", "faces", "tracks", "reach_eps", "steps_per_face", "steps_vs_cold", "flicker", "truth_change", "flicker_vs_truth",
                   "flicker_vs_cold", "steps_vs_chain", "flicker_vs_chain", "rmse_64", "rmse_16", "faces_per_s"]
        print(f"real prior ({PRIOR}), {args.frames} frames of 2 drawn faces at 320x240 through `video` (sr.fidelity=0), cold budget {args.steps}")
        print(table(rows, columns))
        result |= {"rows": rows, "goals": goals(rows)}
        print(table(result["goals"], ["goal", "measured", "target", "met"]))
    if not (args.quick or args.only_video):
        result["direct"] = direct_rows(args)
        result["direct_goals"] = goals(result["direct"])
        print("the same faces shrunk straight to 16x16 (the prior's own framing; no detector, alignment or video coding):")
        print(table(result["direct"], ["schedule", "reach_eps", "steps_per_face", "steps_vs_cold", "flicker_vs_truth", "flicker_vs_cold",
                                       "steps_vs_chain", "flicker_vs_chain"]))
        print(table(result["direct_goals"], ["goal", "measured", "target", "met"]))
    if not (args.quick or args.only_video):
        result["photos"] = photo_rows(args.steps)
        print("cold searches on real photographs at 16x16 (the prior invents rendered faces; eps is rarely reachable):")
        print(table(result["photos"], ["photos", "faces", "reach_eps"]))
    if not args.skip_live:
        result["live"] = live_row(args.live_seconds)
        print("live, one real face (benchmarks/live.py's camera), the prior with the adaptive budget:")
        print(table([result["live"]], ["run", "p50_ms", "p95_ms", "fps", "drop_rate", "rung"]))
    print(f"total {time.perf_counter() - start:.0f} s")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
