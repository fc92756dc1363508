"""PULSE's bicubic downscaler: the one way the `pulse` backend shrinks an image.

PULSE (Menon et al., "PULSE: Self-Supervised Photo Upsampling via Latent Space Exploration of
Generative Models", CVPR 2020) defines its loss through one fixed downscaler (`bicubic.py` in
alex-damian/pulse): a separable Keys cubic with a = -0.5, stretched by the scale factor into an
antialiasing kernel 4·factor taps wide and normalised to sum 1, applied with reflect padding and
stride = factor. A face is only a valid answer if *this* operator maps it back onto the input,
so the pipeline makes every low-res input with it too (never a generic resize).

The operator is built here as one `[out, in]` matrix per axis (reflect padding folded in), which
is the same linear map as PULSE's padded strided convolution for every even integer factor (all
factors PULSE used: 1024 / 16 = 64) and extends it to any size: for factor f the output pixel o
is centred at input coordinate (o + 0.5)·f − 0.5 (for odd factors PULSE's padding sits half a
pixel off that centre; we keep the centre exact).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

A = -0.5  # PULSE's bicubic parameter (Keys' kernel; -0.75 would be OpenCV's)


def cubic(x: np.ndarray, a: float = A) -> np.ndarray:
    """Keys' cubic convolution kernel at offsets `x` (in input pixels / factor)."""
    x = np.abs(x)
    near = (a + 2) * x**3 - (a + 3) * x**2 + 1
    far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _reflect(j: np.ndarray, n: int) -> np.ndarray:
    """Indices reflected into [0, n) the way `F.pad(mode='reflect')` mirrors (edge not repeated)."""
    if n == 1:
        return np.zeros_like(j)
    period = 2 * (n - 1)
    j = np.mod(j, period)
    return np.where(j < n, j, period - j)


@functools.lru_cache(maxsize=64)
def _axis_matrix_np(n_in: int, n_out: int) -> np.ndarray:
    """`[n_out, n_in]` float64: row o holds the normalised taps of output pixel o."""
    f = n_in / n_out  # the scale factor (PULSE: an integer)
    out = np.zeros((n_out, n_in), dtype=np.float64)
    for o in range(n_out):
        centre = (o + 0.5) * f - 0.5
        lo, hi = math.ceil(centre - 2 * f), math.floor(centre + 2 * f)
        j = np.arange(lo, hi + 1)
        offsets = (j - centre) / f
        keep = np.abs(offsets) < 2  # the 4·f taps (for integer f) inside the kernel's support
        j, weights = j[keep], cubic(offsets[keep])
        weights = weights / weights.sum()
        np.add.at(out[o], _reflect(j, n_in), weights)
    return out


@functools.lru_cache(maxsize=64)
def axis_matrix(n_in: int, n_out: int, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 1-D downscaling operator from `n_in` to `n_out` samples: `[n_out, n_in]` (shared: read
    it, do not write it). Cached on its device: PULSE's search downscales twice per step."""
    if not 1 <= n_out <= n_in:
        raise ValueError(f"the bicubic downscaler only shrinks: got {n_in} -> {n_out} pixels")
    return torch.from_numpy(_axis_matrix_np(n_in, n_out)).to(device=device, dtype=dtype)


def bicubic_downscale(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Shrink `[B, C, H, W]` to `[B, C, size, size]` with PULSE's antialiased bicubic kernel.

    Linear (so it commutes with the [-1, 1] <-> [0, 1] mapping), differentiable, unclamped.
    """
    if images.ndim != 4:
        raise ValueError(f"bicubic_downscale expects [B, C, H, W], got {list(images.shape)}")
    out_h, out_w = (size, size) if isinstance(size, int) else size
    _, _, h, w = images.shape
    if out_h > h or out_w > w:
        raise ValueError(f"bicubic_downscale only shrinks: got {h}x{w} -> {out_h}x{out_w}")
    rows = axis_matrix(h, out_h, device=images.device, dtype=images.dtype)  # [out_h, H]
    cols = axis_matrix(w, out_w, device=images.device, dtype=images.dtype)  # [out_w, W]
    return rows @ images @ cols.T  # [B, C, out_h, out_w]
