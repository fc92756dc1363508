"""N latent searches at once: PULSE's loss, its spherical Adam with the one-cycle schedule, each
search's best render. The loop `models/search.py` runs for cold starts, warm starts and cuts alike.

Written out rather than torch.optim.Adam so searches can leave the batch as soon as they fit, each
with its own budget and schedule; the framing refinement (`models/reframe.py`) rides along as one
more, unprojected, parameter.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from models import reframe
from models.downscale import bicubic_downscale
from models.generators import GaussianFit, Generator

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as PULSE used them
ADAM_EPS = 1e-8


def one_cycle(step: int, budget: int) -> float:
    """PULSE's `linear1cycledrop` learning-rate factor at `step` of `budget`."""
    if step < 0.9 * budget:
        return (9 * (1 - abs(step / (0.9 * budget) - 0.5) * 2) + 1) / 10
    return 0.1 + (step - 0.9 * budget) / (0.1 * budget) * (0.001 - 0.1)


def geocross(w: torch.Tensor) -> torch.Tensor:
    """PULSE's GEOCROSS per search: mean squared geodesic angle between its W+ vectors, `[N, L, D] -> [N]`
    (zero for one vector: nothing to pull together)."""
    if w.shape[1] < 2:
        return w.new_zeros(w.shape[0])
    x, y = w[:, None, :, :], w[:, :, None, :]  # [N, 1, L, D], [N, L, 1, D]
    a = ((x - y).pow(2).sum(-1) + 1e-9).sqrt()
    b = ((x + y).pow(2).sum(-1) + 1e-9).sqrt()
    angle = 2 * torch.atan2(a, b)  # [N, L, L]
    return (angle.pow(2) * w.shape[-1]).mean((1, 2)) / 8.0


@dataclasses.dataclass
class Outcome:
    images: torch.Tensor  # [N, 3, R, R] best render (unclamped); NaN where no render scored a finite loss
    l2: torch.Tensor  # [N] its L2 (clamped render, clamped downscale)
    steps: torch.Tensor  # [N] int64 generator evaluations
    best: list[torch.Tensor]  # the latent [N, L, D], trainable maps [N, 1, s, s] and framing [N, 4] that rendered it


def optimise(
    generator: Generator,
    target: torch.Tensor,  # [N, 3, in, in] in [-1, 1]
    params: list[torch.Tensor],  # start: latent [N, L, D], the trainable noise maps [N, 1, s, s], the framing [N, 4] if refined
    fixed: list[torch.Tensor],  # the fixed noise maps [N, 1, s, s] (the last one zero)
    *,
    fit: GaussianFit | None,
    budgets: torch.Tensor,  # [N] int64 steps allowed
    peak_lr: torch.Tensor,  # [N] float32 schedule peak
    prior_weight: torch.Tensor,  # [N] float32 weight of |latent - start latent|^2 (0 = none)
    eps: float,
    l2_weight: float,
    geocross_weight: float,
    render_size: int,
    framing_lr: torch.Tensor | None = None,  # [N] float32: the framing's peak learning rate; None: no framing refined
) -> Outcome:
    """Run N searches until each fits (L2 <= eps) or spends its budget; each keeps its best render
    (moved into the crop's frame by its framing, where the framing is refined: models/reframe.py)."""
    # 1. The loss (with the start latents as the prior's anchor), the optimiser, no best render yet.
    device = target.device
    prior = params[0] if bool((prior_weight > 0).any()) else None
    fit = fit.to(device) if fit is not None else None
    fill = reframe.fill_for(target, render_size) if framing_lr is not None else None
    objective = _Objective(generator, target, fixed, fit, prior, prior_weight, eps, l2_weight, geocross_weight, render_size, fill)
    adam = _SphericalAdam(params, budgets=budgets, peak_lr=peak_lr, free_lr=framing_lr)
    best = _Best.start(adam.params, render_size, device)
    for step in range(int(budgets.max())):
        # 2. The searches still running: not yet fit, budget left.
        rows = (~best.done & (budgets > step)).nonzero().squeeze(1)  # [n_active]
        if rows.numel() == 0:
            break
        # 3. Render and score them; keep each one's best render.
        xs = [p[rows].requires_grad_(True) for p in adam.params]
        image, loss, l2_shown = objective(rows, xs)
        ok = best.record(rows, xs, image, loss, l2_shown, eps)
        if bool(ok.all()):
            continue
        # 4. One Adam step on the sphere for those that have not fit.
        loss.sum().backward()  # each search's loss depends only on its own variables
        adam.step(step, rows, xs, ok)
    return best.out


@dataclasses.dataclass
class _Objective:
    """PULSE's loss for N searches: `l2_weight * max(L2, eps) + geocross_weight * GEOCROSS`, plus the prior."""

    generator: Generator
    target: torch.Tensor  # [N, 3, in, in] in [-1, 1]
    fixed: list[torch.Tensor]  # [N, 1, s, s] fixed noise maps
    fit: GaussianFit | None  # the mapping network's gaussian fit, on the device (None: the generator has no mapping)
    prior: torch.Tensor | None  # [N, L, D] the start latents; None when no search has a prior
    prior_weight: torch.Tensor  # [N]
    eps: float
    l2_weight: float
    geocross_weight: float
    render_size: int
    fill: torch.Tensor | None  # [N, 3, R, R]: where the moved render does not reach; None: the framing is not refined

    def __call__(self, rows: torch.Tensor, xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Searches `rows` at `xs`: render `[n, 3, R, R]`, loss `[n]` (with its graph), L2 `[n]` of the image as returned."""
        every = rows.numel() == self.target.shape[0]  # then read the big fixed tensors in place instead of copying rows

        def take(x: torch.Tensor) -> torch.Tensor:
            return x if every else x[rows]

        in_size = self.target.shape[-1]
        framed = self.fill is not None
        w = self.generator.styles(xs[0], self.fit)  # [n, L, D]: W+ through the fit (StyleGAN), z itself (DCGAN)
        noise = xs[1:len(xs) - framed] + [take(m) for m in self.fixed]
        image = self.generator.synthesize(w, noise, render_size=self.render_size)  # [n, 3, R, R]
        if framed:  # the render moved into the crop's frame, the input where it does not reach
            image = reframe.reframe(image, xs[-1], take(self.fill))
        goal = take(self.target)
        l2 = ((bicubic_downscale(image, in_size) - goal) / 2).pow(2).flatten(1).mean(1)  # [n], [0, 1] scale
        loss = self.l2_weight * l2.clamp(min=self.eps) + self.geocross_weight * geocross(w)  # [n]
        if self.prior is not None:
            loss = loss + self.prior_weight[rows] * (xs[0] - self.prior[rows]).pow(2).sum(-1).mean(-1)
        if framed:
            loss = loss + reframe.prior(xs[-1])
        with torch.no_grad():  # success is judged on the image as returned: clamped, then the model's downscaler
            shown = bicubic_downscale(image.clamp(-1, 1), in_size).clamp(-1, 1)
            l2_shown = ((shown - goal) / 2).pow(2).flatten(1).mean(1)  # [n]
        return image, loss, l2_shown


@dataclasses.dataclass
class _Best:
    """Each search's best render so far: one that fits beats one that does not, then the lower loss.

    Until a render has a finite loss there is none: the images start as NaN, not as a finite
    placeholder. A search whose every render was NaN (NaN weights, a NaN gaussian fit) then
    returns NaN, and the caller's finiteness check refuses it; zeros here passed that check and
    were pasted as flat grey faces."""

    out: Outcome
    loss: torch.Tensor  # [N] the best render's loss
    ok: torch.Tensor  # [N] bool: the best render fits (L2 <= eps)
    done: torch.Tensor  # [N] bool: the search has fit and stopped

    @classmethod
    def start(cls, params: list[torch.Tensor], render_size: int, device: torch.device) -> "_Best":
        n = params[0].shape[0]
        out = Outcome(torch.full((n, 3, render_size, render_size), math.nan, device=device), torch.full((n,), math.inf, device=device),
                       torch.zeros(n, dtype=torch.int64, device=device), [p.clone() for p in params])
        return cls(out, torch.full((n,), math.inf, device=device), torch.zeros(n, dtype=torch.bool, device=device),
                   torch.zeros(n, dtype=torch.bool, device=device))

    def record(self, rows: torch.Tensor, xs: list[torch.Tensor], image: torch.Tensor, loss: torch.Tensor,
               l2_shown: torch.Tensor, eps: float) -> torch.Tensor:
        """Count one render for searches `rows`, keep it where it is their best; `[n]` bool: it fits."""
        with torch.no_grad():
            ok = l2_shown <= eps
            better = (ok & ~self.ok[rows]) | ((ok == self.ok[rows]) & (loss < self.loss[rows]))
            keep = rows[better]
            self.out.images[keep], self.out.l2[keep] = image[better], l2_shown[better]
            self.loss[keep], self.ok[keep] = loss[better], ok[better]
            for b, x in zip(self.out.best, xs):
                b[keep] = x[better]
            self.out.steps[rows] += 1
            self.done[rows[ok]] = True
        return ok


class _SphericalAdam:
    """torch.optim.Adam's update, per search with its own one-cycle schedule, then each vector
    rescaled back to the norm it started with (PULSE's SphericalOptimizer). With `free_lr`, the
    last parameter is the framing: the same update at its own peak rate, kept within
    `reframe.LIMITS` instead of on a sphere."""

    def __init__(self, params: list[torch.Tensor], *, budgets: torch.Tensor, peak_lr: torch.Tensor, free_lr: torch.Tensor | None = None):
        self.params = [p.clone() for p in params]
        self.spherical = len(params) - (free_lr is not None)
        self.radii = [_norms(p) for p in self.params[:self.spherical]]  # [N, L] / [N, 1]: the sphere each vector stays on
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.params]  # Adam's m and v
        self.budgets, self.peak_lr, self.free_lr = budgets, peak_lr, free_lr

    def step(self, step: int, rows: torch.Tensor, xs: list[torch.Tensor], ok: torch.Tensor) -> None:
        """Move the searches `rows` that have not fit (`~ok`) along the gradients in `xs`."""
        with torch.no_grad():
            move = ~ok
            upd = rows[move]
            factor = torch.tensor([one_cycle(step, int(b)) for b in self.budgets[upd].tolist()], device=self.peak_lr.device)
            factor = factor / (1 - BETAS[0] ** (step + 1))  # [n_move]
            correction2 = math.sqrt(1 - BETAS[1] ** (step + 1))
            for k, (p, x, (m, v)) in enumerate(zip(self.params, xs, self.moments)):
                g = x.grad[move]
                m[upd] = m[upd] * BETAS[0] + (1 - BETAS[0]) * g
                v[upd] = v[upd] * BETAS[1] + (1 - BETAS[1]) * g.pow(2)
                step_size = (self.peak_lr if k < self.spherical else self.free_lr)[upd] * factor
                new = p[upd] - step_size.view(-1, *[1] * (p.ndim - 1)) * m[upd] / (v[upd].sqrt() / correction2 + ADAM_EPS)
                if k == self.spherical:
                    p[upd] = reframe.clamp(new)
                    continue
                norm = _norms(new)  # [n_move, L] / [n_move, 1]
                p[upd] = new * (self.radii[k][upd] / norm).view(*norm.shape, *[1] * (p.ndim - 2))


def _norms(p: torch.Tensor) -> torch.Tensor:
    """The norm of each vector of `p` (`[N, L, D]` -> `[N, L]`; a noise map `[N, 1, s, s]` -> `[N, 1]`)."""
    return (p.pow(2).flatten(2).sum(-1) + 1e-9).sqrt()

