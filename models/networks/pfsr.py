"""Progressive Face Super-Resolution: the generator, its downscaler, strict checkpoint loading.

PFSR (Kim, Kim, Kwon and Kim, "Progressive Face Super-Resolution via Attention to Facial
Landmark", BMVC 2019; DeokyunKim/Progressive-Face-Super-Resolution `model.py`, `dataloader.py`,
`eval.py`, `demo.py`) is feed-forward: one pass turns a 16x16 face into a 128x128 one, in three
2x stages. Written here from the published definition; the facts that matter:

- Stage 1 (16 -> 32): a plain 3x3 conv (3 -> 512), batch norm, ReLU, a residual block, a 4x4
  stride-2 transposed conv (512 -> 256), batch norm, ReLU. Stage 2 (-> 64) and stage 3 (-> 128):
  a residual block and a transposed conv (256 -> 128, 128 -> 64), each with batch norm and ReLU.
  A 1x1 RGB head per stage (256, 128, 64 channels -> 3); no output non-linearity.
- A residual block is (equalised-lr 3x3 conv, batch norm, ReLU) twice, plus the input. An
  equalised-lr conv stores its weight unscaled as `weight_orig` and multiplies it by
  sqrt(2 / fan_in) on every call (rosinality's EqualLR); only `weight_orig` is in the state dict.
- `forward(x, step, alpha)`: with `0 <= alpha < 1` at step 2 or 3 the output fades from the
  previous stage's RGB head, upsampled 2x by nearest neighbour, to the new stage's:
  `(1 - alpha) * skip + alpha * new`; otherwise the stage's own head alone.
- Checkpoints: `{"model_state_dict", "step", "alpha", "iteration"}`; a data-parallel run saves
  the same keys behind `module.`. The reference `eval.py`/`demo.py` load with `strict=False`, so
  a prefixed file silently loads nothing and the network returns noise (their issue #4: the
  distributed file, loaded that way, gave noise); here every key and shape is checked, and
  prefixes are understood.
- The input must be made as the training data was: the 128x128 face shrunk to 64, then 32, then
  16, each step a PIL bilinear resize of an 8-bit image (torchvision `Resize` on PIL images).
  `progressive_downscale` is that chain: PIL's bilinear filter is a triangle stretched by the
  scale factor, which PyTorch's `interpolate(..., antialias=True)` reproduces, applied as PIL
  does (horizontal pass, then vertical, each rounded half up to 8 bits): bit-exact with PIL for
  128 -> 16. Fed anything else, the published weights distort faces.

The `ffsr` backend that runs it on video, with its temporal blending, is models/backends/ffsr.py.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.errors import ModelError
from models.weights import strip_data_parallel

log = logging.getLogger(__name__)

PUBLISHED_CHANNELS = (512, 256, 128, 64)  # stage-1 trunk, then the output of each transposed conv
IN_SIZE = 16  # PFSR's input side; three 2x stages
OUT_SIZE = 128  # its output side
LEVELS = (128, 64, 32, 16)  # the successive resizes its training inputs were made with
CHECKPOINT_KEYS = ("model_state_dict", "step", "alpha", "iteration")


# ---------------------------------------------------------------------------------------------
# The network


class _EqualLRWeight(nn.Module):
    """A 3x3 conv whose weight is stored as `weight_orig` ~ N(0, 1) and scaled by sqrt(2 / fan_in)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.weight_orig = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.scale = math.sqrt(2.0 / (in_ch * 9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight_orig * self.scale, self.bias, padding=1)


class EqualConv2d(nn.Module):
    """Equalised-learning-rate 3x3 conv; the inner `conv` gives the published `...conv.weight_orig` keys."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = _EqualLRWeight(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResBlock(nn.Module):
    """x + (EqualConv, BN, ReLU, EqualConv, BN, ReLU)(x)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Sequential(
            EqualConv2d(dim, dim), nn.BatchNorm2d(dim), nn.ReLU(),
            EqualConv2d(dim, dim), nn.BatchNorm2d(dim), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


def _up(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU()]


class PFSRGenerator(nn.Module):
    """The PFSR generator: `[B, 3, 16, 16]` in [-1, 1] -> `[B, 3, 16 * 2^step, ...]`.

    `channels` = (trunk, stage-1 out, stage-2 out, stage-3 out); the published network is
    `PUBLISHED_CHANNELS`. Narrower ones train fast on a CPU and keep the same key layout.
    """

    def __init__(self, channels: Sequence[int] = PUBLISHED_CHANNELS):
        super().__init__()
        if len(channels) != 4 or not all(isinstance(c, int) and c >= 1 for c in channels):
            raise ValueError(f"channels must be four positive integers (trunk, stage 1, 2, 3), got {channels!r}")
        c0, c1, c2, c3 = self.channels = tuple(int(c) for c in channels)
        self.step1 = nn.Sequential(nn.Conv2d(3, c0, 3, padding=1), nn.BatchNorm2d(c0), nn.ReLU(), ResBlock(c0), *_up(c0, c1))
        self.step2 = nn.Sequential(ResBlock(c1), *_up(c1, c2))
        self.step3 = nn.Sequential(ResBlock(c2), *_up(c2, c3))
        self.to_rgb = nn.ModuleList([nn.Conv2d(c, 3, kernel_size=1) for c in (c1, c2, c3)])

    def forward(self, x: torch.Tensor, step: int = 3, alpha: float = 1.0) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"PFSR input must be [B, 3, H, W], got {list(x.shape)}")
        if step not in (1, 2, 3):
            raise ValueError(f"step must be 1, 2 or 3 (output 2x, 4x, 8x), got {step!r}")
        stages = (self.step1, self.step2, self.step3)[:step]
        features = x
        for stage in stages[:-1]:
            features = stage(features)
        out = self.to_rgb[step - 1](stages[-1](features))  # [B, 3, 2^step H, 2^step W]
        if step > 1 and 0 <= alpha < 1:  # fade-in from the previous stage's head
            skip = F.interpolate(self.to_rgb[step - 2](features), scale_factor=2, mode="nearest")
            out = (1 - alpha) * skip + alpha * out
        return out


# ---------------------------------------------------------------------------------------------
# The downscaler its training inputs were made with


def _to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round to whole levels of 0..255, half up, as PIL stores each pass of a resize."""
    return (x + 0.5).floor().clamp(0, 255)


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear with PIL's support (the triangle widened by the shrink factor): `[B, C, height, width]`."""
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def progressive_downscale(images: torch.Tensor, levels: Sequence[int] = LEVELS) -> torch.Tensor:
    """PFSR's input chain: `[B, 3, H, W]` in [-1, 1] -> `[B, 3, levels[-1], levels[-1]]`.

    An image not at `levels[0]` is first resized to it (CelebA's 178x178 crops were resized to
    128 the same way), then to each following level in turn. The image is an 8-bit one, as
    PIL's was, and each resize is PIL's: a horizontal pass, then a vertical one,
    each rounded half up to 8 bits (bit-exact with PIL for the 2x steps; one level off on a
    few pixels in a thousand for other ratios). The arithmetic runs on the 0..255 scale, where
    PIL's many exact half-level ties stay exact.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"progressive_downscale expects [B, 3, H, W] images, got {list(images.shape)}")
    x = ((images.float() + 1) * 127.5).round().clamp(0, 255)  # [B, 3, H, W] on 0..255
    for size in levels:
        if tuple(x.shape[-2:]) != (size, size):
            x = _to_8bit(_resize(x, x.shape[-2], size))  # horizontal pass
            x = _to_8bit(_resize(x, size, size))  # vertical pass
    return x / 127.5 - 1


# ---------------------------------------------------------------------------------------------
# Checkpoints: the published layout, read strictly, written atomically


@dataclasses.dataclass
class PFSRCheckpoint:
    generator: PFSRGenerator
    step: int  # the progressive stage it was saved at (3 = the full 16 -> 128 network)
    alpha: float  # fade-in weight at that point (outside [0, 1) = no fade)
    iteration: int
    extra: dict  # anything else the file holds (facezoom's training keeps `optimizer_state_dict`)


def published_state(generator: PFSRGenerator, *, step: int, alpha: float, iteration: int, **extra) -> dict:
    """What a checkpoint file holds, in the published layout (plus any `extra` top-level keys)."""
    state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    return {"model_state_dict": state, "step": int(step), "alpha": float(alpha), "iteration": int(iteration), **extra}


def infer_channels(state: Mapping[str, torch.Tensor]) -> tuple[int, int, int, int] | None:
    """The widths a PFSR state dict was built with, from its conv shapes (None if they are absent)."""
    try:
        return (
            int(state["step1.0.weight"].shape[0]),
            int(state["step1.4.weight"].shape[1]),
            int(state["step2.1.weight"].shape[1]),
            int(state["step3.1.weight"].shape[1]),
        )
    except (KeyError, IndexError):
        return None


def _number(checkpoint: Mapping[str, object], key: str, source: str) -> float:
    value = checkpoint[key]
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1):  # numpy scalar, 0-d tensor
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelError(f"{source}: '{key}' must be a number, got {type(value).__name__}")
    return value


def read_checkpoint(checkpoint: Mapping[str, object], *, channels: Sequence[int] | None = None, source: str = "checkpoint") -> PFSRCheckpoint:
    """Build the generator a loaded checkpoint dict describes, checking every key and shape.

    `channels` pins the widths (a registry entry's); None reads them from the tensor shapes.
    """
    from models.generators import load_strictly

    missing = [k for k in CHECKPOINT_KEYS if k not in checkpoint]
    if missing:
        raise ModelError(
            f"{source}: not a PFSR checkpoint: missing top-level key(s) {', '.join(map(repr, missing))}; "
            f"expected {', '.join(map(repr, CHECKPOINT_KEYS))} (found {', '.join(map(repr, list(checkpoint)[:6]))})"
        )
    raw = checkpoint["model_state_dict"]
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ModelError(f"{source}: 'model_state_dict' must be a dict of tensors")
    state = strip_data_parallel(raw, source)
    step, alpha, iteration = _number(checkpoint, "step", source), _number(checkpoint, "alpha", source), _number(checkpoint, "iteration", source)
    if step not in (1, 2, 3):
        raise ModelError(f"{source}: 'step' must be 1, 2 or 3, got {step}")
    widths = tuple(channels) if channels is not None else (infer_channels(state) or PUBLISHED_CHANNELS)
    generator = load_strictly(lambda: PFSRGenerator(widths), state, f"{source} does not match the PFSR generator with channels {list(widths)}")
    extra = {k: v for k, v in checkpoint.items() if k not in CHECKPOINT_KEYS}
    return PFSRCheckpoint(generator, int(step), float(alpha), int(iteration), extra)


def load_pfsr(path: str | Path, *, channels: Sequence[int] | None = None) -> PFSRCheckpoint:
    """Read a PFSR checkpoint file (`torch.load(weights_only=True)`) strictly; the generator is on the CPU."""
    from models.weights import load_checkpoint

    loaded = read_checkpoint(load_checkpoint(path), channels=channels, source=str(path))
    log.info("loaded PFSR generator %s (channels %s, step %d, alpha %g, iteration %d)",
             path, list(loaded.generator.channels), loaded.step, loaded.alpha, loaded.iteration)
    return loaded
