"""StyleGAN generators and strict checkpoint loading (models/networks/stylegan1.py, stylegan2.py, models/generators.py).

The expected key sets are re-derived here from the published model definitions (BasicSR
`StyleGAN2Generator`, lernapparat's `g_mapping`/`g_synthesis` port), independently of our modules,
so a renamed or reshaped parameter fails before anyone downloads a real checkpoint.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.errors import ModelError
from models.generators import load_generator, published_state
from models.networks.stylegan1 import ScaledConv2d, StyleGAN1Config, StyleGAN1Generator
from models.networks.stylegan2 import StyleGAN2Config, StyleGAN2Generator


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_v2(resolution=32, seed=0):
    torch.manual_seed(seed)
    return StyleGAN2Generator(StyleGAN2Config(resolution=resolution, w_dim=16, num_mlp=2, channels=(16, 16, 8, 8, 8)[: int(math.log2(resolution)) - 1]))


def tiny_v1(resolution=32, seed=0):
    torch.manual_seed(seed)
    return StyleGAN1Generator(StyleGAN1Config(resolution=resolution, w_dim=16, num_mlp=2, channels=(16, 16, 8, 8, 8)[: int(math.log2(resolution)) - 1]))


def basicsr_keys(resolution: int, channels: dict[int, int], w_dim: int, num_mlp: int) -> dict[str, tuple]:
    """BasicSR StyleGAN2Generator's state dict keys and shapes, from its definition."""
    keys = {}
    for i in range(1, num_mlp + 1):  # style_mlp.0 is the parameter-free NormStyleCode
        keys[f"style_mlp.{i}.weight"], keys[f"style_mlp.{i}.bias"] = (w_dim, w_dim), (w_dim,)

    def modconv(prefix, cin, cout, k):
        keys[f"{prefix}.modulated_conv.weight"] = (1, cout, cin, k, k)
        keys[f"{prefix}.modulated_conv.modulation.weight"] = (cin, w_dim)
        keys[f"{prefix}.modulated_conv.modulation.bias"] = (cin,)

    def style_conv(prefix, cin, cout):
        modconv(prefix, cin, cout, 3)
        keys[f"{prefix}.weight"], keys[f"{prefix}.activate.bias"] = (1,), (cout,)

    keys["constant_input.weight"] = (1, channels[4], 4, 4)
    style_conv("style_conv1", channels[4], channels[4])
    modconv("to_rgb1", channels[4], 3, 1)
    keys["to_rgb1.bias"] = (1, 3, 1, 1)
    log_size = int(math.log2(resolution))
    for layer in range((log_size - 2) * 2 + 1):
        side = 2 ** ((layer + 5) // 2)
        keys[f"noises.noise{layer}"] = (1, 1, side, side)
    cin = channels[4]
    for i in range(3, log_size + 1):
        cout = channels[2**i]
        style_conv(f"style_convs.{2 * (i - 3)}", cin, cout)
        style_conv(f"style_convs.{2 * (i - 3) + 1}", cout, cout)
        modconv(f"to_rgbs.{i - 3}", cout, 3, 1)
        keys[f"to_rgbs.{i - 3}.bias"] = (1, 3, 1, 1)
        cin = cout
    return keys


def lernapparat_keys(resolution: int, channels: dict[int, int], w_dim: int, num_mlp: int) -> dict[str, tuple]:
    """The StyleGAN port's (`for_g_all.pt`) keys and shapes, from its definition."""
    keys = {}
    for i in range(num_mlp):
        keys[f"g_mapping.dense{i}.weight"], keys[f"g_mapping.dense{i}.bias"] = (w_dim, w_dim), (w_dim,)

    def epi(prefix, c):  # the port's LayerEpilogue: top_epi = Sequential(noise, activation, instance_norm), style_mod
        keys[f"{prefix}.top_epi.noise.weight"] = (c,)
        keys[f"{prefix}.style_mod.lin.weight"], keys[f"{prefix}.style_mod.lin.bias"] = (2 * c, w_dim), (2 * c,)

    b = "g_synthesis.blocks"
    c = channels[4]
    keys[f"{b}.4x4.const"], keys[f"{b}.4x4.bias"] = (1, c, 4, 4), (c,)
    epi(f"{b}.4x4.epi1", c)
    keys[f"{b}.4x4.conv.weight"], keys[f"{b}.4x4.conv.bias"] = (c, c, 3, 3), (c,)
    epi(f"{b}.4x4.epi2", c)
    for r in range(3, int(math.log2(resolution)) + 1):
        s, cout = 2**r, channels[2**r]
        p = f"{b}.{s}x{s}"
        keys[f"{p}.conv0_up.weight"], keys[f"{p}.conv0_up.bias"] = (cout, c, 3, 3), (cout,)
        keys[f"{p}.conv0_up.intermediate.kernel"] = (1, 1, 3, 3)
        epi(f"{p}.epi1", cout)
        keys[f"{p}.conv1.weight"], keys[f"{p}.conv1.bias"] = (cout, cout, 3, 3), (cout,)
        epi(f"{p}.epi2", cout)
        c = cout
    keys["g_synthesis.torgb.weight"], keys["g_synthesis.torgb.bias"] = (3, c, 1, 1), (3,)
    return keys


def rosinality_keys(resolution: int, channels: dict[int, int], w_dim: int, num_mlp: int) -> dict[str, tuple]:
    """rosinality/stylegan2-pytorch Generator's keys and shapes (model.py), blur kernels included."""
    keys = {}
    for i in range(1, num_mlp + 1):  # style.0 is PixelNorm
        keys[f"style.{i}.weight"], keys[f"style.{i}.bias"] = (w_dim, w_dim), (w_dim,)

    def modconv(prefix, cin, cout, k, upsample=False):
        keys[f"{prefix}.weight"] = (1, cout, cin, k, k)
        keys[f"{prefix}.modulation.weight"], keys[f"{prefix}.modulation.bias"] = (cin, w_dim), (cin,)
        if upsample:
            keys[f"{prefix}.blur.kernel"] = (4, 4)

    def styled_conv(prefix, cin, cout, upsample=False):
        modconv(f"{prefix}.conv", cin, cout, 3, upsample)
        keys[f"{prefix}.noise.weight"], keys[f"{prefix}.activate.bias"] = (1,), (cout,)

    keys["input.input"] = (1, channels[4], 4, 4)
    styled_conv("conv1", channels[4], channels[4])
    modconv("to_rgb1.conv", channels[4], 3, 1)
    keys["to_rgb1.bias"] = (1, 3, 1, 1)
    log_size = int(math.log2(resolution))
    for layer in range((log_size - 2) * 2 + 1):
        side = 2 ** ((layer + 5) // 2)
        keys[f"noises.noise_{layer}"] = (1, 1, side, side)
    cin = channels[4]
    for i in range(3, log_size + 1):
        cout = channels[2**i]
        styled_conv(f"convs.{2 * (i - 3)}", cin, cout, upsample=True)
        styled_conv(f"convs.{2 * (i - 3) + 1}", cout, cout)
        modconv(f"to_rgbs.{i - 3}.conv", cout, 3, 1)
        keys[f"to_rgbs.{i - 3}.bias"], keys[f"to_rgbs.{i - 3}.upsample.kernel"] = (1, 3, 1, 1), (4, 4)
        cin = cout
    return keys


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_published_stylegan2_512_cmul1_layout():
    with torch.device("meta"):
        g = StyleGAN2Generator(StyleGAN2Config.basicsr(512, channel_multiplier=1))
    channels = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32}
    assert shapes(g) == basicsr_keys(512, channels, 512, 8)
    assert g.num_ws(512) == 16 and g.num_ws(256) == 14


def test_published_stylegan1_ffhq_1024_layout():
    with torch.device("meta"):
        g = StyleGAN1Generator(StyleGAN1Config.karras(1024))
    channels = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    assert shapes(g) == lernapparat_keys(1024, channels, 512, 8)
    # NVIDIA's Gs has 26,219,627 parameters; the port drops the 8 lower-resolution RGB heads (torgb_lod1-8)
    dropped = sum(3 * c + 3 for side, c in channels.items() if side < 1024)
    assert sum(v.numel() for v in g.parameters()) + dropped == 26_219_627
    assert g.num_ws(1024) == 18 and len(g.noise_sizes(1024)) == 18


@pytest.mark.parametrize("make", [tiny_v2, tiny_v1])
def test_checkpoint_round_trip_in_published_layout(tmp_path, make):
    g = make()
    path = tmp_path / "g.pt"
    # the StyleGAN port was published in Feb 2019, in torch's legacy (pre-1.6, non-zip) format
    torch.save(published_state(g), path, _use_new_zipfile_serialization=g.kind == "stylegan2")
    if g.kind == "stylegan2":
        assert set(torch.load(path, weights_only=True)) == {"params_ema"}
    loaded = load_generator(path)  # layout recognised from the keys, architecture from the shapes
    assert loaded.kind == g.kind and loaded.config == g.config
    ws = torch.randn(2, g.num_ws(32), 16)
    noise = [torch.randn(2, 1, s, s) for s in g.noise_sizes(32)]
    torch.testing.assert_close(loaded.synthesize(ws, noise), g.synthesize(ws, noise), rtol=0, atol=0)
    assert not any(p.requires_grad for p in loaded.parameters())


@pytest.mark.parametrize("make", [tiny_v2, tiny_v1])
def test_missing_extra_or_misshaped_key_fails_with_a_diff(tmp_path, make):
    state = published_state(make())
    flat = state["params_ema"] if "params_ema" in state else state
    victim = sorted(k for k in flat if k.endswith("bias"))[3]
    for change, expect in [
        (lambda d: d.pop(victim), f"missing 1: {victim}"),
        (lambda d: d.__setitem__("extra.weight", torch.zeros(2)), "unexpected 1: extra.weight"),
        (lambda d: d.__setitem__(victim, torch.zeros(99)), f"wrong shape 1: {victim} [99] (expected"),
    ]:
        broken = {k: v.clone() for k, v in flat.items()}
        change(broken)
        path = tmp_path / "broken.pt"
        torch.save({"params_ema": broken} if "params_ema" in state else broken, path)
        with pytest.raises(ModelError) as err:
            load_generator(path)
        assert expect in str(err.value) and str(path) in str(err.value)


def test_registry_arch_is_enforced(tmp_path):
    """A file that is a valid StyleGAN2 but not the architecture its registry entry promises is refused."""
    path = tmp_path / "g.pt"
    torch.save(published_state(tiny_v2()), path)
    with pytest.raises(ModelError, match="wrong shape"):
        load_generator(path, layout="basicsr-stylegan2", arch={"resolution": 32, "w_dim": 16, "num_mlp": 2})
    with pytest.raises(ModelError, match="lernapparat-stylegan1"):
        load_generator(path, layout="lernapparat-stylegan1", arch={"resolution": 32})


def test_unknown_layout_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(ModelError, match="unrecognised key layout"):
        load_generator(path)


class Exotic:
    pass


def test_a_pickled_class_is_refused_and_named_in_one_line(tmp_path):
    """weights_only=True runs no code from the file; the message names what it would have run."""
    path = tmp_path / "module.pt"
    torch.save({"params_ema": {"constant_input.weight": torch.zeros(1)}, "note": Exotic()}, path)
    with pytest.raises(ModelError) as err:
        load_generator(path)
    message = str(err.value)
    assert "pickles test_stylegan.Exotic" in message and "\n" not in message and "\x1b" not in message


def test_rosinality_checkpoints_load_as_basicsr(tmp_path):
    """rosinality/stylegan2-pytorch files, converted ({g_ema, latent_avg}) or from training (with
    the discriminator and an argparse Namespace of its arguments), load as the same network."""
    import argparse

    channels = {4: 16, 8: 16, 16: 8, 32: 8}
    torch.manual_seed(0)
    state = {k: torch.randn(shape) for k, shape in rosinality_keys(32, channels, 16, 2).items()}
    path = tmp_path / "converted.pt"
    torch.save({"g_ema": state, "latent_avg": torch.randn(16)}, path)
    g = load_generator(path)
    assert g.kind == "stylegan2" and g.resolution == 32 and g.config.channels == (16, 16, 8, 8)
    assert torch.equal(g.state_dict()["style_convs.2.modulated_conv.weight"], state["convs.2.conv.weight"])
    assert torch.equal(g.state_dict()["style_convs.2.weight"], state["convs.2.noise.weight"])
    assert torch.equal(g.state_dict()["noises.noise4"], state["noises.noise_4"])
    trained = tmp_path / "010000.pt"
    torch.save({"g": state, "d": {"convs.0.0.weight": torch.zeros(1)}, "g_ema": state,
                "args": argparse.Namespace(size=32, latent=16, n_mlp=2, iter=np.int64(10000))}, trained)
    assert load_generator(trained).config == g.config


def test_other_noise_and_data_parallel_spellings_load(tmp_path):
    """PULSE's copy of the StyleGAN port names noise strengths epiN.noise.weight; data-parallel
    runs prefix every key with module."""
    g1 = tiny_v1()
    pulse = {k.replace(".top_epi.noise.", ".noise."): v for k, v in published_state(g1).items()}
    assert any(k.endswith("epi1.noise.weight") for k in pulse)
    torch.save(pulse, tmp_path / "pulse.pt")
    assert torch.equal(load_generator(tmp_path / "pulse.pt").state_dict()["g_synthesis.blocks.4x4.epi1.top_epi.noise.weight"],
                       g1.state_dict()["g_synthesis.blocks.4x4.epi1.top_epi.noise.weight"])
    g2 = tiny_v2()
    torch.save({"params_ema": {f"module.{k}": v for k, v in g2.state_dict().items()}}, tmp_path / "ddp.pt")
    assert load_generator(tmp_path / "ddp.pt").config == g2.config
    # both spellings of one tensor: which one would load is not for us to guess
    both = dict(published_state(g1), **{"g_synthesis.blocks.4x4.epi1.noise.weight": torch.zeros(16)})
    torch.save(both, tmp_path / "both.pt")
    with pytest.raises(ModelError, match="epi1.noise.weight.*same tensor"):
        load_generator(tmp_path / "both.pt")


def test_stylegan2_stops_at_a_lower_block():
    """Rendering at 32 from a 64 generator equals the 32 generator made of its first blocks."""
    big = tiny_v2(64)
    small = StyleGAN2Generator(StyleGAN2Config(resolution=32, w_dim=16, num_mlp=2, channels=big.config.channels[:-1]))
    state = {k: v for k, v in big.state_dict().items() if k in small.state_dict()}
    small.load_state_dict(state, strict=True)
    ws = torch.randn(2, big.num_ws(32), 16)
    noise = [torch.randn(2, 1, s, s) for s in big.noise_sizes(32)]
    torch.testing.assert_close(big.synthesize(ws, noise, render_size=32), small.synthesize(ws, noise))
    with pytest.raises(ValueError, match="can render at"):
        big.synthesize(ws, noise, render_size=48)


def test_stylegan1_fused_upscale_is_upsample_then_flipped_conv():
    """From 128 px on, StyleGAN v1 fuses up-sampling into a transposed conv (as the TF original)."""
    torch.manual_seed(0)
    conv = ScaledConv2d(4, 5, 3, gain=math.sqrt(2), upscale=True)
    x = torch.randn(1, 4, 64, 64)
    w = (conv.weight * conv.w_mul).flip([2, 3])
    reference = conv.intermediate(F.conv2d(F.interpolate(x, scale_factor=2.0), w, padding=1)) + conv.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(conv(x), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [tiny_v2, tiny_v1])
def test_inputs_are_checked_and_gradients_reach_latents_and_noise(make):
    g = make()
    with torch.no_grad():  # random init leaves noise strengths at zero; trained ones are not
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or (name.endswith(".weight") and p.shape == (1,)):
                p.fill_(0.5)
    ws = torch.randn(2, g.num_ws(32), 16, requires_grad=True)
    noise = [torch.randn(2, 1, s, s, requires_grad=True) for s in g.noise_sizes(32)]
    g.synthesize(ws, noise).square().mean().backward()
    assert ws.grad.abs().sum() > 0 and all(n.grad.abs().sum() > 0 for n in noise)
    with pytest.raises(ValueError, match=r"ws must be \[B, num_ws, w_dim\] = \[2, 8, 16\], got \[2, 7, 16\]"):
        g.synthesize(ws[:, :7], noise)
    with pytest.raises(ValueError, match="noise maps must be"):
        g.synthesize(ws, noise[:-1])


@pytest.mark.parametrize("make, key", [(tiny_v2, "style_mlp.1.weight"), (tiny_v1, "g_mapping.dense0.weight")])
def test_a_missing_mapping_layer_is_named(tmp_path, make, key):
    """The architecture of a local file is read from its shapes; a hole in it still shows in the diff."""
    state = published_state(make())
    flat = state["params_ema"] if "params_ema" in state else state
    del flat[key]
    path = tmp_path / "g.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match=f"missing 1: {key.replace('.', '[.]')}"):
        load_generator(path)


def test_pulse_cache_files_load_strictly_with_their_gaussian_fit(tmp_path, monkeypatch):
    """PULSE's own downloads: cache/<md5>_synthesis.pt (G_synthesis: blocks.*, torgb.*, noise strengths at
    epiN.noise.weight) and cache/<md5>_mapping.pt (G_mapping: dense0..7), and gaussian_fit.pt written in
    PULSE's working folder, which is the cache folder's parent."""
    from models import weights
    from models.backends.pulse import PulseBackend
    from models.generators import gaussian_fit, pulse_split_state

    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path / "home"))
    g = tiny_v1()
    state = g.state_dict()
    synthesis = {k.removeprefix("g_synthesis.").replace(".top_epi.noise.", ".noise."): v for k, v in state.items() if k.startswith("g_synthesis.")}
    mapping = {k.removeprefix("g_mapping."): v for k, v in state.items() if k.startswith("g_mapping.")}
    assert {"blocks.4x4.const", "torgb.weight", "blocks.4x4.epi1.noise.weight"} <= set(synthesis)
    assert set(mapping) == {f"dense{i}.{p}" for i in range(2) for p in ("weight", "bias")}
    assert [set(part) for part in pulse_split_state(g)] == [set(synthesis), set(mapping)]
    cache = tmp_path / "pulse" / "cache"
    cache.mkdir(parents=True)
    torch.save(synthesis, cache / "3a0c1a5ba1f6e7ba2fd1be0f3b8d1f55_synthesis.pt")
    with pytest.raises(ModelError, match="mapping.pt is not beside it"):
        load_generator(weights.resolve(str(cache)))
    torch.save(mapping, cache / "8e5f2b1f1d1c24a3e0d1f5c0b9f3a2d1_mapping.pt")

    path = weights.resolve(str(cache))  # the folder a PULSE user already has
    assert path.name.endswith("_synthesis.pt")
    loaded = load_generator(path)
    ws, noise = torch.randn(2, g.num_ws(32), 16), [torch.randn(2, 1, s, s) for s in g.noise_sizes(32)]
    torch.testing.assert_close(loaded.synthesize(ws, noise), g.synthesize(ws, noise), rtol=0, atol=0)
    torch.testing.assert_close(loaded.mapping(ws[:, 0]), g.mapping(ws[:, 0]), rtol=0, atol=0)

    computed = gaussian_fit(loaded, path, samples=100)  # no gaussian_fit.pt yet: computed, and cached outside PULSE's folder
    assert sorted(p.name for p in cache.iterdir()) == sorted(["3a0c1a5ba1f6e7ba2fd1be0f3b8d1f55_synthesis.pt", "8e5f2b1f1d1c24a3e0d1f5c0b9f3a2d1_mapping.pt"])
    assert len(list((tmp_path / "home" / "fits").iterdir())) == 1 and torch.equal(gaussian_fit(loaded, path, samples=100).mean, computed.mean)
    (cache / "tmp_5f0e_3a0c1a5ba1f6e7ba2fd1be0f3b8d1f55_synthesis.pt").write_bytes(b"an interrupted PULSE download")
    assert weights.resolve(str(cache)) == path  # PULSE's own leftovers are not its files
    mean, std = torch.randn(16), torch.rand(16) + 0.5
    torch.save({"mean": mean, "std": std}, tmp_path / "pulse" / "gaussian_fit.pt")
    fit = gaussian_fit(loaded, path, samples=100)
    assert torch.equal(fit.mean, mean) and torch.equal(fit.std, std)  # PULSE's, not recomputed
    torch.save({"mean": mean[:8], "std": std}, tmp_path / "pulse" / "gaussian_fit.pt")
    with pytest.raises(ModelError, match="not PULSE's gaussian fit"):
        gaussian_fit(loaded, path, samples=100)

    # The registry entry: Google Drive files, placed by hand where the error says.
    with pytest.raises(ModelError) as err:
        weights.fetch("pulse-stylegan1-ffhq-1024", progress=False)
    for url, target in ((weights.PULSE_DRIVE + "1TCViX1YpQyRsklTVYEJwdbmK91vklCo8", weights.path_for("pulse-stylegan1-ffhq-1024")),
                        (weights.PULSE_DRIVE + "14R6iHGf5iuVx3DMNsACAl7eBr7Vdpd0k", weights.cache_dir() / "weights" / "pulse" / "mapping.pt")):
        assert f"{url} to {target}" in str(err.value)
    assert "`facezoom weights verify pulse-stylegan1-ffhq-1024`" in str(err.value)
    target = weights.path_for("pulse-stylegan1-ffhq-1024")
    target.parent.mkdir(parents=True)
    torch.save(synthesis, target)
    torch.save(mapping, target.with_name("mapping.pt"))
    torch.save({"mean": mean, "std": std}, target.with_name("gaussian_fit.pt"))
    tiny_arch = (("resolution", 32), ("channels", g.config.channels), ("w_dim", 16), ("num_mlp", 2))
    monkeypatch.setitem(weights.REGISTRY, "pulse-stylegan1-ffhq-1024",
                        dataclasses.replace(weights.REGISTRY["pulse-stylegan1-ffhq-1024"], arch=tiny_arch))
    monkeypatch.setattr("models.generators.config_for", lambda layout, arch: StyleGAN1Config(**dict(arch)))
    backend = PulseBackend.from_settings(generator="pulse-stylegan1-ffhq-1024", device=torch.device("cpu"), in_size=8, out_size=None,
                                         steps=2, warm_steps=1, eps=2e-3, temporal_weight=0.0)
    assert torch.equal(backend.fit.mean, mean) and backend.generator.resolution == 32
