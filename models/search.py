"""PULSE's latent search, batched over crops and warm-started along face tracks.

The algorithm behind `sr.backend=pulse` (models/backends/pulse.py), with no weights of its own:
it drives a StyleGAN generator from models/generators.py.

PULSE (Menon et al., "PULSE: Self-Supervised Photo Upsampling via Latent Space Exploration of
Generative Models", CVPR 2020; alex-damian/pulse `PULSE.py`, `loss.py`, `SphericalOptimizer.py`)
looks for a generated face that, shrunk with its bicubic downscaler, matches the low-res input:
- one latent per style layer, drawn from N(0, I) and mapped into W+ as
  `leaky_relu(latent * std + mean, 0.2)` through the gaussian fit of the mapping network;
- noise maps: the first 5 trainable, the rest fixed, the last one zeroed;
- Adam (lr 0.4) with a spherical projection: after every step each vector (each 512-d latent,
  each noise map) is rescaled to the norm it started with; one-cycle schedule over the budget
  (0.1x -> 1x at 45%, back to 0.1x at 90%, then -> 0.001x);
- loss `100 * max(L2, eps) + 0.05 * GEOCROSS`, L2 on the [0, 1] scale, eps = 2e-3;
- success only if the best L2 reached is <= eps.
Generators with a single latent vector and no noise inputs (DCGAN, models/networks/dcgan.py) run
through the same search: the latent `[1, D]` is z itself (`generator.styles`; no mapping network,
so no gaussian fit), kept on the sphere of its starting norm as PULSE keeps each W+ vector.
GEOCROSS is zero for them (it pulls several style vectors together; there is one) and so is the
noise (there are no maps to train or fix).
Differences from the reference code, all per crop where it was per batch: each crop stops as
soon as its L2 <= eps, keeps its own best image, budget and schedule, and a crop that never
gets there is reported as failed. Adam is written out so crops can leave the batch early.

Video (facezoom): a track's state (latents, trainable noise, the seed of its fixed noise) is a
dict of CPU tensors that the next frame starts from, with a smaller budget, a lower peak learning
rate (the same one-cycle shape) and an optional temporal prior
`lambda * mean_l |latent_l,t - latent_l,t-1|^2`. A warm start that misses eps within its budget
is a cut: that crop is cold-started again in the same call. A keyframe several frames from its
start (`sr.segment`) may have `warm_rounds`: more warm budgets, each from the best so far, first. Adam's moments start afresh on every
frame: carrying them over took more steps on the benchmark trajectory (benchmarks/warm_start.py).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from models.backends.base import TrackState
from models.downscale import bicubic_downscale
from models.generators import GaussianFit, Generator

log = logging.getLogger(__name__)

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as PULSE used them
ADAM_EPS = 1e-8


@dataclasses.dataclass
class SearchResult:
    """What `pulse_search` returns for B crops and K samples each."""

    images: torch.Tensor  # [B, K, 3, out, out] float32 in [-1, 1]: each search's best image
    l2: torch.Tensor  # [B, K] float32: that image's L2 (downscaled vs input, [0, 1] scale)
    success: torch.Tensor  # [B, K] bool: l2 <= eps
    steps: torch.Tensor  # [B, K] int64: renders spent, warm + cold after a cut (1 = the start already fit)
    cut: torch.Tensor  # [B, K] bool: a warm start missed eps and the crop was cold-started
    states: list[list[TrackState]]  # [B][K]: the state to warm-start the track's next frame


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


def problem_seed(seed: int, sample: int) -> int:
    """The seed of sample `sample` of a crop seeded `seed` (independent streams for each pair)."""
    if seed < 0:
        raise ValueError(f"seeds must be >= 0, got {seed}")
    return int(np.random.SeedSequence([seed, sample]).generate_state(1, dtype=np.uint64)[0] >> 1)


def draw_start(generator: Generator, seed: int, *, render_size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A cold start on the CPU: latent `[L, D]` ~ N(0, I) and noise maps `[1, s, s]`, last one zeroed."""
    rng = torch.Generator().manual_seed(seed)
    latent = torch.randn(generator.num_ws(render_size), generator.w_dim, generator=rng)  # [L, D]
    noise = [torch.randn(1, s, s, generator=rng) for s in generator.noise_sizes(render_size)]  # none for a DCGAN
    if noise:
        noise[-1].zero_()  # PULSE's "bad noise layer": the finest map is zeroed and fixed
    return latent, noise


# ---------------------------------------------------------------------------------------------
# The search proper: pulse_search's steps


def pulse_search(
    generator: Generator,
    lr: torch.Tensor,
    *,
    fit: GaussianFit | None,
    seeds: Sequence[int],
    states: Sequence[TrackState | None] | None = None,
    samples: int = 1,
    steps: int = 100,
    warm_steps: int = 20,
    warm_rounds: Sequence[int] | None = None,
    eps: float = 2e-3,
    learning_rate: float = 0.4,
    warm_learning_rate: float = 0.05,  # benchmarks/warm_start.py: as few steps as 0.1-0.2, much less flicker
    temporal_weight: float = 0.0,
    trainable_noise: int = 5,
    l2_weight: float = 100.0,
    geocross_weight: float = 0.05,
    render_size: int | None = None,
    out_size: int | None = None,
    device: torch.device | str,
) -> SearchResult:
    """Find faces that downscale onto `lr` `[B, 3, in, in]` (float32 in [-1, 1]).

    seeds: one per crop; fixes the start latents and noise (same seeds, same results).
    states: per crop, the `TrackState` its track's previous frame returned (warm start: budget
        `warm_steps`, peak lr `warm_learning_rate`, prior weight `temporal_weight`), or None
        (cold start: budget `steps`, peak lr `learning_rate`, PULSE's settings).
    samples: K searches per crop from different seeds (cold starts only).
    render_size: the side the generator renders at (default its full resolution); the loss
        compares `lr` with that render shrunk by PULSE's bicubic downscaler.
    out_size: the side of the returned images (default render_size), shrunk by the same kernel.
    """
    device = torch.device(device)
    render_size = render_size or generator.resolution
    out_size = out_size or render_size
    if (fit is None) != (generator.mapping is None):
        raise ValueError(f"fit must be None for a generator without a mapping network and the gaussian fit otherwise; "
                         f"got fit={'None' if fit is None else 'a fit'} for a {generator.kind}")
    states = _checked_states(generator, lr, seeds, states, samples=samples, render_size=render_size, out_size=out_size, device=device)
    b, n = lr.shape[0], lr.shape[0] * samples
    trainable = max(0, min(trainable_noise, len(generator.noise_sizes(render_size)) - 1))  # the last map stays fixed
    settings = dict(fit=fit, eps=eps, l2_weight=l2_weight, geocross_weight=geocross_weight, render_size=render_size)

    # 1. One search per (crop, sample): cold ones from their seed, warm ones from their state.
    seed_of = [problem_seed(int(seeds[i // samples]), i % samples) for i in range(n)]
    track_states = [states[i // samples] for i in range(n)]
    warm = torch.tensor([s is not None for s in track_states])
    state_seeds = [int(s["seed"]) if s is not None else seed_of[i] for i, s in enumerate(track_states)]
    starts = [_start(generator, seed, state, trainable=trainable, render_size=render_size) for seed, state in zip(state_seeds, track_states)]
    target = lr.to(device, torch.float32).repeat_interleave(samples, 0)  # [N, 3, in, in]
    params, fixed = _stack(starts, trainable, device)
    out = _optimise(
        generator, target, params, fixed,
        budgets=torch.where(warm, warm_steps, steps).to(device),
        peak_lr=torch.where(warm, warm_learning_rate, learning_rate).float().to(device),
        prior_weight=torch.where(warm, temporal_weight, 0.0).float().to(device),
        **settings,
    )

    # 2. More warm rounds where allowed (a keyframe, several frames from its start), from the best so far.
    rounds = torch.tensor([1] * n if warm_rounds is None else [int(r) for r in warm_rounds]).repeat_interleave(samples if warm_rounds is not None else 1)
    _more_warm_rounds(generator, target, out, fixed, warm & (rounds > 1), rounds, warm_steps=warm_steps,
                      warm_learning_rate=warm_learning_rate, temporal_weight=temporal_weight, device=device, settings=settings)

    # 3. Cuts: a warm start that missed eps is cold-started from the crop's seed, with the full budget.
    cut = _redo_cuts(generator, target, out, warm, seed_of, state_seeds, steps=steps, learning_rate=learning_rate,
                     trainable=trainable, device=device, settings=settings)  # [n_cut] rows of out

    # 4. Images at out_size, clamped as PULSE returns them; states as plain CPU tensors.
    return _result(out, cut, state_seeds, crops=b, samples=samples, eps=eps, out_size=out_size, render_size=render_size)


def _checked_states(generator: Generator, lr: torch.Tensor, seeds: Sequence[int], states: Sequence[TrackState | None] | None, *,
                    samples: int, render_size: int, out_size: int, device: torch.device) -> list[TrackState | None]:
    """`pulse_search`'s arguments checked against each other and the generator: the states as a list, one per crop."""
    b = lr.shape[0]
    if lr.ndim != 4 or lr.shape[1] != 3 or lr.shape[2] != lr.shape[3]:
        raise ValueError(f"lr must be [B, 3, S, S], got {list(lr.shape)}")
    in_size = lr.shape[-1]
    if not in_size < render_size <= generator.resolution or render_size not in generator.render_sizes:
        raise ValueError(f"render_size must be one of {[s for s in generator.render_sizes if s > in_size]} for {in_size}px inputs, got {render_size}")
    if not in_size < out_size <= render_size:
        raise ValueError(f"out_size must be in {in_size + 1}..{render_size}, got {out_size}")
    states = list(states) if states is not None else [None] * b
    if any(s is not None and "seed" not in s for s in states):
        raise ValueError("a track state lacks its 'seed'; pass the state pulse_search returned, or None to cold-start")
    if len(seeds) != b or len(states) != b:
        raise ValueError(f"got {b} crops, {len(seeds)} seeds and {len(states)} states; pass one of each per crop")
    if samples < 1 or (samples > 1 and any(s is not None for s in states)):
        raise ValueError(f"samples must be >= 1 and needs cold starts (states=None), got samples={samples}")
    param = next(iter(generator.parameters()), None) if hasattr(generator, "parameters") else None
    if param is not None and param.device != device and not (param.device.type == device.type == "cuda" and device.index is None):
        raise ValueError(f"the generator is on {param.device} but device={device}; move it with generator.to(device)")
    return states


def _more_warm_rounds(generator: Generator, target: torch.Tensor, out: "_Outcome", fixed: list[torch.Tensor], allowed: torch.Tensor,
                      rounds: torch.Tensor, *, warm_steps: int, warm_learning_rate: float, temporal_weight: float,
                      device: torch.device, settings: dict) -> None:
    """Give each warm search that missed eps and may take another round (`rounds` [N], `allowed`
    [N] bool) a new warm budget from its best latents, until it reaches eps or its rounds run out.
    A fresh one-cycle schedule each round: a longer budget would stretch the schedule, and cost
    the many keyframes that need one round only."""
    eps = settings["eps"]
    left = rounds.clone() - 1
    while True:
        rows = (allowed & (left > 0) & (out.l2.cpu() > eps)).nonzero().squeeze(1)  # [k]
        if not rows.numel():
            return
        k, index = rows.numel(), rows.to(device)
        again = _optimise(
            generator, target[index], [p[index].clone() for p in out.best], [f[index] for f in fixed],
            budgets=torch.full((k,), warm_steps, device=device), peak_lr=torch.full((k,), warm_learning_rate, device=device),
            prior_weight=torch.full((k,), temporal_weight, device=device), **settings,
        )
        for j, i in enumerate(rows.tolist()):
            if again.l2[j] < out.l2[i]:
                out.images[i], out.l2[i] = again.images[j], again.l2[j]
                for mine, theirs in zip(out.best, again.best):
                    mine[i] = theirs[j]
            out.steps[i] += again.steps[j]
        left[rows] -= 1


def _redo_cuts(
    generator: Generator,
    target: torch.Tensor,  # [N, 3, in, in]
    out: _Outcome,
    warm: torch.Tensor,  # [N] bool: the search started from a track state
    seed_of: list[int],
    state_seeds: list[int],
    *,
    steps: int,
    learning_rate: float,
    trainable: int,
    device: torch.device,
    settings: dict,
) -> torch.Tensor:
    """Cold-start each warm search that missed eps (a cut) from its crop's seed with the full budget,
    keeping in `out` and `state_seeds` whichever does better; the cut rows `[n_cut]` int64 (CPU)."""
    eps = settings["eps"]
    cut = (warm & (out.l2.cpu() > eps)).nonzero().squeeze(1)  # [n_cut]
    if not cut.numel():
        return cut
    log.debug("%d of %d warm starts missed eps=%g; cold-starting them", cut.numel(), int(warm.sum()), eps)
    colds = [_start(generator, seed_of[i], None, trainable=trainable, render_size=settings["render_size"]) for i in cut.tolist()]
    k = cut.numel()
    again = _optimise(
        generator, target[cut.to(device)], *_stack(colds, trainable, device),
        budgets=torch.full((k,), steps, device=device), peak_lr=torch.full((k,), learning_rate, device=device),
        prior_weight=torch.zeros(k, device=device), **settings,
    )
    for j, i in enumerate(cut.tolist()):
        if again.l2[j] <= eps or again.l2[j] < out.l2[i]:  # keep the warm result only if the cold one is worse
            out.images[i], out.l2[i] = again.images[j], again.l2[j]
            for mine, theirs in zip(out.best, again.best):  # latent and trainable maps
                mine[i] = theirs[j]
            state_seeds[i] = seed_of[i]
        out.steps[i] += again.steps[j]
    return cut


def _result(
    out: _Outcome, cut: torch.Tensor, state_seeds: list[int], *, crops: int, samples: int, eps: float, out_size: int, render_size: int,
) -> SearchResult:
    """The N = crops * samples searches' outcome as a `SearchResult`: images shrunk to out_size and clamped, CPU states."""
    n = crops * samples
    images = out.images if out_size == render_size else bicubic_downscale(out.images, out_size)
    images = images.clamp(-1, 1).float()
    new_states = [_state(out.best, i, state_seeds[i]) for i in range(n)]
    l2 = out.l2.float().cpu()
    cut_mask = torch.zeros(n, dtype=torch.bool)
    cut_mask[cut] = True
    return SearchResult(
        images=images.view(crops, samples, *images.shape[1:]),
        l2=l2.view(crops, samples),
        success=(l2 <= eps).view(crops, samples),
        steps=out.steps.cpu().view(crops, samples),
        cut=cut_mask.view(crops, samples),
        states=[new_states[i * samples:(i + 1) * samples] for i in range(crops)],
    )


def _start(generator: Generator, seed: int, state: TrackState | None, *, trainable: int, render_size: int) -> list[torch.Tensor]:
    """One search's start on the CPU, `[latent [L, D], noise maps [1, s, s]...]`: drawn from `seed`,
    with the latent and trainable maps taken from `state` when there is one. The fixed maps always
    come from the seed; a track's state keeps its seed, so its fixed noise is the same every frame."""
    latent, noise = draw_start(generator, seed, render_size=render_size)
    if state is None:
        return [latent] + noise
    expected = {"latent": tuple(latent.shape)} | {f"noise{j}": tuple(noise[j].shape) for j in range(trainable)}
    got = {name: tuple(state[name].shape) for name in expected if name in state}
    if got != expected:
        raise ValueError(f"track state does not fit this generator: got {got}, expected {expected}; pass None to cold-start")
    return [state[name].float() for name in expected] + noise[trainable:]


def _stack(starts: list[list[torch.Tensor]], trainable: int, device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """N starts as batched (trainable, fixed) tensors on the device."""
    tensors = [torch.stack(group).to(device) for group in zip(*starts)]  # [N, L, D], then [N, 1, s, s] per map
    return tensors[: 1 + trainable], tensors[1 + trainable:]


def _state(best: list[torch.Tensor], i: int, seed: int) -> TrackState:
    """Search i's result as a track state: plain CPU tensors, picklable, ready for the next frame.

    Adam's moments are not carried: measured on the benchmark trajectory, starting a warm frame
    with the previous frame's moments took more steps than starting them afresh."""
    names = ["latent"] + [f"noise{j}" for j in range(len(best) - 1)]
    state = {name: p[i].detach().cpu().clone() for name, p in zip(names, best)}
    state["seed"] = torch.tensor(seed, dtype=torch.int64)
    return state


# ---------------------------------------------------------------------------------------------
# N searches at once: the optimisation loop and its parts


@dataclasses.dataclass
class _Outcome:
    images: torch.Tensor  # [N, 3, R, R] best render (unclamped)
    l2: torch.Tensor  # [N] its L2 (clamped render, clamped downscale)
    steps: torch.Tensor  # [N] int64 generator evaluations
    best: list[torch.Tensor]  # the latent [N, L, D] and trainable maps [N, 1, s, s] that rendered it


def _optimise(
    generator: Generator,
    target: torch.Tensor,  # [N, 3, in, in] in [-1, 1]
    params: list[torch.Tensor],  # start: latent [N, L, D], then the trainable noise maps [N, 1, s, s]
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
) -> _Outcome:
    """Run N searches until each fits (L2 <= eps) or spends its budget; each keeps its best render."""
    # 1. The loss (with the start latents as the prior's anchor), the optimiser, no best render yet.
    device = target.device
    prior = params[0] if bool((prior_weight > 0).any()) else None
    fit = fit.to(device) if fit is not None else None
    objective = _Objective(generator, target, fixed, fit, prior, prior_weight, eps, l2_weight, geocross_weight, render_size)
    adam = _SphericalAdam(params, budgets=budgets, peak_lr=peak_lr)
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

    def __call__(self, rows: torch.Tensor, xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Searches `rows` at `xs`: render `[n, 3, R, R]`, loss `[n]` (with its graph), L2 `[n]` of the image as returned."""
        every = rows.numel() == self.target.shape[0]  # then read the big fixed tensors in place instead of copying rows

        def take(x: torch.Tensor) -> torch.Tensor:
            return x if every else x[rows]

        in_size = self.target.shape[-1]
        w = self.generator.styles(xs[0], self.fit)  # [n, L, D]: W+ through the fit (StyleGAN), z itself (DCGAN)
        image = self.generator.synthesize(w, xs[1:] + [take(m) for m in self.fixed], render_size=self.render_size)  # [n, 3, R, R]
        goal = take(self.target)
        l2 = ((bicubic_downscale(image, in_size) - goal) / 2).pow(2).flatten(1).mean(1)  # [n], [0, 1] scale
        loss = self.l2_weight * l2.clamp(min=self.eps) + self.geocross_weight * geocross(w)  # [n]
        if self.prior is not None:
            loss = loss + self.prior_weight[rows] * (xs[0] - self.prior[rows]).pow(2).sum(-1).mean(-1)
        with torch.no_grad():  # success is judged on the image as returned: clamped, then the model's downscaler
            shown = bicubic_downscale(image.clamp(-1, 1), in_size).clamp(-1, 1)
            l2_shown = ((shown - goal) / 2).pow(2).flatten(1).mean(1)  # [n]
        return image, loss, l2_shown


@dataclasses.dataclass
class _Best:
    """Each search's best render so far: one that fits beats one that does not, then the lower loss."""

    out: _Outcome
    loss: torch.Tensor  # [N] the best render's loss
    ok: torch.Tensor  # [N] bool: the best render fits (L2 <= eps)
    done: torch.Tensor  # [N] bool: the search has fit and stopped

    @classmethod
    def start(cls, params: list[torch.Tensor], render_size: int, device: torch.device) -> "_Best":
        n = params[0].shape[0]
        out = _Outcome(torch.zeros(n, 3, render_size, render_size, device=device), torch.full((n,), math.inf, device=device),
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
    rescaled back to the norm it started with (PULSE's SphericalOptimizer)."""

    def __init__(self, params: list[torch.Tensor], *, budgets: torch.Tensor, peak_lr: torch.Tensor):
        self.params = [p.clone() for p in params]
        self.radii = [_norms(p) for p in self.params]  # [N, L] / [N, 1]: the sphere each vector stays on
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.params]  # Adam's m and v
        self.budgets, self.peak_lr = budgets, peak_lr

    def step(self, step: int, rows: torch.Tensor, xs: list[torch.Tensor], ok: torch.Tensor) -> None:
        """Move the searches `rows` that have not fit (`~ok`) along the gradients in `xs`."""
        with torch.no_grad():
            move = ~ok
            upd = rows[move]
            factor = torch.tensor([one_cycle(step, int(b)) for b in self.budgets[upd].tolist()], device=self.peak_lr.device)
            step_size = self.peak_lr[upd] * factor / (1 - BETAS[0] ** (step + 1))  # [n_move]
            correction2 = math.sqrt(1 - BETAS[1] ** (step + 1))
            for p, x, (m, v), r in zip(self.params, xs, self.moments, self.radii):
                g = x.grad[move]
                m[upd] = m[upd] * BETAS[0] + (1 - BETAS[0]) * g
                v[upd] = v[upd] * BETAS[1] + (1 - BETAS[1]) * g.pow(2)
                new = p[upd] - step_size.view(-1, *[1] * (p.ndim - 1)) * m[upd] / (v[upd].sqrt() / correction2 + ADAM_EPS)
                norm = _norms(new)  # [n_move, L] / [n_move, 1]
                p[upd] = new * (r[upd] / norm).view(*norm.shape, *[1] * (p.ndim - 2))


def _norms(p: torch.Tensor) -> torch.Tensor:
    """The norm of each vector of `p` (`[N, L, D]` -> `[N, L]`; a noise map `[N, 1, s, s]` -> `[N, 1]`)."""
    return (p.pow(2).flatten(2).sum(-1) + 1e-9).sqrt()
