"""A long run's memory: glibc's freed memory handed back to the OS whenever it has piled up, and
the set-up's objects kept out of Python's garbage collector's way."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import sys
import threading
import time

log = logging.getLogger(__name__)

CHECK_EVERY = 0.25  # s between two looks at the resident memory
TRIM_ABOVE = 128 << 20  # bytes of growth since the last trim that set off the next one

_started = threading.Lock()
_trimmer: threading.Thread | None = None


def keep_frame_memory_flat() -> None:
    """Start a daemon thread that calls glibc's `malloc_trim(0)` whenever the process's resident
    memory has grown by TRIM_ABOVE since the last trim (looked at every CHECK_EVERY seconds).

    glibc raises its mmap threshold each time a large block is freed; after that, frame-sized
    buffers (6 MB at 1080p) come from heap arenas that fragment across threads, and resident
    memory crept up by ~0.5 MB per 1080p frame. `malloc_trim` gives the free pages inside the
    arenas back to the OS, so the heap stays as fast as glibc makes it and memory stays flat; it
    runs only when memory has grown, because every page it gives back is faulted in (and zeroed)
    again when the heap reuses it. On a 1080p clip with 3 faces, 90 and 720 frames, CPU seconds
    of the long clip and peak resident memory of both (BENCHMARKS.md, issue 25):

    - pinning the mmap threshold at 1 MiB (the first policy): every temporary over 1 MiB a fresh
      mapping, faulted in on each use: 85 CPU s, 26 of them in the kernel; 1314 -> 1345 MB;
    - trimming every 0.25 s whatever the growth: 56-58 CPU s; 1383-1415 -> 1425-1501 MB;
    - glibc left alone: 50-54 CPU s; 1502-1514 -> 1608-1636 MB;
    - this: 51 CPU s, 3 in the kernel; 1416 -> 1517 MB.

    Safe to call more than once (one thread per process); does nothing where the C library is
    not glibc or there is no /proc.
    """
    global _trimmer
    if not sys.platform.startswith("linux"):
        return
    with _started:
        if _trimmer is not None and _trimmer.is_alive():
            return
        try:
            trim = ctypes.CDLL("libc.so.6").malloc_trim
            page = os.sysconf("SC_PAGE_SIZE")
            _resident(page)
        except (OSError, AttributeError, ValueError):
            log.debug("not glibc, or no /proc: freed memory is left to the C library")
            return
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

        def run() -> None:
            base = _resident(page)
            while True:
                time.sleep(CHECK_EVERY)
                now = _resident(page)
                if now > base + TRIM_ABOVE:
                    trim(0)
                    base = _resident(page)
                else:
                    base = min(base, now)

        _trimmer = threading.Thread(target=run, name="facezoom-malloc-trim", daemon=True)
        _trimmer.start()


def _resident(page: int) -> int:
    """This process's resident memory, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page


_collector_paused = False  # by `setup_without_gc`, until `setup_done` or the block's end


@contextlib.contextmanager
def setup_without_gc():
    """A job's start-up, its imports and its models' set-up, without the cyclic garbage collector:
    torch alone makes some 200,000 long-lived objects as it imports, and the collections they set
    off walk them again and again (0.25 s of a 1.9 s start-up, measured: `python -c "import torch,
    ..."` with and without `gc.disable()`). `setup_done` turns the collector back on once the
    models are made; so does leaving the block, whatever happened in it. Does nothing where the
    collector was already off."""
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True
    try:
        yield
    finally:
        _resume_collector()


def _resume_collector() -> None:
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.enable()


def setup_done() -> None:
    """Set-up is over: the objects made so far (modules, networks, weights) live as long as the
    process, so Python's cyclic garbage collector stops walking them on every collection
    (`gc.freeze`). The collections a run's many small objects set off then walk only those; they
    had cost 6% of a 360p run's CPU (perf: `gc_collect_main` and its visits; one full collection
    walks some 200,000 objects once torch is loaded). The garbage waiting then (thousands of
    objects after the detector's set-up) is collected first, or it would never be (0.1 s). Call it
    once the models are loaded; only the first call in a process freezes (a process that runs many
    jobs, a test session, keeps the rest collectable). A collector `setup_without_gc` paused is on again."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
    _resume_collector()
