"""What several commands share: the classical backend's note, a batch's exit status."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)


def report_skipped(skipped: int, total: int) -> int:
    """A batch's exit status: 2, said in one line, when some pictures were skipped; else 0."""
    if skipped:
        print(f"facezoom: error: {skipped} of {total} pictures were skipped (see the warnings above)", file=sys.stderr)
        return 2
    return 0


def say_backend_note(cfg, *, quiet: bool) -> None:
    """What the CLI says before a run on the classical backend, which invents nothing (unless -q)."""
    if not quiet and cfg.sr.backend == "classical":
        print("facezoom: note: sr.backend=classical enlarges faces with bicubic interpolation and invents no detail; "
              "set sr.backend=pulse (see `facezoom weights list`) for generative super-resolution", file=sys.stderr)
