"""The framing refinement's transform (models/reframe.py): what a face moved into its crop looks like."""

import math

import pytest
import torch

from models import reframe


def spot(size: int = 32, x: int = 10, y: int = 20) -> torch.Tensor:
    """A black `[1, 3, size, size]` render with one white pixel at (x, y)."""
    image = torch.full((1, 3, size, size), -1.0)
    image[:, :, y, x] = 1.0
    return image


def brightest(image: torch.Tensor) -> tuple[int, int]:
    i = int(image[0, 0].argmax())
    return i % image.shape[-1], i // image.shape[-1]


def test_zero_is_the_identity_and_a_shift_moves_the_face_by_its_pixels():
    image = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(reframe.reframe(image, reframe.identity(2), None), image, atol=1e-5, rtol=0)
    shift = torch.tensor([[0.0, 0.0, 4 / 16, -2 / 16]])  # half-sides: 4 / 16 of a 32 px crop's half is 4 px
    assert brightest(reframe.reframe(spot(), shift, None)) == (14, 18)
    assert reframe.to_pixels(shift, 32)["shift_px"].tolist() == [[4.0, -2.0]]


def test_scale_and_rotation_turn_about_the_crops_centre():
    centre = 15.5  # pixel centres: the crop's centre lies between pixels 15 and 16
    x, y = brightest(reframe.reframe(spot(x=10, y=20), torch.tensor([[math.log(2), 0.0, 0.0, 0.0]]), None))
    assert abs(x - (centre - 2 * 5.5)) <= 0.5 and abs(y - (centre + 2 * 4.5)) <= 0.5  # twice as far from the centre
    x, y = brightest(reframe.reframe(spot(x=26, y=16), torch.tensor([[0.0, math.pi / 2, 0.0, 0.0]]), None))
    assert abs(x - (centre - 0.5)) <= 1 and abs(y - (centre + 10.5)) <= 1  # (10.5, 0.5) from the centre turned to (-0.5, 10.5)


def test_where_the_moved_face_does_not_reach_the_fill_shows_and_the_transform_is_bounded():
    image, fill = torch.ones(1, 3, 32, 32), torch.full((1, 3, 32, 32), -0.5)
    smaller = reframe.reframe(image, torch.tensor([[-0.2, 0.0, 0.0, 0.0]]), fill)  # the face at 0.82x: a ring of fill
    assert smaller[0, 0, 0, 0] == pytest.approx(-0.5) and smaller[0, 0, 16, 16] == pytest.approx(1.0)
    assert reframe.clamp(torch.tensor([[1.0, -1.0, 0.05, -0.3]]))[0].tolist() == pytest.approx([0.2, -0.2, 0.05, -0.2])
    spread = torch.tensor([reframe.SPREAD])
    assert float(reframe.prior(reframe.identity(1))) == 0 and float(reframe.prior(2 * spread)) == pytest.approx(16 * reframe.PRIOR_WEIGHT)
    small = reframe.fill_for(torch.full((1, 3, 16, 16), 2.0), 64)
    assert small.shape == (1, 3, 64, 64) and float(small.max()) == 1.0  # enlarged and clamped to [-1, 1]


def test_gradients_reach_the_transform_and_wrong_shapes_are_refused():
    theta = torch.zeros(1, 4, requires_grad=True)
    reframe.reframe(torch.randn(1, 3, 16, 16), theta, torch.zeros(1, 3, 16, 16)).square().sum().backward()
    assert theta.grad is not None and bool((theta.grad != 0).any())
    with pytest.raises(ValueError, match=r"theta \[N, 4\], got \[1, 3, 16, 16\] and \[2, 4\]"):
        reframe.reframe(torch.zeros(1, 3, 16, 16), torch.zeros(2, 4), None)
