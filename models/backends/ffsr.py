"""`sr.backend=ffsr`: PFSR, one forward pass per face, batched, with temporal blending along tracks.

The network (PFSR: Kim, Kim, Kwon and Kim, "Progressive Face Super-Resolution via Attention to
Facial Landmark", BMVC 2019), its downscaler and its checkpoints are models/networks/pfsr.py;
this backend loads a stage-3 checkpoint, feeds it crops made by that downscaler, and blends each
face with its track's previous output.

Video (facezoom): with `temporal_blend` w > 0 the backend is stateful; each track keeps its
previous output, which is registered to the current output by phase correlation (the tracker's
alignment already makes the residual motion small) and blended in with weight w, less where the
two disagree (a mouth opening, an occluder), so a face flickers less without ghosting
(benchmarks/ffsr.py measures by how much).
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from models.backends.base import SRBackend, SRResult, TrackState, consistency
from models.errors import ModelError
from models.networks.pfsr import IN_SIZE, LEVELS, OUT_SIZE, PFSRGenerator, load_pfsr, progressive_downscale

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "pfsr-celeba"  # the registry entry `sr.backend=ffsr` uses when sr.generator is unset

# Temporal blending (facezoom's, not the paper's).
BLEND_TOLERANCE = 0.25  # [-1, 1] scale: disagreement of 5x5 local means at which the previous frame gets no weight
REGISTRATION_CYCLES = 6.0  # Gaussian band of the registration, cycles per crop side: eyes, nose, mouth; not texture
REGISTRATION_MIN_CONFIDENCE = 0.5  # correlation peak (1 = identical) below which a shift is not trusted
BLEND_MAX_SHIFT = 0.08  # of the crop side: a larger residual shift means a cut or a lost alignment; no blend


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
            raise ModelError(f"sr.generator={name} is a {pinned.layout} checkpoint, not a PFSR one; pick a pfsr entry from `facezoom weights list` or a PFSR checkpoint file")
        path = weights.resolve(name)
        channels = dict(pinned.arch).get("channels") if pinned is not None else None
        loaded = load_pfsr(path, channels=channels)
        if out_size not in (None, OUT_SIZE):
            log.info("ffsr: PFSR outputs 128x128; faces are resized to sr.out_size=%d", out_size)
        backend = cls(loaded.generator, step=loaded.step, alpha=loaded.alpha, out_size=out_size, eps=eps,
                      temporal_blend=temporal_blend, device=device)
        backend.weights = str(path)
        return backend

    def downscale_to(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """PFSR's own chain (-> 128 -> 64 -> 32 -> 16, 8-bit between levels), stopped at `size`:
        `[B, 3, H, W]` -> `[B, 3, size, size]` (the levels above `size`, then `size`)."""
        if images.ndim != 4 or images.shape[1] != 3 or min(images.shape[2:]) < size:
            raise ValueError(f"ffsr: downscale expects [B, 3, H, W] with H, W >= {size}, got {list(images.shape)}")
        levels = [level for level in LEVELS if level > size] + [size]
        return progressive_downscale(images.to(self.device), levels)

    def super_resolve(self, lr: torch.Tensor, states: Sequence[TrackState | None], *, seeds: Sequence[int], gaps=None) -> SRResult:
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
