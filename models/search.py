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
start (`sr.segment`) may have `warm_rounds`: more warm budgets, each from the best so far, first.
Adam's moments start afresh on every frame: carrying them over took more steps on the benchmark
trajectory (benchmarks/warm_start.py).

Framing (`refine_framing`, facezoom): a crop aligned from detected landmarks is framed a few per
cent off the way the generator draws faces, and then no face of the generator fits it to eps. With
`refine_framing` each search also optimises a bounded similarity of the render inside the crop
(models/reframe.py) and returns its face in the crop's frame; the track state keeps the framing,
so warm starts carry it too. The loop itself (loss, spherical Adam, best renders) is
models/search_loop.py.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np
import torch

from models import reframe
from models.backends.base import TrackState
from models.downscale import bicubic_downscale
from models.generators import GaussianFit, Generator
from models.search_loop import Outcome, geocross, one_cycle, optimise

__all__ = ["SearchResult", "draw_start", "geocross", "one_cycle", "problem_seed", "pulse_search"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SearchResult:
    """What `pulse_search` returns for B crops and K samples each."""

    images: torch.Tensor  # [B, K, 3, out, out] float32 in [-1, 1]: each search's best image (NaN: no render was finite)
    l2: torch.Tensor  # [B, K] float32: that image's L2 (downscaled vs input, [0, 1] scale)
    success: torch.Tensor  # [B, K] bool: l2 <= eps
    steps: torch.Tensor  # [B, K] int64: renders spent, warm + cold after a cut (1 = the start already fit)
    cut: torch.Tensor  # [B, K] bool: a warm start missed eps and the crop was cold-started
    states: list[list[TrackState]]  # [B][K]: the state to warm-start the track's next frame


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
    l2_weight: float = 100.0, geocross_weight: float = 0.05,  # PULSE's loss
    refine_framing: bool = False,
    framing_learning_rates: tuple[float, float] = (0.01, 0.002),  # cold, warm peaks: a cold budget can cross the limits, a warm one moves ~1 px
    render_size: int | None = None, out_size: int | None = None,
    device: torch.device | str,
) -> SearchResult:
    """Find faces that downscale onto `lr` `[B, 3, in, in]` (float32 in [-1, 1]).

    seeds: one per crop; fixes the start latents and noise (same seeds, same results).
    states: per crop, the `TrackState` its track's previous frame returned (warm start: budget
        `warm_steps`, peak lr `warm_learning_rate`, prior weight `temporal_weight`), or None
        (cold start: budget `steps`, peak lr `learning_rate`, PULSE's settings).
    samples: K searches per crop from different seeds (cold starts only).
    refine_framing: also optimise each face's framing in the crop (models/reframe.py), at peak rates
        `framing_learning_rates` (cold, warm); the faces come back in the crop's frame.
    render_size: the side the generator renders at (default its full resolution); the loss compares
        `lr` with it shrunk by PULSE's bicubic downscaler. out_size: the returned side (default render_size).
    """
    device, render_size = torch.device(device), render_size or generator.resolution
    out_size = out_size or render_size
    states = _checked_states(generator, fit, lr, seeds, states, samples=samples, render_size=render_size, out_size=out_size, device=device)
    b, n = lr.shape[0], lr.shape[0] * samples
    plan = _Plan(generator, fit, device, render_size=render_size, trainable=max(0, min(trainable_noise, len(generator.noise_sizes(render_size)) - 1)),
                 steps=steps, warm_steps=warm_steps, learning_rate=learning_rate, warm_learning_rate=warm_learning_rate,
                 temporal_weight=temporal_weight, framing=tuple(framing_learning_rates) if refine_framing else None,
                 eps=eps, l2_weight=l2_weight, geocross_weight=geocross_weight)

    # 1. One search per (crop, sample): cold ones from their seed, warm ones from their state.
    seed_of, track_states = [problem_seed(int(seeds[i // samples]), i % samples) for i in range(n)], [states[i // samples] for i in range(n)]
    warm = torch.tensor([s is not None for s in track_states])
    state_seeds = [int(s["seed"]) if s is not None else seed_of[i] for i, s in enumerate(track_states)]
    target = lr.to(device, torch.float32).repeat_interleave(samples, 0)  # [N, 3, in, in]
    params, fixed = plan.stack([plan.start(seed, state) for seed, state in zip(state_seeds, track_states)])
    out = plan.run(target, params, fixed, warm)

    # 2. More warm rounds where allowed (a keyframe, several frames from its start), from the best so far.
    rounds = torch.tensor([1] * n if warm_rounds is None else [int(r) for r in warm_rounds]).repeat_interleave(samples if warm_rounds is not None else 1)
    _more_warm_rounds(plan, target, out, fixed, warm & (rounds > 1), rounds)

    # 3. Cuts: a warm start that missed eps is cold-started from the crop's seed, with the full budget.
    cut = _redo_cuts(plan, target, out, warm, seed_of, state_seeds)  # [n_cut] rows of out

    # 4. Images at out_size, clamped as PULSE returns them; states as plain CPU tensors.
    return _result(plan, out, cut, state_seeds, crops=b, samples=samples, out_size=out_size)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """One `pulse_search` call's settings: how its searches start, run and are kept as track states."""

    generator: Generator
    fit: GaussianFit | None
    device: torch.device
    render_size: int
    trainable: int  # noise maps optimised (the first ones; PULSE's 5)
    steps: int
    warm_steps: int
    learning_rate: float
    warm_learning_rate: float
    temporal_weight: float
    framing: tuple[float, float] | None  # the framing's peak learning rates (cold, warm); None: not refined
    eps: float
    l2_weight: float
    geocross_weight: float

    @property
    def names(self) -> list[str]:
        """The names of a search's parameters in its track state, in order."""
        return ["latent"] + [f"noise{j}" for j in range(self.trainable)] + (["framing"] if self.framing else [])

    def start(self, seed: int, state: TrackState | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """One search's start on the CPU: its parameters (latent `[L, D]`, trainable maps `[1, s, s]`,
        framing `[4]`), drawn from `seed` or taken from `state`, and its fixed maps. The fixed maps
        always come from the seed; a track's state keeps its seed, so its fixed noise is the same every frame."""
        latent, noise = draw_start(self.generator, seed, render_size=self.render_size)
        params = [latent] + noise[:self.trainable] + ([reframe.identity(1)[0]] if self.framing else [])
        if state is None:
            return params, noise[self.trainable:]
        expected = {name: tuple(p.shape) for name, p in zip(self.names, params)}
        got = {name: tuple(state[name].shape) for name in expected if name in state}
        if got != expected:
            raise ValueError(f"track state does not fit this generator and framing: got {got}, expected {expected}; pass None to cold-start")
        return [state[name].float() for name in expected], noise[self.trainable:]

    def stack(self, starts: list[tuple[list[torch.Tensor], list[torch.Tensor]]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """N starts as batched (parameters, fixed maps) on the device."""
        return tuple([torch.stack(group).to(self.device) for group in zip(*part)] for part in zip(*starts))  # [N, L, D], [N, 1, s, s]...

    def run(self, target: torch.Tensor, params: list[torch.Tensor], fixed: list[torch.Tensor], warm: torch.Tensor) -> Outcome:
        """Optimise N searches (`warm` [N] bool: warm budget, rates and prior; else cold)."""
        warm = warm.to(self.device)
        framing_lr = None if self.framing is None else torch.where(warm, self.framing[1], self.framing[0]).float()
        return optimise(
            self.generator, target, params, fixed, fit=self.fit,
            budgets=torch.where(warm, self.warm_steps, self.steps), peak_lr=torch.where(warm, self.warm_learning_rate, self.learning_rate).float(),
            prior_weight=torch.where(warm, self.temporal_weight, 0.0).float(), framing_lr=framing_lr,
            eps=self.eps, l2_weight=self.l2_weight, geocross_weight=self.geocross_weight, render_size=self.render_size,
        )


def _checked_states(generator: Generator, fit: GaussianFit | None, lr: torch.Tensor, seeds: Sequence[int], states: Sequence[TrackState | None] | None,
                    *, samples: int, render_size: int, out_size: int, device: torch.device) -> list[TrackState | None]:
    """`pulse_search`'s arguments checked against each other and the generator: the states as a list, one per crop."""
    b = lr.shape[0]
    if (fit is None) != (generator.mapping is None):
        raise ValueError(f"fit must be None for a generator without a mapping network and the gaussian fit otherwise; "
                         f"got fit={'None' if fit is None else 'a fit'} for a {generator.kind}")
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


def _more_warm_rounds(plan: _Plan, target: torch.Tensor, out: Outcome, fixed: list[torch.Tensor], allowed: torch.Tensor,
                      rounds: torch.Tensor) -> None:
    """Give each warm search that missed eps and may take another round (`rounds` [N], `allowed`
    [N] bool) a new warm budget from its best latents, until it reaches eps or its rounds run out.
    A fresh one-cycle schedule each round: a longer budget would stretch the schedule, and cost
    the many keyframes that need one round only."""
    left = rounds.clone() - 1
    while True:
        rows = (allowed & (left > 0) & (out.l2.cpu() > plan.eps)).nonzero().squeeze(1)  # [k]
        if not rows.numel():
            return
        index = rows.to(plan.device)
        again = plan.run(target[index], [p[index].clone() for p in out.best], [f[index] for f in fixed], torch.ones(rows.numel(), dtype=torch.bool))
        for j, i in enumerate(rows.tolist()):
            if again.l2[j] < out.l2[i]:
                out.images[i], out.l2[i] = again.images[j], again.l2[j]
                for mine, theirs in zip(out.best, again.best):
                    mine[i] = theirs[j]
            out.steps[i] += again.steps[j]
        left[rows] -= 1


def _redo_cuts(plan: _Plan, target: torch.Tensor, out: Outcome, warm: torch.Tensor, seed_of: list[int], state_seeds: list[int]) -> torch.Tensor:
    """Cold-start each warm search (`warm` [N] bool) that missed eps (a cut) from its crop's seed with
    the full budget, keeping in `out` and `state_seeds` whichever does better; the cut rows `[n_cut]` int64 (CPU)."""
    cut = (warm & (out.l2.cpu() > plan.eps)).nonzero().squeeze(1)  # [n_cut]
    if not cut.numel():
        return cut
    log.debug("%d of %d warm starts missed eps=%g; cold-starting them", cut.numel(), int(warm.sum()), plan.eps)
    params, fixed = plan.stack([plan.start(seed_of[i], None) for i in cut.tolist()])
    again = plan.run(target[cut.to(plan.device)], params, fixed, torch.zeros(cut.numel(), dtype=torch.bool))
    for j, i in enumerate(cut.tolist()):
        if again.l2[j] <= plan.eps or again.l2[j] < out.l2[i]:  # keep the warm result only if the cold one is worse
            out.images[i], out.l2[i] = again.images[j], again.l2[j]
            for mine, theirs in zip(out.best, again.best):  # latent, trainable maps, framing
                mine[i] = theirs[j]
            state_seeds[i] = seed_of[i]
        out.steps[i] += again.steps[j]
    return cut


def _result(plan: _Plan, out: Outcome, cut: torch.Tensor, state_seeds: list[int], *, crops: int, samples: int, out_size: int) -> SearchResult:
    """The N = crops * samples searches' outcome as a `SearchResult`: images shrunk to out_size and clamped, CPU states.

    A state is plain CPU tensors, picklable, ready for the next frame. Adam's moments are not
    carried: measured on the benchmark trajectory, starting a warm frame with the previous
    frame's moments took more steps than starting them afresh."""
    n = crops * samples
    images = out.images if out_size == plan.render_size else bicubic_downscale(out.images, out_size)
    images = images.clamp(-1, 1).float()
    new_states = [{name: p[i].detach().cpu().clone() for name, p in zip(plan.names, out.best)} | {"seed": torch.tensor(state_seeds[i])}
                  for i in range(n)]
    l2 = out.l2.float().cpu()
    cut_mask = torch.zeros(n, dtype=torch.bool)
    cut_mask[cut] = True
    return SearchResult(
        images=images.view(crops, samples, *images.shape[1:]),
        l2=l2.view(crops, samples),
        success=(l2 <= plan.eps).view(crops, samples),
        steps=out.steps.cpu().view(crops, samples),
        cut=cut_mask.view(crops, samples),
        states=[new_states[i * samples:(i + 1) * samples] for i in range(crops)],
    )
