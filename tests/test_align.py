"""Alignment: landmarks land on the FFHQ template, and warp + inverse warp is the identity."""

import numpy as np
import cv2
import pytest

from face_scenes import REF_LANDMARKS, Face, background, render
from pipeline.stages.align import (
    FFHQ_TEMPLATE,
    compose,
    invert,
    resize_matrix,
    similarity_transform,
    template_points,
    transform_points,
    warp_face,
)


def _rotation(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


@pytest.mark.parametrize("size", [16, 128, 1024])
def test_landmarks_that_are_a_similarity_of_the_template_land_exactly_on_it(size):
    placed = transform_points(_rotation(23.0, 0.37, 140.0, -12.5), template_points(size))
    matrix = similarity_transform(placed, size)
    assert matrix.shape == (2, 3) and matrix.dtype == np.float64
    np.testing.assert_allclose(transform_points(matrix, placed), template_points(size), atol=1e-6)


def test_real_face_lands_on_ffhq_framing():
    size = 256
    matrix = similarity_transform(REF_LANDMARKS, size)
    mapped = transform_points(matrix, REF_LANDMARKS)
    # A real face is not exactly the template, but every point lands within 3% of the crop.
    assert np.abs(mapped - template_points(size)).max() < 0.03 * size
    eyes_y = mapped[:2, 1].mean() / size
    assert 0.44 < eyes_y < 0.50  # FFHQ: eyes a little above the middle
    assert abs(mapped[:, 0].mean() / size - 0.5) < 0.03  # centred left to right
    eye_distance = np.linalg.norm(mapped[1] - mapped[0]) / size
    assert 0.22 < eye_distance < 0.27  # whole face, hair and chin in frame
    # The matrix maps onto the unit-square template's pixel positions in any crop size.
    np.testing.assert_allclose(template_points(size), FFHQ_TEMPLATE * size - 0.5)


def test_invert_is_exact():
    matrix = similarity_transform(REF_LANDMARKS + [30.0, -7.0], 512)
    points = np.random.default_rng(0).uniform(-50, 600, size=(100, 2))
    np.testing.assert_allclose(transform_points(invert(matrix), transform_points(matrix, points)), points, atol=1e-9)
    np.testing.assert_allclose(compose(invert(matrix), matrix), [[1, 0, 0], [0, 1, 0]], atol=1e-12)


@pytest.mark.parametrize("crop_size", [128, 48])  # an enlarging crop and a shrinking one
def test_round_trip_lands_the_face_back_within_a_pixel(crop_size):
    face = Face(cx=170.0, cy=125.0, width=80.0)
    frame = render(background(240, 320, seed=4), [face])
    # A slightly rotated face, as a tilted head gives.
    tilt = cv2.getRotationMatrix2D((face.cx, face.cy), 12.0, 1.0)
    frame = cv2.warpAffine(frame, tilt, (320, 240), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    landmarks = transform_points(tilt, face.landmarks())
    matrix = similarity_transform(landmarks, crop_size)
    crop = warp_face(frame, matrix, crop_size)
    assert crop.shape == (crop_size, crop_size, 3) and crop.dtype == np.uint8
    back = cv2.warpAffine(crop, invert(matrix), (320, 240), flags=cv2.INTER_LINEAR)
    # Compare the inner face: a sub-pixel shift shows in phase correlation, a blur does not.
    x0, y0 = int(face.cx - 25), int(face.cy - 30)
    a = cv2.cvtColor(frame[y0 : y0 + 60, x0 : x0 + 50], cv2.COLOR_RGB2GRAY).astype(np.float64)
    b = cv2.cvtColor(back[y0 : y0 + 60, x0 : x0 + 50], cv2.COLOR_RGB2GRAY).astype(np.float64)
    (dx, dy), _ = cv2.phaseCorrelate(a, b)
    assert np.hypot(dx, dy) < 1.0, f"round trip moved the face by ({dx:.2f}, {dy:.2f}) px"
    if crop_size >= 128:  # an enlarging crop keeps the detail: the round trip is near-lossless
        assert np.abs(a - b).mean() < 4.0


def test_shrinking_crop_does_not_alias():
    # One-pixel stripes, shrunk ~4x: an area-averaged crop is flat grey, a point-sampled one is
    # full of moire (what a user sees as crawling patterns on a big face).
    stripes = np.zeros((400, 400, 3), np.uint8)
    stripes[:, ::2] = 255
    matrix = np.array([[0.23, 0.0, 0.0], [0.0, 0.23, 0.0]])
    crop = warp_face(stripes, matrix, 64).astype(np.float64)
    naive = cv2.warpAffine(stripes, matrix, (64, 64), flags=cv2.INTER_LINEAR).astype(np.float64)
    assert np.abs(naive - 127.5).mean() > 50  # the test image does alias when sampled naively
    assert np.abs(crop - 127.5).mean() < 8 and np.abs(crop - 127.5).max() < 16


def test_crop_past_the_frame_edge_is_mirrored_not_black():
    frame = np.full((100, 100, 3), 200, np.uint8)
    matrix = np.array([[1.0, 0.0, 40.0], [0.0, 1.0, 40.0]])  # the crop's top-left quarter is outside
    crop = warp_face(frame, matrix, 80)
    assert crop.min() == 200


def test_resize_matrix_matches_cv2_resize():
    rng = np.random.default_rng(1)
    small = cv2.GaussianBlur(rng.uniform(0, 255, (30, 40)).astype(np.float32), (0, 0), 2)
    big = cv2.resize(small, (160, 120), interpolation=cv2.INTER_LINEAR)
    warped = cv2.warpAffine(small, resize_matrix(4.0), (160, 120), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(big - warped)[4:-4, 4:-4].max() < 0.5


def test_bad_inputs_raise_with_got_and_expected():
    frame = np.zeros((50, 60, 3), np.uint8)
    matrix = similarity_transform(REF_LANDMARKS, 32)
    with pytest.raises(ValueError, match=r"landmarks must be \[5, 2\].*got shape \[4, 2\]"):
        similarity_transform(REF_LANDMARKS[:4], 32)
    with pytest.raises(ValueError, match=r"frame must be \[H, W, 3\] uint8 RGB, got shape \[50, 60\]"):
        warp_face(frame[..., 0], matrix, 32)
    with pytest.raises(ValueError, match=r"got dtype float32"):
        warp_face(frame.astype(np.float32), matrix, 32)
    with pytest.raises(ValueError, match=r"matrix must be \[2, 3\].*got shape \[3, 3\]"):
        warp_face(frame, np.eye(3), 32)
    with pytest.raises(ValueError, match=r"size must be a positive integer, got 0"):
        similarity_transform(REF_LANDMARKS, 0)
    with pytest.raises(ValueError, match="degenerate"):
        similarity_transform(np.zeros((5, 2)), 32)
