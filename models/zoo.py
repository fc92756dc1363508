"""The models other projects publish, loaded through spandrel: face restorers and frame upscalers.

People who restore faces in video already own GFPGAN, RestoreFormer or CodeFormer files (face
models, `kind="face"`) and Real-ESRGAN, SwinIR, HAT, SPAN, ... files (whole-frame upscalers,
`kind="frame"`). spandrel (chaiNNer's model loader, MIT) recognises the architecture and its
settings from the keys and shapes of a state dict and builds the network; CodeFormer (S-Lab
licence) lives in `spandrel_extra_arches`. Both are the optional extra `facezoom[restore]`:
without spandrel, asking for such a model is one `ModelError` naming the pip command; without the
extra architectures, a CodeFormer file is one naming it.

`load_model(spec, kind)` takes a registry entry (`models/registry.py`, layout "spandrel-face" or
"spandrel-frame": fetched and verified by `models.weights`) or a local `.pth`/`.ckpt`/`.pt`/
`.safetensors` file, and returns spandrel's `ModelDescriptor`, in eval mode without gradients.
Pickled checkpoints are read by `models.weights.load_checkpoint` (`torch.load(weights_only=True)`:
no code of the file's choosing runs), safetensors files by safetensors; spandrel only detects the
architecture and loads the weights, strictly (every key and shape). An architecture spandrel does
not know, or a model of the other kind (a frame upscaler given as a face model), is a one-line
`ModelError`. The registry here is spandrel's main one plus the extra architectures, built once,
without changing spandrel's global registry.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import torch

from models.errors import ModelError

log = logging.getLogger(__name__)

INSTALL = 'pip install "facezoom[restore]"  (spandrel>=0.4 and spandrel_extra_arches>=0.2)'
KINDS = {"face": ("FaceSR",), "frame": ("SR",)}  # our kind -> spandrel's `purpose` values it accepts
LAYOUTS = {"spandrel-face": "face", "spandrel-frame": "frame"}  # registry layout -> kind
SUFFIXES = (".pth", ".ckpt", ".pt", ".safetensors")
_REGISTRY = None  # spandrel's main registry plus spandrel_extra_arches', built on first use


def _registry():
    """spandrel's architectures plus the extra ones (CodeFormer), in a registry of our own."""
    global _REGISTRY
    if _REGISTRY is None:
        try:
            import spandrel
        except ImportError:
            raise ModelError(f"face restorers and frame upscalers need the optional packages: {INSTALL}") from None
        registry = spandrel.ArchRegistry()
        registry.add(*spandrel.MAIN_REGISTRY)
        try:
            with warnings.catch_warnings():  # CodeFormer's module uses torch.jit.script, deprecated in torch 2.10+
                warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
                import spandrel_extra_arches
            registry.add(*spandrel_extra_arches.EXTRA_REGISTRY, ignore_duplicates=True)
        except ImportError:
            log.info("spandrel_extra_arches is not installed: CodeFormer is not available (%s)", INSTALL)
        _REGISTRY = registry
    return _REGISTRY


def model_names(kind: str) -> list[str]:
    """Registry entries of `kind` ("face" or "frame")."""
    from models.weights import REGISTRY

    return [name for name, e in REGISTRY.items() if LAYOUTS.get(e.layout) == kind]


def _resolve(spec: str, kind: str) -> Path:
    """The file `spec` names: a registry entry's verified file (downloaded if missing), or a local file."""
    from models import weights

    if spec in weights.REGISTRY:
        entry = weights.REGISTRY[spec]
        if LAYOUTS.get(entry.layout) != kind:
            what = f"a {LAYOUTS[entry.layout]} model" if entry.layout in LAYOUTS else f"a {entry.layout} checkpoint"
            raise ModelError(f"{spec} is {what}, not a {kind} model; {kind} models in the registry: "
                             f"{', '.join(model_names(kind)) or 'none'}, or pass a model file")
        return weights.fetch(spec)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelError(f"{spec!r} is neither a {kind}-model registry name ({', '.join(model_names(kind)) or 'none'}) "
                         "nor an existing model file (.pth, .ckpt, .pt, .safetensors)")
    if path.suffix.lower() not in SUFFIXES:
        raise ModelError(f"{path}: a model file must end in {', '.join(SUFFIXES)}; got {path.suffix or 'no suffix'}")
    return path


def read_state(path: Path) -> dict:
    """The tensors in a model file, safely: safetensors, or a pickle read with weights_only."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise ModelError(f"could not read {path} as safetensors ({err}); it may be damaged: fetch or copy it again") from None
    from models.weights import load_checkpoint

    return load_checkpoint(path)


def _one_line(err: Exception) -> str:
    """torch's "Error(s) in loading state_dict" on one line: each missing, unexpected or misshapen key kind
    with its first few names."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    parts = [lines[0]]
    for line in lines[1:4]:
        head, sep, keys = line.partition(": ")
        names = re.findall(r'"[^"]*"', keys) if sep else []
        parts.append(f"{head}: {', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''}" if names else line)
    text = " ".join(parts)
    return text if len(text) <= 300 else text[:297] + "..."


def load_model(spec: str, kind: str, device: str | torch.device = "cpu"):
    """The model `spec` names (a registry entry or a model file) as spandrel's `ModelDescriptor`,
    on `device`, in eval mode without gradients. `kind`: "face" (a face restorer, spandrel's
    purpose FaceSR) or "frame" (a whole-frame upscaler, purpose SR); any other model, or an
    architecture spandrel does not know, is a `ModelError`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    registry = _registry()
    import spandrel

    path = _resolve(spec, kind)
    state = spandrel.canonicalize_state_dict(read_state(path))
    if bad := next(((k, v) for k, v in state.items() if not isinstance(v, torch.Tensor)), None):
        raise ModelError(f"{path}: {bad[0]!r} holds a value of type {type(bad[1]).__name__}, not a tensor; a model file holds a state dict of tensors")
    try:
        model = spandrel.ModelLoader(torch.device("cpu"), registry=registry).load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        extra = "" if "CodeFormer" in registry else f"; CodeFormer needs spandrel_extra_arches: {INSTALL}"
        raise ModelError(f"{path}: spandrel {spandrel.__version__} does not recognise this model's architecture "
                         f"(for a {kind} model use e.g. {', '.join(model_names(kind)[:3]) or 'a spandrel model'}{extra})") from None
    except (RuntimeError, KeyError, ValueError, IndexError, TypeError) as err:  # keys or shapes that do not fit
        raise ModelError(f"{path}: its weights do not fit the architecture spandrel detected ({_one_line(err)}); "
                         "the file may be damaged or of an unsupported variant") from None
    if model.purpose not in KINDS[kind]:
        other = next((k for k, purposes in KINDS.items() if model.purpose in purposes), None)
        what = f"a {other} model" if other else f"a {model.purpose} model"
        raise ModelError(f"{path} is {model.architecture.name} ({what}, scale {model.scale}), not a {kind} model; "
                         f"{'sr.backend=restore needs a face restorer such as GFPGAN, RestoreFormer or CodeFormer' if kind == 'face' else 'a frame upscaler such as Real-ESRGAN is needed here'}")
    model.model.requires_grad_(False)
    model.eval()
    return model.to(torch.device(device))
