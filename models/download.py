"""One download of a checkpoint, for `models.weights.fetch`: the stream, what a body must be to be kept, what a killed one left.

`download` streams a URL into a `<file>.XXXXXXXX.part` file beside the target that `open_part`
created and holds locked while it is written (an advisory `flock` on POSIX; on Windows an open
file cannot be deleted, which serves the same end). `clear_stale_parts` deletes the `.part`
files of one target that no live download holds: what a download killed with `kill -9` or a
power cut left behind. For entries with no published hash, what arrived must be a checkpoint of
the format its name allows (PyTorch's zip or a pickle; safetensors): `body_problem` refuses an
HTML page a host sent instead (its Content-Type, or its first bytes: `head_problem`, which
`facezoom weights verify` uses too), `load_problem` a body cut short where no length was sent
(the file is loaded as every run loads it, or a safetensors header checked against the size).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import http.client
import json
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no flock, but a file another process holds open cannot be deleted there
    fcntl = None

CHUNK = 1 << 20
# The OS already said no: another attempt seconds later will not do better.
_FINAL_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}


class Retryable(Exception):
    """A failure another attempt may fix (connection, timeout, 5xx, truncated body)."""


class Fatal(Exception):
    """A failure retrying will not fix (4xx, a host that does not resolve, no route, an HTML page)."""


def _connection_error(err: BaseException) -> Exception:
    """urlopen's failure to connect as Fatal (the name does not resolve, no network) or Retryable."""
    reason = getattr(err, "reason", err)
    if isinstance(reason, socket.gaierror):
        return Fatal(f"the host does not resolve ({reason.strerror or reason}): no network, or the name is wrong")
    if isinstance(reason, OSError) and reason.errno in _FINAL_ERRNOS:
        return Fatal(f"no route to the host ({reason.strerror})")
    return Retryable(str(reason))


def open_part(target: Path) -> tuple[Path, BinaryIO]:
    """A new empty `<target>.XXXXXXXX.part` beside `target`, open for writing and locked until closed."""
    while True:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".part")
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink == 0:  # another fetch's clear_stale_parts took it before the lock: make another
                os.close(fd)
                continue
        return Path(name), os.fdopen(fd, "wb")


def clear_stale_parts(target: Path) -> list[Path]:
    """Delete `target`'s `.part` files that no live download holds (left by a killed one); return them."""
    removed = []
    for part in sorted(target.parent.glob(glob.escape(target.name) + ".*.part")):
        if fcntl is None:
            try:
                part.unlink()  # refused while another download has it open
            except OSError:
                continue
            removed.append(part)
            continue
        try:
            fd = os.open(part, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # refused while a live download holds it
            part.unlink(missing_ok=True)  # under the lock: a download that locks it after sees it unlinked
        except OSError:  # held, or a folder this user may not change
            continue
        finally:
            os.close(fd)
        removed.append(part)
    return removed


def download(url: str, out: BinaryIO, *, timeout: float, desc: str, progress: bool) -> tuple[str, int, str]:
    """Stream `url` into `out`; return its SHA-256, size and Content-Type. Raises Retryable or Fatal."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "facezoom"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code >= 500 or err.code == 429:
            raise Retryable(f"HTTP {err.code} {err.reason}") from err
        raise Fatal(f"HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise _connection_error(err) from err
    digest, size = hashlib.sha256(), 0
    with response:
        content_type = response.headers.get_content_type() if response.headers.get("Content-Type") else ""
        expected = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr, disable=not progress) as bar:
            try:  # read1: what has arrived, so that the count below is true when the connection stalls or drops
                while block := response.read1(CHUNK):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as err:
                raise Retryable(f"connection lost after {size} bytes ({err})") from err
    out.flush()
    if expected is not None and size != expected:
        raise Retryable(f"got {size} of {expected} bytes")
    return digest.hexdigest(), size, content_type


def _kinds(path: Path) -> tuple[str, ...]:
    """The checkpoint formats a file of this name may be in."""
    return ("safetensors",) if path.suffix.lower() == ".safetensors" else ("PyTorch zip", "pickle")


def head_problem(path: Path, *, named: Path | None = None) -> str | None:
    """Why the first bytes of `path` are not a checkpoint in a format its name (`named`, else its own) allows; None if they are."""
    with open(path, "rb") as f:
        head = f.read(16)
    allowed = _kinds(named or path)
    signs = (("PyTorch zip", head[:4] == b"PK\x03\x04"), ("pickle", head[:1] == b"\x80"),
             ("safetensors", len(head) >= 9 and head[8:9] == b"{"))  # 8 bytes of header length, then its JSON
    found = [kind for kind, fits in signs if fits]
    if any(kind in allowed for kind in found):
        return None
    if found:
        return f"a {found[0]} file, but its name ends in {(named or path).suffix} ({' or '.join(allowed)} expected)"
    what = " (an HTML page: a login, quota or error page)" if head.lstrip()[:1] == b"<" else ""
    return f"not a checkpoint ({' or '.join(allowed)}): it starts with {head!r}{what}"


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file's header does not hold together with its size (cut short); None if it does."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > size - 8:
            return f"its header claims {length} bytes but the file has {size}: cut short"
        try:
            header = json.loads(f.read(length))
            end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "its header is not the JSON safetensors writes"
    return None if 8 + length + end == size else f"its tensors need {8 + length + end} bytes but the file has {size}: cut short or padded"


def body_problem(path: Path, *, named: Path | None = None, content_type: str = "") -> str | None:
    """Why a downloaded body is plainly no checkpoint (`content_type`: what the server said it sent; then
    `head_problem`); None if it may be one. What no later attempt changes: the host sent something else."""
    if content_type == "text/html":
        return "an HTML page (Content-Type text/html), not the checkpoint: the host may want a login, or show a quota or error page"
    return head_problem(path, named=named)


def load_problem(path: Path, *, named: Path | None = None) -> str | None:
    """Why `path` does not read as a checkpoint of the format its name (`named`, else its own) allows;
    None if it does. A PyTorch file is loaded as every run loads it (weights only: no code runs)."""
    problem = head_problem(path, named=named)
    if problem is not None:
        return problem
    if _kinds(named or path) == ("safetensors",):
        return _safetensors_problem(path)
    from models.errors import ModelError
    from models.weights import load_checkpoint

    try:
        load_checkpoint(path)
    except ModelError:
        return f"{path.stat().st_size} bytes that do not load as a PyTorch checkpoint (cut short, or not one)"
    return None


def move_into_place(part: Path, out: BinaryIO, target: Path) -> None:
    """Rename a finished `.part` file to `target`: still open and locked where the OS renames open files."""
    if fcntl is None:
        out.close()  # Windows renames no open file
    os.replace(part, target)
