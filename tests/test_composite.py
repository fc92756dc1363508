"""Compositing: faces go back where they came from, seamlessly, touching nothing else."""

import numpy as np
import cv2
import pytest

from face_scenes import Face, background, render
from pipeline.stages import composite as composite_module
from pipeline.stages.align import compose, crop_footprint, resize_matrix, similarity_transform, warp_face
from pipeline.stages.composite import CompositeConfig, PasteFace, composite

H, W = 180, 240


def _scene():
    face = Face(cx=110.0, cy=95.0, width=60.0)
    return render(background(H, W, seed=7), [face]), face


def _white_face(size=128):
    frame = np.zeros((H, W, 3), np.uint8)
    matrix = similarity_transform(Face(cx=120.0, cy=90.0, width=60.0).landmarks(), size)
    return frame, PasteFace(matrix, np.full((size, size, 3), 255, np.uint8), 1, None)


def test_pixels_change_only_inside_the_face_footprint():
    frame, face = _scene()
    matrix = similarity_transform(face.landmarks(), 128)
    hr = np.full((128, 128, 3), (250, 20, 200), np.uint8)  # a face no frame pixel resembles
    out = composite(frame, [PasteFace(matrix, hr, 3, None)], CompositeConfig())
    assert out.shape == frame.shape and out.dtype == np.uint8
    changed = np.any(out != frame, axis=2)
    footprint = np.zeros((H, W), np.uint8)
    cv2.fillConvexPoly(footprint, np.round(crop_footprint(matrix, 128)).astype(np.int32), 1)
    footprint = cv2.dilate(footprint, np.ones((3, 3), np.uint8))
    assert changed.sum() > 1500  # the face did go in ...
    assert not (changed & (footprint == 0)).any()  # ... and nothing outside its crop changed
    # The middle of the face is the new face, exactly.
    cx, cy = int(face.cx), int(face.cy)
    np.testing.assert_allclose(out[cy - 5 : cy + 5, cx - 5 : cx + 5], np.broadcast_to(hr[0, 0], (10, 10, 3)), atol=1)
    assert np.array_equal(frame, _scene()[0])  # the input frame is untouched


def test_a_frame_with_nothing_to_paste_at_scale_one_is_returned_as_it_is():
    """No copy of a frame whose faces are all kept (6 MB a 1080p frame); anything drawn or pasted
    goes on a copy, never on the input."""
    frame, face = _scene()
    matrix = similarity_transform(face.landmarks(), 128)
    kept = [PasteFace(matrix, None, 1, np.array([80.0, 60.0, 140.0, 130.0])), PasteFace(matrix, np.zeros((128, 128, 3), np.uint8), 2, None, 0.0)]
    assert composite(frame, kept, CompositeConfig()) is frame
    before = frame.copy()
    for cfg in (CompositeConfig(draw_boxes=True), CompositeConfig(side_by_side=True), CompositeConfig(scale=2)):
        out = composite(frame, kept, cfg)
        assert out is not frame and not np.shares_memory(out, frame)
    out = composite(frame, [PasteFace(matrix, np.zeros((128, 128, 3), np.uint8), 2, None)], CompositeConfig())
    assert not np.shares_memory(out, frame) and (out != frame).any()
    np.testing.assert_array_equal(frame, before)


def test_blend_is_feathered_without_a_hard_edge():
    frame, face = _white_face()
    out = composite(frame, [face], CompositeConfig(feather=0.1)).astype(np.float64)
    row = out[90, :, 0]
    assert row.max() == 255 and row[0] == 0 and row[-1] == 0
    # From black to white over the feather: the largest step between neighbours stays small.
    # (The face's crop is ~150 px wide here, so the 10% feather is ~15 px.)
    assert np.abs(np.diff(row)).max() < 40
    column = out[:, 120, 0]
    assert np.abs(np.diff(column)).max() < 40
    hard = composite(frame, [face], CompositeConfig(feather=0.005)).astype(np.float64)
    assert np.abs(np.diff(hard[90, :, 0])).max() > 120  # the check would catch a hard edge


def test_square_mask_covers_the_whole_crop():
    frame, face = _white_face()
    ellipse = composite(frame, [face], CompositeConfig(mask="ellipse"))
    square = composite(frame, [face], CompositeConfig(mask="square"))
    corner = np.round(crop_footprint(face.matrix, 128).mean(0) * 0.3 + crop_footprint(face.matrix, 128)[0] * 0.7).astype(int)
    assert ellipse[corner[1], corner[0], 0] == 0 and square[corner[1], corner[0], 0] == 255


def test_round_trip_of_an_unchanged_crop_leaves_the_frame_as_it_was():
    # Crop the face, paste the crop back: any mismatch of conventions shows as a ghost. At scale
    # 2 the "super-resolved" face is the crop of the upscaled frame, at twice the crop size.
    frame, face = _scene()
    matrix = similarity_transform(face.landmarks(), 128)
    for scale in (1, 2):
        big_frame = cv2.resize(frame, (W * scale, H * scale), interpolation=cv2.INTER_CUBIC)
        matrix_hr = compose(resize_matrix(float(scale)), matrix)  # for a crop of 128 * scale
        big_to_source = np.linalg.inv(np.vstack([resize_matrix(float(scale)), [0, 0, 1]]))[:2]
        crop = warp_face(big_frame, compose(matrix_hr, big_to_source), 128 * scale)
        out = composite(frame, [PasteFace(matrix_hr, crop, 1, None)], CompositeConfig(scale=scale))
        region = np.s_[int(face.cy - 25) * scale : int(face.cy + 25) * scale, int(face.cx - 25) * scale : int(face.cx + 25) * scale]
        a = cv2.cvtColor(out[region], cv2.COLOR_RGB2GRAY).astype(np.float64)
        b = cv2.cvtColor(big_frame[region], cv2.COLOR_RGB2GRAY).astype(np.float64)
        (dx, dy), _ = cv2.phaseCorrelate(a, b)
        assert np.hypot(dx, dy) < 0.25 * scale, f"scale {scale}: the face came back shifted by ({dx:.2f}, {dy:.2f}) px"
        assert np.abs(a - b).mean() < 4.0  # what is left is the blur of resampling twice


def test_scale_two_gives_a_twice_larger_frame_with_the_face_at_twice_the_coordinates():
    frame, face = _white_face()
    frame[:] = 40
    one = composite(frame, [face], CompositeConfig(scale=1))
    two = composite(frame, [face], CompositeConfig(scale=2))
    four = composite(frame, [face], CompositeConfig(scale=4))
    assert two.shape == (2 * H, 2 * W, 3) and four.shape == (4 * H, 4 * W, 3)

    def centroid(img):
        ys, xs = np.nonzero(img[..., 0] > 150)
        return np.array([xs.mean(), ys.mean()]), len(xs)

    c1, n1 = centroid(one)
    c2, n2 = centroid(two)
    c4, n4 = centroid(four)
    np.testing.assert_allclose(c2, 2 * c1 + 0.5, atol=0.5)
    np.testing.assert_allclose(c4, 4 * c1 + 1.5, atol=1.0)
    assert 3.6 < n2 / n1 < 4.4 and 14 < n4 / n1 < 18  # area grows with the square of the scale
    # Away from the face the output is the upscaled frame.
    assert (two[:20] == 40).all()


def test_output_scale_places_faces_at_full_resolution():
    # A 4x output of a face from a 512 px super-resolution keeps its detail: the paste is not a
    # small-frame composite upscaled afterwards.
    frame, face = _white_face(512)
    checker = (np.indices((512, 512)).sum(0) // 8 % 2 * 255).astype(np.uint8)
    hr = np.repeat(checker[..., None], 3, axis=2)
    out = composite(frame, [PasteFace(face.matrix, hr, 1, None)], CompositeConfig(scale=4))
    centre = out[4 * 90 - 20 : 4 * 90 + 20, 4 * 120 - 20 : 4 * 120 + 20, 0].astype(np.float64)
    assert centre.std() > 90  # 8 px checks of the 512 face are ~4.5 output px: still visible


def test_warps_only_the_face_rectangle_never_the_frame(monkeypatch):
    sizes = []
    real = cv2.warpAffine

    def spy(src, m, dsize, *args, **kwargs):
        sizes.append(dsize)
        return real(src, m, dsize, *args, **kwargs)

    monkeypatch.setattr(composite_module.cv2, "warpAffine", spy)
    frame = np.zeros((720, 1280, 3), np.uint8)
    matrix = similarity_transform(Face(cx=640.0, cy=360.0, width=40.0).landmarks(), 256)
    composite(frame, [PasteFace(matrix, np.zeros((256, 256, 3), np.uint8), 1, None)], CompositeConfig(scale=2))
    assert sizes and all(w * h < 0.02 * (2560 * 1440) for w, h in sizes)


def test_colour_match_removes_a_colour_cast():
    frame, face = _scene()
    matrix = similarity_transform(face.landmarks(), 128)
    crop = warp_face(frame, matrix, 128).astype(np.int16)
    cast = np.clip(crop + (40, -30, 0), 0, 255).astype(np.uint8)
    inner = np.s_[int(face.cy - 15) : int(face.cy + 15), int(face.cx - 15) : int(face.cx + 15)]
    plain = composite(frame, [PasteFace(matrix, cast, 1, None)], CompositeConfig(color_match=False))
    matched = composite(frame, [PasteFace(matrix, cast, 1, None)], CompositeConfig(color_match=True))
    shift_plain = (plain[inner].astype(np.float64) - frame[inner]).mean((0, 1))
    shift_matched = (matched[inner].astype(np.float64) - frame[inner]).mean((0, 1))
    assert shift_plain[0] > 25 and shift_plain[1] < -20
    assert np.abs(shift_matched).max() < 6


def test_draw_boxes_marks_each_face_with_its_track_colour():
    frame, face = _white_face()
    frame[:] = 0
    box = np.array([60.0, 40.0, 180.0, 150.0])
    face = face._replace(box=box, image=np.zeros_like(face.image), track_id=7)
    plain = composite(frame, [face], CompositeConfig(scale=2))
    drawn = composite(frame, [face], CompositeConfig(scale=2, draw_boxes=True))
    assert not plain.any()
    assert drawn[2 * 95, 2 * 60 - 1 : 2 * 60 + 2].any()  # the box's left edge, at 2x
    assert drawn[2 * 95, 2 * 100].sum() == 0  # inside the box stays as it was


def test_bad_inputs_raise_with_got_and_expected():
    frame, face = _white_face()
    cfg = CompositeConfig()
    with pytest.raises(ValueError, match=r"faces\[0\].image must be \[S, S, 3\] uint8, got \[128, 96, 3\]"):
        composite(frame, [face._replace(image=face.image[:, :96])], cfg)
    with pytest.raises(ValueError, match=r"faces\[0\].image must be uint8 \(a face\) or int16 \(detail\), got float32"):
        composite(frame, [face._replace(image=face.image.astype(np.float32))], cfg)
    with pytest.raises(ValueError, match=r"matrix must be \[2, 3\].*got shape \[3, 3\]"):
        composite(frame, [face._replace(matrix=np.eye(3))], cfg)
    with pytest.raises(ValueError, match=r"frame must be \[H, W, 3\] uint8 RGB, got shape \[180, 240, 4\]"):
        composite(np.zeros((H, W, 4), np.uint8), [face], cfg)
    with pytest.raises(ValueError, match=r"faces\[0\] must be \(matrix, image, track_id, box\[, weight\]\), got 2 items"):
        composite(frame, [(face.matrix, face.image)], cfg)


@pytest.mark.parametrize(
    "kwargs, key", [({"scale": 3}, "scale"), ({"feather": 0.0}, "feather"), ({"mask": "circle"}, "mask")]
)
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=rf"^{key} must be"):
        CompositeConfig(**kwargs)


def test_side_by_side_puts_the_untouched_input_left_of_the_result():
    frame = np.full((40, 60, 3), 90, np.uint8)
    face = np.full((32, 32, 3), 250, np.uint8)
    matrix = np.array([[1.0, 0.0, -10.0], [0.0, 1.0, -4.0]])  # the face covers x 10..42, y 4..36
    cfg = CompositeConfig(scale=2, side_by_side=True)
    out = composite(frame, [(matrix, face, 1, None)], cfg)
    assert out.shape == (80, 240, 3)
    assert cfg.output_size(60, 40) == (240, 80)
    assert (out[:, :120] == 90).all()
    assert out[:, 120:].max() == 250
