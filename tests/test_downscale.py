"""PULSE's bicubic downscaler (models/downscale.py): the operator PULSE's loss and our inputs share."""

import math

import pytest
import torch
import torch.nn.functional as F

from models.downscale import bicubic_downscale, cubic


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pulse_reference(x: torch.Tensor, factor: int) -> torch.Tensor:
    """PULSE's construction, written from its description: a 4·factor-tap kernel
    k[i] = cubic((i - floor(size / 2) + 0.5) / factor) normalised to 1, reflect padding
    (size - factor) split floor/ceil, then separable convolutions with stride = factor."""
    size = 4 * factor
    taps = torch.tensor([float(cubic((i - math.floor(size / 2) + 0.5) / factor)) for i in range(size)], dtype=x.dtype)
    taps = taps / taps.sum()
    c = x.shape[1]
    pad = size - factor
    top, bottom = pad // 2, pad - pad // 2
    x = F.pad(x, (0, 0, top, bottom), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, size, 1).repeat(c, 1, 1, 1), stride=(factor, 1), groups=c)
    x = F.pad(x, (top, bottom, 0, 0), mode="reflect")
    return F.conv2d(x, taps.view(1, 1, 1, size).repeat(c, 1, 1, 1), stride=(1, factor), groups=c)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_matches_pulse_for_even_factors(factor):
    x = torch.rand(2, 3, 16 * factor, 16 * factor, generator=torch.Generator().manual_seed(factor), dtype=torch.float64)
    ours = bicubic_downscale(x, 16)
    assert ours.shape == (2, 3, 16, 16)
    torch.testing.assert_close(ours, pulse_reference(x, factor), rtol=0, atol=1e-12)


def test_kernel_is_keys_cubic_with_a_minus_half():
    assert cubic(0.0) == 1.0 and cubic(1.0) == 0.0 and cubic(2.0) == 0.0
    assert cubic(0.5) == pytest.approx(0.5625)  # (a+2)/8 - (a+3)/4 + 1 with a = -0.5
    assert cubic(1.5) == pytest.approx(-0.0625)  # the negative lobe: a x^3 - 5a x^2 + 8a x - 4a at x = 1.5


def test_constant_stays_constant_and_mapping_to_unit_scale_commutes():
    x = torch.full((1, 3, 64, 64), 0.3)
    torch.testing.assert_close(bicubic_downscale(x, 16), torch.full((1, 3, 16, 16), 0.3))
    y = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(bicubic_downscale((y + 1) / 2, 16), (bicubic_downscale(y, 16) + 1) / 2)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_pixel_centres_align(factor):
    """A ramp shrinks to its values at the output pixel centres: a half-pixel shift (the
    classic misaligned resize) would move every face feature."""
    n = 16 * factor
    ramp = torch.arange(n, dtype=torch.float64).view(1, 1, 1, n).expand(1, 1, n, n)
    out = bicubic_downscale(ramp, 16)[0, 0, 8]  # one row
    centres = (torch.arange(16, dtype=torch.float64) + 0.5) * factor - 0.5
    torch.testing.assert_close(out[2:-2], centres[2:-2])  # away from the reflected borders


def test_any_size_and_rejects_upscaling():
    x = torch.rand(2, 3, 50, 37)
    assert bicubic_downscale(x, (13, 7)).shape == (2, 3, 13, 7)
    with pytest.raises(ValueError, match="only shrinks"):
        bicubic_downscale(x, 64)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        bicubic_downscale(x[0], 16)


def test_differentiable():
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    bicubic_downscale(x, 16).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
