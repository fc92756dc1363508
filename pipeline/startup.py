"""When this process started: the moment a run's report and closing line count from.

A user waits from the moment they press Enter, through Python's and the libraries' imports and
the models' set-up, to the last frame written; `wall_seconds` counts all of it. On Linux the
kernel knows the process's start (`/proc/self/stat`, field 22, in clock ticks since boot,
against `/proc/uptime`), interpreter start-up included; elsewhere the first import of this
module stands in for it (`facezoom video` imports it first thing, so only the interpreter's
start and the command line's parsing are missed).
"""

from __future__ import annotations

import os
import time

_IMPORTED = time.time()


def process_started() -> float:
    """`time.time()` at this process's start (10 ms resolution on Linux)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, fields start at the 3rd
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        running = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return _IMPORTED
    return min(_IMPORTED, time.time() - max(0.0, running))
