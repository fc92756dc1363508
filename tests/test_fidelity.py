"""Fidelity (`pipeline/stages/fidelity.py`): a face the tool touches keeps its real detail.

On real public-domain faces (scikit-image's astronaut, matplotlib's Grace Hopper), at sizes
from a portrait to a face in a crowd: with the defaults no face comes out blurrier than it went
in; `sr.fidelity=0` is the full replacement; a model that invents detail adds it only above
the kept resolution and agrees with the source below it.
"""

import cv2
import numpy as np
import pytest
import torch
from matplotlib import cbook
from PIL import Image

from models.backends.classical import ClassicalBackend
from pipeline.config import load_config
from pipeline.config.sections import SRConfig
from pipeline.media.reader import Frame
from pipeline.media.sample import astronaut
from pipeline.stages.chunk import FaceProcessor, StageTimer
from pipeline.stages.composite import PasteFace, composite
from pipeline.stages.fidelity import MARGIN, FidelityPlanner, native_px, replacement
from pipeline.stages.superres import SRRequest, run_batch


def _hopper() -> np.ndarray:
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def _shrunk(image: np.ndarray, factor: float) -> np.ndarray:
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)


# A portrait, a face of about 100 px and one of about 45 px (a crowd's), on two real photos.
PICTURES = {
    "astronaut": lambda: astronaut(),
    "hopper": _hopper,
    "astronaut/2": lambda: _shrunk(astronaut(), 0.5),
    "hopper/3": lambda: _shrunk(_hopper(), 1 / 3),
    "astronaut/4": lambda: _shrunk(astronaut(), 0.25),
}


def sharpness(image: np.ndarray, box) -> float:
    """Variance of the Laplacian inside `box` (x0, y0, x1, y1): the usual focus measure."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    grey = cv2.cvtColor(image[max(0, y0):y1, max(0, x0):x1], cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def process(image: np.ndarray, *overrides: str, backend=None):
    """One picture through the face stages as `facezoom video` runs them: (output, its face's report entry)."""
    processor = FaceProcessor(load_config(overrides=list(overrides)))
    if backend is not None:
        processor.backend = backend
    out = processor([Frame(image, 0, 1, 0)], StageTimer())[0]
    faces = processor.finish()["faces"]
    assert len(faces) == 1, f"expected one face, found {len(faces)}"
    return out, faces[0], processor


@pytest.mark.parametrize("name", PICTURES)
def test_with_the_defaults_no_face_comes_out_blurrier(name):
    image = PICTURES[name]()
    out, face, _ = process(image)
    assert sharpness(out, face["box"]) >= 0.95 * sharpness(image, face["box"])
    assert face["in_size"] == 16 and face["native_px"] > 0


@pytest.mark.parametrize("name", PICTURES)
def test_at_scale_2_faces_are_as_sharp_as_a_plain_bicubic_enlargement(name):
    image = PICTURES[name]()
    out, face, _ = process(image, "composite.scale=2")
    box = np.array(face["box"]) * 2
    bicubic = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    assert sharpness(out, box) >= 0.95 * sharpness(bicubic, box)


def test_fidelity_0_is_the_full_replacement():
    image = PICTURES["astronaut/2"]()
    out, face, processor = process(image, "sr.fidelity=0")
    assert face["kept_px"] == face["in_size"] == 16
    # What the engine pasted is what the model made from the 16x16 input, whole.
    crop = processor.analyzer.__class__(load_config().detect, load_config().track, crop_size=128).process([image], 0)[0][0]
    whole = run_batch(processor.backend, SRRequest([crop.crop], [None], [0], [replacement(16)])).faces[0]
    assert whole.dtype == np.uint8
    np.testing.assert_array_equal(out, composite(image, [PasteFace(crop.matrix, whole, crop.track_id, crop.box)], load_config().composite))
    assert sharpness(out, face["box"]) < 0.5 * sharpness(image, face["box"])  # the 16x16 face, enlarged: the "enhance" look


class InventingBackend(ClassicalBackend):
    """A stand-in generative model: the bicubic face plus fine texture it makes up (fixed per seed)."""

    def super_resolve(self, lr, states, *, seeds, gaps=None):
        result = super().super_resolve(lr, states, seeds=seeds)
        size = self.out_size
        for i, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            result.images[i] = (result.images[i] + 0.15 * torch.randn(3, size, size, generator=g)).clamp(-1, 1)
        return result


def _high_band(image: np.ndarray, box) -> float:
    """Energy above half the image's resolution inside `box`: what a 2x enlargement cannot make."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    patch = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float64)
    low = cv2.resize(cv2.resize(patch, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), patch.shape[::-1], interpolation=cv2.INTER_CUBIC)
    return float(((patch - low) ** 2).mean())


def test_an_inventing_model_adds_detail_only_above_the_kept_resolution():
    image = PICTURES["astronaut/4"]()  # a face of ~43 source px across its crop, shown at ~86: the model's 128 can add
    out, face, _ = process(image, "composite.scale=2", backend=InventingBackend(out_size=128))
    assert face["kept_px"] == pytest.approx(MARGIN * face["native_px"], abs=0.2) and face["kept_px"] < 128 and face["model_ran"]
    box = np.array(face["box"]) * 2
    bicubic = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    plain, _, _ = process(image, "composite.scale=2")  # the classical backend, which invents nothing
    assert _high_band(out, box) > 1.2 * _high_band(bicubic, box)  # detail the enlargement lacks: invented
    assert _high_band(plain, box) < 1.05 * _high_band(bicubic, box)
    # Below the kept resolution the face is the source's: its consistency there, and the output
    # shrunk back to the input's size.
    assert face["consistency"] < 2e-4
    x0, y0, x1, y1 = (int(v) for v in face["box"])
    back = cv2.resize(out, image.shape[1::-1], interpolation=cv2.INTER_AREA).astype(float)
    shrunk_bicubic = cv2.resize(bicubic, image.shape[1::-1], interpolation=cv2.INTER_AREA).astype(float)
    err = np.abs(back - shrunk_bicubic)[y0:y1, x0:x1].mean()
    # The same model at fidelity 0 replaces the face with its own, which agrees only at 16x16.
    replaced, _, _ = process(image, "composite.scale=2", "sr.fidelity=0", backend=InventingBackend(out_size=128))
    replaced_err = np.abs(cv2.resize(replaced, image.shape[1::-1], interpolation=cv2.INTER_AREA).astype(float) - shrunk_bicubic)[y0:y1, x0:x1].mean()
    assert err < 0.3 * replaced_err, (err, replaced_err)  # measured: 2.6 against 13.3 levels


def test_at_scale_1_a_sharp_face_keeps_its_pixels_and_costs_no_model_call():
    calls = []

    class Counting(ClassicalBackend):
        def super_resolve(self, lr, states, *, seeds, gaps=None):
            calls.append(lr.shape[0])
            return super().super_resolve(lr, states, seeds=seeds)

    image = PICTURES["hopper/3"]()
    out, face, _ = process(image, backend=Counting(out_size=128))
    np.testing.assert_array_equal(out, image)
    assert calls == [] and not face["model_ran"] and face["steps"] == 0 and face["consistency"] == 0


def test_kept_resolution_interpolates_octaves_between_the_model_input_and_the_face():
    plans = [FidelityPlanner.for_run(SRConfig(fidelity=w), 2, out_size=256, any_input_size=True)(100.0)
             for w in (0.0, 0.25, 0.5, 1.0)]
    top = MARGIN * 100  # fidelity 1 keeps a margin above the native 100 px
    assert [round(p.kept_px, 2) for p in plans] == [16.0, round(16 * (top / 16) ** 0.25, 2), round(16 * (top / 16) ** 0.5, 2), top]
    assert plans[0].replace and not any(p.replace for p in plans[1:])
    assert not any(p.keep for p in plans)  # at scale 2 a 256-px model can add detail above 100
    at_scale_1 = FidelityPlanner.for_run(SRConfig(), 1, out_size=256, any_input_size=True)(100.0)
    assert at_scale_1.keep  # the output shows the face at 100 px: all of it the source's


def test_auto_input_size_feeds_each_face_at_its_own_resolution_in_powers_of_two():
    planner = FidelityPlanner.for_run(SRConfig(in_size="auto"), 2, out_size=256, any_input_size=True)
    assert [planner(n).in_size for n in (10, 16, 31, 32, 100, 200, 1000)] == [16, 16, 16, 32, 64, 128, 128]
    fixed = FidelityPlanner.for_run(SRConfig(in_size="auto"), 2, out_size=128, any_input_size=False)
    assert fixed(100).in_size == 16  # a backend of one input size (PFSR) keeps it
    # run_batch feeds each group of sizes in one call, at that size.
    seen = []

    class Spy(ClassicalBackend):
        def super_resolve(self, lr, states, *, seeds, gaps=None):
            seen.append(tuple(lr.shape))
            return super().super_resolve(lr, states, seeds=seeds)

    backend = Spy(out_size=256)
    crops = [np.full((256, 256, 3), 100 + i, np.uint8) for i in range(3)]
    result = run_batch(backend, SRRequest(crops, [None] * 3, [0, 1, 2], [planner(n) for n in (100, 40, 110)]))
    assert sorted(seen) == [(1, 3, 32, 32), (2, 3, 64, 64)] and result.in_sizes == [64, 32, 64]


def test_native_px_is_the_source_span_of_the_crop():
    matrix = np.array([[0.5, 0.0, 3.0], [0.0, 0.5, 1.0]])  # crop pixels are two source pixels wide
    assert native_px(matrix, 128) == 256.0


def _zoom(image, backend, fidelity=None, n=24, max_zoom=4.0):
    """A zoom into the picture's face with `backend`: the frames, and the plain zoom's (the view only)."""
    from pipeline.creative import camera
    from pipeline.creative.targets import find_faces
    from pipeline.creative.zoom import ZoomCamera

    cfg = load_config(overrides=[] if fidelity is None else [f"sr.fidelity={fidelity}"])
    spot = find_faces([image], cfg=cfg, crop_size=backend.out_size, chunk=8)[0][0]
    size = image.shape[1::-1]
    cam = ZoomCamera(backend, sr_cfg=cfg.sr, frame_size=size, out_size=size, max_zoom=max_zoom, composite_cfg=cfg.composite, seed=0)
    centre = ((spot.box[0] + spot.box[2]) / 2, (spot.box[1] + spot.box[3]) / 2)
    frames, plain, mags = [], [], []
    for tight in np.linspace(0, 1, n):
        frames.append(cam.render(image, spot, tight))
        view = camera.camera_view(frame_size=size, out_size=size, target=centre, tight=tight, zoom=camera.zoom_factor(tight, max_zoom=max_zoom))
        plain.append(camera.render_view(image, view, size))
        mags.append(camera.magnification(view, size))
    return frames, plain, mags, native_px(spot.matrix, backend.out_size), cam


def test_a_zoom_into_a_sharp_face_ends_as_sharp_as_a_plain_zoom():
    image = PICTURES["astronaut"]()  # the real 512-px photo: its face holds more than the 128-px model makes
    frames, plain, _, _, cam = _zoom(image, ClassicalBackend(out_size=128))
    for frame, view in zip(frames, plain):
        np.testing.assert_array_equal(frame, view)
    assert cam.sr_calls == 0
    # At fidelity 0 it ends on the model's face from 16x16, the "enhance" look.
    replaced, plain, _, _, _ = _zoom(image, ClassicalBackend(out_size=128), fidelity=0)
    whole = np.array([0, 0, 512, 512])
    assert sharpness(replaced[-1], whole) < 0.8 * sharpness(plain[-1], whole)


def test_a_zoom_past_a_small_face_resolution_adds_only_the_missing_detail_and_fades_it_in():
    image = PICTURES["astronaut/4"]()  # a face ~43 px across its crop, zoomed 4x
    frames, plain, mags, native, _ = _zoom(image, InventingBackend(out_size=128))
    change = [float(np.abs(f.astype(float) - p.astype(float)).mean()) for f, p in zip(frames, plain)]
    for c, mag in zip(change, mags):
        if mag * native <= MARGIN * native:  # not yet past what the source holds: the real picture only
            assert c == 0
    assert change[-1] > 0.5  # the model's detail is on screen at the end...
    assert np.abs(np.diff(change)).max() < 0.5 * change[-1]  # ...faded in, never switched on in one frame
    # The detail is the model's, above the source's resolution: shrunk back to the source's own
    # scale, the last frame is the plain zoom's.
    k = 4
    small = lambda x: cv2.resize(x, (x.shape[1] // k, x.shape[0] // k), interpolation=cv2.INTER_AREA).astype(float)
    replaced, _, _, _, _ = _zoom(image, InventingBackend(out_size=128), fidelity=0)
    assert np.abs(small(frames[-1]) - small(plain[-1])).mean() < 2.0 < np.abs(small(replaced[-1]) - small(plain[-1])).mean()


@pytest.mark.slow
def test_facezoom_video_keeps_faces_by_default_and_replaces_them_with_w_0(sample_clip, tmp_path):
    import json

    from pipeline.commands.cli import main
    from synth import video_frames

    _, before = video_frames(sample_clip)
    sharp = {}
    for w in ("1", "0"):
        out, report = tmp_path / f"w{w}.mp4", tmp_path / f"w{w}.json"
        args = ["-q", "video", str(sample_clip), "-o", str(out), "--report", str(report), "--set", "video.crf=12"]
        assert main(args + ([] if w == "1" else ["-w", "0"])) == 0
        faces = json.loads(report.read_text())["faces"]
        assert faces and all(f["native_px"] > 0 and f["in_size"] == 16 for f in faces)
        _, after = video_frames(out)
        sharp[w] = np.mean([sharpness(after[f["frame"]], f["box"]) / sharpness(before[f["frame"]], f["box"]) for f in faces])
    assert sharp["1"] >= 0.95 > 0.5 > sharp["0"]


def _blurred(image: np.ndarray, factor: int) -> np.ndarray:
    """`image` shrunk `factor` times and enlarged back: its pixels, but a `factor` times smaller face's detail."""
    small = cv2.resize(image, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, image.shape[1::-1], interpolation=cv2.INTER_CUBIC)


def test_the_effective_resolution_of_a_blurred_face_is_what_it_holds():
    image = PICTURES["astronaut"]()
    _, sharp, _ = process(image)
    measured = [process(_blurred(image, f))[1] for f in (2, 3, 4)]
    effective = [f["effective_px"] for f in measured]
    assert sharp["effective_px"] >= 100  # its pixels (172) or near the 128-px crop's limit
    assert effective[0] > effective[1] > effective[2]
    for f, e in zip((2, 3, 4), effective):  # within a factor 1.5 of what the shrunk face held
        assert sharp["native_px"] / f / 1.5 < e < sharp["native_px"] / f * 1.5


def test_at_scale_1_a_model_works_only_on_blurred_faces():
    image = PICTURES["astronaut"]()
    _, sharp, _ = process(image, backend=InventingBackend(out_size=128))
    assert not sharp["model_ran"]
    blurred = _blurred(image, 4)  # the detail of a 43-px face in 172 px
    out, face, _ = process(blurred, backend=InventingBackend(out_size=128))
    assert face["model_ran"] and face["kept_px"] < face["native_px"]
    assert _high_band(out, face["box"]) > 1.2 * _high_band(blurred, face["box"])  # it got detail it lacked
    # ...and the detail it had is kept: the output shrunk to the face's effective size is the input's.
    k = face["native_px"] / face["effective_px"]
    small = lambda x: cv2.resize(x, None, fx=1 / k, fy=1 / k, interpolation=cv2.INTER_AREA).astype(float)
    x0, y0, x1, y1 = (int(v / k) for v in face["box"])
    assert np.abs(small(out) - small(blurred))[y0:y1, x0:x1].mean() < 3.0


def test_a_track_s_blur_moves_smoothly_and_its_size_at_once():
    from pipeline.stages.fidelity import BLUR_SMOOTHING, EffectiveTracker

    smooth = EffectiveTracker()
    assert smooth(1, 64.0, 64.0) == 64.0  # a track's first frame: as measured
    assert smooth(1, 80.0, 80.0) == 80.0  # a sharp face growing on screen: its size at once
    assert smooth(1, 20.0, 80.0) == pytest.approx(80 / 2 ** (2 * BLUR_SMOOTHING))  # sudden blur: part of the way, in octaves
    assert smooth(2, 32.0, 64.0) == 32.0  # tracks are independent
    smooth.forget(1)
    assert smooth(1, 20.0, 80.0) == 20.0
