"""PULSE latent search, warm starts and the `pulse` backend (models/search.py, models/backends/pulse.py), on tiny CPU generators."""

import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from models import generators
from models import weights
from models.backends.base import consistency
from models.downscale import bicubic_downscale
from models.errors import ModelError
from models.generators import compute_gaussian_fit, published_state
from models.backends.pulse import PulseBackend, default_out_size
from models.networks.stylegan1 import StyleGAN1Config, StyleGAN1Generator
from models.networks.stylegan2 import StyleGAN2Config, StyleGAN2Generator
from models.networks.stylegan2 import pulse_w_plus
from models.search import draw_start, geocross, one_cycle, pulse_search

EPS = 2e-3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tame(g):
    """Random weights as a trained generator would have them: RGB near [-1, 1], noise that matters."""
    with torch.no_grad():
        for name, p in g.named_parameters():
            if "rgb" in name and name.endswith("modulated_conv.weight"):
                p.mul_(0.5)
            if name.endswith("torgb.weight"):
                p.mul_(0.3)
            if name.endswith("noise.weight") or (name.endswith(".weight") and p.shape == (1,)):
                p.fill_(0.1)
    return g.eval().requires_grad_(False)


def tiny_v2(resolution=32):
    torch.manual_seed(0)
    return tame(StyleGAN2Generator(StyleGAN2Config(resolution=resolution, w_dim=32, num_mlp=2, channels=(32, 32, 16, 16, 16)[: int(math.log2(resolution)) - 1])))


def tiny_v1(resolution=32):
    torch.manual_seed(0)
    return tame(StyleGAN1Generator(StyleGAN1Config(resolution=resolution, w_dim=32, num_mlp=2, channels=(32, 32, 16, 16)[: int(math.log2(resolution)) - 1])))


@pytest.fixture(scope="module")
def g():
    return tiny_v2()


@pytest.fixture(scope="module")
def fit(g):
    return compute_gaussian_fit(g, samples=20_000)


def render(g, fit, latents: torch.Tensor, noise_seed: int = 99) -> torch.Tensor:
    """Faces from known latents `[T, L, D]`, as the generator renders them on its device: `[T, 3, R, R]` on the CPU."""
    device = next(g.parameters()).device
    _, noise = draw_start(g, noise_seed, render_size=g.resolution)
    with torch.no_grad():
        ws = F.leaky_relu(latents.to(device) * fit.std.to(device) + fit.mean.to(device), 0.2)
        return g.synthesize(ws, [m[None].expand(len(latents), -1, -1, -1).to(device) for m in noise]).clamp(-1, 1).cpu()


def known_faces(g, fit, seeds):
    latents = torch.stack([draw_start(g, s, render_size=g.resolution)[0] for s in seeds])
    hr = render(g, fit, latents)
    return hr, bicubic_downscale(hr, 16).clamp(-1, 1)


def search(g, fit, lr, **kw):
    kw.setdefault("seeds", list(range(lr.shape[0])))
    return pulse_search(g, lr, fit=fit, device="cpu", **kw)


def test_schedule_and_geocross_follow_pulse():
    assert one_cycle(0, 100) == pytest.approx(0.1)
    assert one_cycle(45, 100) == pytest.approx(1.0)
    assert one_cycle(90, 100) == pytest.approx(0.1)
    assert one_cycle(99, 100) == pytest.approx(0.1 + 0.9 * (0.001 - 0.1))
    w = torch.randn(2, 6, 32)
    assert torch.all(geocross(w) > 0)
    torch.testing.assert_close(geocross(w * 3), geocross(w))  # angles only
    assert geocross(w[:, :1].expand(-1, 6, -1)).abs().max() < 1e-3  # one direction: nothing to pull together


def test_recovers_a_face_rendered_from_a_known_latent(g, fit):
    _, lr = known_faces(g, fit, [11, 12])
    res = search(g, fit, lr, steps=100)
    assert res.success.all() and (res.l2 <= EPS).all() and (res.steps < 100).all(), (res.l2, res.steps)
    assert res.images.shape == (2, 1, 3, 32, 32) and res.images.abs().max() <= 1
    recomputed = ((bicubic_downscale(res.images[:, 0], 16).clamp(-1, 1) - lr) / 2).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(recomputed, res.l2[:, 0])  # the reported L2 is the returned image's


def test_a_crop_that_cannot_be_matched_is_reported_and_stops_no_one_else(g, fit):
    _, face = known_faces(g, fit, [13])
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2.0 - 1  # no face downscales to this
    lr = torch.cat([face, checker.expand(1, 3, 16, 16)])
    res = search(g, fit, lr, steps=60)
    assert res.success[:, 0].tolist() == [True, False]
    assert res.steps[0, 0] < 60 and res.steps[1, 0] == 60 and res.l2[1, 0] > EPS


class Degrading(torch.nn.Module):
    """A stand-in generator whose every render is worse than the one before."""

    kind, resolution, w_dim, render_sizes = "fake", 32, 8, (32,)

    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.base = F.interpolate(target, size=32, mode="nearest")
        self.calls = 0

    def num_ws(self, size):
        return 2

    def noise_sizes(self, size):
        return [4, 8]

    def mapping(self, z):
        return z

    def styles(self, latent, fit):
        return pulse_w_plus(latent, fit)

    def synthesize(self, ws, noise, *, render_size=None):
        self.calls += 1
        return self.base + 0.1 * self.calls + 0 * ws.sum() + 0 * sum(n.sum() for n in noise)


def test_the_best_image_is_returned_not_the_last():
    lr = torch.zeros(1, 3, 16, 16)
    fake = Degrading(lr)
    flat = generators.GaussianFit(torch.zeros(8), torch.ones(8))
    res = pulse_search(fake, lr, fit=flat, seeds=[0], steps=5, eps=1e-6, geocross_weight=0.0, device="cpu")
    assert fake.calls == 5 and res.steps[0, 0] == 5 and not res.success[0, 0]
    torch.testing.assert_close(res.images[0, 0], torch.full((3, 32, 32), 0.1))  # the first render
    assert res.l2[0, 0] == pytest.approx(0.05**2)


def test_gradients_reach_the_latent_and_the_trainable_noise(g, fit):
    _, lr = known_faces(g, fit, [14])
    res = search(g, fit, lr, steps=3, eps=1e-9, seeds=[5])
    state = res.states[0][0]
    latent, noise = draw_start(g, pulse_seed := int(state["seed"]), render_size=32)
    assert pulse_seed == int(state["seed"])
    assert not torch.allclose(state["latent"], latent)
    trainable = sorted(k for k in state if k.startswith("noise"))
    assert trainable == [f"noise{j}" for j in range(5)]  # PULSE: the first 5 maps; the rest stay fixed
    for j in range(5):
        assert state[f"noise{j}"].shape == noise[j].shape and not torch.allclose(state[f"noise{j}"], noise[j])
    assert torch.allclose(state["latent"].norm(dim=-1), latent.norm(dim=-1), rtol=1e-4)  # the spherical projection


def test_same_seeds_same_faces_other_seeds_other_faces(g, fit):
    _, lr = known_faces(g, fit, [15])
    first = search(g, fit, lr, seeds=[3], steps=8, eps=1e-9)
    again = search(g, fit, lr, seeds=[3], steps=8, eps=1e-9)
    assert torch.equal(first.images, again.images) and torch.equal(first.states[0][0]["latent"], again.states[0][0]["latent"])
    other = search(g, fit, lr, seeds=[4], steps=8, eps=1e-9)
    assert not torch.allclose(first.images, other.images, atol=1e-3)
    many = search(g, fit, lr, seeds=[3], samples=3, steps=8, eps=1e-9)
    assert many.images.shape == (1, 3, 3, 32, 32)
    pairs = [(i, j) for i in range(3) for j in range(i + 1, 3)]
    assert all((many.images[0, i] - many.images[0, j]).abs().mean() > 1e-3 for i, j in pairs)
    assert torch.equal(many.images, search(g, fit, lr, seeds=[3], samples=3, steps=8, eps=1e-9).images)
    with pytest.raises(ValueError, match="cold starts"):
        search(g, fit, lr, seeds=[3], samples=2, states=[first.states[0][0]])


def trajectory(g, fit, frames: int, turn: float):
    """Latents moving smoothly along great circles between two gaussian draws, and their 16x16 crops."""
    a, b = (draw_start(g, s, render_size=32)[0] for s in (21, 22))
    latents = torch.stack([math.cos(t) * a + math.sin(t) * b for t in torch.linspace(0, turn, frames).tolist()])
    hr = render(g, fit, latents)
    return hr, bicubic_downscale(hr, 16).clamp(-1, 1)


def test_warm_starts_need_fewer_steps_on_a_smooth_trajectory(g, fit):
    _, lr = trajectory(g, fit, frames=6, turn=0.3)
    cold = search(g, fit, lr, seeds=[7] * 6, steps=100)
    state, warm_steps = None, []
    for frame in range(6):
        res = search(g, fit, lr[frame:frame + 1], seeds=[7], states=[state], steps=100, warm_steps=20)
        assert res.success.all() and not res.cut.any()
        warm_steps.append(int(res.steps[0, 0]))
        state = res.states[0][0]
    assert cold.success.all()
    assert warm_steps[0] == int(cold.steps[0, 0])  # the first frame is a cold start
    assert sum(warm_steps[1:]) * 3 <= int(cold.steps[1:].sum()), (warm_steps, cold.steps.flatten().tolist())


def test_states_are_plain_cpu_tensors_that_survive_pickling(g, fit):
    _, lr = trajectory(g, fit, frames=2, turn=0.2)
    state = search(g, fit, lr[:1], seeds=[1]).states[0][0]
    assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in state.values())
    travelled = pickle.loads(pickle.dumps(state))  # how a Ray actor receives it
    here = search(g, fit, lr[1:], seeds=[1], states=[state])
    there = search(g, fit, lr[1:], seeds=[1], states=[travelled])
    assert torch.equal(here.images, there.images) and here.steps[0, 0] == there.steps[0, 0]
    with pytest.raises(ValueError, match="does not fit this generator"):
        search(g, fit, lr[1:], seeds=[1], states=[{**state, "latent": state["latent"][:3]}])


def test_a_cut_cold_starts_the_track(g, fit):
    _, lr = known_faces(g, fit, [31, 32])
    previous = search(g, fit, lr[:1], seeds=[2]).states[0][0]  # a different person
    res = search(g, fit, lr[1:], seeds=[2], states=[previous], warm_steps=2, steps=100)
    assert res.cut[0, 0] and res.success[0, 0] and res.steps[0, 0] > 2


def test_a_keyframe_far_from_its_start_takes_more_warm_rounds_instead_of_a_cut(g, fit):
    """`warm_rounds` (a keyframe `sr.segment` frames from its parent): round after round from
    the best so far, where one round alone would give up and cold-start (a new face: a pop)."""
    _, lr = trajectory(g, fit, frames=6, turn=0.3)
    start = search(g, fit, lr[:1], seeds=[3]).states[0][0]
    one = search(g, fit, lr[5:], seeds=[3], states=[start], warm_steps=5, steps=100)
    assert one.cut[0, 0]  # five frames on, 5 steps are not enough: a cold start
    more = search(g, fit, lr[5:], seeds=[3], states=[start], warm_steps=5, warm_rounds=[10], steps=100)
    assert more.success[0, 0] and not more.cut[0, 0] and 5 < more.steps[0, 0] < one.steps[0, 0]
    again = search(g, fit, lr[5:], seeds=[3], states=[start], warm_steps=5, warm_rounds=[10], steps=100)
    assert torch.equal(more.images, again.images)  # still deterministic


def test_the_temporal_prior_keeps_the_latent_near_the_previous_frame(g, fit):
    _, lr = trajectory(g, fit, frames=2, turn=0.15)
    state = search(g, fit, lr[:1], seeds=[3]).states[0][0]
    moved = {}
    for weight in (0.0, 0.3):
        res = search(g, fit, lr[1:], seeds=[3], states=[state], warm_steps=20, temporal_weight=weight)
        assert res.success.all() and not res.cut.any()
        moved[weight] = float((res.states[0][0]["latent"] - state["latent"]).norm())
    assert moved[0.3] < 0.7 * moved[0.0]


def test_a_stylegans_search_refines_the_framing_beside_its_noise_maps(g, fit):
    """With `refine_framing` a StyleGAN's state holds the latent, the trainable maps and the framing;
    warm rounds and cuts start from, and keep, all three."""
    _, lr = known_faces(g, fit, [31, 32])
    first = search(g, fit, lr[:1], seeds=[2], refine_framing=True)
    state = first.states[0][0]
    assert first.success.all() and set(state) == {"latent", "framing", "seed"} | {f"noise{j}" for j in range(5)}
    cut = search(g, fit, lr[1:], seeds=[2], states=[state], warm_steps=2, warm_rounds=[2], refine_framing=True)  # another person
    assert cut.cut[0, 0] and cut.success[0, 0] and set(cut.states[0][0]) == set(state)
    assert not torch.equal(cut.states[0][0]["framing"], state["framing"])


def test_backend_contract(g, fit):
    backend = PulseBackend(g, fit, in_size=16, steps=60, warm_steps=20, device="cpu")
    assert backend.out_size == 32 and backend.render_size == 32 and backend.deterministic
    hr, lr = known_faces(g, fit, [41, 42])
    torch.testing.assert_close(backend.downscale(hr), lr)
    out = backend.super_resolve(lr, [None, None], seeds=[0, 1])
    assert out.images.shape == (2, 3, 32, 32) and out.images.dtype == torch.float32 and out.images.abs().max() <= 1
    torch.testing.assert_close(out.consistency, consistency(backend, out.images, lr))
    assert out.success.tolist() == (out.consistency <= EPS).tolist() == [True, True]
    again = backend.super_resolve(lr, out.states, seeds=[0, 1])  # the same frame again: already solved
    assert again.steps.tolist() == [1, 1] and again.success.all()
    torch.testing.assert_close(again.images, out.images, rtol=0, atol=1e-5)  # re-rendered, in a batch of another size
    with pytest.raises(ValueError, match=r"\[B, 3, S, S\] with S in 4\.\.31"):  # any square side below out_size (sr.in_size=auto)
        backend.super_resolve(lr[:, :, :8], [None, None], seeds=[0, 1])
    with pytest.raises(ModelError, match="sr.out_size=64"):
        PulseBackend(g, fit, in_size=16, out_size=64)


@pytest.mark.gpu
def test_on_cuda_the_generator_renders_as_on_the_cpu_and_the_backend_solves_known_faces(fit):
    """The GPU path: the same latents and noise render the CPU's faces (to TF32 convolutions' precision),
    and the search there solves known faces, handing back CPU images and states (what Ray pickles)."""
    on_cuda = tiny_v2().to("cuda")
    latents = torch.stack([draw_start(on_cuda, s, render_size=32)[0] for s in (41, 42)])  # [2, L, D]
    hr = render(tiny_v2(), fit, latents)
    torch.testing.assert_close(render(on_cuda, fit, latents), hr, rtol=0, atol=1e-2)
    lr = bicubic_downscale(hr, 16).clamp(-1, 1)
    backend = PulseBackend(on_cuda, fit, in_size=16, steps=100, warm_steps=20, device="cuda")
    out = backend.super_resolve(lr, [None, None], seeds=[0, 1])
    assert out.images.device.type == "cpu" and out.images.shape == (2, 3, 32, 32) and out.images.abs().max() <= 1
    # success is judged by the L2 the search measured on the GPU; recomputed on the CPU it may differ in the last digits
    assert out.success.tolist() == [True, True] and (out.consistency <= 1.05 * EPS).all(), out.consistency
    assert all(v.device.type == "cpu" for state in out.states for v in state.values())
    again = backend.super_resolve(lr, out.states, seeds=[0, 1])  # CPU states warm-start the search on the GPU
    assert again.success.all() and (again.steps <= backend.warm_steps).all(), again.steps


def test_default_output_sizes():
    with torch.device("meta"):
        assert default_out_size(StyleGAN2Generator(StyleGAN2Config.basicsr(512))) == 256
        assert default_out_size(StyleGAN1Generator(StyleGAN1Config.karras(1024))) == 1024


@pytest.mark.parametrize("make", [tiny_v2, tiny_v1])
def test_from_settings_loads_a_local_checkpoint_and_caches_the_fit(tmp_path, monkeypatch, make):
    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path / "home"))
    path = tmp_path / "tiny.pt"
    torch.save(published_state(make()), path)
    settings = dict(generator=str(path), device=torch.device("cpu"), in_size=16, out_size=None, steps=5, warm_steps=2, eps=EPS, temporal_weight=0.0)
    backend = PulseBackend.from_settings(**settings)
    assert backend.generator.kind == make().kind and backend.out_size == 32
    assert generators.fit_cache_path(path).is_file()

    def refit(*args, **kwargs):
        raise AssertionError("the gaussian fit was computed again")

    monkeypatch.setattr(generators, "compute_gaussian_fit", refit)
    again = PulseBackend.from_settings(**settings)
    torch.testing.assert_close(again.fit.mean, backend.fit.mean)
    lr = backend.downscale(render(backend.generator, backend.fit, draw_start(backend.generator, 1, render_size=32)[0][None]))
    assert backend.super_resolve(lr, [None], seeds=[0]).images.shape == (1, 3, 32, 32)


def test_from_settings_refuses_a_non_stylegan_registry_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path))
    others = [n for n, e in weights.REGISTRY.items() if e.layout not in generators.LAYOUTS]
    for name in others:
        with pytest.raises(ModelError, match="not a generator the latent search can drive"):
            PulseBackend.from_settings(generator=name, device=torch.device("cpu"), in_size=16, out_size=None, steps=5, warm_steps=2, eps=EPS, temporal_weight=0.0)


def test_gaussian_fit_is_seeded_cached_and_redone_for_new_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path / "home"))
    g, path = tiny_v2(), tmp_path / "g.pt"
    torch.save(published_state(g), path)
    first = generators.gaussian_fit(g, path, samples=2000)
    z = torch.randn(2000, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(first.mean, F.leaky_relu(g.mapping(z), 5.0).mean(0))  # PULSE: lrelu(w, 5), seed 0
    assert torch.equal(generators.compute_gaussian_fit(g, samples=2000).std, first.std)
    assert not torch.equal(generators.compute_gaussian_fit(g, samples=2000, seed=1).mean, first.mean)
    for damaged in (b"damaged", b"hello"):  # "hello" read as a pickle: a KeyError
        generators.fit_cache_path(path).write_bytes(damaged)
        torch.testing.assert_close(generators.gaussian_fit(g, path, samples=2000).mean, first.mean)  # recomputed, not a crash
    torch.save({"mean": torch.full_like(first.mean, float("nan")), "std": first.std, "samples": 2000, "seed": 0,
                "weights_sha256": weights.sha256_file(path)}, generators.fit_cache_path(path))
    torch.testing.assert_close(generators.gaussian_fit(g, path, samples=2000).mean, first.mean)  # NaN means: recomputed
    other = tiny_v2()
    with torch.no_grad():
        other.style_mlp[1].bias.add_(1.0)
    torch.save(published_state(other), path)  # new weights under the same name
    refit = generators.gaussian_fit(other, path, samples=2000)
    assert not torch.allclose(refit.mean, first.mean)


def test_a_nan_gaussian_fit_makes_nan_faces_not_flat_grey_ones(g, fit):
    """NaN statistics make every render NaN; the search must say so (NaN images, which the pipeline
    refuses) rather than return its finite placeholder, which was pasted as a flat grey face."""
    _, lr = known_faces(g, fit, [15])
    broken = generators.GaussianFit(torch.full_like(fit.mean, math.nan), fit.std)
    res = search(g, broken, lr, steps=3)
    assert res.images.isnan().all() and not res.success.any()


def test_the_gaussian_fit_of_nan_weights_is_not_cached(tmp_path, monkeypatch):
    """A NaN fit would be read back for the same weights run after run; it is returned (the search then
    makes NaN faces and the run stops) but never written."""
    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path / "home"))
    broken, nan_path = nan_stylegan(tmp_path / "nan.pt")
    assert generators.gaussian_fit(broken, nan_path, samples=2000).mean.isnan().all()
    assert not generators.fit_cache_path(nan_path).exists() and not (tmp_path / "home" / "fits").exists()


def nan_stylegan(path):
    """A tiny StyleGAN2 in BasicSR's layout whose weights are all NaN (a diverged training run): (it, its file)."""
    g = tiny_v2()
    with torch.no_grad():
        for p in g.parameters():
            p.fill_(math.nan)
    torch.save(published_state(g), path)
    return g, path


def test_pulse_over_a_stylegan_with_nan_weights_stops_the_run_in_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """README: non-finite faces stop the run (exit 2, one line naming the file, nothing written); not
    even the NaN gaussian fit is cached beside the weights."""
    from PIL import Image

    from pipeline.commands.cli import main

    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    _, ckpt = nan_stylegan(work / "nan.pt")
    sprite = work / "sprite.png"
    Image.fromarray((torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()).save(sprite)
    code = main(["--quiet", "enhance", str(sprite), "-o", str(work / "out.png"), "--iterations", "1", "--whole",
                 "--set", "sr.backend=pulse", "--set", f"sr.generator={ckpt}", "--set", "sr.steps=3", "--set", "sr.warm_steps=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "not finite" in err[0] and str(ckpt) in err[0], err
    assert sorted(p.name for p in work.iterdir()) == ["nan.pt", "sprite.png"]


def test_the_pipeline_builds_the_pulse_backend_from_its_settings(tmp_path, monkeypatch):
    from pipeline.stages.superres import SRConfig, create_backend

    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path / "home"))
    path = tmp_path / "tiny.pt"
    torch.save(published_state(tiny_v2()), path)
    cfg = SRConfig(backend="pulse", generator=str(path), device="cpu", steps=7, warm_steps=3, eps=1e-3, temporal_weight=0.2)
    backend = create_backend(cfg)
    assert isinstance(backend, PulseBackend) and backend.device == torch.device("cpu")
    assert (backend.steps, backend.warm_steps, backend.eps, backend.temporal_weight) == (7, 3, 1e-3, 0.2)
    with pytest.raises(ModelError, match="neither a registry name"):
        create_backend(SRConfig(backend="pulse", generator=str(tmp_path / "absent.pt"), device="cpu"))


def test_every_configurable_backend_has_a_builder_and_none_is_imported_until_built():
    import subprocess
    import sys
    from pathlib import Path

    from pipeline.config.sections import BACKENDS
    from pipeline.stages.superres import BUILDERS

    assert tuple(BUILDERS) == BACKENDS  # sr.backend's allowed values are exactly the ones create_backend builds
    code = (
        "import sys, pipeline.stages.superres\n"
        "loaded = [m for m in ('models.backends.classical', 'models.backends.pulse', 'models.backends.ffsr', 'models.backends.restore', 'models.zoo', 'spandrel', 'models.search') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=True, timeout=120)


def test_pulse_sees_each_face_at_its_own_resolution_and_adds_only_finer_detail():
    """sr.in_size=auto through the real search, then the detail transfer (pipeline/stages/fidelity.py)."""
    import numpy as np

    from pipeline.config.sections import SRConfig
    from pipeline.stages.fidelity import FidelityPlanner
    from pipeline.stages.superres import SRRequest, low_res, run_batch

    g64 = tiny_v2(64)
    backend = PulseBackend(g64, compute_gaussian_fit(g64, samples=5_000), in_size=16, out_size=64, steps=40, warm_steps=10, device="cpu")
    face = ((known_faces(g64, backend.fit, [5])[0][0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    plan = FidelityPlanner.for_run(SRConfig(in_size="auto"), 2, out_size=64, any_input_size=True)(40.0)
    assert plan.in_size == 32 and not plan.keep  # a 40-px face shown at 80 px: the model sees 32x32 and adds above 50
    result = run_batch(backend, SRRequest([face], [None], [0], [plan]))
    assert result.in_sizes == [32] and result.model_ran == [True] and result.steps[0] > 0
    detail = result.faces[0]
    assert detail.dtype == np.int16 and np.abs(detail).mean() > 0.5  # the model's own finer detail...
    assert result.consistency[0] < 1e-4  # ...that leaves the face as it was at the kept resolution
    # At fidelity 0 the search's face replaces the source whole; its consistency is the search's, at 32x32.
    whole = FidelityPlanner.for_run(SRConfig(in_size="auto", fidelity=0.0), 2, out_size=64, any_input_size=True)(40.0)
    replaced = run_batch(backend, SRRequest([face], [None], [0], [whole]))
    assert replaced.faces[0].dtype == np.uint8 and replaced.in_sizes == [32]
    lr = low_res(backend, [face], pre_blur=False, size=32)
    images = torch.from_numpy(replaced.faces[0]).permute(2, 0, 1)[None].float() / 127.5 - 1
    assert consistency(backend, images, lr).item() == pytest.approx(replaced.consistency[0], abs=2e-5)
