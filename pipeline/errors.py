"""Errors the user can act on.

Every error a user can fix (a bad path, a bad setting, an unreadable file) is a
`UserError`: the CLI prints its message as one line and exits with status 2.
Anything else is a bug and exits with status 1.
"""

import math
import time


class UserError(Exception):
    """A problem with the user's input, settings or environment; the message says what to do."""


class ConfigError(UserError):
    """A configuration key is unknown or its value is out of range."""


class InputError(UserError):
    """An input file or stream cannot be used."""


class RunAborted(UserError):
    """A user-facing error that every input of a batch would meet (the model makes NaN faces,
    every super-resolution actor died): a folder run stops at once instead of skipping input
    after input with the same message."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, `docker stop`, systemd): handled as Ctrl-C is, so every output is
    cleaned up; the CLI exits 143."""


TERMINATED = {"received": False, "at": -math.inf}  # set by the handler: libraries (Ray) may re-raise a plain KeyboardInterrupt
SAME_SIGNAL = 0.1  # s: a SIGTERM this soon after the last is the same one sent twice (to the process and its group)


def terminate_as_interrupt() -> None:
    """From now on SIGTERM raises `Terminated` in the main thread (call it again after a library,
    such as Ray, installs its own handler)."""
    import signal
    import threading

    def handler(signum, frame):
        now = time.monotonic()
        if now - TERMINATED["at"] < SAME_SIGNAL:  # `timeout` signals the process, then its group: one signal,
            return  # and a second `Terminated` would cut short the clean-up the first one started
        TERMINATED["received"], TERMINATED["at"] = True, now
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


LIBRARY_LOGGERS = ("py.warnings", "ray", "torch", "urllib3", "filelock")
_QUIET = {"on": False}


def quiet_libraries(quiet: bool) -> None:
    """Under -q only errors of libraries reach stderr (their warnings are not about the user's data)."""
    import logging

    _QUIET["on"] = quiet
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.NOTSET)


def library_log_level() -> int:
    """The level to hand a library that configures its own logging (Ray does, on import and init)."""
    import logging

    return logging.ERROR if _QUIET["on"] else logging.WARNING


class Worker:
    """A daemon thread running `target(*args)` whose end can be waited for through Ctrl-C and
    SIGTERM: `wait()` returns only once the target has returned, and then re-raises an interrupt
    that came meanwhile. Not `Thread.join`: on Python 3.11 a join that a signal handler's exception
    interrupts marks the thread ended while it still runs (`is_alive()` False, a later join returns
    at once), and the local engine closed the writer under its encoder thread: a segfault."""

    def __init__(self, target, *, name: str, args: tuple = ()):
        import threading

        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(target, args), name=name, daemon=True)
        self._thread.start()

    def _run(self, target, args) -> None:
        try:
            target(*args)
        finally:
            self.ended.set()

    def wait(self) -> None:
        interrupted = None
        while True:
            try:
                self.ended.wait()
                break
            except KeyboardInterrupt as err:  # Terminated too: keep waiting, say it after
                interrupted = interrupted or err
        if interrupted is not None:
            raise interrupted
