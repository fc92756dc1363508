"""Training PFSR: the progressive schedule, the landmark-attention loss, one optimiser step.

The model side of `facezoom train` (the folder reading, face finding and the loop with its
progress bar and checkpoints are `pipeline/training/train.py`). After Kim et al. (BMVC 2019):

- Progressive schedule: stage 1 (16 -> 32) alone, then a fade to stage 2 (alpha 0 -> 1: the
  32x32 head, upsampled, hands over to the 64x64 one), stage 2, a fade to stage 3, stage 3.
  The paper's code spends 50k iterations per step with a fade at its start; `Schedule` gives
  both lengths explicitly.
- Targets per stage come from the same chain as the inputs (128 -> 64 -> 32 -> 16, 8-bit
  between levels): stage 1 learns 16 -> 32, stage 2 16 -> 64, stage 3 16 -> 128.
- Loss: pixel MSE plus a facial-attention term, `mean(M * (out - target)^2)` normalised by the
  mass of `M`, from stage 2 on (as the published code). The paper's `M` is the heatmaps of 68
  landmarks from a compressed FAN run on the target; here `M` is Gaussians at the detector's 5
  landmarks (eyes, nose, mouth corners), which every training crop already has from alignment.
  The paper's adversarial and perceptual terms are not used: they need a discriminator and VGG
  weights, and the pixel + attention objective is the one its PSNR/SSIM figures rest on.

Everything here takes tensors; randomness comes in as a `torch.Generator`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from models.networks.pfsr import LEVELS, OUT_SIZE, PFSRGenerator, progressive_downscale

FLIP_LANDMARKS = (1, 0, 2, 4, 3)  # a mirrored face: left/right eye and mouth corners swap


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16  # faces per step; the published code used 16-32 per GPU
    learning_rate: float = 1e-3  # Adam; the published train.py default
    stage_iters: int = 30_000  # steps at full strength per stage (with a fade, ~50k per stage as published)
    fade_iters: int = 20_000  # steps of each fade-in (stage 1 -> 2, 2 -> 3)
    attention_weight: float = 1.0  # weight of the landmark-attention term against the pixel MSE (ours)
    attention_sigma: float = 6.0  # px at 128x128: one Gaussian about an eye's half-width (ours)
    flip: bool = True  # random horizontal flips (the published data augmentation)
    seed: int = 0  # the batches and flips of step i depend only on (seed, i), so a resumed run continues exactly
    save_every: int = 1000  # steps between checkpoints

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.stage_iters < 1 or self.fade_iters < 0:
            raise ValueError(f"stage_iters must be >= 1 and fade_iters >= 0, got {self.stage_iters} and {self.fade_iters}")
        if self.attention_weight < 0 or not self.attention_sigma > 0:
            raise ValueError(f"attention_weight must be >= 0 and attention_sigma > 0, got {self.attention_weight} and {self.attention_sigma}")
        if self.save_every < 1:
            raise ValueError(f"save_every must be >= 1, got {self.save_every}")


@dataclasses.dataclass(frozen=True)
class Phase:
    step: int  # 1, 2 or 3: the stage whose output is trained
    alpha: float  # fade-in weight; 1.0 outside a fade
    name: str  # for the progress bar


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Stage 1, fade to 2, stage 2, fade to 3, stage 3; iteration i -> its `Phase`."""

    stage_iters: int
    fade_iters: int

    @property
    def total(self) -> int:
        return 3 * self.stage_iters + 2 * self.fade_iters

    def at(self, iteration: int) -> Phase:
        if not 0 <= iteration < self.total:
            raise ValueError(f"iteration must be in 0..{self.total - 1}, got {iteration}")
        s, f = self.stage_iters, self.fade_iters
        bounds = [(s, 1, None), (f, 2, "fade"), (s, 2, None), (f, 3, "fade"), (s, 3, None)]
        start = 0
        for length, step, kind in bounds:
            if iteration < start + length:
                if kind == "fade":
                    return Phase(step, (iteration - start) / length, f"fade {step - 1}->{step}")
                return Phase(step, 1.0, f"stage {step}")
            start += length
        raise AssertionError("unreachable")


def stage_images(hr: torch.Tensor) -> dict[int, torch.Tensor]:
    """The chain of one batch of 128x128 faces: `{128: hr, 64: ..., 32: ..., 16: input}`, each `[B, 3, s, s]`."""
    if hr.ndim != 4 or tuple(hr.shape[1:]) != (3, OUT_SIZE, OUT_SIZE):
        raise ValueError(f"training faces must be [B, 3, {OUT_SIZE}, {OUT_SIZE}], got {list(hr.shape)}")
    out = {OUT_SIZE: hr}
    x = hr
    for size in LEVELS[1:]:
        x = progressive_downscale(x, (size,))
        out[size] = x
    return out


def landmark_heatmap(landmarks: torch.Tensor, size: int, *, sigma: float) -> torch.Tensor:
    """Attention map `[B, 1, size, size]` in [0, 1]: the max of Gaussians at the landmarks.

    `landmarks`: `[B, K, 2]`, x then y, in pixels of the 128x128 crop (centres at integers);
    `sigma` in those pixels, scaled with the map.
    """
    if landmarks.ndim != 3 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must be [B, K, 2], got {list(landmarks.shape)}")
    scale = size / OUT_SIZE
    points = (landmarks.float() + 0.5) * scale - 0.5  # [B, K, 2] in map pixels
    coords = torch.arange(size, device=landmarks.device, dtype=torch.float32)
    dx = coords[None, None, None, :] - points[..., 0, None, None]  # [B, K, 1, size]
    dy = coords[None, None, :, None] - points[..., 1, None, None]  # [B, K, size, 1]
    s = sigma * scale
    return torch.exp(-(dx * dx + dy * dy) / (2 * s * s)).amax(1, keepdim=True)  # [B, 1, size, size]


def pfsr_loss(out: torch.Tensor, target: torch.Tensor, heat: torch.Tensor | None, *, attention_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Pixel MSE (+ `attention_weight` x the heatmap-weighted MSE when `heat` is given)."""
    if out.shape != target.shape:
        raise ValueError(f"output {list(out.shape)} and target {list(target.shape)} differ")
    squared = (out - target).pow(2)
    pixel = squared.mean()
    parts = {"pixel": float(pixel.detach())}
    total = pixel
    if heat is not None and attention_weight > 0:
        attention = (squared * heat).sum() / (heat.sum() * out.shape[1]).clamp(min=1e-8)
        parts["attention"] = float(attention.detach())
        total = total + attention_weight * attention
    parts["loss"] = float(total.detach())
    return total, parts


def sample_batch(
    crops: torch.Tensor, landmarks: torch.Tensor, *, batch_size: int, flip: bool, rng: torch.Generator, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch: faces `[B, 3, 128, 128]` float in [-1, 1] and landmarks `[B, 5, 2]`.

    `crops`: `[N, 128, 128, 3]` uint8 (aligned faces); `landmarks`: `[N, 5, 2]` in crop pixels.
    """
    if crops.ndim != 4 or tuple(crops.shape[1:]) != (OUT_SIZE, OUT_SIZE, 3) or crops.dtype != torch.uint8:
        raise ValueError(f"crops must be [N, {OUT_SIZE}, {OUT_SIZE}, 3] uint8, got {list(crops.shape)} {crops.dtype}")
    if landmarks.shape != (crops.shape[0], 5, 2):
        raise ValueError(f"landmarks must be [N, 5, 2] = [{crops.shape[0]}, 5, 2], got {list(landmarks.shape)}")
    index = torch.randint(crops.shape[0], (batch_size,), generator=rng)
    faces = crops[index].permute(0, 3, 1, 2).float().div(127.5).sub(1)  # [B, 3, 128, 128]
    points = landmarks[index].float().clone()  # [B, 5, 2]
    if flip:
        mirrored = torch.rand(batch_size, generator=rng) < 0.5
        faces[mirrored] = faces[mirrored].flip(-1)
        flipped = points[mirrored][:, list(FLIP_LANDMARKS)]
        flipped[..., 0] = OUT_SIZE - 1 - flipped[..., 0]
        points[mirrored] = flipped
    return faces.to(device), points.to(device)


def batch_rng(seed: int, iteration: int) -> torch.Generator:
    """The generator that draws step `iteration`'s batch: resuming at any step draws the same batches."""
    return torch.Generator().manual_seed((seed * 1_000_003 + iteration) % (1 << 63))


def make_optimizer(generator: PFSRGenerator, cfg: TrainConfig) -> torch.optim.Adam:
    return torch.optim.Adam(generator.parameters(), lr=cfg.learning_rate)


def train_step(
    generator: PFSRGenerator, optimizer: torch.optim.Optimizer, faces: torch.Tensor, landmarks: torch.Tensor, phase: Phase, cfg: TrainConfig
) -> dict[str, float]:
    """One optimiser step on a batch of 128x128 faces at `phase`; returns the loss parts."""
    generator.train()
    chain = stage_images(faces)
    target = chain[16 << phase.step]  # [B, 3, 32 | 64 | 128, ...]
    out = generator(chain[16], phase.step, phase.alpha)
    heat = landmark_heatmap(landmarks, target.shape[-1], sigma=cfg.attention_sigma) if phase.step > 1 else None
    loss, parts = pfsr_loss(out, target, heat, attention_weight=cfg.attention_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return parts


def parse_channels(text: str | Sequence[int]) -> tuple[int, int, int, int]:
    """'published' or four comma-separated widths ('64,32,16,8') -> a channels tuple."""
    from models.networks.pfsr import PUBLISHED_CHANNELS

    if isinstance(text, str) and text.strip() == "published":
        return PUBLISHED_CHANNELS
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        widths = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"channels must be 'published' or four comma-separated integers like 64,32,16,8; got {text!r}") from None
    if len(widths) != 4 or min(widths) < 1:
        raise ValueError(f"channels must be four positive integers (trunk, stage 1, 2, 3 outputs), got {text!r}")
    return widths  # type: ignore[return-value]
