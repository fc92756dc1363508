"""`sr.backend=restore`: the face restorers people already own (GFPGAN, RestoreFormer, CodeFormer), batched,
with a temporal stabiliser along tracks.

The models (GFPGAN: Wang et al., CVPR 2021; RestoreFormer: Wang et al., CVPR 2022; CodeFormer:
Zhou et al., NeurIPS 2022) are loaded by spandrel (`models/zoo.py`, `kind="face"`). Each was
trained on FFHQ faces aligned to the five-point template at 512x512 (the "ffhq" framing of
pipeline/stages/align.py), degraded (blur, downsampling, noise, JPEG) and enlarged back to 512:
the model takes a whole-size degraded face and returns a whole-size restored one. So the
backend's low-res input is what the aligned crop really holds — the crop shrunk to the side the
face was seen at (`sr.in_size`; `auto`: each face's own resolution) with antialiased bicubic
(`downscale_to`) — and it is enlarged bicubically to the model's side before the model, as those
models' training inputs were. `consistency` then says how far the restored face strays from
the input at the input's resolution (restorers do not promise to agree with it, so `success`
is informative, not a gate). Each architecture is called with its own conventions ([-1, 1] in
and out; GFPGAN with its stored noise maps, not fresh noise per call, so a face does not change
between two identical frames; CodeFormer with its fidelity weight `w`, `sr.codeformer_w`).

Feed-forward restorers flicker: each frame's face is invented anew. With `temporal_blend` s > 0
the backend is stateful: a track keeps its previous restored face and its previous input; the
optical flow (DIS) between the previous and the current input, on small grey copies, carries the
previous face onto the current one, which is blended in with weight s, less where the flow does
not explain the change in the input (a mouth opening, an occluder), and not at all where it
explains too little of it (a cut, a lost alignment). benchmarks/restorers.py measures flicker
with and without it.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.backends.base import SRBackend, SRResult, TrackState, consistency
from models.errors import ModelError

log = logging.getLogger(__name__)

FACE_SIZES = {"GFPGAN": 512, "RestoreFormer": 512, "CodeFormer": 512}  # the side each was trained on (FFHQ 512)
DEFAULT_SIZE = 512  # another face architecture spandrel knows: FFHQ 512 is the convention

# Temporal stabiliser (facezoom's, not the models').
FLOW_SIZE = 128  # side of the grey input copies the flow runs on: eyes, nose, mouth; cheap on any face
RESIDUAL_TOLERANCE = 0.08  # [0, 1] scale: an input change the flow leaves unexplained by this much gives the previous face no weight
CUT_RESIDUAL = 0.06  # mean unexplained change above which the track is taken to have jumped: no blend
MAX_FLOW = 0.1  # of the side: a median flow beyond this is a jump, not the residual motion of an aligned face


def call_model(model, x: torch.Tensor, *, codeformer_w: float = 0.5) -> torch.Tensor:
    """One face model (a spandrel `ModelDescriptor`) on `x [B, 3, S, S]` in [-1, 1] -> `[B, 3, S, S]` in [-1, 1],
    with each architecture's own conventions (its published inference code's)."""
    arch = model.architecture.id
    if arch == "GFPGAN":  # GFPGANer: normalise to [-1, 1], out in [-1, 1]; the stored noise maps, not fresh noise
        return model.model(x, return_rgb=False, randomize_noise=False)[0]
    if arch == "CodeFormer":  # CodeFormer's inference: [-1, 1] in and out, fidelity weight w
        return model.model(x, weight=codeformer_w)[0]
    if arch == "RestoreFormer":  # as GFPGANer runs it: [-1, 1] in and out
        return model.model(x)[0]
    return model((x + 1) / 2) * 2 - 1  # any other face model: spandrel's [0, 1] call


def _grey_small(images: torch.Tensor) -> np.ndarray:
    """`[B, 3, S, S]` in [-1, 1] -> `[B, FLOW_SIZE, FLOW_SIZE] uint8` grey (area shrink)."""
    small = F.interpolate(images.float().cpu(), size=(FLOW_SIZE, FLOW_SIZE), mode="area")
    grey = (small * torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(1)
    return ((grey + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`out(p) = image(p + flow(p))`, bilinear, edges replicated; image `[H, W, C]` or `[H, W]`, flow `[H, W, 2]` at its size."""
    h, w = flow.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), -1)
    return cv2.remap(image, grid + flow, None, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def stabilise(current: torch.Tensor, inputs: np.ndarray, previous: torch.Tensor, previous_inputs: np.ndarray,
              strength: float) -> tuple[torch.Tensor, np.ndarray]:
    """Blend each restored face with its track's previous one, carried along the inputs' optical flow.

    current, previous: `[B, 3, S, S]` in [-1, 1] (this frame's and the previous frame's restored faces);
    inputs, previous_inputs: `[B, FLOW_SIZE, FLOW_SIZE] uint8` grey copies of the model's inputs.
    Returns the blended faces and the mean weight the previous face got, per face (`[B]`).
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    size = current.shape[-1]
    out = current.clone()
    used = np.zeros(len(current))
    for i in range(len(current)):
        flow = dis.calc(inputs[i], previous_inputs[i], None)  # current pixel p sits at p + flow(p) in the previous
        explained = _warp(previous_inputs[i], flow).astype(np.float32)
        residual = cv2.GaussianBlur(np.abs(inputs[i].astype(np.float32) - explained) / 255.0, (7, 7), 0)
        moved = float(np.median(np.linalg.norm(flow, axis=-1)))
        if residual.mean() > CUT_RESIDUAL or moved > MAX_FLOW * FLOW_SIZE:
            continue  # a cut or a lost alignment: the previous face is another picture
        weight = strength * np.clip(1.0 - residual / RESIDUAL_TOLERANCE, 0.0, 1.0)  # [F, F]
        big_flow = cv2.resize(flow, (size, size), interpolation=cv2.INTER_LINEAR) * (size / FLOW_SIZE)
        carried = _warp(previous[i].permute(1, 2, 0).float().cpu().numpy(), big_flow)  # [S, S, 3]
        w = torch.from_numpy(cv2.resize(weight, (size, size), interpolation=cv2.INTER_LINEAR))[None].to(current.device)
        out[i] = (1 - w) * current[i] + w * torch.from_numpy(carried).permute(2, 0, 1).to(current.device)
        used[i] = float(weight.mean())
    return out, used


class RestoreBackend(SRBackend):
    """`sr.backend=restore`: a face restorer loaded by spandrel, batched; optional temporal stabiliser."""

    name = "restore"
    any_input_size = True  # any low-res side: it is enlarged to the model's side before the model
    keyframes = False  # the state is the previous frame itself (blending), not a warm start
    framing = "ffhq"

    def __init__(self, model, *, in_size: int = 16, size: int | None = None, codeformer_w: float = 0.5,
                 temporal_blend: float = 0.0, eps: float = 2e-3, device: torch.device | str = "cpu"):
        if not 0 <= temporal_blend < 1:
            raise ModelError(f"sr.temporal_blend must be in [0, 1), got {temporal_blend}")
        if not 0 <= codeformer_w <= 1:
            raise ModelError(f"sr.codeformer_w must be in [0, 1], got {codeformer_w}")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.arch = model.architecture.id
        self.out_size = size or FACE_SIZES.get(self.arch, DEFAULT_SIZE)  # out_size = the model's side
        if not 4 <= in_size < self.out_size:
            raise ModelError(f"sr.in_size={in_size} must be below the {self.arch} model's {self.out_size}px faces")
        self.in_size = in_size
        self.codeformer_w, self.blend, self.eps = float(codeformer_w), float(temporal_blend), eps
        self.stateful = self.blend > 0
        self.deterministic = self.device.type == "cpu"

    @classmethod
    def from_settings(cls, *, generator: str | None, device: torch.device, in_size: int | str, out_size: int | None,
                      eps: float, temporal_blend: float, codeformer_w: float) -> "RestoreBackend":
        """Build from `sr.*`: `generator` names a face model (a registry entry or a file)."""
        from models import zoo

        zoo._registry()  # without the optional packages: one line naming them
        if generator is None:
            raise ModelError("sr.backend=restore needs a face model: sr.generator=<registry name "
                             f"({', '.join(zoo.model_names('face'))}) or a .pth/.safetensors file>")
        model = zoo.load_model(generator, "face", device)
        size = FACE_SIZES.get(model.architecture.id, DEFAULT_SIZE)
        if out_size not in (None, size):
            raise ModelError(f"sr.out_size={out_size}, but {model.architecture.name} restores {size}x{size} faces; leave sr.out_size unset")
        if in_size != "auto":
            log.warning("sr.backend=restore with sr.in_size=%s: every face is shrunk to %sx%s before the restorer sees it; "
                        "sr.in_size=auto feeds each face at its own resolution", in_size, in_size, in_size)
        if model.architecture.id != "CodeFormer" and codeformer_w != 0.5:
            log.info("sr.codeformer_w=%s is ignored by %s", codeformer_w, model.architecture.name)
        backend = cls(model, in_size=16 if in_size == "auto" else int(in_size), size=size, codeformer_w=codeformer_w,
                      temporal_blend=temporal_blend, eps=eps, device=device)
        backend.weights = generator
        return backend

    def downscale_to(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """Antialiased bicubic: what a face `size` pixels across holds. `[B, 3, H, W]` -> `[B, 3, size, size]`."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"restore: downscale expects [B, 3, H, W], got {list(images.shape)}")
        return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True)

    def degrade(self, lr: torch.Tensor) -> torch.Tensor:
        """The model's input: the low-res faces enlarged bicubically to its side, `[B, 3, S, S]` in [-1, 1]."""
        size = (self.out_size, self.out_size)
        up = F.interpolate(lr.to(self.device), size=size, mode="bicubic", align_corners=False).clamp(-1, 1)
        return up.contiguous(memory_format=torch.contiguous_format)  # GFPGAN views its features: no channels-last strides

    def super_resolve(self, lr: torch.Tensor, states: Sequence[TrackState | None], *, seeds: Sequence[int], gaps=None) -> SRResult:
        """One model call for the batch; see `SRBackend.super_resolve`. Seeds are unused (deterministic)."""
        self.check_lr(lr, states, seeds)
        with torch.no_grad():
            degraded = self.degrade(lr)  # [B, 3, S, S]
            images = call_model(self.model, degraded, codeformer_w=self.codeformer_w).float().clamp(-1, 1)
            new_states: list[TrackState | None] = [None] * lr.shape[0]
            if self.stateful:
                inputs = _grey_small(degraded)
                images = self._stabilise(images, inputs, states)
                quantized = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()
                new_states = [{"previous": q, "input": torch.from_numpy(g)} for q, g in zip(quantized, inputs)]
            err = consistency(self, images, lr.to(self.device))
        return SRResult(images=images, states=new_states, consistency=err.cpu(), success=(err <= self.eps).cpu(),
                        steps=torch.zeros(lr.shape[0], dtype=torch.int64))

    def _stabilise(self, images: torch.Tensor, inputs: np.ndarray, states: Sequence[TrackState | None]) -> torch.Tensor:
        rows = [i for i, s in enumerate(states) if s is not None]
        if not rows:
            return images
        shapes = {"previous": ((3, self.out_size, self.out_size), torch.uint8), "input": ((FLOW_SIZE, FLOW_SIZE), torch.uint8)}
        for i in rows:
            for key, (shape, dtype) in shapes.items():
                got = states[i].get(key) if isinstance(states[i], Mapping) else None
                if got is None or tuple(got.shape) != shape or got.dtype != dtype:
                    raise ValueError(f"restore: track state must hold {key!r} {list(shape)} uint8, got "
                                     f"{'nothing' if got is None else f'{list(got.shape)} {got.dtype}'}; pass None to start the track afresh")
        previous = torch.stack([states[i]["previous"] for i in rows]).to(self.device).float() / 127.5 - 1
        previous_inputs = np.stack([states[i]["input"].numpy() for i in rows])
        blended, _ = stabilise(images[rows], inputs[rows], previous, previous_inputs, self.blend)
        out = images.clone()
        out[rows] = blended
        return out
