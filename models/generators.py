"""Generators behind one interface: recognise a checkpoint's layout, load it strictly, fit its W.

Three published key layouts are understood, each recognised from its keys:
- `basicsr-stylegan2`: BasicSR's `StyleGAN2Generator` state dict, usually wrapped in
  `{"params_ema": ...}` (GFPGAN's `StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth`);
  rosinality/stylegan2-pytorch checkpoints (`{"g_ema": ...}`, e.g. `stylegan2-ffhq-config-f.pt`)
  hold the same network under other names and are renamed to it (`_ROSINALITY`);
- `lernapparat-stylegan1`: the flat `g_mapping.* / g_synthesis.*` state dict of the StyleGAN
  (v1) PyTorch port PULSE used (`karras2019stylegan-ffhq-1024x1024.for_g_all.pt`). PULSE's own
  cache holds the same network split in two files, `synthesis.pt` (`blocks.4x4.const`,
  `torgb.weight`, ...) and `mapping.pt` (`dense0.weight`, ...), each possibly behind the hash
  PULSE's downloader puts in front of the name: `read_state` joins them under the port's
  `g_synthesis.`/`g_mapping.` prefixes, and PULSE's `gaussian_fit.pt` ({"mean", "std"}) is used
  instead of a new fit;
- `dcgan`: the PyTorch DCGAN tutorial's `main.N.*` (`{"netG_state_dict": ...}` as the tutorial
  saves it), a generator with one latent vector and no mapping network (models/networks/dcgan.py).
Data-parallel `module.` prefixes are dropped.
Loading builds the architecture (from the registry's settings, or inferred from the tensor
shapes for a local file), compares every key and shape, and raises `ModelError` with a readable
diff on any mismatch: never `strict=False`.

The PULSE search (Menon et al., CVPR 2020) uses every generator the same way (`Generator`), and
needs the "gaussian fit" of its mapping network: mean and std of `leaky_relu(mapping(z), 5)`
over many z (PULSE: 10^6 with seed 0). It is computed on first use and cached beside the weights.
A generator without a mapping network (DCGAN) searches its z directly and needs no fit.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

import torch
import torch.nn.functional as F

from models.errors import ModelError
from models.networks import dcgan
from models.networks.dcgan import DCGANConfig, DCGANGenerator
from models.networks.stylegan1 import StyleGAN1Config, StyleGAN1Generator
from models.networks.stylegan2 import StyleGAN2Config, StyleGAN2Generator
from models.weights import fit_cache_path

log = logging.getLogger(__name__)

LAYOUTS = ("basicsr-stylegan2", "lernapparat-stylegan1", "dcgan")
AnyConfig = StyleGAN1Config | StyleGAN2Config | DCGANConfig
AnyGenerator = StyleGAN1Generator | StyleGAN2Generator | DCGANGenerator
FIT_SAMPLES = 1_000_000  # PULSE's sample count for the gaussian fit
FIT_SEED = 0  # PULSE's torch.manual_seed(0)


class Generator(Protocol):
    """What the PULSE search needs from a generator (the StyleGAN and DCGAN classes provide it).

    `mapping` is z -> w (None for a generator without a mapping network, which needs no gaussian
    fit); `styles` turns the search's latents `[B, num_ws, w_dim]` into the synthesis input."""

    kind: str
    resolution: int
    w_dim: int
    render_sizes: tuple[int, ...]
    mapping: Callable[[torch.Tensor], torch.Tensor] | None

    def num_ws(self, render_size: int) -> int: ...
    def noise_sizes(self, render_size: int) -> list[int]: ...
    def styles(self, latent: torch.Tensor, fit: "GaussianFit | None") -> torch.Tensor: ...
    def synthesize(self, ws: torch.Tensor, noise: Sequence[torch.Tensor], *, render_size: int | None = None) -> torch.Tensor: ...


# rosinality/stylegan2-pytorch's Generator -> BasicSR's StyleGAN2Generator, a port of it: the same
# tensors under other names (as BasicSR's scripts/model_conversion/convert_stylegan.py maps them).
# Applied in order; the fixed blur and up-sampling kernels (`*.kernel` buffers) are dropped.
_ROSINALITY = (
    (r"^style\.", "style_mlp."),
    (r"^input\.input$", "constant_input.weight"),
    (r"^conv1\.", "style_conv1."),
    (r"^convs\.", "style_convs."),
    (r"\.conv\.", ".modulated_conv."),
    (r"\.noise\.weight$", ".weight"),
    (r"^noises\.noise_(\d+)$", r"noises.noise\1"),
)
# PULSE's copy of the StyleGAN (v1) port keeps each noise strength at `epiN.noise.weight`; the
# published port file (and our module) at `epiN.top_epi.noise.weight`.
_PULSE_NOISE = (r"\.(epi[12])\.noise\.weight$", r".\1.top_epi.noise.weight")


def _rename(state: Mapping[str, torch.Tensor], rules: Sequence[tuple[str, str]], source: str) -> dict[str, torch.Tensor]:
    """`state` with each key rewritten by the (pattern, replacement) rules, in order. Two keys that
    end up as one are an error: strict loading could not see the one that was lost."""
    out, origin = {}, {}
    for original, value in state.items():
        key = original
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        if key in out:
            raise ModelError(f"{source}: keys {origin[key]} and {original} are the same tensor ({key}) under two spellings; "
                             "the file is inconsistent")
        out[key], origin[key] = value, original
    return out


def unwrap(checkpoint: Mapping[str, object], *, source: str = "checkpoint") -> tuple[str, dict[str, torch.Tensor]]:
    """The layout name and the flat state dict inside a loaded checkpoint."""
    from models.weights import strip_data_parallel

    state = checkpoint
    if "netG_state_dict" in checkpoint and isinstance(checkpoint["netG_state_dict"], Mapping):  # the DCGAN tutorial's save
        state = checkpoint["netG_state_dict"]
    elif "g_ema" in checkpoint and isinstance(checkpoint["g_ema"], Mapping):  # rosinality: {"g_ema", "latent_avg"[, "g", "d", ...]}
        state = checkpoint["g_ema"]
    elif "params_ema" in checkpoint:  # BasicSR saves {"params": ..., "params_ema": ...}; the EMA weights are the generator
        state = checkpoint["params_ema"]
    elif "params" in checkpoint and isinstance(checkpoint["params"], Mapping):
        log.warning("%s has BasicSR's 'params' but no 'params_ema'; using the non-averaged weights", source)
        state = checkpoint["params"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{source} is not a state dict of tensors; pass a StyleGAN checkpoint in one of the layouts {', '.join(LAYOUTS)}")
    state = strip_data_parallel(state, source)
    keys = set(state)
    if "constant_input.weight" in keys or any(k.startswith("style_mlp.") for k in keys):
        return "basicsr-stylegan2", state
    if "input.input" in keys:
        log.info("%s is a rosinality/stylegan2-pytorch generator; reading it as BasicSR's StyleGAN2Generator", source)
        return "basicsr-stylegan2", _rename({k: v for k, v in state.items() if not k.endswith(".kernel")}, _ROSINALITY, source)
    if any(k.startswith("g_mapping.dense") for k in keys) or any(k.startswith("g_synthesis.blocks.") for k in keys):
        return "lernapparat-stylegan1", _rename(state, [_PULSE_NOISE], source)
    if "main.0.weight" in keys and all(k.startswith("main.") for k in keys):
        return "dcgan", state
    if "blocks.4x4.const" in keys:
        raise ModelError(f"{source} is PULSE's synthesis.pt alone; PULSE's mapping.pt must be in the same folder (pass the file or the folder)")
    if "dense0.weight" in keys and not any(k.startswith("blocks.") for k in keys):
        raise ModelError(f"{source} is PULSE's mapping.pt; pass its synthesis.pt (or the folder holding both) instead")
    sample = ", ".join(sorted(keys)[:5])
    raise ModelError(
        f"{source}: unrecognised key layout (first keys: {sample}); expected BasicSR StyleGAN2Generator keys "
        "(style_mlp.*, constant_input.weight, ...), rosinality's (g_ema: style.*, input.input, ...), "
        "the StyleGAN port's g_mapping.dense*/g_synthesis.blocks.* (or PULSE's synthesis.pt + mapping.pt) "
        "or the DCGAN tutorial's main.N.*"
    )


def _shape(state: Mapping[str, torch.Tensor], *keys: str, dim: int) -> int | None:
    for key in keys:
        if key in state and state[key].ndim > dim:
            return int(state[key].shape[dim])
    return None


def _indices(state: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))})


def infer_config(layout: str, state: Mapping[str, torch.Tensor]) -> AnyConfig:
    """The architecture a state dict describes, read from its tensor shapes."""
    if layout == "basicsr-stylegan2":
        mlp = _indices(state, r"style_mlp\.(\d+)\.weight")
        w_dim = _shape(state, *[f"style_mlp.{i}.weight" for i in mlp], "style_conv1.modulated_conv.modulation.weight", dim=1)
        blocks = max(_indices(state, r"to_rgbs\.(\d+)\..*") + [(max(_indices(state, r"style_convs\.(\d+)\..*") or [-1]) - 1) // 2])
        channels = [_shape(state, "constant_input.weight", "style_conv1.modulated_conv.weight", dim=1)]
        for b in range(blocks + 1):
            conv = f"style_convs.{2 * b}.modulated_conv.weight"
            channels.append(_shape(state, conv, f"style_convs.{2 * b + 1}.modulated_conv.weight", dim=1))
        if w_dim is None or None in channels or not mlp:
            raise ModelError("cannot read the StyleGAN2 architecture from this checkpoint: style_mlp/style_convs weights are missing")
        return StyleGAN2Config(resolution=2 ** (blocks + 3), w_dim=w_dim, num_mlp=max(mlp), channels=tuple(channels))  # style_mlp.0 has no weights
    if layout == "lernapparat-stylegan1":
        mlp = _indices(state, r"g_mapping\.dense(\d+)\.weight")
        w_dim = _shape(state, *[f"g_mapping.dense{i}.weight" for i in mlp], "g_synthesis.blocks.4x4.epi1.style_mod.lin.weight", dim=1)
        sides = sorted({int(m.group(1)) for k in state if (m := re.match(r"g_synthesis\.blocks\.(\d+)x\1\.", k))})
        channels = [_shape(state, "g_synthesis.blocks.4x4.const", dim=1)]
        channels += [_shape(state, f"g_synthesis.blocks.{s}x{s}.conv1.weight", f"g_synthesis.blocks.{s}x{s}.conv0_up.weight", dim=0) for s in sides if s > 4]
        if w_dim is None or not sides or None in channels or not mlp:
            raise ModelError("cannot read the StyleGAN architecture from this checkpoint: g_mapping/g_synthesis weights are missing")
        return StyleGAN1Config(resolution=max(sides), w_dim=w_dim, num_mlp=max(mlp) + 1, channels=tuple(channels))
    if layout == "dcgan":
        try:
            return dcgan.infer_config(state)
        except (ValueError, KeyError) as err:
            raise ModelError(f"cannot read the DCGAN architecture from this checkpoint: {err}") from None
    raise ModelError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")


def config_for(layout: str, arch: Mapping[str, object]) -> AnyConfig:
    """The architecture a registry entry promises (`arch` as in `models.weights`)."""
    if layout == "basicsr-stylegan2":
        return StyleGAN2Config.basicsr(**arch)
    if layout == "lernapparat-stylegan1":
        return StyleGAN1Config.karras(**arch)
    if layout == "dcgan":
        return DCGANConfig(**arch)
    raise ModelError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")


def build(config: AnyConfig) -> AnyGenerator:
    kinds = {StyleGAN2Config: StyleGAN2Generator, StyleGAN1Config: StyleGAN1Generator, DCGANConfig: DCGANGenerator}
    return kinds[type(config)](config)


def published_state(generator: AnyGenerator) -> dict[str, object]:
    """The generator's weights as the published file holds them (what `torch.save` should write)."""
    state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    wrapper = {"stylegan2": "params_ema", "dcgan": "netG_state_dict"}.get(generator.kind)
    return {wrapper: state} if wrapper else state


def pulse_split_state(generator: StyleGAN1Generator) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A StyleGAN (v1) generator's weights as PULSE's cache holds them: (synthesis.pt, mapping.pt).
    PULSE's G_synthesis keeps each noise strength at `epiN.noise.weight` (the port: `epiN.top_epi.noise.weight`)."""
    state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    synthesis = {re.sub(r"\.top_epi\.noise\.", ".noise.", k.removeprefix("g_synthesis.")): v for k, v in state.items() if k.startswith("g_synthesis.")}
    mapping = {k.removeprefix("g_mapping."): v for k, v in state.items() if k.startswith("g_mapping.")}
    return synthesis, mapping


def read_state(path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """The layout and flat state dict of the checkpoint at `path`; PULSE's synthesis.pt is joined with its mapping.pt."""
    from models.weights import load_checkpoint, pulse_file  # weights imports nothing from here; keep the edge one-way at import

    checkpoint = load_checkpoint(path)
    if "blocks.4x4.const" in checkpoint and "torgb.weight" in checkpoint:  # PULSE's G_synthesis
        mapping = pulse_file([path.parent], "mapping.pt")
        if mapping is None:
            raise ModelError(f"{path} is PULSE's synthesis.pt, but its mapping.pt is not beside it; copy it from PULSE's cache/ folder into {path.parent}")
        joined = {f"g_synthesis.{k}": v for k, v in checkpoint.items()} | {f"g_mapping.{k}": v for k, v in load_checkpoint(mapping).items()}
        log.info("read PULSE's split StyleGAN from %s and %s", path, mapping)
        return unwrap(joined, source=f"{path} + {mapping.name}")
    return unwrap(checkpoint, source=str(path))


def load_strictly(make: Callable[[], torch.nn.Module], state: Mapping[str, torch.Tensor], mismatch: str) -> torch.nn.Module:
    """`make()` with `state` loaded strictly. The keys and shapes are compared first on a
    meta-device copy (no memory), so a mismatch is a `ModelError` "`mismatch`: <readable diff>"."""
    with torch.device("meta"):
        expected = make().state_dict()
    diff = state_diff(expected, state)
    if diff:
        raise ModelError(f"{mismatch}: {diff}")
    module = make()
    module.load_state_dict(state, strict=True)
    return module


def state_diff(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], *, limit: int = 8) -> str:
    """A one-line, readable difference between two state dicts' keys and shapes ('' if none)."""

    def listing(items: list[str]) -> str:
        more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    shapes = [f"{k} {list(got[k].shape)} (expected {list(expected[k].shape)})" for k in sorted(set(expected) & set(got)) if got[k].shape != expected[k].shape]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: {listing(missing)}")
    if extra:
        parts.append(f"unexpected {len(extra)}: {listing(extra)}")
    if shapes:
        parts.append(f"wrong shape {len(shapes)}: {listing(shapes)}")
    return "; ".join(parts)


def load_generator(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    layout: str | None = None,
    arch: Mapping[str, object] | None = None,
) -> AnyGenerator:
    """Load a checkpoint strictly. `layout`/`arch` (a registry entry's) pin what the file must be."""
    found, state = read_state(Path(path))
    if layout is not None and found != layout:
        raise ModelError(f"{path} has the {found} key layout, but its registry entry says {layout}; delete it and fetch it again")
    config = config_for(found, arch) if arch is not None else infer_config(found, state)
    described = repr(config)
    generator = load_strictly(lambda: build(config), state, f"{path} does not match {described}")
    log.info("loaded %s %dpx generator from %s", generator.kind, generator.resolution, path)
    return generator.eval().requires_grad_(False).to(device)


@dataclasses.dataclass(frozen=True)
class GaussianFit:
    """Per-dimension statistics of `leaky_relu(w, 5)` (PULSE's inverse of the mapping's last ReLU)."""

    mean: torch.Tensor  # [w_dim]
    std: torch.Tensor  # [w_dim]

    def to(self, device: torch.device | str) -> "GaussianFit":
        return GaussianFit(self.mean.to(device), self.std.to(device))


@torch.no_grad()
def compute_gaussian_fit(generator: Generator, *, samples: int = FIT_SAMPLES, seed: int = FIT_SEED, chunk: int = 65536, device: torch.device | str = "cpu") -> GaussianFit:
    """Mean and std of `leaky_relu(mapping(z), 5)` over `samples` z ~ N(0, I), drawn from `seed`."""
    rng = torch.Generator().manual_seed(seed)  # drawn on the CPU so every device gets the same z
    total = torch.zeros(generator.w_dim, dtype=torch.float64, device=device)
    total_sq = torch.zeros_like(total)
    done = 0
    while done < samples:
        n = min(chunk, samples - done)
        z = torch.randn(n, generator.w_dim, generator=rng).to(device)  # [n, w_dim]
        w = F.leaky_relu(generator.mapping(z), 5.0).double()  # [n, w_dim]
        total += w.sum(0)
        total_sq += w.pow(2).sum(0)
        done += n
    mean = total / samples
    var = (total_sq - samples * mean.pow(2)) / max(samples - 1, 1)
    return GaussianFit(mean.float().cpu(), var.clamp(min=0).sqrt().float().cpu())


def pulse_gaussian_fit(generator: Generator, path: Path) -> GaussianFit:
    """PULSE's own `gaussian_fit.pt` (`{"mean": [w_dim], "std": [w_dim]}`, saved from CUDA tensors), checked."""
    from models.weights import load_checkpoint

    saved = load_checkpoint(path)
    mean, std = saved.get("mean"), saved.get("std")
    if not all(isinstance(t, torch.Tensor) and tuple(t.shape) == (generator.w_dim,) for t in (mean, std)):
        raise ModelError(f"{path} is not PULSE's gaussian fit: expected {{'mean', 'std'}} tensors of shape [{generator.w_dim}]; "
                         f"delete it and facezoom computes the fit itself")
    if not bool(torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise ModelError(f"{path} holds non-finite or non-positive statistics; delete it and facezoom computes the fit itself")
    log.info("gaussian fit read from PULSE's %s", path)
    return GaussianFit(mean.float(), std.float())


def gaussian_fit(generator: Generator, weights_path: str | Path, *, samples: int = FIT_SAMPLES, seed: int = FIT_SEED,
                 device: torch.device | str = "cpu") -> GaussianFit | None:
    """The fit for the generator loaded from `weights_path`: None for a generator without a mapping
    network; PULSE's own `gaussian_fit.pt` beside its `synthesis.pt` (or in the folder above its
    cache); else read from facezoom's cache file, or computed and cached.

    The cache (`<weights>.gaussian_fit.pt`, beside the weights; under `FACEZOOM_HOME/fits/` if
    that folder is read-only) records the weights' SHA-256, so replaced weights are refitted.
    PULSE's split files are fitted from both files' hashes and cached only under
    `FACEZOOM_HOME/fits/`: PULSE finds its own downloads by `glob("<md5>_*")` and would take a
    second file beside them for a broken download.
    """
    import hashlib

    from models.weights import cache_dir, pulse_file, save_checkpoint, sha256_file

    if generator.mapping is None:
        return None
    weights_path = Path(weights_path)
    mapping = pulse_file([weights_path.parent], "mapping.pt") if weights_path.name.endswith("synthesis.pt") else None
    if mapping is not None:
        pulses = pulse_file([weights_path.parent, weights_path.parent.parent], "gaussian_fit.pt")
        if pulses is not None:
            return pulse_gaussian_fit(generator, pulses)
        digest = hashlib.sha256(f"{sha256_file(weights_path)} {sha256_file(mapping)}".encode()).hexdigest()
        candidates = [cache_dir() / "fits" / f"{digest}.gaussian_fit.pt"]
    else:
        digest = sha256_file(weights_path)
        candidates = [fit_cache_path(weights_path), cache_dir() / "fits" / f"{digest}.gaussian_fit.pt"]
    for path in candidates:
        if path.is_file():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - any unreadable file costs a recomputation, nothing more
                log.warning("ignoring unreadable gaussian fit cache %s (%s)", path, err)
                continue
            if (not isinstance(cached, dict) or not {"mean", "std", "samples", "seed"} <= set(cached)
                    or not all(isinstance(cached[k], torch.Tensor) and torch.isfinite(cached[k]).all() for k in ("mean", "std"))):
                log.warning("ignoring malformed gaussian fit cache %s", path)
                continue
            fits = cached.get("weights_sha256") == digest and tuple(cached["mean"].shape) == (generator.w_dim,)
            if fits and int(cached["samples"]) == samples and int(cached["seed"]) == seed:
                log.debug("gaussian fit read from %s", path)
                return GaussianFit(cached["mean"], cached["std"])
            log.info("gaussian fit at %s is for other weights or settings; recomputing", path)
    log.info("computing the gaussian fit of the mapping network (%d samples, seed %d); done once per weights file", samples, seed)
    fit = compute_gaussian_fit(generator, samples=samples, seed=seed, device=device)
    if not bool(torch.isfinite(fit.mean).all() and torch.isfinite(fit.std).all()):  # NaN weights: not worth a file; the
        return fit  # search's renders are NaN too, and the run stops at its first batch (pipeline/stages/superres.py)
    record = {"mean": fit.mean, "std": fit.std, "samples": torch.tensor(samples), "seed": torch.tensor(seed), "weights_sha256": digest}
    for path in candidates:
        try:
            save_checkpoint(path, record)
            log.info("gaussian fit cached at %s", path)
            break
        except OSError as err:
            log.warning("could not cache the gaussian fit at %s (%s)", path, err)
    return fit
