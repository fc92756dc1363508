"""`sr.backend=pulse`: PULSE's latent search over a face generator, warm-started along face tracks.

The search itself (PULSE, Menon et al., CVPR 2020, with facezoom's warm starts) is
`models.search.pulse_search`; this backend holds the generator (a StyleGAN, or a DCGAN such as the
`dcgan-digiface-64` demonstration prior) and its gaussian fit, picks the
render and output sizes, and turns each batch of crops into one search.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch

from models.backends.base import SRBackend, SRResult, TrackState, consistency
from models.downscale import bicubic_downscale
from models.errors import ModelError
from models.generators import GaussianFit, Generator
from models.search import pulse_search

log = logging.getLogger(__name__)


def default_out_size(generator: Generator) -> int:
    """256 where the generator can stop rendering at 256 (StyleGAN2-512): a face in a video frame
    is rarely larger, and the search then skips the 512 block (about a fifth of the FLOPs and half
    the activation memory, so larger batches fit). Otherwise the generator's own resolution:
    StyleGAN v1 always renders 1024, so a smaller output would save nothing but detail."""
    return 256 if 256 in generator.render_sizes else generator.resolution


class PulseBackend(SRBackend):
    """`sr.backend=pulse`: PULSE's latent search over a StyleGAN, warm-started along tracks."""

    name = "pulse"
    stateful = True  # each track's search warm-starts from its previous frame's latents
    keyframes = True  # ... or from its segment's keyframe (`sr.segment`, pipeline/stages/scheduler.py)
    any_input_size = True  # the search agrees with the input at whatever size it has

    def __init__(
        self,
        generator: Generator,
        fit: GaussianFit | None,
        *,
        in_size: int = 16,
        out_size: int | None = None,
        steps: int = 100,
        warm_steps: int = 20,
        eps: float = 2e-3,
        temporal_weight: float = 0.0,
        learning_rate: float = 0.4,
        warm_learning_rate: float = 0.05,
        refine_framing: bool = False,
        device: torch.device | str = "cpu",
    ):
        if (fit is None) != (generator.mapping is None):
            raise ValueError(f"a {generator.kind} generator {'has no' if generator.mapping is None else 'needs the gaussian fit of its'} "
                             f"mapping network: pass fit={'None' if generator.mapping is None else 'gaussian_fit(generator, path)'}")
        self.device = torch.device(device)
        self.generator = generator.to(self.device)
        self.fit = fit.to(self.device) if fit is not None else None  # None: a generator without a mapping network (DCGAN)
        self.in_size = in_size
        self.out_size = out_size or default_out_size(generator)
        sizes = [s for s in generator.render_sizes if s >= self.out_size and s > in_size]
        if not in_size < self.out_size <= generator.resolution or not sizes:
            raise ModelError(f"sr.out_size={self.out_size} does not fit the {generator.kind} {generator.resolution}px generator with "
                             f"sr.in_size={in_size}; use a value in {in_size + 1}..{generator.resolution} (renders at {list(generator.render_sizes)})")
        self.render_size = sizes[0]  # the smallest block that covers out_size
        self.steps, self.warm_steps, self.eps = steps, warm_steps, eps
        self.temporal_weight, self.learning_rate, self.warm_learning_rate = temporal_weight, learning_rate, warm_learning_rate
        self.refine_framing = refine_framing  # each face's framing in its crop is searched too (models/reframe.py)
        self.deterministic = self.device.type == "cpu"  # CUDA convolution backward is not bitwise reproducible

    @classmethod
    def from_settings(
        cls,
        *,
        generator: str | None,
        device: torch.device,
        in_size: int,
        out_size: int | None,
        steps: int,
        warm_steps: int,
        eps: float,
        temporal_weight: float,
    ) -> "PulseBackend":
        """Build from `sr.*` settings: `generator` is a registry name, a checkpoint path, or None (the default entry)."""
        from models import weights
        from models.generators import LAYOUTS, gaussian_fit, load_generator

        name = weights.DEFAULT if generator is None else generator
        pinned = weights.entry(name) if name in weights.REGISTRY else None
        if pinned is not None and pinned.layout not in LAYOUTS:
            stylegans = ", ".join(n for n, e in weights.REGISTRY.items() if e.layout in LAYOUTS)
            raise ModelError(f"sr.generator={name} is a {pinned.layout} checkpoint, not a generator the latent search can drive; "
                             f"for sr.backend=pulse use {stylegans} or a StyleGAN/DCGAN checkpoint file")
        path = weights.resolve(name)
        model = load_generator(path, device=device, layout=pinned.layout if pinned else None, arch=dict(pinned.arch) if pinned else None)
        fit = gaussian_fit(model, path, device=device)
        known = pinned or weights.entry_for_file(path)  # the same weights by path keep their entry's framing and settings
        backend = cls(model, fit, in_size=in_size, out_size=out_size, steps=steps, warm_steps=warm_steps, eps=eps,
                      temporal_weight=temporal_weight, device=device, **dict(known.search if known else ()))
        backend.framing = known.framing if known else "ffhq"
        backend.weights = str(path)
        return backend

    def downscale_to(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """PULSE's bicubic downscaler: `[B, 3, H, W]` -> `[B, 3, size, size]`."""
        if images.ndim != 4 or images.shape[1] != 3 or min(images.shape[2:]) < size:
            raise ValueError(f"pulse: downscale expects [B, 3, H, W] with H, W >= {size}, got {list(images.shape)}")
        return bicubic_downscale(images, size)

    def super_resolve(self, lr: torch.Tensor, states: Sequence[TrackState | None], *, seeds: Sequence[int], gaps=None) -> SRResult:
        """One PULSE search per crop; see `SRBackend.super_resolve` for the contract. A warm start
        `gap` frames from its parent may take up to `gap` warm rounds (at most a cold start's
        steps) before it counts as a cut: a keyframe that needs more than a neighbour is no cut.
        With `refine_framing` each face comes back in its crop's frame, moved to where the crop has it."""
        self.check_lr(lr, states, seeds)
        rounds = [max(1, min(g, self.steps // self.warm_steps)) for g in gaps] if gaps is not None else None
        found = pulse_search(
            self.generator, lr, fit=self.fit, seeds=seeds, states=states,
            steps=self.steps, warm_steps=self.warm_steps, warm_rounds=rounds, eps=self.eps,
            learning_rate=self.learning_rate, warm_learning_rate=self.warm_learning_rate,
            temporal_weight=self.temporal_weight, refine_framing=self.refine_framing,
            render_size=self.render_size, out_size=self.out_size, device=self.device,
        )
        images = found.images[:, 0].to(lr.device)  # [B, 3, out, out]
        for i in found.success[:, 0].logical_not().nonzero().flatten().tolist():
            log.info("pulse: crop %d found no face that downscales to it (best L2 %.2e > eps %.1e)", i, float(found.l2[i, 0]), self.eps)
        return SRResult(
            images=images,
            states=[s[0] for s in found.states],
            consistency=consistency(self, images, lr).cpu(),
            success=found.success[:, 0],
            steps=found.steps[:, 0],
        )
