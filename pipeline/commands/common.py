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
    YAML and the sr.generator checkpoint, where they name files (not a preset or a registry name)."""
    found = {}
    if getattr(args, "config", None) and Path(args.config).is_file():
        found["the --config file"] = Path(args.config)
    generator = getattr(getattr(cfg, "sr", None), "generator", None)
    if generator and Path(generator).is_file():
        found["the sr.generator checkpoint"] = Path(generator)
    return found
