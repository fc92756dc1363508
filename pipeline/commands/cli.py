"""The command line: `facezoom COMMAND ...` (also `python run_pipeline.py COMMAND ...`).

Thin by design: it parses arguments and hands them to the command's module
(`pipeline/commands/<command>.py`), which calls one library function and prints. Parsing
imports no heavy library, so `--help` and bad arguments answer at once. Exit status: 0 success,
2 bad input or usage (one line on stderr, no traceback), 1 internal error, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM, handled as Ctrl-C is); no output file is left behind.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import math
import os
import re
import signal
import sys
import threading

# Threads of the libraries under the face stages, one each; a count the user set wins (an empty one,
# which OpenCV cannot read, counts as none). numpy's linear algebra here is on tiny matrices (a
# face's five landmarks, a flow's corners): OpenBLAS's threads only spin (sched_yield) beside the
# encoder and the detector, ~5% of a 360p run's CPU (perf); it reads its count when numpy loads it.
# OpenCV's work is small too (a face's flow, warp, paste): its worker threads spun awake between
# calls, 11% of a 360p run's CPU, for the same results (BENCHMARKS.md). The pipeline's own threads
# and actors are its parallelism.
for _variable in ("OPENBLAS_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
    if not os.environ.get(_variable, "").strip():
        os.environ[_variable] = "1"

from models.errors import ModelError  # noqa: E402
from pipeline.errors import TERMINATED, Terminated, UserError, quiet_libraries, terminate_as_interrupt  # noqa: E402
from pipeline.media.memory import keep_frame_memory_flat  # noqa: E402

log = logging.getLogger("facezoom")

# One module per command, each with `register(commands, add_config_args)`; in the order `--help` lists them.
COMMANDS = ("video", "sample", "zoom", "enhance", "live", "train", "weights", "presets", "doctor")


def add_config_args(parser: argparse.ArgumentParser, *, fidelity: bool = False, defaults=None) -> None:
    """--config and --set; with `fidelity`, -w/--fidelity too. `defaults`: the command's own
    defaults (`load_config`'s), for the help text."""
    parser.add_argument("--config", metavar="FILE", help="a YAML file, or a shipped preset by name (`facezoom presets`); its keys override the defaults")
    parser.add_argument(
        "--set", dest="overrides", metavar="SECTION.KEY=VALUE", action="append", default=[],
        help="override one setting, e.g. --set sr.backend=pulse (repeatable; wins over --config)",
    )
    if fidelity:
        from pipeline.config.sections import SRConfig

        default = ((defaults or {}).get("sr") or {}).get("fidelity", SRConfig.fidelity)
        parser.add_argument(
            "-w", "--fidelity", dest="overrides", metavar="W", type=_fidelity, action="append",
            help=f"0..1: how much of each face's real detail is kept (sr.fidelity; default {default:g}): "
                 "1 keeps all of it, the model adds only finer detail; 0 shows the model's face whole",
        )


def _fidelity(text: str) -> str:
    """-w W -> the override `sr.fidelity=W` (appended with the --set overrides, in the order typed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expects a number from 0 to 1, got {text}")
    return f"sr.fidelity={value}"


def _global_flags(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """-q, -v, --debug and -y, before the command or after it. A command's copy leaves an unset flag
    alone (SUPPRESS), so that `facezoom -q video ...` is not undone by the command's parser."""
    default = False if defaults else argparse.SUPPRESS
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress bar or notes: only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log what each stage does")
    parser.add_argument("--debug", action="store_true", default=default, help="show the traceback of internal errors")
    parser.add_argument("-y", "--overwrite", action="store_true", default=default,
                        help="replace outputs that already exist (as ffmpeg's -y); without it a run whose output exists is refused before any work")


class _Commands:
    """`commands.add_parser` for the command modules, with the global flags on every command."""

    def __init__(self, subparsers):
        self._subparsers = subparsers

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        parser = self._subparsers.add_parser(name, **kwargs)
        _global_flags(parser.add_argument_group("global options"), defaults=False)
        return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facezoom", description="Find, track and super-resolve faces in video.")
    _global_flags(parser, defaults=True)
    commands = _Commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    for name in COMMANDS:
        importlib.import_module(f"pipeline.commands.{name}").register(commands, add_config_args)
    return parser


def one_line(text: str) -> str:
    """`text` with its control characters escaped (a newline in a file name prints as \\n), so
    a message stays one line on the terminal whatever the paths it names hold."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class _OneLineFormatter(logging.Formatter):
    """Log records as one line each: control characters in the message escaped (tracebacks,
    which --debug and -v ask for, are added after and stay as they are)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))


def _free_what_it_left(interrupt: BaseException) -> None:
    """Free now, before the closing line, what an interrupt caught half-made, and send what their
    finalizers say to the debug log: a progress bar stopped inside its constructor fails in its
    `__del__` (tqdm: "'tqdm' object has no attribute 'pos'") when the traceback that holds it goes,
    which was after the closing line, as the run's last words."""
    previous = sys.unraisablehook
    sys.unraisablehook = lambda what: log.debug("freeing what the interrupt left: %r", what.exc_value)
    try:
        err: BaseException | None = interrupt
        seen: set[int] = set()
        while err is not None and id(err) not in seen:
            seen.add(id(err))
            err.__traceback__ = None  # the frames it stopped, and what they held
            err = err.__context__
        gc.collect()
    finally:
        sys.unraisablehook = previous


def main(argv: list[str] | None = None) -> int:
    previous = signal.getsignal(signal.SIGTERM)
    TERMINATED.update(received=False, at=-math.inf)
    terminate_as_interrupt()  # first: a signal while the commands' modules load is handled too
    args = None
    try:
        args = build_parser().parse_args(argv)
        keep_frame_memory_flat()
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OneLineFormatter("facezoom: %(levelname)s: %(message)s"))
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
        logging.captureWarnings(True)  # library warnings (torch, Ray) go through logging...
        quiet_libraries(args.quiet)  # ...and under -q only their errors reach stderr, with facezoom's own warnings
        return args.handler(args)
    except (UserError, ModelError) as err:
        print(f"facezoom: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        _free_what_it_left(err)
        kept = getattr(err, "kept", None)  # a folder run keeps the outputs it finished
        written = f"{one_line(kept)} kept, the unfinished one removed" if kept else "no output was written"
        if isinstance(err, Terminated) or TERMINATED["received"]:
            print(f"facezoom: terminated; {written}", file=sys.stderr)
            return 143
        print(f"facezoom: interrupted; {written}", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: say so in one line unless asked for the traceback
        if args is None or args.debug:
            raise
        print(f"facezoom: internal error: {type(err).__name__}: {one_line(str(err))} (rerun with --debug for details)", file=sys.stderr)
        return 1
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
