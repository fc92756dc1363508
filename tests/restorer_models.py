"""Face restorers built here with random weights, in their published key layouts, and a clip with known truth.

For tests/test_restore.py and benchmarks/restorers.py. Each architecture is spandrel's own class;
`published=True` gives the published settings (the real size and cost), else the smallest
settings spandrel still recognises (GFPGAN's are fixed, so it is always full size; CodeFormer's
encoder and decoder are fixed, only its transformer shrinks). The clip is scikit-image's
astronaut (public domain) aligned to the FFHQ template with a slow drift, the truth every output
frame is compared with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

ARCHS = ("GFPGAN", "RestoreFormer", "CodeFormer")
# The key under which each project's checkpoint holds its state dict (GFPGANer and CodeFormer's
# inference read 'params_ema'; GFPGANer reads RestoreFormer.pth the same way, falling back to 'params').
PUBLISHED_KEY = {"GFPGAN": "params_ema", "RestoreFormer": "params_ema", "CodeFormer": "params_ema"}


def build(arch: str, *, published: bool = False, seed: int = 0) -> torch.nn.Module:
    """spandrel's `arch` class with random weights (seeded), in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if arch == "GFPGAN":
            from spandrel.architectures.GFPGAN import GFPGAN

            model = GFPGAN()  # spandrel detects only the published settings (512, channel multiplier 2)
        elif arch == "RestoreFormer":
            from spandrel.architectures.RestoreFormer import RestoreFormer

            model = RestoreFormer() if published else RestoreFormer(
                n_embed=64, embed_dim=32, ch=32, ch_mult=(1, 1, 1, 1, 1, 1), num_res_blocks=1, z_channels=32)
        elif arch == "CodeFormer":
            from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

            model = CodeFormer() if published else CodeFormer(
                dim_embd=64, n_head=8, n_layers=1, codebook_size=64, latent_size=256, connect_list=["32"])
        else:
            raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
        if arch != "GFPGAN":  # their codebooks start at zero: random ones make the lookups mean something
            for name, p in model.named_parameters():
                if "embedding" in name or "position_emb" in name:
                    p.data.normal_(0, 0.5)
    return model.eval()


def save_published(model: torch.nn.Module, arch: str, path: str | Path) -> Path:
    """`model`'s weights in `arch`'s published layout ({key: state_dict})."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({PUBLISHED_KEY[arch]: model.state_dict()}, path)
    return path


def astronaut_track(frames: int, size: int, *, drift: float = 0.4, seed: int = 0) -> list[np.ndarray]:
    """`frames` aligned crops `[size, size, 3] uint8` of the astronaut whose face drifts slowly in the
    crop (`drift` crop pixels per frame, a little rotation and scale), as a tracker's residual
    motion leaves it: the truth of every frame."""
    import cv2
    from skimage import data

    from face_scenes import REF_LANDMARKS
    from pipeline.stages.align import similarity_transform

    image = data.astronaut()
    rng = np.random.default_rng(seed)
    crops = []
    for t in range(frames):
        m = similarity_transform(REF_LANDMARKS, size)
        angle, scale = 0.15 * t, 1 + 0.002 * t
        m = np.vstack([cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale), [0, 0, 1]]) @ np.vstack([m, [0, 0, 1]])
        m[:2, 2] += np.array([drift * t, 0.5 * drift * t]) + rng.normal(0, 0.05 * drift, 2)
        crops.append(cv2.warpAffine(image, m[:2], (size, size), flags=cv2.INTER_AREA if size < 100 else cv2.INTER_CUBIC,
                                    borderMode=cv2.BORDER_REFLECT))
    return crops


def face_mask(size: int) -> np.ndarray:
    """The face region of an FFHQ-aligned crop: an ellipse around the template's eyes, nose and mouth, `[size, size]` bool."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    return ((xx - 0.5) / 0.3) ** 2 + ((yy - 0.56) / 0.36) ** 2 <= 1


def change(frames: list[np.ndarray]) -> float:
    """Mean absolute frame-to-frame change on the face region, 0..255 scale."""
    mask = face_mask(frames[0].shape[0])
    return float(np.mean([np.abs(a.astype(np.float32) - b.astype(np.float32))[mask].mean() for a, b in zip(frames, frames[1:])]))


def flicker(frames: list[np.ndarray], truth: list[np.ndarray]) -> float:
    """The frame-to-frame change of `frames` minus the truth's, on the face region, 0..255 scale."""
    return change(frames) - change(truth)
