"""Starting an embedded Ray, or joining a cluster (`engine.ray_address`), for the Ray engine
(`pipeline/engines/ray.py`): with Ctrl-C and SIGTERM held while Ray starts, so that a signal in
those seconds ends the run as it does later (exit 130/143, one line, no process left)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Iterator

import ray

from pipeline.errors import TERMINATED, Terminated, UserError, library_log_level, terminate_as_interrupt

log = logging.getLogger(__name__)


def connect(cfg) -> bool:
    """Start an embedded Ray or join `engine.ray_address`; True if this call started it."""
    if library_log_level() >= logging.ERROR:  # -q: only facezoom's own one-line errors. Before
        quiet_raylet_errors()  # `ray.init`: the log handler it installs then holds the filtered function
    if ray.is_initialized():
        return False
    if cfg.ray_address is None:
        # Ray starts its workers at niceness 15; here they do the work, and beside any busy process
        # they got a few per cent of a core (a 10 s job took 3 minutes next to two CPU-bound ones).
        os.environ.setdefault("RAY_worker_niceness", "0")
        # Ray 2.5x turns token authentication on for a new local cluster and warns about it on every
        # run, a line a user can do nothing with: that logger alone is quieted (auth stays on).
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    pending: list[int] = []
    try:
        with _signals_held(pending):
            ray.init(
                address=cfg.ray_address,
                include_dashboard=cfg.dashboard,
                logging_level=library_log_level(),  # ERROR under -q
                log_to_driver=True,
            )
    except Exception as err:
        if not pending:
            if isinstance(err, ConnectionError):
                raise UserError(f"cannot join the Ray cluster at {cfg.ray_address}: {err}") from None
            raise
        # a signal to the whole group stopped Ray's own processes as they started ("the current node
        # timed out during startup"): the run ends as that signal does, below
    terminate_as_interrupt()  # Ray's driver installs its own SIGTERM handler; ours cleans up as Ctrl-C does
    if pending:  # a Ctrl-C or SIGTERM while Ray started: stop what it started, then end as that signal does
        ray.shutdown()
        if pending[0] == signal.SIGTERM:
            TERMINATED["received"] = True
            raise Terminated()
        raise KeyboardInterrupt()
    return True


# The `pid` Ray's log monitor gives the lines of its own processes' logs (a worker's lines carry its
# process id): e.g. the raylet's "... is over 95% full" every 10 s on a nearly full disk.
RAY_OWN = frozenset({"raylet", "gcs_server", "autoscaler", "runtime_env"})


def quiet_raylet_errors() -> None:
    """Keep what Ray's own processes say off the terminal: under -q facezoom says what matters in
    one line, e.g. past `engine.max_restarts`. Two paths lead there: the paragraphs Ray's driver
    prints for the raylet's errors (an SR actor that died, its process killed), from
    `ray._private.worker.listen_error_messages` through the module's `print_to_stdstream`, whatever
    `log_to_driver` says; and the lines of the raylet's and GCS's logs, which reach the driver
    beside the workers' own lines, through a handler (`ray_print_logs`) that holds that function
    as it was when `ray.init` ran (called before it, the handler gets the filtered one; a handler
    already there is wrapped). The workers' own log lines come through. Private names: where a
    Ray release has moved them, this does nothing."""
    from ray._private import worker

    show = getattr(worker, "print_to_stdstream", None)
    if show is not None and not getattr(show, "quiet_raylet", False):
        worker.print_to_stdstream = _without_ray_own(show)
    dispatcher = getattr(worker, "global_worker_stdstream_dispatcher", None)
    with getattr(dispatcher, "_lock", contextlib.nullcontext()):
        handlers = getattr(dispatcher, "handlers", None)
        if isinstance(handlers, list):
            dispatcher.handlers = [(name, handle if name != "ray_print_logs" or getattr(handle, "quiet_raylet", False)
                                    else _without_ray_own(handle)) for name, handle in handlers]


def _without_ray_own(show):
    def without(data, *args, **kwargs):
        if data.get("pid") not in RAY_OWN:
            show(data, *args, **kwargs)

    without.quiet_raylet = True
    return without


@contextlib.contextmanager
def _signals_held(pending: list[int]) -> Iterator[None]:
    """Ray's start-up, with Ctrl-C and SIGTERM held until it is over (their numbers go into
    `pending`; a second one acts at once, but for a second SIGTERM). Interrupted half-way, `ray.init` leaves its processes
    (dashboard, agents) running, and on its way it installs handlers that end this process
    without cleaning up: a `sys.exit(15)`, a node teardown, and its core worker's crash handler
    (a C stack dump and abort on SIGTERM). Those are kept out while it runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    import ray._private.utils as ray_utils

    def hold(signum, frame):
        if pending == [signal.SIGTERM] and signum == signal.SIGTERM:  # `timeout` signals the process, then its group
            return
        if pending:  # asked twice: the user means it
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        pending.append(signum)

    before = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    install, ray_utils.set_sigterm_handler = ray_utils.set_sigterm_handler, lambda handler: None
    quiet = os.environ.get("RAY_DISABLE_FAILURE_SIGNAL_HANDLER")
    os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = install
        if quiet is None:
            os.environ.pop("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", None)
        else:
            os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = quiet
        for sig, handler in before.items():
            signal.signal(sig, handler)
