"""What several commands share: the classical backend's note, the no-model note, a batch's exit
status, the files a run reads besides its input."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def report_skipped(skipped: int, total: int, what: str = "pictures") -> int:
    """A batch's exit status: 2, said in one line, when some of its inputs were skipped; else 0."""
    if skipped:
        print(f"facezoom: error: {skipped} of {total} {what} were skipped (see the warnings above)", file=sys.stderr)
        return 2
    return 0


def say_backend_note(cfg, *, quiet: bool) -> None:
    """What the CLI says before a run on the classical backend, which invents nothing (unless -q)."""
    if quiet or cfg.sr.backend != "classical":
        return
    if cfg.sr.fidelity > 0:
        what = "faces keep their own pixels (enlarged bicubically where the output is larger)"
    else:
        seen = "own-resolution" if cfg.sr.in_size == "auto" else f"{cfg.sr.in_size}x{cfg.sr.in_size}"
        what = f"faces are replaced by a bicubic enlargement of their {seen} version (sr.fidelity=0)"
    print(f"facezoom: note: sr.backend=classical invents no detail: {what}; "
          "set sr.backend=pulse (see `facezoom weights list`) for generative super-resolution", file=sys.stderr)


def no_model_note(report: dict) -> str:
    """The closing line's addition when faces were found but the face model ran for none of them ('' otherwise)."""
    faces = report.get("faces") or []
    if not faces or report.get("faces_model_ran", 0):
        return ""
    return ("; no face model ran: every face already holds the detail this output can show (at scale 1, sharp faces keep "
            "their own pixels under sr.fidelity); to see a model invent detail pass -s 4, or -w 0 to replace faces whole "
            "(e.g. --backend pulse --set sr.generator=dcgan-digiface-64 -w 0)")


def setting_inputs(args, cfg) -> dict[str, Path]:
    """The files a run reads besides its input, which no output may replace either: the --config
    YAML, the files its models are read from (`sr.generator`, `composite.upscaler`) and every file
    of facezoom's model cache."""
    from models import weights

    found = {}
    if getattr(args, "config", None) and Path(args.config).is_file():
        found["the --config file"] = Path(args.config)
    for key in ("sr.generator", "composite.upscaler"):
        section, _, name = key.partition(".")
        for i, path in enumerate(_model_files(getattr(getattr(cfg, section, None), name, None))):
            found[f"the {key} checkpoint" if i == 0 else f"a file of the {key} checkpoint ({path.name})"] = path
    for path in sorted(weights.cache_dir().glob("weights/*")) + sorted(weights.cache_dir().glob("fits/*")):
        found.setdefault(f"a file of facezoom's model cache ({path.name})", path)
    return found


def _model_files(setting: str | None) -> list[Path]:
    """The files a model setting (a registry name, a checkpoint file or a PULSE cache folder) is read
    from, there or to come, with the gaussian fits facezoom keeps beside them. Nothing is downloaded."""
    from models import weights
    from models.errors import ModelError

    if not setting:
        return []
    if setting in weights.REGISTRY:
        try:
            files = [weights.path_for(setting)] + [p for p, _, _ in weights.companion_paths(setting)]
        except ModelError:  # a packaged entry whose package is missing: nothing of it to replace
            return []
    else:
        path = Path(setting).expanduser()
        files = [path]
        if path.is_dir():  # a PULSE folder: its files, and the gaussian_fit.pt its parent may hold
            try:
                files = sorted(p for p in path.iterdir() if p.is_file()) + [path.parent / "gaussian_fit.pt"]
            except OSError:  # unreadable: the model's loading says so
                files = []
    return files + [weights.fit_cache_path(p) for p in files]
