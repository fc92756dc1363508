"""Training for `facezoom train` (parsed in `pipeline/commands/train.py`): train a PFSR generator (the `ffsr` backend's model) on a folder of face photos.

    facezoom train FACES/ -o my_pfsr.ckpt [--channels published] [--stage-iters N --fade-iters N]
    facezoom video in.mp4 -o out.mp4 --set sr.backend=ffsr --set sr.generator=my_pfsr.ckpt

Steps: (1) find the images; (2) find every face with the pipeline's own detector (the `detect`
settings, `--set detect.*` included) and align it with the pipeline's own similarity transform
into a 128x128 crop, keeping its 5 landmarks in crop pixels, so training faces are framed
exactly as `facezoom video` will frame them; (3) run the progressive schedule
(`models.pfsr_train`), with a progress bar showing the loss; (4) write checkpoints in the
published PFSR layout (`model_state_dict`, `step`, `alpha`, `iteration`, plus the optimiser
state for `--resume`), atomically, every `--save-every` steps and at the end.

Faces are held in memory as 8-bit crops (48 KiB each; `--faces-cache FILE.npz` keeps them for
the next run). Randomness comes from `--seed` alone: the batches of step i depend only on the
seed and i, so a resumed run continues as if it had not stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.errors import InputError, UserError

log = logging.getLogger(__name__)

CROP_SIZE = 128  # PFSR's output side: training faces are aligned at it
READ_BATCH = 16  # images read and detected at once (bounds memory for big photos)


@dataclasses.dataclass
class FaceSet:
    """Aligned training faces."""

    crops: np.ndarray  # [N, 128, 128, 3] uint8 RGB, FFHQ framing (pipeline/stages/align.py)
    landmarks: np.ndarray  # [N, 5, 2] float32, crop pixels, MTCNN's order
    sources: list[str]  # per face: the image it came from

    def __post_init__(self):
        n = len(self.crops)
        if self.crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3) or self.crops.dtype != np.uint8:
            raise ValueError(f"crops must be [N, {CROP_SIZE}, {CROP_SIZE}, 3] uint8, got {list(self.crops.shape)} {self.crops.dtype}")
        if self.landmarks.shape != (n, 5, 2) or len(self.sources) != n:
            raise ValueError(f"landmarks must be [{n}, 5, 2] and sources {n} long, got {list(self.landmarks.shape)} and {len(self.sources)}")

    def __len__(self) -> int:
        return len(self.crops)

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.partial.npz")
        np.savez(tmp, crops=self.crops, landmarks=self.landmarks, sources=np.array(self.sources))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "FaceSet":
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(data["crops"], data["landmarks"].astype(np.float32), [str(s) for s in data["sources"]])
        except (OSError, KeyError, ValueError) as err:
            raise UserError(f"--faces-cache {path} is not a faces file written by `facezoom train` ({err}); delete it or pass another path") from None


def find_images(folder: str | Path) -> list[Path]:
    """Every picture under `folder` (`stills.is_picture`), sorted."""
    from pipeline.media.stills import IMAGE_SUFFIXES, is_picture

    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; give a folder of face images")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and is_picture(p))
    if not paths:
        raise UserError(f"no images in {root} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return paths


def read_rgb(path: Path) -> np.ndarray | None:
    """`[H, W, 3] uint8 RGB` (the first frame, read as zoom and enhance read it), or None when the
    file cannot be decoded."""
    from pipeline.media.stills import read_picture

    try:
        return read_picture(path).frames[0]
    except InputError:
        return None


def collect_faces(paths: Sequence[Path], detector, *, min_face: float, size: int = CROP_SIZE, progress: bool = False) -> FaceSet:
    """Detect, align and crop every face in `paths` as the video pipeline does.

    `detector`: a `pipeline.stages.detect.FaceDetector`. Faces whose box is narrower than `min_face`
    source pixels are skipped. Unreadable files are skipped with a warning.
    """
    from tqdm import tqdm

    from pipeline.stages.align import similarity_transform, transform_points, warp_face

    crops, landmarks, sources = [], [], []
    unreadable = small = 0
    with tqdm(total=len(paths), unit="image", desc="finding faces", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(paths), READ_BATCH):
            batch = []
            for path in paths[start:start + READ_BATCH]:
                image = read_rgb(path)
                if image is None:
                    unreadable += 1
                    log.warning("skipping %s: not an image this build of OpenCV can read", path)
                else:
                    batch.append((path, image))
            for (path, image), found in zip(batch, detector.detect([im for _, im in batch]) if batch else []):
                for box, points in zip(found.boxes, found.landmarks):
                    if box[2] - box[0] < min_face:
                        small += 1
                        continue
                    matrix = similarity_transform(points, size)  # [2, 3] source -> crop
                    crops.append(warp_face(image, matrix, size))
                    landmarks.append(transform_points(matrix, points).astype(np.float32))
                    sources.append(str(path))
            bar.update(min(READ_BATCH, len(paths) - start))
            bar.set_postfix(faces=len(crops))
    log.info("found %d faces in %d images (%d smaller than %g px skipped, %d unreadable files)", len(crops), len(paths), small, min_face, unreadable)
    if not crops:
        raise UserError(
            f"no usable faces in {len(paths)} images ({small} were narrower than --min-face {min_face:g} px, "
            f"{unreadable} files unreadable); use photos with faces at least that wide, or lower --min-face"
        )
    return FaceSet(np.stack(crops), np.stack(landmarks), sources)


def train_pfsr(
    faces: FaceSet,
    output: str | Path,
    *,
    cfg,
    channels: Sequence[int] | None = None,
    resume: str | Path | None = None,
    max_steps: int | None = None,
    device: str = "auto",
    progress: bool = False,
) -> dict:
    """Train (or continue training) a PFSR generator on `faces`; write checkpoints to `output`.

    `cfg`: a `models.pfsr_train.TrainConfig`. `channels`: widths of a new generator (None = the
    published ones); a resumed run keeps its checkpoint's. `max_steps`: stop after this many
    steps (saving a checkpoint there), to be continued with `resume`. Returns a summary:
    iterations done, the schedule's total, the mean loss of the first and last 10 steps run,
    the final phase.
    """
    from models.backends.base import resolve_device
    from models.pfsr_train import Schedule

    dev = resolve_device(device, "train --device")
    schedule = Schedule(cfg.stage_iters, cfg.fade_iters)
    # 1. The generator and its optimiser: new, or as the checkpoint left them.
    generator, optimizer, start = _resume(resume, schedule, cfg=cfg, device=dev) if resume is not None else _new(cfg, channels, dev)
    if resume is not None and channels is not None and tuple(channels) != generator.channels:
        log.warning("--channels %s ignored: %s was trained with %s", list(channels), resume, list(generator.channels))
    # 2. The loop: step i's batch comes from (seed, i); checkpoints every save_every steps.
    stop = schedule.total if max_steps is None else min(schedule.total, start + max_steps)
    losses, phase = _train_steps(generator, optimizer, faces, output, schedule, start=start, stop=stop, cfg=cfg, device=dev, progress=progress)
    return {
        "iterations": start + len(losses),
        "total": schedule.total,
        "steps_run": len(losses),
        "first_loss": float(np.mean(losses[:10])) if losses else None,
        "last_loss": float(np.mean(losses[-10:])) if losses else None,
        "phase": phase.name,
        "channels": list(generator.channels),
    }


def _new(cfg, channels: Sequence[int] | None, device):
    """A new generator (its initial weights from `cfg.seed`, the global RNG left alone) and its optimiser."""
    import torch

    from models.networks.pfsr import PUBLISHED_CHANNELS, PFSRGenerator
    from models.pfsr_train import make_optimizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        generator = PFSRGenerator(channels or PUBLISHED_CHANNELS)
    generator.to(device)
    return generator, make_optimizer(generator, cfg), 0


def _resume(resume: str | Path, schedule, *, cfg, device):
    """The generator, optimiser and iteration a checkpoint left."""
    from models.networks.pfsr import load_pfsr
    from models.pfsr_train import make_optimizer

    loaded = load_pfsr(resume)
    generator, start = loaded.generator, loaded.iteration
    generator.to(device)
    optimizer = make_optimizer(generator, cfg)
    if "optimizer_state_dict" in loaded.extra:
        optimizer.load_state_dict(loaded.extra["optimizer_state_dict"])
        for group in optimizer.param_groups:
            group["lr"] = cfg.learning_rate
    else:
        log.warning("%s holds no optimiser state (a published file?); Adam restarts from zero moments", resume)
    if start > schedule.total:
        raise UserError(f"{resume} is at iteration {start}, beyond this schedule's {schedule.total}; raise --stage-iters/--fade-iters")
    return generator, optimizer, start


def _train_steps(generator, optimizer, faces: FaceSet, output, schedule, *, start: int, stop: int, cfg, device, progress: bool):
    """Steps `start` .. `stop - 1`, saving checkpoints; returns the losses and the last phase."""
    import torch
    from tqdm import tqdm

    from models.networks.pfsr import published_state
    from models.pfsr_train import batch_rng, sample_batch, train_step
    from models.weights import save_checkpoint

    crops = torch.from_numpy(faces.crops)  # [N, 128, 128, 3] uint8, on the CPU
    points = torch.from_numpy(faces.landmarks)  # [N, 5, 2]
    losses: list[float] = []
    phase = schedule.at(min(start, schedule.total - 1))
    smoothed = None
    with tqdm(total=schedule.total, initial=start, unit="step", desc="training", file=sys.stderr, disable=not progress) as bar:
        for iteration in range(start, stop):
            phase = schedule.at(iteration)
            batch, batch_points = sample_batch(crops, points, batch_size=cfg.batch_size, flip=cfg.flip, rng=batch_rng(cfg.seed, iteration), device=device)
            parts = train_step(generator, optimizer, batch, batch_points, phase, cfg)
            if not np.isfinite(parts["loss"]):
                raise UserError(f"the loss became {parts['loss']} at step {iteration} ({phase.name}); lower --lr and --resume from the last checkpoint")
            losses.append(parts["loss"])
            smoothed = parts["loss"] if smoothed is None else 0.95 * smoothed + 0.05 * parts["loss"]
            bar.set_postfix_str(f"{phase.name} alpha={phase.alpha:.2f} loss={smoothed:.4f}", refresh=False)
            bar.update(1)
            done = iteration + 1
            if done % cfg.save_every == 0 or done == stop:
                save_checkpoint(output, published_state(generator, step=phase.step, alpha=phase.alpha, iteration=done,
                                                        optimizer_state_dict=optimizer.state_dict()))
                log.info("saved %s at step %d (%s)", output, done, phase.name)
    return losses, phase


