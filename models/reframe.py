"""The framing refinement of the latent search: a small similarity transform of the generated face.

A generator draws its faces framed exactly as its training crops were; the pipeline aligns a
face in a video frame to that framing from five detected landmarks, and a landmark detector is a
few per cent off on any one face (MTCNN on faces the DigiFace prior drew: up to 0.046 crop sides,
one crop 11% wider than the face was drawn; `benchmarks/real_prior.py --only-framing`). At PULSE's
eps no face of the prior then downscales onto the crop. So the search may also move the drawn face
inside the crop: a similarity (log-scale, rotation, shift) per search, optimised with the latent,
and the face it returns is the render warped into the crop's frame (`reframe`, differentiable
`grid_sample`), so the composite stays aligned with no change to the pipeline.

Where the warped render does not cover the crop (the crop is wider than the drawn face), the
input itself fills it: the low-res crop enlarged with a bicubic kernel. The model has no pixels
there; the input's own keep the returned face consistent with it and add no invented detail.
The transform is bounded (`LIMITS`), so the drawn face always covers most of the crop: the search
cannot shrink it away and let the input explain itself.

The parameters `[N, 4]`: log of the scale (> 0: the face appears larger in the crop), rotation
(radians, from x towards y: clockwise on screen), shift x and y (in half crop sides, the unit of
`affine_grid`: 0.1 is 5% of the side). Zero is the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DIM = 4
LIMITS = (0.2, 0.2, 0.2, 0.2)  # |log scale| <= 0.2 (0.82x..1.22x), |rotation| <= 0.2 rad (11 deg), |shift| <= 10% of the side


SPREAD = (0.04, 0.05, 0.025, 0.025)  # one face's framing error from MTCNN's landmarks (std): 4% scale, 0.8 px of 64
# The loss's weight of sum((theta / SPREAD) ** 2), off. Without it the search favours shrinking the
# face (the fill matches the input for free): on 8 of the benchmark clip's crops it found 0.92x the
# true scale, 0.95x at 0.025 (`python benchmarks/real_prior.py --sweep-framing-prior`). Through the
# video path 0.025 brought the error to the truth back to what it was without the refinement
# (RMSE 13.3 at 64 px against 14.4-14.7 at 0), but keyframe segments of 8 flickered 1.15x the
# chain (1.09x at 0; the goal is 1.1x): off, until a longer measurement says otherwise.
PRIOR_WEIGHT = 0.0


def prior(theta: torch.Tensor) -> torch.Tensor:
    """The framing's prior term of the loss `[N]` for `theta` `[N, 4]`: a gaussian at the identity, MTCNN's spread wide."""
    return PRIOR_WEIGHT * (theta / theta.new_tensor(SPREAD)).pow(2).sum(-1)


def identity(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """`n` identity transforms: `[n, 4]` zeros."""
    return torch.zeros(n, DIM, device=device)


def clamp(theta: torch.Tensor) -> torch.Tensor:
    """`theta` `[N, 4]` within `LIMITS` (the projection after each optimiser step)."""
    limit = theta.new_tensor(LIMITS)
    return torch.maximum(torch.minimum(theta, limit), -limit)


def sampling_matrix(theta: torch.Tensor) -> torch.Tensor:
    """`[N, 4]` -> `[N, 2, 3]`: where each crop point (affine_grid's [-1, 1] units) samples the render.

    The face is scaled by exp(log scale) and rotated about the crop's centre, then shifted: the
    render point for crop point p is `R(-rot) (p - shift) / scale`."""
    inv = torch.exp(-theta[:, 0])
    cos, sin = torch.cos(theta[:, 1]) * inv, torch.sin(theta[:, 1]) * inv
    shift = theta[:, 2:4]
    a = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # [N, 2, 2]
    return torch.cat([a, -(a @ shift.unsqueeze(-1))], -1)  # [N, 2, 3]


def reframe(image: torch.Tensor, theta: torch.Tensor, fill: torch.Tensor | None) -> torch.Tensor:
    """Renders `[N, 3, R, R]` moved into the crop's frame by `theta` `[N, 4]`; where the moved render
    does not reach, `fill` `[N, 3, R, R]` (None: zero). Differentiable in both image and theta."""
    if image.ndim != 4 or theta.shape != (image.shape[0], DIM):
        raise ValueError(f"reframe takes renders [N, 3, R, R] and theta [N, {DIM}], got {list(image.shape)} and {list(theta.shape)}")
    grid = F.affine_grid(sampling_matrix(theta).to(image.dtype), list(image.shape), align_corners=False)  # [N, R, R, 2]
    ones = torch.ones_like(image[:, :1])
    both = F.grid_sample(torch.cat([image, ones], 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    face, alpha = both[:, :-1], both[:, -1:]  # zero padding: the face is already weighted by alpha
    return face if fill is None else face + (1 - alpha) * fill


def fill_for(lr: torch.Tensor, size: int) -> torch.Tensor:
    """What fills the crop where the moved render does not reach: the low-res input `[N, 3, in, in]`
    enlarged to `size` (bicubic, clamped to [-1, 1])."""
    return F.interpolate(lr, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def to_pixels(theta: torch.Tensor, size: int) -> dict[str, torch.Tensor]:
    """The transforms in plain terms for a `size` crop: scale, rotation in degrees, shift in pixels."""
    return {"scale": torch.exp(theta[..., 0]), "degrees": torch.rad2deg(theta[..., 1]),
            "shift_px": theta[..., 2:4] * size / 2}
