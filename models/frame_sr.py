"""Whole-frame super-resolution: any 2x or 4x SR model spandrel loads, run in tiles.

At `-s 2` / `-s 4` everything outside the faces is the frame enlarged; by default a bicubic
resize (`pipeline/stages/composite.py`), here a learned upscaler: ESRGAN / Real-ESRGAN (RRDBNet;
Wang et al., ICCVW 2021), Real-ESRGAN's compact SRVGGNet (realesr-general-x4v3), SwinIR, HAT,
SPAN, ... whatever architecture spandrel (chaiNNer's loader, MIT) detects in the file.

Tiling keeps memory bounded whatever the frame size (a 4K frame at 4x does not fit a GPU in one
piece). The frame is cut into cores of at most `tile` pixels (equal along an axis: 360 rows at
256 are two cores of 180, not 256 and a sliver); each core is run inside a window that reaches
`overlap` pixels further on every side (Real-ESRGAN's `tile_pad`), and only the core of each
output is kept. A pixel's output depends only on the input within the model's receptive field,
so where that fits inside the overlap the tiled frame equals the whole-frame run up to float
rounding (tests/test_frame_sr.py); models with a wider reach (RRDBNet's 23 blocks, the windowed
attention of SwinIR) differ slightly near the seams, as in every tiled upscaler. At the frame's
edges the windows stop at the edge, so borders see the same zero padding as a whole-frame run,
and the padding a model needs (spandrel's `size_requirements`: a multiple of 4 for Real-ESRGAN
x2plus, of the window for SwinIR) is applied to the whole frame first, as a whole-frame call
would. All windows have one size, so they are batched, across frames too.

Frames are `[H, W, 3] uint8 RGB` in, `[H*s, W*s, 3] uint8 RGB` out. Nothing here knows about
video or Ray: `upscale_frames` is a plain function each engine calls on a chunk of frames (the
Ray engine on its own actors, in parallel across chunks, since frames are independent).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np
import torch

from models.errors import ModelError, NotFiniteError
from models.zoo import load_model

if TYPE_CHECKING:
    from spandrel import ImageModelDescriptor

log = logging.getLogger(__name__)

FRAME_SCALES = (2, 4)  # the output scales composite.scale allows above 1




def check_frame_model(model: "ImageModelDescriptor", *, scale: int, spec: str) -> None:
    """Raise ModelError unless `model` enlarges RGB frames by exactly `scale` (the run's `-s`)."""
    if model.scale not in FRAME_SCALES:  # -s takes 1, 2 or 4: no scale of the run fits it
        raise ModelError(f"composite.upscaler={spec} is a {model.scale}x model ({model.architecture.name}), but -s takes only "
                         f"1, {' or '.join(map(str, FRAME_SCALES))}; use a {' or '.join(f'{s}x' for s in FRAME_SCALES)} model "
                         "(or drop composite.upscaler)")
    if scale not in FRAME_SCALES:
        raise ModelError(f"composite.upscaler={spec} enlarges the frame {model.scale}x, but the run's scale is {scale}; "
                         f"pass -s {model.scale} (or drop composite.upscaler)")
    if model.scale != scale:
        raise ModelError(f"composite.upscaler={spec} is a {model.scale}x model ({model.architecture.name}) but the run's "
                         f"scale is {scale}; pass -s {model.scale} or a {scale}x model")
    if (model.input_channels, model.output_channels) != (3, 3):
        raise ModelError(f"composite.upscaler={spec} takes {model.input_channels} and gives {model.output_channels} "
                         "channels; a frame upscaler must be RGB in, RGB out")


class Tile(NamedTuple):
    """One window of the (padded) frame and the core of it whose output is kept, in input pixels."""

    y0: int  # window
    x0: int
    cy0: int  # core: rows cy0..cy1, columns cx0..cx1 of the frame
    cy1: int
    cx0: int
    cx1: int


def _spans(length: int, core: int, window: int, overlap: int) -> list[tuple[int, int, int]]:
    """Along one axis: (window start, core start, core end) covering 0..length, all windows `window` long."""
    if window >= length:
        return [(0, 0, length)]
    return [(min(max(c0 - overlap, 0), length - window), c0, min(c0 + core, length)) for c0 in range(0, length, core)]


def _window(length: int, tile: int, overlap: int, multiple: int, minimum: int) -> tuple[int, int]:
    """(core, window) along one axis: the fewest cores of at most `tile`, of equal size (no sliver of a last
    tile: 360 rows at tile 256 are two cores of 180, not 256 + 104), each window `overlap` wider on both sides."""
    core = -(-length // -(-length // tile))
    window = max(core + 2 * overlap, minimum)
    return core, min(-(-window // multiple) * multiple, length)  # the model's multiple (the frame already is one)


def plan_tiles(height: int, width: int, *, tile: int, overlap: int, multiple: int = 1, minimum: int = 0,
               square: bool = False) -> tuple[tuple[int, int], list[Tile]]:
    """The windows' (height, width) and the tiles covering a `height` x `width` frame (already padded
    to the model's size requirements). `tile`: the largest core side; 0 = the whole frame in one window."""
    if tile > 0:
        (core_y, wy), (core_x, wx) = (_window(n, tile, overlap, multiple, minimum) for n in (height, width))
    else:
        core_y, core_x, wy, wx = height, width, height, width
    if square and (wy, wx) != (height, width):  # one square window size, or the (square) frame whole
        wy = wx = max(wy, wx)
        if wy >= min(height, width):
            core_y, core_x, wy, wx = height, width, height, width
    tiles = [Tile(y0, x0, cy0, cy1, cx0, cx1)
             for y0, cy0, cy1 in _spans(height, core_y, wy, overlap) for x0, cx0, cx1 in _spans(width, core_x, wx, overlap)]
    return (wy, wx), tiles


def _pad(frame: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
    """Bottom/right padding exactly as spandrel's `pad_tensor`: reflect (up to size - 1), then replicate."""
    h, w = frame.shape[:2]
    ry, rx = min(pad_h, h - 1), min(pad_w, w - 1)
    out = np.pad(frame, ((0, ry), (0, rx), (0, 0)), mode="reflect")
    return np.pad(out, ((0, pad_h - ry), (0, pad_w - rx), (0, 0)), mode="edge")


def _dtype(model: "ImageModelDescriptor", device: torch.device) -> torch.dtype:
    """float16 on a GPU where the architecture allows it (Real-ESRGAN's own default), else float32."""
    if device.type == "cuda" and model.supports_half:
        return torch.float16
    return torch.float32


def upscale_frames(frames: Sequence[np.ndarray], model: "ImageModelDescriptor", *, tile: int = 256, overlap: int = 16,
                   batch: int = 4, spec: str | None = None) -> list[np.ndarray]:
    """Each frame `[H, W, 3] uint8 RGB` enlarged by the model: `[H*s, W*s, 3] uint8 RGB`.

    `tile`: core side in input pixels (0 = whole frames); `overlap`: context on every side of a core;
    `batch`: windows per model call (windows of all `frames` batch together). Frames must share one size.
    Output that is not finite (NaN weights) is a `NotFiniteError` naming `spec` (the model's file or
    registry name), never frames cast from NaN (black).
    """
    if not frames:
        return []
    for i, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            got = f"{frame.dtype} {list(frame.shape)}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"frames[{i}] must be [H, W, 3] uint8 RGB, got {got}")
        if frame.shape != frames[0].shape:
            raise ValueError(f"frames[{i}] is {list(frame.shape)}, frames[0] {list(frames[0].shape)}: one size per call")
    if tile < 0 or overlap < 0 or batch < 1:
        raise ValueError(f"tile and overlap must be >= 0 and batch >= 1, got tile={tile}, overlap={overlap}, batch={batch}")
    s, (h, w) = model.scale, frames[0].shape[:2]
    req = model.size_requirements
    pad_w, pad_h = req.get_padding(w, h)
    padded = [_pad(f, pad_h, pad_w) if pad_h or pad_w else f for f in frames]
    (wy, wx), tiles = plan_tiles(h + pad_h, w + pad_w, tile=tile, overlap=overlap, multiple=req.multiple_of,
                                 minimum=req.minimum, square=req.square)
    outputs = [np.empty((h * s, w * s, 3), dtype=np.uint8) for _ in frames]
    jobs = [(i, t) for i in range(len(frames)) for t in tiles]
    device, dtype = model.device, _dtype(model, model.device)
    if model.dtype != dtype:
        model.to(dtype)
    for start in range(0, len(jobs), batch):
        group = jobs[start:start + batch]
        windows = np.stack([padded[i][t.y0:t.y0 + wy, t.x0:t.x0 + wx] for i, t in group])  # [B, wy, wx, 3]
        x = torch.from_numpy(windows).to(device).permute(0, 3, 1, 2).to(dtype).div_(255)  # [B, 3, wy, wx]
        y = _run(model, x, spec)  # [B, wy*s, wx*s, 3] uint8
        for (i, t), out in zip(group, y):
            cy1, cx1 = min(t.cy1, h), min(t.cx1, w)  # the padding's output is dropped
            if cy1 > t.cy0 and cx1 > t.cx0:
                core = out[(t.cy0 - t.y0) * s:(cy1 - t.y0) * s, (t.cx0 - t.x0) * s:(cx1 - t.x0) * s]
                outputs[i][t.cy0 * s:cy1 * s, t.cx0 * s:cx1 * s] = core
    return outputs


@torch.inference_mode()
def _run(model: "ImageModelDescriptor", x: torch.Tensor, spec: str | None = None) -> np.ndarray:
    """The model on windows `[B, 3, h, w]` in [0, 1]: `[B, h*s, w*s, 3]` uint8 (rounded, as Real-ESRGAN does)."""
    y = model(x)  # [B, 3, h*s, w*s], clamped to [0, 1] by spandrel (NaN stays NaN, and casts to 0: black)
    if y.shape[-2:] != (x.shape[-2] * model.scale, x.shape[-1] * model.scale) or y.shape[1] != 3:
        raise ModelError(f"the frame model ({model.architecture.name}) returned {list(y.shape)} for {list(x.shape)}; "
                         f"expected {model.scale}x the input, 3 channels")
    if not bool(torch.isfinite(y).all()):
        named = f"composite.upscaler={spec}" if spec else f"the frame model ({model.architecture.name})"
        raise NotFiniteError(f"{named} made frames that are not finite numbers (NaN or inf) from finite inputs: its weights "
                             "are damaged or were trained into NaN. Use another checkpoint, or drop composite.upscaler "
                             "for the interpolated frame")
    return y.mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@dataclasses.dataclass
class FrameUpscaler:
    """A loaded frame model with its tiling settings: `upscaler(frames)` is `upscale_frames` on them."""

    model: "ImageModelDescriptor"
    spec: str  # what the user named (a registry name or a file), for messages
    tile: int = 256
    overlap: int = 16
    batch: int = 4

    @classmethod
    def from_settings(cls, spec: str, *, scale: int, device: torch.device | str, tile: int, overlap: int,
                      batch: int) -> "FrameUpscaler":
        """Load `spec` as a frame model (see `load_model`) and check it enlarges by `scale`."""
        model = load_model(spec, "frame", device=device)
        check_frame_model(model, scale=scale, spec=spec)
        model.eval()
        log.info("frame upscaler %s: %s %dx on %s, tiles of %d px (+%d px overlap), %d per call",
                 spec, model.architecture.name, model.scale, model.device, tile, overlap, batch)
        return cls(model, spec, tile=tile, overlap=overlap, batch=batch)

    @property
    def scale(self) -> int:
        return self.model.scale

    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        return upscale_frames(frames, self.model, tile=self.tile, overlap=self.overlap, batch=self.batch, spec=self.spec)

    def plan(self, height: int, width: int) -> tuple[tuple[int, int], list[Tile]]:
        """The windows' (height, width) and the tiles a `height` x `width` frame is cut into (benchmarks)."""
        req = self.model.size_requirements
        pad_w, pad_h = req.get_padding(width, height)
        return plan_tiles(height + pad_h, width + pad_w, tile=self.tile, overlap=self.overlap,
                          multiple=req.multiple_of, minimum=req.minimum, square=req.square)
