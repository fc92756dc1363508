"""PFSR: the published checkpoint layout loads strictly, its downscaler is the published chain,
the `ffsr` backend runs batched, blends along tracks without ghosting, and runs inside `video`."""

import dataclasses
import json
import math
import pickle
import re
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.errors import ModelError
from models.backends.ffsr import register, shift_images, temporal_blend
from models.networks.pfsr import PFSRGenerator, load_pfsr, progressive_downscale, published_state
from models.weights import save_checkpoint

PUBLISHED = (512, 256, 128, 64)
TINY = (16, 8, 8, 4)


def published_shapes(c=PUBLISHED) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the published generator's state dict, written out from its model.py:
    step1 = [Conv2d(3, c0), BN, ReLU, ResBlock(c0), ConvTranspose2d(c0, c1, 4, 2, 1), BN, ReLU];
    step2/3 = [ResBlock, ConvTranspose2d, BN, ReLU]; ResBlock.conv = [EqualConv2d, BN, ReLU] x 2
    (EqualConv2d.conv holds weight_orig and bias); to_rgb = three 1x1 Conv2d."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix, n):
        shapes.update({f"{prefix}.weight": (n,), f"{prefix}.bias": (n,), f"{prefix}.running_mean": (n,),
                       f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()})

    def resblock(prefix, n):
        for i in (0, 3):
            shapes[f"{prefix}.conv.{i}.conv.weight_orig"] = (n, n, 3, 3)
            shapes[f"{prefix}.conv.{i}.conv.bias"] = (n,)
            bn(f"{prefix}.conv.{i + 1}", n)

    c0, c1, c2, c3 = c
    shapes["step1.0.weight"], shapes["step1.0.bias"] = (c0, 3, 3, 3), (c0,)
    bn("step1.1", c0)
    resblock("step1.3", c0)
    shapes["step1.4.weight"], shapes["step1.4.bias"] = (c0, c1, 4, 4), (c1,)
    bn("step1.5", c1)
    for stage, (cin, cout) in ((2, (c1, c2)), (3, (c2, c3))):
        resblock(f"step{stage}.0", cin)
        shapes[f"step{stage}.1.weight"], shapes[f"step{stage}.1.bias"] = (cin, cout, 4, 4), (cout,)
        bn(f"step{stage}.2", cout)
    for i, n in enumerate((c1, c2, c3)):
        shapes[f"to_rgb.{i}.weight"], shapes[f"to_rgb.{i}.bias"] = (3, n, 1, 1), (3,)
    return shapes


def random_state(c=PUBLISHED, seed=0) -> dict[str, torch.Tensor]:
    """A state dict in the published layout with plausible random values (weight_orig ~ N(0, 1))."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in published_shapes(c).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("weight_orig"):
            state[key] = torch.randn(shape, generator=g)
        elif ".conv." not in key and key.endswith(".weight") and len(shape) == 1:  # batch-norm gamma
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            state[key] = torch.randn(shape, generator=g) / math.sqrt(max(fan_in, 1))
    return state


def reference_forward(s: dict[str, torch.Tensor], x: torch.Tensor, step: int, alpha: float) -> torch.Tensor:
    """The published forward pass, written functionally from the raw tensors (eval-mode batch norm)."""

    def bn(p, y):
        return F.batch_norm(y, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"], False, 0.0, 1e-5)

    def eq(p, y):
        w = s[f"{p}.conv.weight_orig"]
        return F.conv2d(y, w * math.sqrt(2 / (w.shape[1] * w[0][0].numel())), s[f"{p}.conv.bias"], padding=1)

    def res(p, y):
        h = F.relu(bn(f"{p}.conv.1", eq(f"{p}.conv.0", y)))
        return F.relu(bn(f"{p}.conv.4", eq(f"{p}.conv.3", h))) + y

    def up(p, i, y):
        return F.relu(bn(f"{p}.{i + 1}", F.conv_transpose2d(y, s[f"{p}.{i}.weight"], s[f"{p}.{i}.bias"], stride=2, padding=1)))

    def rgb(i, y):
        return F.conv2d(y, s[f"to_rgb.{i}.weight"], s[f"to_rgb.{i}.bias"])

    def stage(k, y):
        if k == 1:
            return up("step1", 4, res("step1.3", F.relu(bn("step1.1", F.conv2d(y, s["step1.0.weight"], s["step1.0.bias"], padding=1)))))
        return up(f"step{k}", 1, res(f"step{k}.0", y))

    feats = x
    for k in range(1, step):
        feats = stage(k, feats)
    out = rgb(step - 1, stage(step, feats))
    if step > 1 and 0 <= alpha < 1:
        out = (1 - alpha) * F.interpolate(rgb(step - 2, feats), scale_factor=2, mode="nearest") + alpha * out
    return out


def write_published(path, state, *, step=3, alpha=1.0, iteration=120000, drop=()):
    checkpoint = {"model_state_dict": state, "step": step, "alpha": alpha, "iteration": iteration}
    for key in drop:
        checkpoint.pop(key)
    torch.save(checkpoint, path)
    return path


def test_published_checkpoint_loads_strictly_and_runs_16_to_128(tmp_path, monkeypatch):
    from models import weights
    from pipeline.stages.superres import SRConfig, create_backend

    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path))
    monkeypatch.setenv("FACEZOOM_OFFLINE", "1")
    # Offline, the error names the raw file to download, where to put it, and the command to run next.
    raw = "https://raw.githubusercontent.com/DeokyunKim/Progressive-Face-Super-Resolution/master/checkpoints/generator_checkpoint_singleGPU.ckpt"
    with pytest.raises(ModelError, match=re.escape(f"Download {raw} to {weights.path_for('pfsr-celeba')}, then run `facezoom weights verify pfsr-celeba`")):
        create_backend(SRConfig(backend="ffsr", device="cpu"))  # sr.generator unset: the pfsr-celeba entry
    state = random_state(PUBLISHED)
    path = weights.path_for("pfsr-celeba")
    path.parent.mkdir(parents=True)
    write_published(path, state)  # placed by hand, as the error said
    blob = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()
    monkeypatch.setitem(weights.REGISTRY, "pfsr-celeba", dataclasses.replace(weights.REGISTRY["pfsr-celeba"], git_blob=blob))  # stands in for the published file
    loaded = load_pfsr(path)
    assert loaded.generator.channels == PUBLISHED
    assert (loaded.step, loaded.alpha, loaded.iteration) == (3, 1.0, 120000)
    assert {k: tuple(v.shape) for k, v in loaded.generator.state_dict().items()} == published_shapes()

    backend = create_backend(SRConfig(backend="ffsr", device="cpu"))
    assert (backend.in_size, backend.out_size) == (16, 128)
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    result = backend.super_resolve(lr, [None], seeds=[0])
    assert result.images.shape == (1, 3, 128, 128)
    assert result.images.min() >= -1 and result.images.max() <= 1
    assert result.states == [None] and result.steps.tolist() == [0]
    with torch.no_grad():
        expected = reference_forward(state, lr, 3, 1.0).clamp(-1, 1)
    torch.testing.assert_close(result.images, expected, rtol=1e-4, atol=1e-4)


def test_fade_in_matches_the_published_forward():
    state = random_state(TINY, seed=3)
    g = PFSRGenerator(TINY).eval()
    g.load_state_dict(state, strict=True)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        for step, alpha, side in ((1, 1.0, 32), (2, 0.25, 64), (2, 1.0, 64), (3, 0.0, 128), (3, 0.7, 128)):
            out = g(x, step, alpha)
            assert out.shape == (2, 3, side, side)
            torch.testing.assert_close(out, reference_forward(state, x, step, alpha), rtol=1e-5, atol=1e-5)


def test_data_parallel_checkpoint_loads_the_same_weights(tmp_path):
    state = random_state(TINY, seed=5)
    plain = load_pfsr(write_published(tmp_path / "single.ckpt", state)).generator.eval()
    ddp = load_pfsr(write_published(tmp_path / "ddp.ckpt", {f"module.{k}": v for k, v in state.items()})).generator.eval()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(6)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ddp(x), plain(x), rtol=0, atol=0)


def test_numpy_step_and_alpha_load(tmp_path):
    """A training script may save its counters as numpy scalars (numpy 1 pickles them as
    numpy.core.multiarray.scalar); they are plain data, read without running the file's code."""
    path = write_published(tmp_path / "numpy.ckpt", random_state(TINY), step=np.int64(3), alpha=np.float64(1.0), iteration=np.int64(16))
    loaded = load_pfsr(path)
    assert (loaded.step, loaded.alpha) == (3, 1.0)
    path = write_published(tmp_path / "tensor.ckpt", random_state(TINY), step=torch.tensor(3), alpha=torch.tensor(1.0), iteration=16)
    loaded = load_pfsr(path)
    assert (loaded.step, loaded.alpha) == (3, 1.0)


def test_missing_or_misshapen_keys_fail_naming_the_key(tmp_path):
    state = random_state(TINY)
    missing = dict(state)
    del missing["step2.0.conv.3.conv.weight_orig"]
    with pytest.raises(ModelError, match=r"missing 1: step2\.0\.conv\.3\.conv\.weight_orig"):
        load_pfsr(write_published(tmp_path / "missing.ckpt", missing))
    # a plain `weight` where an equalised-lr conv stores `weight_orig` (another architecture)
    renamed = dict(state)
    renamed["step3.0.conv.0.conv.weight"] = renamed.pop("step3.0.conv.0.conv.weight_orig")
    with pytest.raises(ModelError, match=r"unexpected 1: step3\.0\.conv\.0\.conv\.weight\b"):
        load_pfsr(write_published(tmp_path / "renamed.ckpt", renamed))
    wrong = dict(state, **{"to_rgb.2.weight": torch.zeros(3, 5, 1, 1)})
    with pytest.raises(ModelError, match=r"to_rgb\.2\.weight \[3, 5, 1, 1\] \(expected \[3, 4, 1, 1\]\)"):
        load_pfsr(write_published(tmp_path / "wrong.ckpt", wrong))
    with pytest.raises(ModelError, match=r"missing top-level key\(s\) 'alpha'"):
        load_pfsr(write_published(tmp_path / "noalpha.ckpt", state, drop=("alpha",)))
    with pytest.raises(ModelError, match=r"channels \[512, 256, 128, 64\]: wrong shape"):
        load_pfsr(write_published(tmp_path / "tiny.ckpt", state), channels=PUBLISHED)  # a registry entry pins the widths


def test_downscaler_is_the_published_pil_chain():
    from PIL import Image

    rng = np.random.default_rng(0)
    for side in (128, 178):  # the pipeline's crops, and CelebA's 178x178 centre crops
        noise = rng.integers(0, 256, (side // 4, side // 4, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(noise).resize((side, side), Image.BICUBIC))  # smooth, with detail
        pil = Image.fromarray(image)
        for size in (128, 64, 32, 16):  # torchvision Resize on PIL images = PIL bilinear
            pil = pil.resize((size, size), Image.BILINEAR)
        expected = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
        got = progressive_downscale(x)
        assert got.shape == (1, 3, 16, 16)
        levels = ((got - expected).abs() * 127.5).round()
        assert levels.max() <= 1 and levels.mean() < 0.01  # bit-exact from 128; a rare one-level rounding from 178
        direct = F.interpolate(x, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
        assert ((direct - expected).abs() * 127.5).mean() > 1  # a generic resize is not it


def tiny_backend(tmp_path, *, blend=0.0, seed=0, name="tiny.ckpt"):
    """A random tiny generator written as a stage-3 checkpoint, loaded through the `sr` settings."""
    from pipeline.stages.superres import SRConfig, create_backend

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        g = PFSRGenerator(TINY)
    path = save_checkpoint(tmp_path / name, published_state(g, step=3, alpha=1.0, iteration=16))
    return create_backend(SRConfig(backend="ffsr", generator=str(path), device="cpu", temporal_blend=blend)), path


def test_backend_settings_batching_and_state(tmp_path):
    from pipeline.stages.superres import SRConfig, create_backend

    backend, path = tiny_backend(tmp_path)
    assert (backend.name, backend.in_size, backend.out_size, backend.stateful) == ("ffsr", 16, 128, False)
    with pytest.raises(ModelError, match=r"sr\.in_size=24.*16x16 inputs only"):
        create_backend(SRConfig(backend="ffsr", generator=str(path), device="cpu", in_size=24))

    crops = torch.rand(5, 3, 128, 128, generator=torch.Generator().manual_seed(2)) * 2 - 1
    lr = backend.downscale(crops)
    assert lr.shape == (5, 3, 16, 16)
    batched = backend.super_resolve(lr, [None] * 5, seeds=range(5))
    one_by_one = torch.cat([backend.super_resolve(lr[i:i + 1], [None], seeds=[i]).images for i in range(5)])
    torch.testing.assert_close(batched.images, one_by_one, rtol=1e-5, atol=1e-5)
    assert batched.states == [None] * 5 and batched.consistency.shape == (5,)
    with pytest.raises(ValueError, match=r"\[B, 3, 16, 16\], got \[1, 3, 32, 32\]"):
        backend.super_resolve(torch.zeros(1, 3, 32, 32), [None], seeds=[0])

    blending, _ = tiny_backend(tmp_path, blend=0.5, name="tiny2.ckpt")
    assert blending.stateful
    first = blending.super_resolve(lr[:2], [None, None], seeds=[0, 1])
    state = pickle.loads(pickle.dumps(first.states[0]))  # states travel between Ray actors
    assert state["previous"].dtype == torch.uint8 and state["previous"].shape == (3, 128, 128)
    cold = blending.super_resolve(lr[2:3], [None], seeds=[0]).images
    brighter = {"previous": ((cold[0] + 1.1) * 127.5).round().clamp(0, 255).to(torch.uint8)}  # the face, 0.1 brighter
    warm = blending.super_resolve(lr[2:3], [brighter], seeds=[0]).images
    assert 0.02 < (warm - cold).mean() < 0.04  # blended in with weight 0.5, eased by the 0.1 disagreement (to 0.3)
    with pytest.raises(ValueError, match=r"'previous' \[3, 128, 128\] uint8"):
        blending.super_resolve(lr[:1], [{"previous": torch.zeros(3, 64, 64, dtype=torch.uint8)}], seeds=[0])


def _smooth_image(seed, side=128):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, side // 8, side // 8, generator=g) * 2 - 1
    return F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False).clamp(-1, 1)


def test_shift_estimate_and_warp_register_a_moved_face():
    ref = _smooth_image(0)
    for dx, dy in ((3.0, -2.0), (-1.5, 0.5), (0.0, 0.0)):
        moved = shift_images(ref, torch.tensor([[dx, dy]]))
        est, confidence = register(ref, moved)
        assert abs(est[0, 0] - dx) < 0.3 and abs(est[0, 1] - dy) < 0.3, (dx, dy, est.tolist())
        assert confidence[0] > 0.9
    assert register(ref, _smooth_image(1))[1][0] < 0.5  # another face: no shift maps one onto the other


def test_temporal_blend_steadies_flicker_and_does_not_ghost():
    g = torch.Generator().manual_seed(7)
    face = _smooth_image(1)
    frames = []
    for t in range(12):  # a face drifting by half a pixel a frame, with fresh per-frame "invented" texture
        drifted = shift_images(face, torch.tensor([[0.5 * t, 0.0]]))
        frames.append((drifted + 0.1 * torch.randn(drifted.shape, generator=g)).clamp(-1, 1))
    raw = torch.cat(frames)
    blended, prev = [], None
    for frame in frames:
        prev = frame if prev is None else temporal_blend(frame, prev, 0.6)
        blended.append(prev)
    blended = torch.cat(blended)
    flicker_raw = (raw[1:] - raw[:-1]).abs().mean()
    flicker_blended = (blended[1:] - blended[:-1]).abs().mean()
    assert flicker_blended < 0.7 * flicker_raw
    clean = torch.cat([shift_images(face, torch.tensor([[0.5 * t, 0.0]])) for t in range(12)])
    # registered before blending: closer to the true moving face than the raw frames by far (an
    # unregistered average smears the drift and gains only ~13%)
    assert (blended[4:] - clean[4:]).abs().mean() < 0.6 * (raw[4:] - clean[4:]).abs().mean()

    other = _smooth_image(2)  # a different face (a track switch): nothing of the old one may remain
    out = temporal_blend(other, face, 0.6)
    assert (out - other).abs().mean() < 0.1 * (face - other).abs().mean()


def test_ffsr_backend_runs_inside_video(tmp_path):
    from pipeline.commands.cli import main
    from pipeline.media.sample import write_sample

    _, ckpt = tiny_backend(tmp_path)
    clip = write_sample(tmp_path / "sample.mp4", seconds=0.6)
    out, report = tmp_path / "out.mp4", tmp_path / "report.json"
    code = main(["--quiet", "video", str(clip), "-o", str(out), "--report", str(report), "--set", "sr.backend=ffsr",
                 "--set", f"sr.generator={ckpt}", "--set", "sr.temporal_blend=0.5", "--set", "video.preset=ultrafast"])
    assert code == 0
    data = json.loads(report.read_text())
    assert data["frames_in"] == data["frames_out"] == 15
    assert len(data["faces"]) >= 10  # the astronaut, found and super-resolved on (almost) every frame
    assert all(face["steps"] == 0 for face in data["faces"])
    assert out.stat().st_size > 0


def test_a_generator_with_nan_weights_is_refused_at_its_first_batch_with_nothing_written(tmp_path, capsys):
    """NaN weights (a diverged training run) make NaN faces: one line, exit 2, nothing pasted or written."""
    from pipeline.commands.cli import main
    from pipeline.media.sample import write_sample

    with torch.random.fork_rng():
        torch.manual_seed(0)
        g = PFSRGenerator(TINY)
    state = published_state(g, step=3, alpha=1.0, iteration=16)
    state["model_state_dict"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                 for k, v in state["model_state_dict"].items()}
    ckpt = save_checkpoint(tmp_path / "nan.ckpt", state)
    clip = write_sample(tmp_path / "sample.mp4", seconds=0.6)
    out = tmp_path / "out.mp4"
    code = main(["--quiet", "video", str(clip), "-o", str(out), "-w", "0", "--set", "sr.backend=ffsr",
                 "--set", f"sr.generator={ckpt}", "--set", "video.preset=ultrafast"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not finite" in err[0] and "sr.backend=ffsr" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.ckpt", "sample.mp4"]


@pytest.mark.parametrize("kept", [0.02, 0.1, 0.5, 0.9])
def test_a_checkpoint_cut_short_is_one_line_at_any_length(tmp_path, capsys, kept):
    """A download or copy cut short: torch says "[Errno 22] Invalid argument" for some lengths, a
    zip error for others; either is the weights' fault, said as such (exit 2), never an internal error."""
    from pipeline.commands.cli import main

    _, ckpt = tiny_backend(tmp_path)
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: int(len(data) * kept)])
    sprite = tmp_path / "sprite.png"
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(sprite)
    code = main(["-q", "enhance", str(sprite), "-o", str(tmp_path / "out.png"), "--iterations", "1", "--whole",
                 "--set", "sr.backend=ffsr", "--set", f"sr.generator={ckpt}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "internal error" not in err[0] and str(ckpt) in err[0], err
    assert not (tmp_path / "out.png").exists()
