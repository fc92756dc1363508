"""The real face prior (registry entry `dcgan-digiface-64`, from the `gan-face-generate` wheel) and
the DCGAN network it runs on (models/networks/dcgan.py), through the same latent search as the
StyleGANs; and the checks that keep weights honest (pinned SHA-256, git blob ids, offline errors).

The prior is installed by the test extra (`pip install -e '.[test]'`), so CI has it."""

import dataclasses
import socket
import subprocess

import pytest
import torch

from models import weights
from models.errors import ModelError
from models.generators import load_generator, published_state
from models.networks.dcgan import DCGANConfig, DCGANGenerator
from models.search import pulse_search

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PRIOR = "dcgan-digiface-64"


def tutorial_keys(config: DCGANConfig) -> dict[str, tuple]:
    """The PyTorch DCGAN tutorial's generator keys and shapes, written out from its definition:
    main = [ConvT(nz, ngf*8, 4, 1, 0), BN, ReLU, ConvT(ngf*8, ngf*4, 4, 2, 1), BN, ReLU, ..., ConvT(ngf, nc, 4, 2, 1), Tanh]."""
    hidden = [config.ngf * 2 ** k for k in reversed(range(config.resolution.bit_length() - 3))]  # 512, 256, 128, 64 at 64x64
    widths = [config.z_dim] + hidden + [config.channels]
    keys, index = {}, 0
    for i in range(len(widths) - 1):
        keys[f"main.{index}.weight"] = (widths[i], widths[i + 1], 4, 4)
        if i < len(widths) - 2:
            c = widths[i + 1]
            bn = f"main.{index + 1}"
            keys |= {f"{bn}.weight": (c,), f"{bn}.bias": (c,), f"{bn}.running_mean": (c,), f"{bn}.running_var": (c,), f"{bn}.num_batches_tracked": ()}
        index += 3
    return keys


def test_dcgan_has_the_tutorial_layout_and_round_trips(tmp_path):
    g = DCGANGenerator()  # the tutorial's 64x64, nz 100, ngf 64
    assert {k: tuple(v.shape) for k, v in g.state_dict().items()} == tutorial_keys(DCGANConfig())
    torch.manual_seed(0)
    small = DCGANGenerator(DCGANConfig(resolution=32, z_dim=8, ngf=4))
    for m in small.modules():  # non-trivial running statistics, as a trained network has
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    torch.save(published_state(small), tmp_path / "weights.tar")  # {"netG_state_dict": ...}, as the tutorial saves it
    loaded = load_generator(tmp_path / "weights.tar")
    assert loaded.kind == "dcgan" and loaded.config == small.config and not loaded.training
    z = torch.randn(3, 1, 8)
    torch.testing.assert_close(loaded.synthesize(z), small.synthesize(z), rtol=0, atol=0)
    torch.testing.assert_close(loaded.synthesize(z[:1]), loaded.synthesize(z)[:1])  # eval: a face does not depend on its batch
    broken = published_state(small)
    del broken["netG_state_dict"]["main.1.running_var"]
    torch.save(broken, tmp_path / "broken.tar")
    with pytest.raises(ModelError, match="missing 1: main.1.running_var"):
        load_generator(tmp_path / "broken.tar")


@pytest.fixture(scope="module")
def prior():
    if not weights.is_present(PRIOR):
        pytest.fail(f"the test extra installs the real prior; run `{weights.REGISTRY[PRIOR].install}`")
    e = weights.REGISTRY[PRIOR]
    return load_generator(weights.resolve(PRIOR), layout=e.layout, arch=dict(e.arch))


def drawn(g, seed: int, drift: float = 0.0, base_seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A face the prior draws (z from `seed`; with `drift`, that z moved towards another), and its 16x16 input."""
    from models.downscale import bicubic_downscale

    z = torch.randn(1, 1, 100, generator=torch.Generator().manual_seed(seed))
    if drift:
        other = torch.randn(1, 1, 100, generator=torch.Generator().manual_seed(seed + 1000))
        z = (1 - drift) * z + drift * other
        z = z / z.norm() * 10.0
    with torch.no_grad():
        face = g.synthesize(z)
    return face, bicubic_downscale(face, 16).clamp(-1, 1)


def test_the_real_prior_is_the_pinned_file_and_draws_faces(prior):
    e = weights.REGISTRY[PRIOR]
    path = weights.resolve(PRIOR)
    assert path.name == "weights.tar" and path.parent.name == "gan_face_generate"
    assert weights.sha256_file(path) == e.sha256 and weights.verify(PRIOR)[0].status == "ok"
    assert prior.config == DCGANConfig(resolution=64, z_dim=100, ngf=64) and prior.mapping is None
    face, _ = drawn(prior, 3)
    assert face.shape == (1, 3, 64, 64) and face.std() > 0.2  # a picture, not a flat field


def test_a_damaged_copy_of_the_prior_is_refused(tmp_path, monkeypatch):
    package = tmp_path / "damaged_prior"
    package.mkdir()
    (package / "__init__.py").write_text("")
    original = weights.path_for(PRIOR).read_bytes() if weights.is_present(PRIOR) else b"\0" * 1000
    (package / "weights.tar").write_bytes(original[:-1000] + b"\0" * 1000)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(weights.REGISTRY, PRIOR, dataclasses.replace(weights.REGISTRY[PRIOR], package="damaged_prior/weights.tar"))
    with pytest.raises(ModelError, match=r"differs from the pinned SHA-256.*reinstall it: `pip install gan-face-generate==1.1.1`"):
        weights.resolve(PRIOR)
    monkeypatch.setitem(weights.REGISTRY, PRIOR, dataclasses.replace(weights.REGISTRY[PRIOR], package="not_installed_prior/weights.tar"))
    with pytest.raises(ModelError, match=r"not installed; run `pip install gan-face-generate==1.1.1`"):
        weights.resolve(PRIOR)


def test_the_search_finds_a_face_the_prior_drew_and_a_warm_start_needs_fewer_steps(prior):
    """PULSE's search over z (spherical Adam, one-cycle, eps 2e-3) on 16x16 inputs of faces the prior drew:
    the cold search fits; on the next frame (the true z drifted a little), starting from the previous
    frame's solution fits in fewer steps than starting cold."""
    _, lr0 = drawn(prior, 11)
    cold = pulse_search(prior, lr0, fit=None, seeds=[1], steps=100, device="cpu")
    assert bool(cold.success[0, 0]), f"best L2 {float(cold.l2[0, 0]):.2e} > eps"
    _, lr1 = drawn(prior, 11, drift=0.02)
    warm = pulse_search(prior, lr1, fit=None, seeds=[1], states=[cold.states[0][0]], steps=100, warm_steps=20, device="cpu")
    fresh = pulse_search(prior, lr1, fit=None, seeds=[1], steps=100, device="cpu")
    assert bool(warm.success[0, 0]) and not bool(warm.cut[0, 0])
    assert int(warm.steps[0, 0]) < int(fresh.steps[0, 0])
    latent = cold.states[0][0]["latent"]
    assert latent.shape == (1, 100) and set(cold.states[0][0]) == {"latent", "seed"}  # one vector, no noise maps


def moved(g, seed: int, theta: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """A face the prior drew (z from `seed`) moved in its crop by the framing `theta` (models/reframe.py), as a
    detector's landmarks frame it a few per cent off; where it does not reach, a flat wall. Its z and 16x16 input."""
    from models import reframe
    from models.downscale import bicubic_downscale

    z = torch.randn(1, 1, 100, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        face = g.synthesize(z)
        crop = reframe.reframe(face, torch.tensor([theta]), torch.full_like(face, 0.3))
    return z, bicubic_downscale(crop, 16).clamp(-1, 1)


def test_a_face_framed_off_is_matched_when_the_search_refines_its_framing(prior):
    """A face the prior drew, 0.91x its size, turned and shifted in the crop: the plain search misses eps,
    the search that refines the framing fits it, and the face it returns is in the crop's frame (its
    downscale is the input); the track state carries the framing for the next frame."""
    from models.downscale import bicubic_downscale

    _, lr = moved(prior, 12, [-0.09, -0.03, -0.05, 0.03])
    plain = pulse_search(prior, lr, fit=None, seeds=[2], steps=100, learning_rate=1.5, device="cpu")
    framed = pulse_search(prior, lr, fit=None, seeds=[2], steps=100, learning_rate=1.5, refine_framing=True, device="cpu")
    assert not bool(plain.success[0, 0]) and bool(framed.success[0, 0]), (float(plain.l2[0, 0]), float(framed.l2[0, 0]))
    shown = ((bicubic_downscale(framed.images[0], 16).clamp(-1, 1) - lr) / 2).pow(2).mean()
    assert float(shown) <= 2e-3
    state = framed.states[0][0]
    assert set(state) == {"latent", "framing", "seed"} and state["framing"].shape == (4,) and bool((state["framing"] != 0).any())
    warm = pulse_search(prior, lr, fit=None, seeds=[2], states=[state], refine_framing=True, device="cpu")
    assert bool(warm.success[0, 0]) and int(warm.steps[0, 0]) == 1  # the same crop again: the state already fits
    with pytest.raises(ValueError, match="does not fit this generator and framing"):
        pulse_search(prior, lr, fit=None, seeds=[2], states=[plain.states[0][0]], refine_framing=True, device="cpu")


def test_the_framing_found_is_the_true_one(prior, monkeypatch):
    """A track whose face is known (the warm start holds its true z, kept there by the temporal prior) and
    whose framing moved (1.1x, 2.6 px right, 1.9 px up): the search finds that framing to within a pixel
    (the framing's own prior off: it pulls towards the crop's framing, which here is known to be wrong)."""
    from models import reframe

    monkeypatch.setattr(reframe, "PRIOR_WEIGHT", 0.0)
    true = [0.1, 0.0, 0.08, -0.06]
    z, lr = moved(prior, 12, true)
    state = {"latent": z[0].clone(), "framing": torch.zeros(4), "seed": torch.tensor(0)}
    found = pulse_search(prior, lr, fit=None, seeds=[0], states=[state], warm_steps=60, eps=2e-4, temporal_weight=10.0,
                         refine_framing=True, framing_learning_rates=(0.01, 0.01), device="cpu")
    assert bool(found.success[0, 0]) and not bool(found.cut[0, 0])
    got, want = (reframe.to_pixels(t, 64) for t in (found.states[0][0]["framing"], torch.tensor(true)))
    assert abs(float(got["scale"] / want["scale"]) - 1) < 0.02 and abs(float(got["degrees"])) < 2
    assert float((got["shift_px"] - want["shift_px"]).abs().max()) < 1.2, (got, want)


def test_the_pulse_backend_runs_the_prior_by_name(monkeypatch):
    from pipeline.stages.superres import SRConfig, create_backend

    backend = create_backend(SRConfig(backend="pulse", generator=PRIOR, device="cpu", steps=5, warm_steps=2))
    assert (backend.in_size, backend.out_size, backend.fit) == (16, 64, None)
    assert (backend.learning_rate, backend.warm_learning_rate) == (1.5, 0.05)  # the entry's measured cold rate; PULSE's warm one
    assert backend.refine_framing  # MTCNN frames its faces a few per cent off the way it draws them
    result = backend.super_resolve(torch.zeros(2, 3, 16, 16), [None, None], seeds=[0, 1])
    assert result.images.shape == (2, 3, 64, 64) and bool(torch.isfinite(result.images).all())
    assert result.states[0]["framing"].shape == (4,)


def test_git_blob_ids_are_checked_on_download_and_on_load(tmp_path, monkeypatch):
    """PFSR's checkpoints are committed to its repository; GitHub publishes each file's git blob id."""
    from tests.test_weights import Server, leftovers

    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(weights, "RETRY_DELAYS", (0.0, 0.0))
    site = tmp_path / "site"
    site.mkdir()
    (site / "g.ckpt").write_bytes(b"a committed checkpoint" * 100)
    blob = subprocess.run(["git", "hash-object", str(site / "g.ckpt")], capture_output=True, text=True, check=True).stdout.strip()
    assert weights.git_blob_id(site / "g.ckpt") == blob
    with Server(site) as server:
        entry = dataclasses.replace(weights.REGISTRY["pfsr-celeba"], name="t", url=f"{server.url}/g.ckpt", filename="t.ckpt", git_blob="f" * 40)
        monkeypatch.setitem(weights.REGISTRY, "t", entry)
        with pytest.raises(ModelError, match=f"git blob id {blob}, the repository publishes {'f' * 40}"):
            weights.fetch("t", progress=False)
        assert not weights.path_for("t").exists() and leftovers(weights.path_for("t").parent) == []
        monkeypatch.setitem(weights.REGISTRY, "t", dataclasses.replace(entry, git_blob=blob))
        path = weights.fetch("t", progress=False)
    assert weights.verify("t")[0].status == "ok"
    path.write_bytes(path.read_bytes()[:-1])  # truncated in the cache
    with pytest.raises(ModelError, match=r"differs from the git blob id the repository publishes\); delete it and run `facezoom weights fetch t`"):
        weights.resolve("t")


def test_a_host_that_does_not_resolve_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEZOOM_OFFLINE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):  # a proxy's name would be looked up instead
        monkeypatch.delenv(proxy, raising=False)
    lookups = []

    def no_dns(*args, **kwargs):
        lookups.append(args[0])
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(ModelError) as err:
        weights.fetch("pfsr-celeba-unaligned", progress=False)  # RETRY_DELAYS are the real ones: no retry may wait them out
    assert lookups == ["raw.githubusercontent.com"]
    message = str(err.value)
    assert "does not resolve" in message and weights.REGISTRY["pfsr-celeba-unaligned"].url in message
    assert f"to {weights.path_for('pfsr-celeba-unaligned')}, then run `facezoom weights verify pfsr-celeba-unaligned`" in message


def test_the_prior_by_path_keeps_its_framing_and_the_fit_must_match_the_generator(tmp_path):
    from models.backends.pulse import PulseBackend
    from models.networks.stylegan2 import StyleGAN2Config, StyleGAN2Generator

    copy = tmp_path / "my_prior.tar"
    copy.write_bytes(weights.resolve(PRIOR).read_bytes())  # the same weights under another name
    backend = PulseBackend.from_settings(generator=str(copy), device=torch.device("cpu"), in_size=16, out_size=None,
                                         steps=2, warm_steps=1, eps=2e-3, temporal_weight=0.0)
    assert backend.framing == "arcface"  # recognised by its pinned SHA-256: aligned as its training faces were
    stylegan = StyleGAN2Generator(StyleGAN2Config.basicsr(32, narrow=1 / 32, w_dim=16, num_mlp=2))
    with pytest.raises(ValueError, match="needs the gaussian fit"):
        PulseBackend(stylegan, None, in_size=8, device="cpu")
    with pytest.raises(ValueError, match="fit must be None for a generator without a mapping network"):
        pulse_search(backend.generator, torch.zeros(1, 3, 16, 16), fit=backend.fit or object(), seeds=[0], steps=1, device="cpu")


def nan_dcgan(path):
    """A small DCGAN in the tutorial's layout whose weights are all NaN (a diverged training run)."""
    torch.manual_seed(0)
    g = DCGANGenerator(DCGANConfig(resolution=32, z_dim=8, ngf=4))
    state = published_state(g)
    state["netG_state_dict"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                for k, v in state["netG_state_dict"].items()}
    torch.save(state, path)
    return path


def test_a_search_none_of_whose_renders_is_finite_returns_nan_not_a_flat_grey_face(tmp_path):
    """The best render starts as no render at all: a NaN loss never beats it, so NaN weights must come
    back as NaN (which the pipeline refuses), never as the finite placeholder (a flat grey face)."""
    g = load_generator(nan_dcgan(tmp_path / "nan.tar"))
    lr = torch.zeros(2, 3, 16, 16)
    found = pulse_search(g, lr, fit=None, seeds=[0, 1], steps=3, device="cpu")
    assert found.images.isnan().all() and not found.success.any()
    warm = pulse_search(g, lr, fit=None, seeds=[0, 1], states=[s[0] for s in found.states], steps=3, warm_steps=1, device="cpu")
    assert warm.images.isnan().all() and warm.cut.all()  # warm, then cold again: no render finite either way


@pytest.mark.parametrize("command", ["video", "enhance"])
def test_pulse_over_a_nan_generator_stops_the_run_in_one_line_naming_the_file(tmp_path, capsys, command):
    """README: a model whose faces are not finite stops the run at its first batch, exit 2, one line,
    nothing written. PULSE over NaN weights pasted flat grey faces and exited 0."""
    from PIL import Image

    from pipeline.commands.cli import main
    from pipeline.media.sample import write_sample

    ckpt = nan_dcgan(tmp_path / "nan.tar")
    pulse = ["--set", "sr.backend=pulse", "--set", f"sr.generator={ckpt}", "--set", "sr.steps=3", "--set", "sr.warm_steps=1"]
    if command == "video":
        source, out = write_sample(tmp_path / "sample.mp4", seconds=0.3), tmp_path / "out.mp4"
        args = ["video", str(source), "-o", str(out), "-w", "0", "--set", "video.preset=ultrafast"]
    else:
        source, out = tmp_path / "sprite.png", tmp_path / "out.png"
        Image.fromarray((torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()).save(source)
        args = ["enhance", str(source), "-o", str(out), "--iterations", "1", "--whole"]
    code = main(["--quiet", *args, *pulse])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "not finite" in err[0] and "sr.backend=pulse" in err[0] and str(ckpt) in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["nan.tar", source.name])
