"""`facezoom train`: faces framed as the pipeline frames them, the progressive schedule, a loss
that falls, checkpoints in the published layout that load back, and an exact resume."""

import numpy as np
import pytest
import torch

from models.networks.pfsr import load_pfsr
from models.pfsr_train import (
    Schedule,
    TrainConfig,
    landmark_heatmap,
    make_optimizer,
    sample_batch,
    stage_images,
    train_step,
)
from pipeline.commands.cli import main
from test_pfsr import TINY, published_shapes

TINY_ARG = ",".join(map(str, TINY))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Four frames of the built-in sample clip (the astronaut, zoomed in), as PNG files."""
    import cv2

    from pipeline.media.sample import camera_frames

    folder = tmp_path_factory.mktemp("faces")
    frames = list(camera_frames(seconds=1.0, fps=8))[-4:]  # the face is 100-140 px tall here
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"frame{i}.png"), frame[:, :, ::-1])
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def faces(image_dir):
    from pipeline.stages.detect import DetectConfig, FaceDetector
    from pipeline.training.train import collect_faces, find_images

    return collect_faces(find_images(image_dir), FaceDetector(DetectConfig(device="cpu", min_face=40)), min_face=30)


def test_schedule_is_stage_fade_stage_fade_stage():
    schedule = Schedule(stage_iters=4, fade_iters=2)
    phases = [schedule.at(i) for i in range(schedule.total)]
    assert schedule.total == 16
    assert [p.step for p in phases] == [1] * 4 + [2] * 2 + [2] * 4 + [3] * 2 + [3] * 4
    assert [p.alpha for p in phases[4:6]] == [0.0, 0.5] and [p.alpha for p in phases[10:12]] == [0.0, 0.5]
    assert all(p.alpha == 1.0 for p in phases[:4] + phases[6:10] + phases[12:])
    with pytest.raises(ValueError, match=r"0\.\.15, got 16"):
        schedule.at(16)


def test_faces_are_aligned_exactly_as_the_pipeline_aligns_them(faces):
    from pipeline.stages.align import template_points

    assert len(faces) == 4 and faces.crops.shape == (4, 128, 128, 3)
    assert all(s.endswith(".png") for s in faces.sources)
    # the 5 landmarks in crop pixels sit on the FFHQ template the video pipeline aligns to
    offsets = np.abs(faces.landmarks - template_points(128)[None])
    assert offsets.max() < 4.0, offsets.max()


def test_heatmap_and_flips_keep_landmarks_on_the_face():
    crops = torch.zeros(1, 128, 128, 3, dtype=torch.uint8)
    points = torch.tensor([[[40.0, 50.0], [90.0, 52.0], [64.0, 75.0], [45.0, 95.0], [85.0, 96.0]]])
    for k, (x, y) in enumerate(points[0].long().tolist()):
        crops[0, y, x] = 50 + 40 * k  # a distinct mark under each landmark
    rng, flips = torch.Generator().manual_seed(0), 0
    for _ in range(8):  # some draws flip, some do not
        face, marks = sample_batch(crops, points, batch_size=1, flip=True, rng=rng, device="cpu")
        assert marks[0, 0, 0] < marks[0, 1, 0] and marks[0, 3, 0] < marks[0, 4, 0]  # left stays image-left
        flipped = bool(marks[0, 0, 0] != 40.0)
        flips += flipped
        for k, (x, y) in enumerate(marks[0].round().long().tolist()):
            original = (1, 0, 2, 4, 3)[k] if flipped else k  # mirrored: the right eye became the left one
            assert abs(float(face[0, 0, y, x]) - ((50 + 40 * original) / 127.5 - 1)) < 1e-6  # the mark moved with its landmark
        heat = landmark_heatmap(marks, 64, sigma=6.0)
        assert heat.shape == (1, 1, 64, 64)
        peak = divmod(int(heat.flatten().argmax()), 64)  # (y, x) at 64x64: half the crop's coordinates
        assert min(abs(peak[0] - (y + 0.5) / 2 + 0.5) + abs(peak[1] - (x + 0.5) / 2 + 0.5) for x, y in marks[0].tolist()) <= 1.0
    assert 0 < flips < 8


def test_a_few_training_steps_lower_the_loss(faces):
    from models.networks.pfsr import PFSRGenerator
    from models.pfsr_train import Phase

    cfg = TrainConfig(batch_size=4)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        generator = PFSRGenerator(TINY)
    optimizer = make_optimizer(generator, cfg)
    batch, points = sample_batch(torch.from_numpy(faces.crops), torch.from_numpy(faces.landmarks), batch_size=4,
                                 flip=False, rng=torch.Generator().manual_seed(1), device="cpu")
    assert stage_images(batch)[16].shape == (4, 3, 16, 16)
    for phase in (Phase(1, 1.0, "stage 1"), Phase(2, 0.5, "fade 1->2")):
        losses = [train_step(generator, optimizer, batch, points, phase, cfg) for _ in range(25)]
        assert losses[-1]["loss"] < 0.7 * losses[0]["loss"], (phase, losses[0], losses[-1])
    assert "attention" in losses[-1] and losses[-1]["attention"] < losses[0]["attention"]  # from stage 2 on


def test_train_command_writes_a_published_checkpoint_the_backend_loads(image_dir, tmp_path):
    from pipeline.stages.superres import SRConfig, create_backend

    ckpt = tmp_path / "mine.ckpt"
    args = ["--quiet", "train", str(image_dir), "-o", str(ckpt), "--channels", TINY_ARG, "--stage-iters", "3",
            "--fade-iters", "2", "--batch-size", "2", "--save-every", "5", "--min-face", "30", "--set", "detect.min_face=40",
            "--faces-cache", str(tmp_path / "faces.npz")]
    assert main(args) == 0
    assert (tmp_path / "faces.npz").is_file()  # the aligned faces, kept for the next run
    loaded = load_pfsr(ckpt)
    assert (loaded.step, loaded.alpha, loaded.iteration) == (3, 1.0, 13)
    assert {k: tuple(v.shape) for k, v in loaded.generator.state_dict().items()} == published_shapes(TINY)
    raw = torch.load(ckpt, weights_only=True)
    assert set(raw) == {"model_state_dict", "step", "alpha", "iteration", "optimizer_state_dict"}

    backend = create_backend(SRConfig(backend="ffsr", generator=str(ckpt), device="cpu"))
    out = backend.super_resolve(torch.zeros(2, 3, 16, 16), [None, None], seeds=[0, 1])
    assert out.images.shape == (2, 3, 128, 128)

    assert main(args) == 2  # the checkpoint exists: refusing to overwrite without --resume
    longer = [a if a != "3" else "4" for a in args] + ["--resume"]  # one more step per stage: 16 in all
    longer[2] = str(tmp_path / "gone")  # no such folder: the faces come from the cache alone
    assert main(longer) == 0
    assert load_pfsr(ckpt).iteration == 16


def test_resume_continues_exactly_where_it_stopped(faces, tmp_path):
    from pipeline.training.train import train_pfsr

    cfg = TrainConfig(batch_size=2, stage_iters=3, fade_iters=2, save_every=100, seed=3)
    straight = tmp_path / "straight.ckpt"
    summary = train_pfsr(faces, straight, cfg=cfg, channels=TINY, device="cpu")
    assert summary["iterations"] == summary["total"] == 13 and summary["phase"] == "stage 3"
    halves = tmp_path / "halves.ckpt"
    first = train_pfsr(faces, halves, cfg=cfg, channels=TINY, max_steps=6, device="cpu")
    assert first["iterations"] == 6 and load_pfsr(halves).step == 2  # mid-way: saved at stage 2
    train_pfsr(faces, halves, cfg=cfg, resume=halves, device="cpu")
    a, b = load_pfsr(straight).generator.state_dict(), load_pfsr(halves).generator.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_command_errors_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", str(empty), "-o", str(tmp_path / "x.ckpt")]) == 2
    assert "no images in" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.ckpt")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["train", str(empty), "-o", str(tmp_path / "x.ckpt"), "--channels", "8,8"]) == 2
    assert "four" in capsys.readouterr().err
