"""Whole-frame super-resolution (models/frame_sr.py) and its hook at `-s 2`/`-s 4` (composite.upscaler).

Every model here is one of spandrel's own architecture classes at a tiny width, with random
weights, saved the way its publisher saves it (Real-ESRGAN's BasicSR checkpoints: RRDBNet keys
under "params_ema", the compact SRVGGNet under "params"; SPAN as a flat .safetensors as
chaiNNer's model database ships many), and loaded back through the path a user's file takes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from models import weights
from models.errors import ModelError
from models.frame_sr import FrameUpscaler, load_model, plan_tiles, upscale_frames
from pipeline.commands.cli import main
from synth import make_video

spandrel = pytest.importorskip("spandrel")  # the `test` extra installs it; the tool itself runs without it
from spandrel.architectures.Compact import Compact  # noqa: E402
from spandrel.architectures.ESRGAN import ESRGAN  # noqa: E402
from spandrel.architectures.RestoreFormer import RestoreFormer  # noqa: E402
from spandrel.architectures.SPAN import SPAN  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEZOOM_OFFLINE", raising=False)


def basicsr_rrdb(old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """spandrel's ESRGAN keys (the old `model.N` layout) as BasicSR's RRDBNet names them, the layout
    of RealESRGAN_x4plus.pth and RealESRGAN_x2plus.pth (conv_first, body.i.rdbj.convk, conv_up1, ...)."""
    ups = sorted({int(m.group(1)) for k in old if (m := re.fullmatch(r"model\.(\d+)\.weight", k))} - {0, 1})
    *up_convs, hr, last = ups  # model.3, model.6 (upsampling convs), then conv_hr, conv_last
    names = {0: "conv_first", hr: "conv_hr", last: "conv_last", **{n: f"conv_up{i + 1}" for i, n in enumerate(up_convs)}}
    blocks = max(int(m.group(1)) for k in old if (m := re.match(r"model\.1\.sub\.(\d+)\.", k)))
    new = {}
    for key, value in old.items():
        if m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", key):
            new[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
        elif m := re.fullmatch(rf"model\.1\.sub\.{blocks}\.(weight|bias)", key):
            new[f"conv_body.{m[1]}"] = value
        elif m := re.fullmatch(r"model\.(\d+)\.(weight|bias)", key):
            new[f"{names[int(m[1])]}.{m[2]}"] = value
        else:
            raise AssertionError(f"unmapped key {key}")
    return new


def _seeded(build):
    torch.manual_seed(0)
    return build().eval()


# name: (the network, its scale, how it is saved)
NETWORKS = {
    "rrdb-x4": (lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4), 4, "params_ema"),
    # Real-ESRGAN's x2 RRDBNet: pixel-unshuffle by 2 (12 channels in), then the 4x body.
    "rrdb-x2": (lambda: ESRGAN(in_nc=12, out_nc=3, num_filters=8, num_blocks=1, scale=4, shuffle_factor=2), 2, "params_ema"),
    "compact-x4": (lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4), 4, "params"),
    "span-x2": (lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2), 2, "safetensors"),
}


def save_network(name: str, folder) -> tuple[torch.nn.Module, Path]:
    build, _, layout = NETWORKS[name]
    net = _seeded(build)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = folder / f"{name}.safetensors"
        save_file(state, str(path))
        return net, path
    if name.startswith("rrdb"):
        state = basicsr_rrdb(state)
    path = folder / f"{name}.pth"
    torch.save({layout: state}, path)
    return net, path


def frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A textured frame: smooth colour plus noise, so every tile sees different pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([128 + 90 * np.sin(x / 7.0), 128 + 90 * np.cos(y / 5.0), 100 + (x + y) % 97], -1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def direct(net: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """The network called directly on the whole frame (no loader, no tiles), as uint8."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = net(x).clamp(0, 1)
    return (y * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float rounding: a few pixels one level apart where a value sits on a .5 boundary."""
    assert a.shape == b.shape
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


@pytest.mark.parametrize("name", list(NETWORKS))
def test_each_architecture_loads_from_its_published_layout_and_matches_the_network(tmp_path, name):
    net, path = save_network(name, tmp_path / "models")
    scale = NETWORKS[name][1]
    upscaler = FrameUpscaler.from_settings(str(path), scale=scale, device="cpu", tile=0, overlap=0, batch=1)
    assert upscaler.scale == scale
    image = frame(24, 40)  # a multiple of 4: no padding on either side
    out = upscaler([image])[0]
    assert out.shape == (24 * scale, 40 * scale, 3) and out.dtype == np.uint8
    assert out.std() > 5  # not a flat or saturated output, which would make the comparison empty
    assert_same(out, direct(net, image))


@pytest.mark.parametrize("name", list(NETWORKS))
def test_tiled_equals_whole_frame_where_the_overlap_covers_the_models_reach(tmp_path, name):
    _, path = save_network(name, tmp_path / "models")
    model = load_model(str(path), "frame")
    image = [frame(61, 90, seed=1), frame(61, 90, seed=2)]  # not a multiple of the tile, nor of x2's 4: padded borders
    whole = upscale_frames(image, model, tile=0)
    # The whole frame through spandrel's own call (its own padding) is what tile=0 gives.
    for got, im in zip(whole, image):
        x = torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255
        assert_same(got, (model(x) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy())
    (wy, wx), tiles = plan_tiles(61, 90, tile=16, overlap=24)
    assert len(tiles) > 4  # really tiled
    for tiled, ref in zip(upscale_frames(image, model, tile=16, overlap=24, batch=3), whole):
        assert_same(tiled, ref)
    # Without overlap the seams show: the comparison above can fail.
    seamed = upscale_frames(image, model, tile=16, overlap=0, batch=3)[0]
    assert np.abs(seamed.astype(int) - whole[0].astype(int)).max() > 1


def test_tiles_cover_the_frame_once_with_equal_windows():
    for height, width, tile, overlap, multiple in [(61, 90, 16, 24, 1), (1080, 1920, 256, 16, 4), (7, 5, 16, 8, 1), (100, 100, 30, 0, 8)]:
        (wy, wx), tiles = plan_tiles(height, width, tile=tile, overlap=overlap, multiple=multiple)
        covered = np.zeros((height, width), int)
        for t in tiles:
            assert 0 <= t.y0 <= t.cy0 < t.cy1 <= t.y0 + wy <= height and 0 <= t.x0 <= t.cx0 < t.cx1 <= t.x0 + wx <= width
            assert t.cy0 - t.y0 >= min(overlap, t.cy0) and t.cx0 - t.x0 >= min(overlap, t.cx0)  # context before the core
            covered[t.cy0:t.cy1, t.cx0:t.cx1] += 1
        assert (covered == 1).all()
    assert plan_tiles(1080, 1920, tile=0, overlap=16)[1] == [(0, 0, 0, 1080, 0, 1920)]


def test_registry_entry_downloads_and_loads(tmp_path, monkeypatch):
    from tests.test_weights import Server

    _, path = save_network("compact-x4", tmp_path / "site")
    data = path.read_bytes()
    entry = dataclasses.replace(weights.REGISTRY["realesr-general-x4v3"], url="", sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    with Server(tmp_path / "site") as server:
        monkeypatch.setitem(weights.REGISTRY, entry.name, dataclasses.replace(entry, url=f"{server.url}/{path.name}"))
        upscaler = FrameUpscaler.from_settings("realesr-general-x4v3", scale=4, device="cpu", tile=32, overlap=8, batch=2)
        assert len(server.requests) == 1
    assert weights.path_for(entry.name).read_bytes() == data
    assert upscaler([frame(20, 30)])[0].shape == (80, 120, 3)


def test_published_entries_are_frame_models_with_their_licences():
    for name, scale in [("RealESRGAN_x4plus", 4), ("RealESRGAN_x2plus", 2), ("realesr-general-x4v3", 4)]:
        e = weights.REGISTRY[name]
        assert e.url == f"https://github.com/xinntao/Real-ESRGAN/releases/download/{e.url.split('/')[-2]}/{e.filename}"
        assert e.layout == "spandrel-frame" and dict(e.arch)["scale"] == scale and "BSD-3-Clause" in e.licence
        assert e.sha256 and re.fullmatch(r"[0-9a-f]{64}", e.sha256) and e.size_bytes


def tiny_restoreformer(path):
    net = _seeded(lambda: RestoreFormer(n_embed=16, embed_dim=32, ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=32))
    torch.save({"params_ema": net.state_dict()}, path)
    return path


@pytest.mark.parametrize("case, scale, message", [
    ("face", "2", "is RestoreFormer (a face model, scale 1), not a frame model"),
    ("unknown", "2", "does not recognise this model's architecture"),
    ("not-a-model", "2", "could not read checkpoint"),
    ("cut-short", "2", "it may be damaged: fetch or copy it again"),
    ("missing", "2", "is neither a frame-model registry name"),
    ("scale", "2", "is a 4x model (ESRGAN) but the run's scale is 2; pass -s 4 or a 2x model"),
    ("scale", "1", "enlarges the frame 4x, but the run's scale is 1; pass -s 4"),
    ("3x", "2", "is a 3x model (RealESRGAN Compact), but -s takes only 1, 2 or 4; use a 2x or 4x model"),
    ("ints", "4", "'body.0.weight' holds a value of type int, not a tensor"),
    ("missing-key", "4", 'Missing key(s) in state_dict: "body.0.bias"'),
])
def test_a_wrong_frame_model_is_one_line_exit_2_and_no_output(tmp_path, capsys, case, scale, message):
    models = tmp_path / "models"
    models.mkdir()
    file = {
        "face": lambda: tiny_restoreformer(models / "RestoreFormer.pth"),
        "unknown": lambda: torch.save({"params": {"layer.weight": torch.zeros(3, 3)}}, models / "x.pth") or models / "x.pth",
        "not-a-model": lambda: (models / "notes.pth").write_text("my notes\n") and models / "notes.pth",
        "missing": lambda: models / "absent.pth",
        "cut-short": lambda: (models / "span.safetensors").write_bytes(save_network("span-x2", tmp_path)[1].read_bytes()[:500])
        and models / "span.safetensors",
        "scale": lambda: save_network("rrdb-x4", models)[1],
        "3x": lambda: torch.save({"params": Compact(num_feat=8, num_conv=2, upscale=3).state_dict()}, models / "x3.pth") or models / "x3.pth",
        "ints": lambda: torch.save({"params": dict.fromkeys(Compact(num_feat=8, num_conv=2).state_dict(), 1)}, models / "i.pth") or models / "i.pth",
        "missing-key": lambda: torch.save({"params": {k: v for k, v in Compact(num_feat=8, num_conv=2).state_dict().items()
                                                      if k != "body.0.bias"}}, models / "m.pth") or models / "m.pth",
    }[case]()
    src = make_video(tmp_path / "in.mp4", frames=2, width=32, height=24)
    out = tmp_path / "out.mp4"
    assert main(["--quiet", "video", str(src), "-o", str(out), "-s", scale, "--set", f"composite.upscaler={file}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists()



def nan_network(folder) -> Path:
    """compact-x4 in its published layout ({"params": ...}) with every weight NaN (a diverged training run)."""
    net = _seeded(NETWORKS["compact-x4"][0])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nan-x4.pth"
    torch.save({"params": {k: torch.full_like(v, float("nan")) for k, v in net.state_dict().items()}}, path)
    return path


def test_a_frame_model_that_makes_nan_is_refused_not_cast_to_black(tmp_path):
    """NaN cast to uint8 is 0: without the check every frame came out pure black."""
    from models.errors import NotFiniteError
    from models.frame_sr import FrameUpscaler

    path = nan_network(tmp_path)
    upscaler = FrameUpscaler.from_settings(str(path), scale=4, device="cpu", tile=16, overlap=4, batch=2)
    with pytest.raises(NotFiniteError, match=rf"composite.upscaler={re.escape(str(path))} made frames that are not finite"):
        upscaler([frame(24, 32)])


def test_a_nan_frame_model_stops_a_folder_run_rather_than_skipping_each_video(tmp_path, capsys):
    """Every video would meet the same NaN: the folder run stops at the first, nothing written."""
    path = nan_network(tmp_path / "models")
    videos, outs = tmp_path / "videos", tmp_path / "outs"
    videos.mkdir()
    outs.mkdir()
    for name in ("a.mp4", "b.mp4"):
        make_video(videos / name, frames=2, width=48, height=32)
    code = main(["--quiet", "video", str(videos), "-o", str(outs), "-s", "4", "--set", f"composite.upscaler={path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not finite" in err, err
    assert list(outs.iterdir()) == []


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_nan_frame_model_stops_the_run_in_one_line_with_nothing_written(tmp_path, capsys, engine, request):
    """README: non-finite model output stops the run (exit 2, one line, nothing written), on every engine."""
    unhandled = []
    if engine == "ray":
        request.getfixturevalue("ray_session")  # the Ray engine runs the frame model on its SR actors
        capsys.readouterr()  # what starting Ray said here is not the run's
        import ray._private.worker as ray_worker

        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setattr(ray_worker, "_unhandled_error_handler", unhandled.append)  # Ray's logger of errors nobody fetched
    path = nan_network(tmp_path / "models")
    src = make_video(tmp_path / "in.mp4", frames=3, width=48, height=32)
    out = tmp_path / "out.mp4"
    code = main(["--quiet", "video", str(src), "-o", str(out), "-s", "4", "--set", f"composite.upscaler={path}",
                 "--set", f"engine.engine={engine}", "--set", "engine.chunk=2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "not finite" in err and str(path) in err and "drop composite.upscaler" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "models"]
    if engine == "ray":  # the chunks still in flight when the run stopped were collected: Ray logs none of their errors later
        import gc
        import time

        gc.collect()
        time.sleep(2)
        assert unhandled == []

def test_without_spandrel_the_error_says_what_to_install(tmp_path, monkeypatch):
    _, path = save_network("compact-x4", tmp_path)
    from models import zoo

    monkeypatch.setitem(sys.modules, "spandrel", None)  # import spandrel now raises ImportError
    monkeypatch.setattr(zoo, "_REGISTRY", None)  # as in a process that has not loaded spandrel yet
    with pytest.raises(ModelError, match=r'pip install "facezoom\[restore\]"'):
        load_model(str(path), "frame")


@pytest.mark.parametrize("name, scale, engine", [("rrdb-x2", 2, "local"), ("compact-x4", 4, "local"), ("compact-x4", 4, "ray")])
def test_video_with_a_frame_upscaler_writes_the_enlarged_frames(tmp_path, name, scale, engine, request):
    if engine == "ray":
        request.getfixturevalue("ray_session")  # the Ray engine runs the frame model on its SR actors, a chunk at a time
    net, path = save_network(name, tmp_path / "models")
    src = make_video(tmp_path / "in.mp4", frames=5, width=48, height=32)
    out = tmp_path / "out.mp4"
    assert main(["--quiet", "video", str(src), "-o", str(out), "-s", str(scale), "--set", f"composite.upscaler={path}",
                 "--set", "composite.upscaler_tile=16", "--set", "video.crf=0", "--set", "video.pix_fmt=yuv444p",
                 "--set", f"engine.engine={engine}", "--set", "engine.chunk=2", "--set", "engine.sr_actors=2"]) == 0
    with av.open(str(src)) as c:
        first_in = next(c.decode(video=0)).to_ndarray(format="rgb24")
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (32 * scale, 48 * scale, 3)
    # The frame is the model's enlargement (no face here to paste), not a bicubic one: near-lossless
    # encoding in 4:4:4 keeps it within a few levels.
    model_frame = direct(net, first_in)
    assert np.abs(frames[0].astype(int) - model_frame.astype(int)).mean() < 2.0


def test_composite_places_faces_on_the_models_frame_and_keeps_the_input_on_the_left():
    from pipeline.config.sections import CompositeConfig
    from pipeline.stages.composite import PasteFace, composite

    image = frame(40, 60)
    big = np.full((80, 120, 3), 77, np.uint8)  # what a frame model made (a flat grey, unlike any resize of `image`)
    face = np.full((32, 32, 3), 200, np.uint8)
    matrix = np.array([[32 / 20, 0, -10 * 32 / 20], [0, 32 / 20, -10 * 32 / 20]])  # the 20 px square at (10, 10) -> the crop
    cfg = CompositeConfig(scale=2, upscaler="any.pth")
    out = composite(image, [PasteFace(matrix, face, 1, None)], cfg, upscaled=big)
    assert (out[60:, :] == 77).all() and (out[:, 70:] == 77).all()  # outside the face: the model's frame, exactly
    assert out[40, 40].min() > 150  # the face, pasted at the output scale
    assert (big == 77).all()  # the engine's array is not written into
    both = composite(image, [], CompositeConfig(scale=2, upscaler="any.pth", side_by_side=True), upscaled=big)
    bicubic = composite(image, [], CompositeConfig(scale=2))
    assert (both[:, :120] == bicubic).all() and (both[:, 120:] == 77).all()  # before | after
    # A face's detail is what interpolation lacks: over the model's frame it goes onto the interpolated
    # face, as without a frame model, not onto the model's own invention.
    detail = np.full((32, 32, 3), 9, np.int16)
    with_detail = composite(image, [PasteFace(matrix, detail, 1, None)], cfg, upscaled=big).astype(int)
    plain = composite(image, [PasteFace(matrix, detail, 1, None)], CompositeConfig(scale=2)).astype(int)
    assert np.abs(with_detail[36:44, 36:44] - plain[36:44, 36:44]).max() <= 1  # the face's centre: as without the model
    assert (with_detail[60:, :] == 77).all()  # outside the face: the model's frame
    with pytest.raises(ValueError, match="pass the frame model's output as `upscaled`"):
        composite(image, [], cfg)
