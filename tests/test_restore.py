"""Face restorers through spandrel (models/zoo.py) and `sr.backend=restore` (models/backends/restore.py).

Every architecture is spandrel's own class with random weights (tests/restorer_models.py), saved
in its project's published key layout and loaded through the real path: a local file, or a
registry entry served from 127.0.0.1. GFPGAN and CodeFormer keep their full-size encoders and
decoders whatever the settings, so the tests that run them are marked slow.
"""

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import weights, zoo
from models.backends.restore import RestoreBackend, call_model
from models.errors import ModelError
from pipeline.config.sections import SRConfig
from pipeline.stages.superres import SRRequest, create_backend, run_batch, to_images, to_tensor
from restorer_models import ARCHS, astronaut_track, build, flicker, save_published
from test_weights import Server

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Each architecture's random model and its file in the published layout (built once: GFPGAN is 340 MB)."""
    folder = tmp_path_factory.mktemp("restorers")
    made = {}
    for arch in ARCHS:
        model = build(arch)
        made[arch] = (model, save_published(model, arch, folder / f"{arch}.pth"))
    yield made
    for _, path in made.values():
        path.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEZOOM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEZOOM_OFFLINE", raising=False)


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_loads_from_its_published_layout(files, arch):
    model, path = files[arch]
    loaded = zoo.load_model(str(path), "face")
    assert loaded.architecture.id == arch and loaded.purpose == "FaceSR"
    assert isinstance(loaded.model, type(model)) and not loaded.model.training
    state, expected = loaded.model.state_dict(), model.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)


def test_a_registry_entry_is_downloaded_recorded_and_loaded(files, tmp_path, monkeypatch):
    _, path = files["RestoreFormer"]
    with Server(path.parent) as server:
        entry = dataclasses.replace(weights.REGISTRY["restoreformer"], name="tiny-face", url=f"{server.url}/{path.name}",
                                    filename="tiny-face.pth")
        monkeypatch.setitem(weights.REGISTRY, "tiny-face", entry)
        loaded = zoo.load_model("tiny-face", "face")
        assert zoo.load_model("tiny-face", "face").architecture.id == "RestoreFormer"
        assert server.requests == [f"/{path.name}"]  # cached after the first download
    cached = weights.path_for("tiny-face")
    assert cached.read_bytes() == path.read_bytes() and loaded.architecture.id == "RestoreFormer"
    # No published checksum: trusted on first use, its SHA-256 recorded and checked at every load after.
    assert cached.with_name(cached.name + ".sha256").read_text().split()[0] == weights.sha256_file(path)
    cached.write_bytes(cached.read_bytes()[:-10])
    with pytest.raises(ModelError, match="recorded when it arrived"):
        zoo.load_model("tiny-face", "face")


def test_the_face_registry_entries_are_release_assets_with_licences():
    faces = {n: weights.REGISTRY[n] for n in zoo.model_names("face")}
    assert set(faces) == {"gfpgan-1.3", "gfpgan-1.4", "restoreformer", "codeformer"}
    for e in faces.values():
        assert e.url.startswith("https://github.com/") and "/releases/download/" in e.url and e.url.endswith("/" + e.filename)
        assert e.sha256 is None and not e.manual_only  # nothing published: trust on first use
    assert "S-Lab" in faces["codeformer"].licence and "FFHQ" in faces["gfpgan-1.4"].licence


def restore_backend(path, **settings) -> RestoreBackend:
    return create_backend(SRConfig(backend="restore", generator=str(path), device="cpu", in_size="auto", **settings))


def crop_of(size: int) -> np.ndarray:
    return astronaut_track(1, size)[0]


def test_the_backend_runs_the_model_on_the_enlarged_low_res_crop(files):
    """The backend's face is the model called directly on the crop shrunk to the side it was seen at
    and enlarged back bicubically to the model's side; through run_batch (-w 0: the model's whole face) too."""
    model, path = files["RestoreFormer"]
    backend = RestoreBackend(zoo.load_model(str(path), "face"), size=128)
    crop = crop_of(128)
    lr = backend.downscale_to(to_tensor(backend, [crop]), 32).clamp(-1, 1)
    got = backend.super_resolve(lr, [None], seeds=[0])
    with torch.no_grad():
        x = F.interpolate(lr, size=(128, 128), mode="bicubic", align_corners=False).clamp(-1, 1).contiguous()
        direct = model(x)[0].clamp(-1, 1)
    assert torch.allclose(got.images, direct, atol=1e-5)
    assert got.states == [None] and not backend.stateful and got.steps.tolist() == [0]
    # consistency: the restored face against the input at the input's side
    assert float(got.consistency[0]) == pytest.approx(float(((backend.downscale_to(direct, 32).clamp(-1, 1) - lr) / 2).pow(2).mean()), rel=1e-4)
    from pipeline.stages.fidelity import replacement

    batch = run_batch(backend, SRRequest.make(SRConfig(), crops=[crop], states=[None], seeds=[0], plans=[replacement(32)]))
    assert np.abs(batch.faces[0].astype(int) - to_images(direct)[0]).max() <= 1  # rounding of float-equal faces


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["GFPGAN", "CodeFormer"])
def test_full_size_models_through_the_backend_equal_the_model_called_directly(files, arch):
    model, path = files[arch]
    backend = restore_backend(path, codeformer_w=0.3)
    assert backend.out_size == 512 and backend.framing == "ffhq"
    lr = backend.downscale_to(to_tensor(backend, [crop_of(512)]), 64).clamp(-1, 1)
    got = backend.super_resolve(lr, [None], seeds=[0]).images
    x = F.interpolate(lr, size=(512, 512), mode="bicubic", align_corners=False).clamp(-1, 1).contiguous()
    with torch.no_grad():
        direct = model(x, return_rgb=False, randomize_noise=False)[0] if arch == "GFPGAN" else model(x, weight=0.3)[0]
    assert torch.allclose(got, direct.clamp(-1, 1), atol=1e-4)


def frame_model(tmp_path):
    """A 2x Real-ESRGAN Compact (SRVGGNetCompact) with random weights: a frame upscaler."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    path = tmp_path / "realesr-compact-x2.pth"
    torch.save({"params": Compact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=2, upscale=2).state_dict()}, path)
    return path


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_a_frame_upscaler_is_not_a_face_model_and_the_other_way_round(files, tmp_path):
    path = frame_model(tmp_path)
    with pytest.raises(ModelError) as err:
        zoo.load_model(str(path), "face")
    assert "not a face model" in one_line(err) and "frame" in one_line(err)
    assert zoo.load_model(str(path), "frame").scale == 2
    from safetensors.torch import save_file

    tensors = tmp_path / "realesr-compact-x2.safetensors"  # the same weights as safetensors (no pickle at all)
    save_file(torch.load(path, weights_only=True)["params"], str(tensors))
    assert zoo.load_model(str(tensors), "frame").architecture.id == "Compact"
    with pytest.raises(ModelError) as err:
        zoo.load_model(str(files["RestoreFormer"][1]), "frame")
    assert "not a frame model" in one_line(err)
    with pytest.raises(ModelError) as err:
        zoo.load_model("gfpgan-1.4", "frame")  # a registry entry of the other kind: refused before any download
    assert "not a frame model" in one_line(err)


def test_an_unknown_architecture_or_a_bad_name_is_one_line(tmp_path):
    path = tmp_path / "mystery.pth"
    torch.save({"params_ema": {"body.0.weight": torch.zeros(4, 3, 3, 3)}}, path)
    with pytest.raises(ModelError) as err:
        zoo.load_model(str(path), "face")
    assert "does not recognise" in one_line(err)
    torch.save({"params_ema": {"toRGB.0.weight": torch.zeros(3, 8, 1, 1), "stylegan_decoder.style_mlp.1.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(ModelError) as err:  # GFPGAN's keys, but not its weights
        zoo.load_model(str(path), "face")
    assert "do not fit" in one_line(err)
    with pytest.raises(ModelError) as err:
        zoo.load_model(str(tmp_path / "absent.pth"), "face")
    assert "gfpgan-1.4" in one_line(err)  # names the registry's face models
    with pytest.raises(ModelError) as err:
        create_backend(SRConfig(backend="restore", device="cpu"))
    assert "sr.generator" in one_line(err)


def test_without_the_optional_packages_the_backend_names_what_to_install(monkeypatch):
    monkeypatch.setattr(zoo, "_REGISTRY", None)
    monkeypatch.setitem(sys.modules, "spandrel", None)  # import fails as if not installed
    with pytest.raises(ModelError) as err:
        create_backend(SRConfig(backend="restore", generator="gfpgan-1.4", device="cpu"))
    assert "pip install" in one_line(err) and "facezoom[restore]" in one_line(err)


def test_without_the_extra_architectures_codeformer_alone_is_refused_naming_them(files, monkeypatch):
    monkeypatch.setattr(zoo, "_REGISTRY", None)
    monkeypatch.setitem(sys.modules, "spandrel_extra_arches", None)
    assert zoo.load_model(str(files["RestoreFormer"][1]), "face").architecture.id == "RestoreFormer"
    with pytest.raises(ModelError) as err:
        zoo.load_model(str(files["CodeFormer"][1]), "face")
    assert "spandrel_extra_arches" in one_line(err) and "pip install" in one_line(err)


def run_track(backend: RestoreBackend, crops, lr_side: int) -> list[np.ndarray]:
    out, state = [], None
    for crop in crops:
        lr = backend.downscale_to(to_tensor(backend, [crop]), lr_side).clamp(-1, 1)
        result = backend.super_resolve(lr, [state], seeds=[0])
        state = result.states[0]
        out.append(to_images(result.images)[0])
    return out


def test_the_stabiliser_lowers_measured_flicker_on_a_clip_with_known_truth(files):
    """A random-weight restorer's faces change a lot from frame to frame of a slowly drifting real
    face; carried along the flow and blended, they change less (flicker: the output's frame-to-frame
    change minus the truth's, on the face)."""
    model = zoo.load_model(str(files["RestoreFormer"][1]), "face")
    truth = astronaut_track(8, 128)
    plain = flicker(run_track(RestoreBackend(model, size=128), truth, 32), truth)
    steady = flicker(run_track(RestoreBackend(model, size=128, temporal_blend=0.6), truth, 32), truth)
    assert plain > 5  # random weights: real flicker to remove
    assert steady < 0.6 * plain


def test_the_stabiliser_does_not_blend_across_a_cut(files):
    model = zoo.load_model(str(files["RestoreFormer"][1]), "face")
    face = crop_of(128)
    other = np.ascontiguousarray(face[::-1, ::-1])  # another picture: the flow cannot explain it
    steady, plain = RestoreBackend(model, size=128, temporal_blend=0.6), RestoreBackend(model, size=128)
    assert steady.stateful and not steady.keyframes
    first = steady.super_resolve(steady.downscale(to_tensor(steady, [face])), [None], seeds=[0])
    lr = steady.downscale(to_tensor(steady, [other]))
    after_cut = steady.super_resolve(lr, first.states, seeds=[0]).images
    assert torch.equal(after_cut, plain.super_resolve(lr, [None], seeds=[0]).images)
    with pytest.raises(ValueError, match="track state"):
        steady.super_resolve(lr, [{"previous": torch.zeros(3, 8, 8, dtype=torch.uint8)}], seeds=[0])


def test_the_gfpgan_preset_names_the_restorer_at_each_faces_own_resolution():
    from pipeline.config import load_config

    cfg = load_config("gfpgan")
    assert (cfg.sr.backend, cfg.sr.generator, cfg.sr.in_size, cfg.composite.scale) == ("restore", "gfpgan-1.4", "auto", 2)
    assert cfg.sr.generator in zoo.model_names("face") and 0 < cfg.sr.temporal_blend < 1


def test_settings_that_do_not_fit_the_model_are_one_line(files):
    path = files["RestoreFormer"][1]
    with pytest.raises(ModelError) as err:
        restore_backend(path, out_size=256)
    assert "512" in one_line(err)
    with pytest.raises(ValueError, match="codeformer_w"):
        SRConfig(backend="restore", codeformer_w=1.5)


@pytest.mark.slow
def test_a_video_run_with_a_face_restorer(files, tmp_path):
    from pipeline.commands.cli import main
    from pipeline.media.sample import write_sample

    clip = write_sample(tmp_path / "sample.mp4", seconds=0.2)
    out, report = tmp_path / "out.mp4", tmp_path / "report.json"
    code = main(["--quiet", "video", str(clip), "-o", str(out), "--report", str(report), "-w", "0",
                 "--set", "sr.backend=restore", "--set", f"sr.generator={files['RestoreFormer'][1]}",
                 "--set", "sr.in_size=auto", "--set", "sr.temporal_blend=0.5", "--set", "video.preset=ultrafast"])
    assert code == 0 and out.stat().st_size > 0
    data = json.loads(report.read_text())
    assert data["frames_in"] == data["frames_out"] == 5
    assert len(data["faces"]) >= 3 and all(face["steps"] == 0 for face in data["faces"])


def test_call_model_uses_spandrels_range_for_other_face_architectures():
    class Fake:  # an architecture without its own convention: spandrel's [0, 1] call
        class architecture:
            id = "SomethingNew"

        def __call__(self, image):
            assert 0 <= float(image.min()) and float(image.max()) <= 1
            return image

    x = torch.linspace(-1, 1, 3 * 4 * 4).reshape(1, 3, 4, 4)
    assert torch.allclose(call_model(Fake(), x), x, atol=1e-6)


@pytest.mark.slow
def test_restored_faces_on_a_model_upscaled_frame_with_sound_on_either_engine(files, tmp_path, request):
    """Issue 26's user: a face restorer and a frame upscaler in one `facezoom video` run, streamed,
    with the sound, on the local engine and on Ray, which agree."""
    from pipeline.commands.cli import main
    from pipeline.media.sample import write_sample
    from synth import audio_packets, video_frames

    request.getfixturevalue("ray_session")
    clip = write_sample(tmp_path / "sample.mp4", seconds=0.4)
    upscaler = frame_model(tmp_path)
    outputs = {}
    for engine in ("local", "ray"):
        out, report = tmp_path / f"{engine}.mp4", tmp_path / f"{engine}.json"
        assert main(["--quiet", "video", str(clip), "-o", str(out), "--report", str(report), "-s", "2", "-w", "0",
                     "--set", "sr.backend=restore", "--set", f"sr.generator={files['RestoreFormer'][1]}", "--set", "sr.in_size=auto",
                     "--set", f"composite.upscaler={upscaler}", "--set", "composite.upscaler_tile=64",
                     "--set", f"engine.engine={engine}", "--set", "engine.chunk=4", "--set", "video.preset=ultrafast",
                     # one face per model call in both engines: RestoreFormer's codebook lookup may pick another
                     # code where batches of other sizes change a distance in its last bits
                     "--set", "sr.batch_size=1", "--set", "engine.sr_actors=1"]) == 0
        data = json.loads(report.read_text())
        assert data["frames_in"] == data["frames_out"] == 10 and data["faces_model_ran"] >= 5
        assert data["stage_seconds"]["frame_sr"] > 0
        assert audio_packets(out) == audio_packets(clip)
        times, frames = video_frames(out)
        assert frames[0].shape[:2] == tuple(2 * s for s in video_frames(clip)[1][0].shape[:2])
        outputs[engine] = (times, frames)
    assert outputs["ray"][0] == outputs["local"][0]
    worst = max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(outputs["ray"][1], outputs["local"][1], strict=True))
    assert worst < 1.0, worst  # the same frames


def test_a_face_model_file_holding_no_tensors_is_one_line_exit_2(tmp_path, capsys):
    from pipeline.commands.cli import main
    from pipeline.media.sample import write_sample

    path = tmp_path / "ints.pth"  # a state dict's layout with numbers where its tensors belong
    torch.save({"params_ema": {"toRGB.0.weight": 1, "stylegan_decoder.style_mlp.1.weight": 2}}, path)
    clip, out = write_sample(tmp_path / "sample.mp4", seconds=0.1), tmp_path / "out.mp4"
    assert main(["--quiet", "video", str(clip), "-o", str(out), "--set", "sr.backend=restore",
                 "--set", f"sr.generator={path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{path}: 'toRGB.0.weight' holds a value of type int, not a tensor" in err and len(err.splitlines()) == 1, err
    assert not out.exists()
