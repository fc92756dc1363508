"""Face alignment: the stage between tracking and super-resolution.

Each tracked face's five landmarks are mapped onto a canonical template by a similarity
transform (rotation, uniform scale, translation), and the face is warped into a square crop at
the model's output size; the lead's engine then shrinks that crop to the model's input with the
backend's own downscaler. `invert` gives the exact inverse that `pipeline/stages/composite.py` uses to
put the super-resolved face back.

Templates: each model's crops are framed the way its training faces were (`TEMPLATES`, named by
the backend's `framing`):
- "ffhq": FFHQ framing (Karras et al., "A Style-Based Generator Architecture for GANs", CVPR
  2019), the framing StyleGAN, and hence PULSE, was trained on: the whole face with some hair and
  chin, eyes about 47% of the way down, eye distance about a quarter of the crop. The five points
  are the FFHQ 512x512 template GFPGAN and CodeFormer align with (xinntao/facexlib,
  `facexlib/utils/face_restoration_helper.py`), normalised to the unit square.
- "arcface": the 112x112 five-point template of face-recognition crops (insightface's
  `arcface_dst`), which DigiFace-1M's aligned images use: a tighter crop, eye distance 0.31 of the
  side. The DCGAN prior `dcgan-digiface-64` was trained on those images resized to 64; MTCNN's
  landmarks on 60 faces it drew average within 0.015 of the side of this template (0.098 from
  FFHQ's), with a per-face spread of up to 0.046 (`python benchmarks/real_prior.py --only-framing`):
  on average the crops are 0.5% wider and 0.03 px (of 64) off centre: nothing to calibrate; one
  face's crop is off by 4% (std) in scale. The prior's search refines each face's framing inside its
  crop for that (models/reframe.py); the crop and its matrix stay as made here.

Conventions (the contracts of this stage):
- landmarks: `[5, 2]` float, x then y, in source pixels, in MTCNN's order: left eye, right eye,
  nose, mouth left, mouth right ("left" = image left);
- a similarity matrix: `[2, 3]` float64, mapping source pixels to aligned-crop pixels
  (`crop = M @ [x, y, 1]`), the matrix `cv2.warpAffine` takes;
- pixel centres sit at integer coordinates (OpenCV's convention), so a pixel's area spans
  `[i - 0.5, i + 0.5]`; `resize_matrix` is the exact map `cv2.resize` applies.
"""

from __future__ import annotations

import numpy as np
import cv2

# FFHQ 5-point template, as (x, y) fractions of the crop side, measured from the crop's top-left
# corner (pixel edges, not centres). Source: facexlib's 512x512 template, (p + 0.5) / 512.
FFHQ_TEMPLATE = (
    np.array(
        [
            [192.98138, 239.94708],  # left eye
            [318.90277, 240.19360],  # right eye
            [256.63416, 314.01935],  # nose tip
            [201.26117, 371.41043],  # mouth left
            [313.08905, 371.15118],  # mouth right
        ],
        dtype=np.float64,
    )
    + 0.5
) / 512.0


# insightface's ArcFace template for 112x112 crops (pixel centres; + 0.5 makes them edges, as above).
ARCFACE_TEMPLATE = (
    np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64) + 0.5
) / 112.0
TEMPLATES = {"ffhq": FFHQ_TEMPLATE, "arcface": ARCFACE_TEMPLATE}  # a backend's `framing` -> its template


def template_for(framing: str) -> np.ndarray:
    """The template a backend's `framing` names; ValueError naming the known ones."""
    if framing not in TEMPLATES:
        raise ValueError(f"unknown face framing {framing!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[framing]


def check_frame(frame: np.ndarray, name: str = "frame") -> np.ndarray:
    """Raise ValueError unless `frame` is `[H, W, 3] uint8` (RGB); return it."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{name} must be a numpy array [H, W, 3] uint8, got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"{name} must be [H, W, 3] uint8 RGB, got shape {list(frame.shape)}")
    if frame.dtype != np.uint8:
        raise ValueError(f"{name} must be [H, W, 3] uint8 RGB, got dtype {frame.dtype}")
    return frame


def check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Raise ValueError unless `landmarks` is a finite `[5, 2]` array; return it as float64."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"landmarks must be [5, 2] (x, y in source pixels), got shape {list(points.shape)}")
    if not np.isfinite(points).all():
        raise ValueError("landmarks must be finite, got NaN or inf")
    return points


def check_matrix(matrix: np.ndarray) -> np.ndarray:
    """Raise ValueError unless `matrix` is a finite, invertible `[2, 3]` affine; return float64."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"matrix must be [2, 3] (source pixels -> crop pixels), got shape {list(m.shape)}")
    if not np.isfinite(m).all():
        raise ValueError("matrix must be finite, got NaN or inf")
    if abs(np.linalg.det(m[:, :2])) < 1e-12:
        raise ValueError(f"matrix must be invertible, got a singular linear part {m[:, :2].tolist()}")
    return m


def template_points(size: int, template: np.ndarray = FFHQ_TEMPLATE) -> np.ndarray:
    """The template's landmarks in pixels of a `size` x `size` crop: `[5, 2]` float64."""
    return np.asarray(template, dtype=np.float64) * size - 0.5


def similarity_transform(landmarks: np.ndarray, size: int, *, template: np.ndarray = FFHQ_TEMPLATE) -> np.ndarray:
    """The similarity `[2, 3]` mapping `landmarks` (source pixels) onto the template in a `size` crop.

    A least-squares fit over all five points. Not `cv2.estimateAffinePartial2D`: its robust
    methods (RANSAC, LMEDS) fit a subset of the points, and the chosen subset can change from
    one frame to the next, which makes crops jump; least squares is a smooth function of the
    landmarks, so smoothed landmarks give smooth crops.
    """
    src = check_landmarks(landmarks)
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    dst = template_points(int(size), template)
    # x' = a x - b y + tx,  y' = b x + a y + ty: linear in (a, b, tx, ty), so the fit is exact LSQ.
    x, y = src[:, 0], src[:, 1]
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    a_rows = np.concatenate([np.stack([x, -y, ones, zeros], 1), np.stack([y, x, zeros, ones], 1)])  # [10, 4]
    b_rows = np.concatenate([dst[:, 0], dst[:, 1]])  # [10]
    (a, b, tx, ty), *_ = np.linalg.lstsq(a_rows, b_rows, rcond=None)
    if a * a + b * b < 1e-12:
        raise ValueError(f"landmarks are degenerate (all at one point?), got {src.tolist()}")
    return np.array([[a, -b, tx], [b, a, ty]], dtype=np.float64)


def invert(matrix: np.ndarray) -> np.ndarray:
    """The exact inverse of an affine `[2, 3]` (crop pixels -> source pixels for a similarity)."""
    return cv2.invertAffineTransform(check_matrix(matrix)).astype(np.float64)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The affine `[2, 3]` that applies `inner`, then `outer`."""
    outer3 = np.vstack([np.asarray(outer, np.float64), [0.0, 0.0, 1.0]])
    inner3 = np.vstack([np.asarray(inner, np.float64), [0.0, 0.0, 1.0]])
    return (outer3 @ inner3)[:2]


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply an affine `[2, 3]` to points `[..., 2]`; returns float64 of the same shape."""
    m = np.asarray(matrix, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def transform_box(matrix: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A box `[4]` (x0, y0, x1, y1) moved by a similarity `[2, 3]`: its centre moved, its sides scaled."""
    centre = (box[:2] + box[2:]) / 2
    half = (box[2:] - box[:2]) / 2 * float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    new_centre = transform_points(matrix, centre)
    return np.concatenate([new_centre - half, new_centre + half])


def matrix_scale(matrix: np.ndarray) -> float:
    """The scale factor of a similarity (the square root of its determinant for an affine)."""
    m = np.asarray(matrix, dtype=np.float64)
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def resize_matrix(factor_x: float, factor_y: float | None = None) -> np.ndarray:
    """The affine `cv2.resize` applies when it scales an image by `factor` (pixel centres aligned).

    Pixel `i` covers `[i - 0.5, i + 0.5]`, so `x_out = factor * (x_in + 0.5) - 0.5`.
    """
    fy = factor_x if factor_y is None else factor_y
    return np.array([[factor_x, 0.0, 0.5 * (factor_x - 1)], [0.0, fy, 0.5 * (fy - 1)]], dtype=np.float64)


def warp_face(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The aligned crop: `frame` warped by `matrix` into `[size, size, 3] uint8`.

    Where the crop reaches past the frame's edge, the frame is mirrored (FFHQ pads by
    reflection too), so the model sees plausible surroundings, not black bars. When the crop is
    smaller than the face in the frame (a shrink), the frame region is first resampled with
    area averaging at the crop's scale, so fine texture does not alias into the crop.
    """
    check_frame(frame)
    m = check_matrix(matrix)
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    size = int(size)
    scale = matrix_scale(m)
    if scale >= 1.0:
        return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    # A shrink: warp at the source's resolution into a crop `size / scale` wide, then area-resize.
    # Only the crop's footprint is warped, so this costs what the face costs, not the frame.
    big = min(int(np.ceil(size / scale)), 8 * size)
    up = compose(resize_matrix(big / size), m)
    crop = cv2.warpAffine(frame, up, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def crop_footprint(matrix: np.ndarray, size: int) -> np.ndarray:
    """The crop square's four corners in source pixels: `[4, 2]` float64 (for boxes and pasting)."""
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]])
    return transform_points(invert(matrix), corners)
