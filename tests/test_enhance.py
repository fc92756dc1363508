"""The enhance loop: N passes through the model's own downscaler, samples, pre-blur, sprites, GIFs, batches."""

import logging
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from face_scenes import REF_LANDMARKS
from models.backends.classical import ClassicalBackend
from pipeline.stages.align import similarity_transform, warp_face
from pipeline.commands.cli import main
from pipeline.config import load_config
from pipeline.creative import enhance
from pipeline.creative.enhance import GAP, enhance_picture
from pipeline.media.stills import Picture, read_frames, read_picture
from pipeline.stages.superres import low_res
from pipeline.creative.targets import Choice
from pipeline.stages.superres import to_images
from synth import psnr, tiny_stylegan2_checkpoint

S = 128  # the classical backend's face size


def _sprite(seed=0, alpha=False):
    """A smooth 16x16 picture (optionally RGBA with transparent corners)."""
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), (16, 16), interpolation=cv2.INTER_CUBIC)
    if not alpha:
        return image
    a = np.full((16, 16, 1), 255, np.uint8)
    a[:4, :4] = a[-4:, -4:] = 0
    return np.concatenate([image, a], axis=2)


def _lr(image):
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1  # [1, 3, 16, 16]


def _manual_loop(backend, lr, n):
    outs = []
    for _ in range(n):
        y = backend.super_resolve(lr, [None], seeds=[0]).images
        outs.append(to_images(y)[0])
        lr = backend.downscale(y)
    return outs


@pytest.fixture(scope="module")
def tiny_pulse(tmp_path_factory):
    """`--set` overrides for the PULSE backend on a tiny random StyleGAN2 (32 px), built here."""
    path = tiny_stylegan2_checkpoint(tmp_path_factory.mktemp("pulse") / "tiny.pth")
    return ["--set", "sr.backend=pulse", "--set", f"sr.generator={path}", "--set", "sr.out_size=32",
            "--set", "sr.steps=4", "--set", "sr.warm_steps=2"]


def test_enhance_writes_n_iterations_of_the_loop(tmp_path):
    sprite = _sprite()
    Image.fromarray(sprite).save(tmp_path / "s.png")
    assert main(["-q", "enhance", str(tmp_path / "s.png"), "-o", str(tmp_path / "frames"), "--iterations", "3"]) == 0
    frames = read_frames(tmp_path / "frames")
    assert len(frames) == 4  # the input, then 3 iterations
    np.testing.assert_array_equal(frames[0], cv2.resize(sprite, (S, S), interpolation=cv2.INTER_NEAREST))  # 16x16: taken as is
    expected = _manual_loop(ClassicalBackend(in_size=16, out_size=S), _lr(sprite), 3)
    for got, want in zip(frames[1:], expected):
        np.testing.assert_array_equal(got, want)  # each pass starts from the last, shrunk by the model's downscaler
    assert psnr(frames[1], frames[3]) < 60  # and the passes do move
    assert main(["-q", "enhance", str(tmp_path / "s.png"), "-o", str(tmp_path / "grid.png"), "--iterations", "3"]) == 0
    grid = read_picture(tmp_path / "grid.png").frames[0]
    assert grid.shape == (S, 4 * S + 3 * GAP, 3)
    np.testing.assert_array_equal(grid[:, -S:], expected[-1])


def test_pre_blur_softens_only_the_first_input(tmp_path):
    sprite = _sprite(1)
    Image.fromarray(sprite).save(tmp_path / "s.png")
    assert main(["-q", "enhance", str(tmp_path / "s.png"), "-o", str(tmp_path / "f"), "--iterations", "2", "--pre-blur"]) == 0
    frames = read_frames(tmp_path / "f")
    backend = ClassicalBackend(in_size=16, out_size=S)
    blurred = backend.downscale(torch.nn.functional.interpolate(_lr(sprite), size=(S, S), mode="bicubic", align_corners=False).clamp(-1, 1))
    shown = to_images(blurred)[0]
    assert not np.array_equal(shown, sprite)
    np.testing.assert_array_equal(frames[0], cv2.resize(shown, (S, S), interpolation=cv2.INTER_NEAREST))
    for got, want in zip(frames[1:], _manual_loop(backend, blurred, 2)):
        np.testing.assert_array_equal(got, want)


def test_a_face_photo_is_enhanced_from_its_aligned_face(tmp_path):
    from pipeline.media.sample import astronaut

    photo = cv2.resize(astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    Image.fromarray(photo).save(tmp_path / "a.png")
    assert main(["-q", "enhance", str(tmp_path / "a.png"), "-o", str(tmp_path / "f"), "--iterations", "1"]) == 0
    shown = read_frames(tmp_path / "f")[0][:: S // 16, :: S // 16]  # the 16x16 input the model saw
    backend = ClassicalBackend(in_size=16, out_size=S)
    crop = warp_face(photo, similarity_transform(REF_LANDMARKS / 2, S), S)  # where the face is known to be
    expected = to_images(low_res(backend, [crop], pre_blur=False))[0]
    assert psnr(shown, expected) > 24
    assert main(["-q", "enhance", str(tmp_path / "a.png"), "-o", str(tmp_path / "w"), "--iterations", "1", "--whole"]) == 0
    whole = read_frames(tmp_path / "w")[0][:: S // 16, :: S // 16]
    assert psnr(whole, expected) < 18  # --whole takes the whole photo instead


@pytest.mark.slow
def test_samples_differ_and_repeat_with_their_seed(tmp_path, tiny_pulse):
    Image.fromarray(_sprite(2)).save(tmp_path / "s.png")
    run = ["-q", "enhance", str(tmp_path / "s.png"), "--iterations", "2", "--samples", "3", *tiny_pulse]
    assert main([*run, "-o", str(tmp_path / "a.png")]) == 0
    assert main([*run, "-o", str(tmp_path / "b.png")]) == 0
    assert main([*run, "-o", str(tmp_path / "c.png"), "--seed", "7"]) == 0
    grid = read_picture(tmp_path / "a.png").frames[0]
    assert grid.shape[1:] == (3 * 32 + 2 * GAP, 3) and grid.shape[0] > 3 * 32 + 2 * GAP  # the pictures, then the caption
    caption = grid[3 * 32 + 2 * GAP:]
    assert (caption == 255).all(axis=2).any() and (caption == 127).all(axis=2).any()  # white words on the grey band
    assert enhance.invention_caption(SimpleNamespace(name="pulse", in_size=16), SimpleNamespace(generator="g.pt")).count("INVENTED") == 1
    rows = [grid[r * (32 + GAP) : r * (32 + GAP) + 32] for r in range(3)]
    np.testing.assert_array_equal(rows[0][:, :32], rows[1][:, :32])  # one input...
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(rows[i][:, 32:].astype(int) - rows[j][:, 32:]).mean() > 3, (i, j)  # ...different samples
    np.testing.assert_array_equal(grid, read_picture(tmp_path / "b.png").frames[0])
    assert not np.array_equal(grid, read_picture(tmp_path / "c.png").frames[0])


def test_identical_samples_are_reported(tmp_path, caplog):
    Image.fromarray(_sprite(3)).save(tmp_path / "s.png")
    with caplog.at_level(logging.WARNING):
        assert main(["-q", "enhance", str(tmp_path / "s.png"), "-o", str(tmp_path / "g.png"), "--samples", "2", "--iterations", "1"]) == 0
    assert "samples are identical" in caplog.text and "sr.backend=pulse" in caplog.text


def test_16x16_rgba_png_round_trip_over_the_background(tmp_path):
    Image.fromarray(_sprite(4, alpha=True)).save(tmp_path / "emoji.png")
    for colour, rgb in [("black", (0, 0, 0)), ("#ff0000", (255, 0, 0))]:
        out = tmp_path / f"{colour.strip('#')}.png"
        assert main(["-q", "enhance", str(tmp_path / "emoji.png"), "-o", str(out), "--iterations", "1", "--background", colour]) == 0
        grid = read_picture(out).frames[0]
        assert grid.shape == (S, 2 * S + GAP, 3)
        assert grid[2, 2].tolist() == list(rgb) and grid[S - 3, S - 3].tolist() == list(rgb)  # transparent corners
        assert grid[S // 2, S // 2].tolist() != list(rgb)


class _SpyBackend(ClassicalBackend):
    """The classical backend, with a numbered state per crop and a record of the states handed in."""

    stateful = True

    def __init__(self, **kw):
        super().__init__(**kw)
        self.received = []

    def super_resolve(self, lr, states, *, seeds, gaps=None):
        self.received.append([None if s is None else int(s["n"]) for s in states])
        result = super().super_resolve(lr, states, seeds=seeds)
        result.states = [{"n": torch.tensor(100 * len(self.received) + b)} for b in range(len(states))]
        return result


def test_animated_gif_comes_out_animated_each_frame_warm_started(tmp_path):
    frames = [_sprite(10 + i) for i in range(3)]
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / "walk.gif", save_all=True, append_images=images[1:], duration=[100, 250, 40], loop=0)
    assert main(["-q", "enhance", str(tmp_path / "walk.gif"), "-o", str(tmp_path / "out.gif"), "--iterations", "2",
                 "--grid", str(tmp_path / "grid.gif")]) == 0
    out = read_picture(tmp_path / "out.gif")
    assert len(out.frames) == 3 and out.durations == pytest.approx([0.1, 0.25, 0.04])
    backend = ClassicalBackend(in_size=16, out_size=S)
    expected = [_manual_loop(backend, _lr(frame), 2)[-1] for frame in read_picture(tmp_path / "walk.gif").frames]
    for i, got in enumerate(out.frames):
        scores = [psnr(got, want) for want in expected]
        assert scores[i] > 27 and int(np.argmax(scores)) == i, scores  # its own frame's last pass, through 256 colours
    grid = read_picture(tmp_path / "grid.gif")
    assert len(grid.frames) == 3 and grid.frames[0].shape == (S, 3 * S + 2 * GAP, 3)
    # With a stateful model, each frame's passes start from the previous frame's same pass and sample.
    spy = _SpyBackend(in_size=16, out_size=S)
    picture = Picture(tmp_path / "walk.gif", frames, [0.1, 0.25, 0.04])
    enhance_picture(picture, spy, cfg=load_config(), iterations=2, samples=2, pre_blur=False, whole=False, choice=Choice(), progress=False)
    assert spy.received == [[None, None], [None, None], [100, 101], [200, 201], [300, 301], [400, 401]]


def test_folder_batch_writes_each_and_reports_the_skipped(tmp_path, capsys, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(_sprite(5)).save(folder / "sprite.png")
    Image.fromarray(_sprite(6, alpha=True)).save(folder / "emoji.png")
    images = [Image.fromarray(_sprite(7 + i)) for i in range(2)]
    images[0].save(folder / "walk.gif", save_all=True, append_images=images[1:], duration=100, loop=0)
    (folder / "notes.txt").write_text("not a picture: ignored")
    out = tmp_path / "out"
    assert main(["-q", "enhance", str(folder), "-o", str(out), "--iterations", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["emoji.png", "sprite.png", "walk.gif"]
    assert len(read_picture(out / "walk.gif").frames) == 2
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(folder / "wall.png")  # no face in it
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert main(["-q", "enhance", str(folder), "-o", str(tmp_path / "out2"), "--iterations", "1"]) == 2
    assert "1 of 4 pictures were skipped" in capsys.readouterr().err
    assert "skipped" in caplog.text and "wall.png: no face found" in caplog.text and "--whole" in caplog.text
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["emoji.png", "sprite.png", "walk.gif"]


def test_enhance_errors_teach_and_leave_no_output(tmp_path, capsys, sample_clip):
    images = [Image.fromarray(_sprite(i)) for i in range(2)]
    images[0].save(tmp_path / "walk.gif", save_all=True, append_images=images[1:], duration=100, loop=0)
    cases = [
        (["enhance", str(tmp_path / "walk.gif"), "-o", str(tmp_path / "walk.gif")], "is the input"),
        (["enhance", str(tmp_path), "-o", str(tmp_path)], "is the input folder"),
        (["enhance", str(sample_clip), "-o", str(tmp_path / "a.png")], "enhance takes pictures"),
        (["enhance", str(tmp_path / "walk.gif"), "-o", str(tmp_path / "a.png")], "the input is animated"),
        (["enhance", str(tmp_path / "walk.gif"), "-o", str(tmp_path / "a.gif"), "--iterations", "0"], "--iterations must be in 1..100"),
        (["enhance", str(tmp_path / "missing.png"), "-o", str(tmp_path / "a.png")], "input not found"),
    ]
    for argv, message in cases:
        assert main(["-q", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walk.gif"]


@pytest.mark.parametrize("outputs", [["-o", "a.png"], ["-o", "a.gif", "--grid", "g.png"]])
def test_an_animated_input_into_a_single_picture_is_refused_before_any_enhancing(tmp_path, capsys, monkeypatch, outputs):
    from pipeline.commands import enhance

    monkeypatch.setattr(enhance, "enhance_picture", lambda *a, **k: pytest.fail("the picture was enhanced first"))
    images = [Image.fromarray(_sprite(i)) for i in range(2)]
    images[0].save(tmp_path / "walk.gif", save_all=True, append_images=images[1:], duration=100, loop=0)
    argv = ["-q", "enhance", str(tmp_path / "walk.gif")] + [a if a.startswith("-") else str(tmp_path / a) for a in outputs]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "names a single picture, but the input is animated" in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walk.gif"]
