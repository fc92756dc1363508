"""Progressive Face Super-Resolution: the generator, its downscaler, strict loading, the `ffsr` backend.

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

Video (facezoom): with `temporal_blend` w > 0 the backend is stateful; each track keeps its
previous output, which is registered to the current output by phase correlation (the tracker's
alignment already makes the residual motion small) and blended in with weight w, less where the
two disagree (a mouth opening, an occluder), so a face flickers less without ghosting
(benchmarks/ffsr.py measures by how much).
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

from models.backends.base import SRBackend, SRResult, TrackState, consistency
from models.errors import ModelError
from models.weights import strip_data_parallel

log = logging.getLogger(__name__)

PUBLISHED_CHANNELS = (512, 256, 128, 64)  # stage-1 trunk, then the output of each transposed conv
IN_SIZE = 16  # PFSR's input side; three 2x stages
OUT_SIZE = 128  # its output side
LEVELS = (128, 64, 32, 16)  # the successive resizes its training inputs were made with
CHECKPOINT_KEYS = ("model_state_dict", "step", "alpha", "iteration")
DEFAULT_WEIGHTS = "pfsr-celeba"  # the registry entry `sr.backend=ffsr` uses when sr.generator is unset

# Temporal blending (facezoom's, not the paper's).
BLEND_TOLERANCE = 0.25  # [-1, 1] scale: disagreement of 5x5 local means at which the previous frame gets no weight
REGISTRATION_CYCLES = 6.0  # Gaussian band of the registration, cycles per crop side: eyes, nose, mouth; not texture
REGISTRATION_MIN_CONFIDENCE = 0.5  # correlation peak (1 = identical) below which a shift is not trusted
BLEND_MAX_SHIFT = 0.08  # of the crop side: a larger residual shift means a cut or a lost alignment; no blend


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


# ---------------------------------------------------------------------------------------------
# Temporal blending along a track


def register(reference: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The translation `d` (pixels, x then y) with `moving(p) ~ reference(p - d)`: `[B, 2]`, and
    the confidence of each estimate: `[B]` in [0, 1].

    Phase correlation of the greyscale images under a Hann window, band-limited by a Gaussian
    (`REGISTRATION_CYCLES`) so the faces' coarse structure decides and per-frame texture does
    not; the peak is refined to sub-pixel by a Gaussian through it and its neighbours. The
    confidence is the peak's height against a perfect match's (1 for identical images; about
    0.9 and up for one face moved; 0.3 and below for two different faces or no structure).
    `reference`, `moving`: `[B, 3, S, S]`.
    """
    if reference.shape != moving.shape or reference.ndim != 4:
        raise ValueError(f"register needs two [B, 3, S, S] batches of one shape, got {list(reference.shape)} and {list(moving.shape)}")
    size_y, size_x = reference.shape[-2:]
    dev = reference.device
    window = torch.outer(torch.hann_window(size_y, periodic=False, device=dev), torch.hann_window(size_x, periodic=False, device=dev))
    a = (reference.float().mean(1) - reference.float().mean((1, 2, 3))[:, None, None]) * window  # [B, S, S]
    b = (moving.float().mean(1) - moving.float().mean((1, 2, 3))[:, None, None]) * window
    cross = torch.fft.fft2(b) * torch.fft.fft2(a).conj()
    fy = torch.fft.fftfreq(size_y, device=dev)[:, None] * size_y  # cycles per crop
    fx = torch.fft.fftfreq(size_x, device=dev)[None, :] * size_x
    band = torch.exp(-(fx * fx + fy * fy) / (2 * REGISTRATION_CYCLES**2))
    corr = torch.fft.ifft2(cross / cross.abs().clamp(min=1e-8) * band).real  # [B, S, S], peak at +d
    flat = corr.flatten(1).argmax(1)
    py, px = flat // size_x, flat % size_x
    rows = torch.arange(corr.shape[0], device=dev)

    def refine(c0, cm, cp):  # vertex of the parabola through the logs (a Gaussian peak)
        c0, cm, cp = (torch.log(v.clamp(min=1e-12)) for v in (c0, cm, cp))
        denom = cm - 2 * c0 + cp
        return torch.where(denom.abs() > 1e-12, 0.5 * (cm - cp) / denom, torch.zeros_like(c0)).clamp(-0.5, 0.5)

    c0 = corr[rows, py, px]
    dy = py.float() + refine(c0, corr[rows, (py - 1) % size_y, px], corr[rows, (py + 1) % size_y, px])
    dx = px.float() + refine(c0, corr[rows, py, (px - 1) % size_x], corr[rows, py, (px + 1) % size_x])
    dy = torch.where(dy > size_y / 2, dy - size_y, dy)  # wrap to [-S/2, S/2]
    dx = torch.where(dx > size_x / 2, dx - size_x, dx)
    return torch.stack([dx, dy], 1), (c0 / band.mean()).clamp(0, 1)


def shift_images(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """`out(p) = images(p - shift)`, bilinear, edges extended: `[B, C, H, W]`, shift `[B, 2]` (x, y)."""
    b, _, h, w = images.shape
    ys = (torch.arange(h, device=images.device, dtype=torch.float32) + 0.5) * 2 / h - 1
    xs = (torch.arange(w, device=images.device, dtype=torch.float32) + 0.5) * 2 / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None].expand(b, h, w, 2).clone()  # [B, H, W, 2]
    grid[..., 0] -= (shift[:, 0] * 2 / w)[:, None, None]
    grid[..., 1] -= (shift[:, 1] * 2 / h)[:, None, None]
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def temporal_blend(current: torch.Tensor, previous: torch.Tensor, weight: float) -> torch.Tensor:
    """Blend each face with its track's previous output, registered to it: `[B, 3, S, S]` in [-1, 1].

    The previous face is shifted onto the current one (phase correlation; the shift is used only
    where the correlation is confident and the shift brings the two closer) and mixed in with
    `weight`, scaled down pixel by pixel where they disagree (a difference of their 5x5 local
    means reaching `BLEND_TOLERANCE` gives it no weight). A confident residual shift beyond
    `BLEND_MAX_SHIFT` of the side means the track jumped: that face is left as it is.
    """
    if current.shape != previous.shape:
        raise ValueError(f"temporal_blend: current {list(current.shape)} and previous {list(previous.shape)} differ")
    shift, confidence = register(previous, current)  # [B, 2], [B]
    trusted = confidence >= REGISTRATION_MIN_CONFIDENCE  # else no structure to register, or not the same face
    shift = torch.where(trusted[:, None], shift, torch.zeros_like(shift))
    shifted = shift_images(previous, shift)  # [B, 3, S, S]
    # Keep the registration only where it brings the previous face closer (texture locked to the
    # pixel grid, such as a transposed conv's checkerboard, does not move with the face).
    closer = (current - shifted).abs().mean((1, 2, 3)) <= (current - previous).abs().mean((1, 2, 3))  # [B]
    aligned = torch.where(closer[:, None, None, None], shifted, previous)
    # Disagreement of the local means: per-frame invented texture (the flicker) averages out,
    # a real change (a mouth opening, an occluder, another face) does not.
    diff = F.avg_pool2d(current - aligned, 5, stride=1, padding=2, count_include_pad=False).abs().mean(1, keepdim=True)
    w = weight * (1 - diff / BLEND_TOLERANCE).clamp(0, 1)  # [B, 1, S, S]
    jumped = shift.abs().amax(1) > BLEND_MAX_SHIFT * current.shape[-1]  # (a trusted shift)
    w = torch.where(jumped[:, None, None, None], torch.zeros_like(w), w)
    return (1 - w) * current + w * aligned


# ---------------------------------------------------------------------------------------------
# The backend


class FFSRBackend(SRBackend):
    """`sr.backend=ffsr`: PFSR, one forward pass per face, batched; optional temporal blending."""

    name = "ffsr"

    def __init__(
        self,
        generator: PFSRGenerator,
        *,
        step: int = 3,
        alpha: float = 1.0,
        out_size: int | None = None,
        eps: float = 2e-3,
        temporal_blend: float = 0.0,
        device: torch.device | str = "cpu",
    ):
        if step != 3:
            raise ModelError(
                f"this PFSR checkpoint was saved at stage {step} (16 -> {16 << step}); the ffsr backend needs a "
                "stage-3 checkpoint (16 -> 128): train it through all three stages"
            )
        if not 0 <= temporal_blend < 1:
            raise ModelError(f"sr.temporal_blend must be in [0, 1), got {temporal_blend}")
        if 0 <= alpha < 1:
            log.warning("PFSR checkpoint is mid fade-in (alpha %.3f); its output still mixes in the 64x64 stage", alpha)
        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval().requires_grad_(False)
        self.step, self.alpha = step, alpha
        self.in_size = IN_SIZE
        self.out_size = out_size or OUT_SIZE
        if self.out_size < IN_SIZE:
            raise ModelError(f"sr.out_size={self.out_size} is smaller than PFSR's 16x16 input; use 128 (or leave it unset)")
        self.eps = eps
        self.blend = float(temporal_blend)
        self.stateful = self.blend > 0
        self.deterministic = self.device.type == "cpu"  # CUDA transposed convs may use atomics

    @classmethod
    def from_settings(
        cls,
        *,
        generator: str | None,
        device: torch.device,
        in_size: int,
        out_size: int | None,
        eps: float,
        temporal_blend: float,
    ) -> "FFSRBackend":
        """Build from `sr.*`: `generator` is a registry name, a checkpoint path, or None (`DEFAULT_WEIGHTS`)."""
        from models import weights

        if in_size != IN_SIZE:
            raise ModelError(f"sr.in_size={in_size}, but the ffsr backend (PFSR) takes 16x16 inputs only (three 2x stages to 128); set sr.in_size=16")
        name = DEFAULT_WEIGHTS if generator is None else generator
        pinned = weights.entry(name) if name in weights.REGISTRY else None
        if pinned is not None and pinned.layout != "pfsr":
            raise ModelError(f"sr.generator={name} is a {pinned.layout} checkpoint, not a PFSR one; pick a pfsr entry from `weights list` or a PFSR checkpoint file")
        path = weights.resolve(name)
        channels = dict(pinned.arch).get("channels") if pinned is not None else None
        loaded = load_pfsr(path, channels=channels)
        if out_size not in (None, OUT_SIZE):
            log.info("ffsr: PFSR outputs 128x128; faces are resized to sr.out_size=%d", out_size)
        return cls(loaded.generator, step=loaded.step, alpha=loaded.alpha, out_size=out_size, eps=eps,
                   temporal_blend=temporal_blend, device=device)

    def downscale(self, images: torch.Tensor) -> torch.Tensor:
        """PFSR's own chain (-> 128 -> 64 -> 32 -> 16, 8-bit between levels): `[B, 3, H, W]` -> `[B, 3, 16, 16]`."""
        if images.ndim != 4 or images.shape[1] != 3 or min(images.shape[2:]) < IN_SIZE:
            raise ValueError(f"ffsr: downscale expects [B, 3, H, W] with H, W >= {IN_SIZE}, got {list(images.shape)}")
        return progressive_downscale(images.to(self.device))

    def super_resolve(self, lr: torch.Tensor, states: Sequence[TrackState | None], *, seeds: Sequence[int]) -> SRResult:
        """One forward pass for the whole batch; see `SRBackend.super_resolve`. Seeds are unused (deterministic)."""
        self.check_lr(lr, states, seeds)
        lr = lr.to(self.device)
        with torch.no_grad():
            images = self.generator(lr, self.step, self.alpha).clamp(-1, 1)  # [B, 3, 128, 128]
            if self.out_size != OUT_SIZE:
                images = F.interpolate(images, size=(self.out_size, self.out_size), mode="bicubic",
                                       align_corners=False, antialias=self.out_size < OUT_SIZE).clamp(-1, 1)
            new_states: list[TrackState | None] = [None] * lr.shape[0]
            if self.stateful:
                images = self._blend(images, states)
                quantized = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()  # [B, 3, S, S]
                new_states = [{"previous": q} for q in quantized]
            err = consistency(self, images, lr)
        n = lr.shape[0]
        return SRResult(images=images, states=new_states, consistency=err.cpu(), success=(err <= self.eps).cpu(),
                        steps=torch.zeros(n, dtype=torch.int64))

    def _blend(self, images: torch.Tensor, states: Sequence[TrackState | None]) -> torch.Tensor:
        rows = [i for i, s in enumerate(states) if s is not None]
        if not rows:
            return images
        expected = (3, self.out_size, self.out_size)
        previous = []
        for i in rows:
            prev = states[i].get("previous") if isinstance(states[i], Mapping) else None
            if prev is None or tuple(prev.shape) != expected or prev.dtype != torch.uint8:
                got = "no 'previous'" if prev is None else f"{list(prev.shape)} {prev.dtype}"
                raise ValueError(f"ffsr: track state must hold 'previous' {list(expected)} uint8, got {got}; pass None to start the track afresh")
            previous.append(prev)
        prev = torch.stack(previous).to(self.device).float() / 127.5 - 1  # [R, 3, S, S]
        index = torch.tensor(rows, device=images.device)
        out = images.clone()
        out[index] = temporal_blend(images[index], prev, self.blend)
        return out
