"""The batched cascade (pipeline/stages/mtcnn.py) is facenet-pytorch's MTCNN: same faces, same boxes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crowd_scenes import CrowdClip
from face_scenes import Face, background, render
from pipeline.stages.detect import DetectConfig, FaceDetector
from pipeline.stages.mtcnn import crop_area, level_part, pyramid, summed_area


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(DetectConfig(device="cpu", working_size=0))


def _reference(detector, frames, min_face):
    """facenet-pytorch's own `MTCNN.detect` with the same settings."""
    from facenet_pytorch import MTCNN

    cfg = detector.cfg
    mtcnn = MTCNN(min_face_size=min_face, thresholds=list(cfg.thresholds), factor=cfg.factor, select_largest=False, keep_all=True,
                  device="cpu").eval()
    boxes, scores, points = mtcnn.detect(np.stack(frames), landmarks=True)
    out = []
    for b, s, p in zip(boxes, scores, points):
        if b is None:
            out.append((np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))))
            continue
        order = np.argsort(-np.asarray(s, np.float64), kind="stable")
        out.append((np.asarray(b)[order], np.asarray(s, np.float64)[order], np.asarray(p)[order]))
    return out


def test_the_batched_cascade_finds_the_same_faces_as_facenet_pytorchs_mtcnn(detector):
    # Real faces: a crowd of LFW faces at 24-40 px over a textured background (hundreds of
    # candidates reach R-net), and the astronaut at three sizes; two frames in one batch.
    crowd = CrowdClip(360, 640, shots=1, shot_length=4, people=7, sizes=(24, 40), seed=1)
    frames = [crowd.frame(0), render(background(360, 640, seed=1), [Face(90, 100, 36), Face(300, 150, 64), Face(500, 220, 110)])]
    fast = detector.detect(frames)
    for found, (boxes, scores, points) in zip(fast, _reference(detector, frames, 20)):
        assert len(found) == len(boxes) >= 3
        np.testing.assert_allclose(found.boxes, boxes, atol=0.01)
        np.testing.assert_allclose(found.scores, scores, atol=1e-4)
        np.testing.assert_allclose(found.landmarks, points, atol=0.01)
    assert len(fast[0]) >= 6  # the crowd's faces, not just any three


def test_crop_area_is_adaptive_average_pooling_of_each_box():
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 40, 50, 3), generator=gen, dtype=torch.uint8)
    imgs = frames.permute(0, 3, 1, 2).float()
    table = summed_area(frames)
    boxes = [(0, 0, 40, 50), (3, 7, 30, 11), (5, 20, 6, 21), (10, 13, 39, 49)]  # y0, x0, y1, x1 (one-past-last)
    image = torch.tensor([0, 1, 1, 0])
    y0, x0, y1, x1 = (torch.tensor(v) for v in zip(*boxes))
    for size in (24, 48):
        got = crop_area(table, image, y0, y1, x0, x1, size)  # [N, 3, S, S]
        for k, (a, b, c, d) in enumerate(boxes):
            want = F.interpolate(imgs[image[k] : image[k] + 1, :, a:c, b:d], size=(size, size), mode="area")[0]
            torch.testing.assert_close(got[k], want, atol=1e-3, rtol=0)


def test_a_pyramid_level_from_the_table_is_facenet_pytorchs_imresample_bit_for_bit():
    """P-net's input levels, made from the summed-area table, are `interpolate(mode="area")`'s values
    and memory layout exactly (P-net's arithmetic, and so its windows, stay facenet-pytorch's)."""
    gen = torch.Generator().manual_seed(2)
    frames = torch.randint(0, 256, (2, 67, 121, 3), generator=gen, dtype=torch.uint8)
    imgs, table = frames.permute(0, 3, 1, 2).float(), summed_area(frames)
    for scale in pyramid(67, 121, 20, 0.709):
        level = (int(67 * scale + 1), int(121 * scale + 1))
        want = F.interpolate(imgs, size=level, mode="area")
        got = level_part(table, (0, level[0]), (0, level[1]), 67, 121, level)
        assert torch.equal(got, want) and got.stride() == want.stride()
        part = level_part(table[1:], (2, level[0] - 1), (4, level[1]), 67, 121, level)  # a region's cells
        assert torch.equal(part, want[1:, :, 2 : level[0] - 1, 4:])


def test_a_pyramid_level_is_made_on_the_tables_device():
    """On a GPU the table, its cells and the level stay on the GPU: checked here without one, on
    PyTorch's `meta` device, where a tensor made on the CPU by mistake fails the same way."""
    table = torch.zeros(2, 37, 61, 3, dtype=torch.int32, device="meta")
    level = level_part(table, (0, 20), (2, 30), 36, 60, (20, 31))
    assert level.device.type == "meta" and level.shape == (2, 3, 20, 28)


def test_the_pyramid_is_facenet_pytorchs():
    scales = pyramid(360, 640, 20, 0.6)
    assert scales[0] == pytest.approx(0.6) and all(b == pytest.approx(a * 0.6) for a, b in zip(scales, scales[1:]))
    assert 360 * scales[-1] >= 12 > 360 * scales[-1] * 0.6


def test_summed_area_is_the_exact_sum_above_and_left_of_each_corner():
    gen = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (2, 9, 13, 3), generator=gen, dtype=torch.uint8)
    table = summed_area(frames)
    assert table.shape == (2, 10, 14, 3) and table.dtype == torch.int32
    want = torch.zeros(2, 10, 14, 3, dtype=torch.int64)
    want[:, 1:, 1:] = frames.to(torch.int64).cumsum(1).cumsum(2)
    assert torch.equal(table.to(torch.int64), want)
