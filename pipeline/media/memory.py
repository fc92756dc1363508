"""A long run's memory: glibc's freed memory handed back to the OS a few times a second, and the
set-up's objects kept out of Python's garbage collector's way."""

from __future__ import annotations

import ctypes
import gc
import logging
import sys
import threading
import time

log = logging.getLogger(__name__)

TRIM_EVERY = 0.25  # s between two `malloc_trim` calls

_started = threading.Lock()
_trimmer: threading.Thread | None = None


def keep_frame_memory_flat() -> None:
    """Start a daemon thread that calls glibc's `malloc_trim(0)` every TRIM_EVERY seconds.

    glibc raises its mmap threshold each time a large block is freed; after that, frame-sized
    buffers (6 MB at 1080p) come from heap arenas that fragment across threads, and resident
    memory crept up by ~0.5 MB per 1080p frame. `malloc_trim` gives the free pages inside the
    arenas back to the OS, so the heap stays as fast as glibc makes it and memory stays flat.
    Measured on a 1080p clip with 3 faces, 90 and 720 frames (BENCHMARKS.md, issue 25):

    - pinning the mmap threshold at 1 MiB instead (the earlier policy): flat (1314 -> 1345 MB),
      but every temporary over 1 MiB was a fresh mapping, faulted in and zeroed on each use:
      85 CPU s on the long clip, 26 of them in the kernel;
    - glibc left alone: 54 CPU s, but 1514 -> 1636 MB and still growing;
    - this: 58 CPU s, 1415 -> 1425 MB.

    Safe to call more than once (one thread per process); does nothing where the C library is
    not glibc.
    """
    global _trimmer
    if not sys.platform.startswith("linux"):
        return
    with _started:
        if _trimmer is not None and _trimmer.is_alive():
            return
        try:
            trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            log.debug("not glibc: freed memory is left to the C library")
            return
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

        def run() -> None:
            while True:
                time.sleep(TRIM_EVERY)
                trim(0)

        _trimmer = threading.Thread(target=run, name="facezoom-malloc-trim", daemon=True)
        _trimmer.start()


def setup_done() -> None:
    """Set-up is over: the objects made so far (modules, networks, weights) live as long as the
    process, so Python's cyclic garbage collector stops walking them on every collection
    (`gc.freeze`). The collections a run's many small objects set off then walk only those; they
    had cost 6% of a 360p run's CPU (perf: `gc_collect_main` and its visits; one full collection
    walks some 200,000 objects once torch is loaded). Call it once the models are loaded; only the
    first call in a process freezes (a process that runs many jobs, a test session, keeps the rest
    collectable)."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
