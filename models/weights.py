"""Pretrained weights: one registry, a cache folder, verified downloads, safe loading.

Every published checkpoint facezoom can use is one `WeightsEntry` in `REGISTRY` (models/registry.py): the URL of the
file itself, what proves a copy authentic (a SHA-256 the publisher or we pinned, or the git blob
id GitHub publishes for a file committed to a repository; None = nothing published, never
invented), its licence, its key layout (see `models.generators`) and how the file becomes a state
dict. Files live in the cache folder (`$FACEZOOM_HOME`, default `~/.cache/facezoom`) under
`weights/`, except a file that ships inside a Python package (`package`), which is used where pip
put it. A download goes to a temporary file beside its target, is hashed while it streams,
checked (where no hash is published: that it is a checkpoint, not an HTML page or a body cut
short; models/download.py), and only then renamed into place; a failure another attempt may fix
is retried, a host that does not resolve is not. Each load hashes the file again: against the pinned SHA-256 or git
blob id, or, where none is published, against the SHA-256 recorded when the file first arrived
(`<file>.sha256`), which catches a truncated or altered file though it cannot prove the first
copy authentic. Checkpoints are read with `torch.load(weights_only=True)`: no pickled code runs.
Importing this module does no I/O. `facezoom weights list|fetch|verify|path` is a thin wrapper.

PULSE (Menon et al., CVPR 2020) lost many users to Google Drive quota errors: the StyleGAN
entries are GitHub release assets, PFSR's checkpoints are committed to its repository, and a
PULSE user's own `cache/` files are read as they are (`pulse-stylegan1-ffhq-1024`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Literal, Mapping, Sequence

from models.download import (CHUNK, Fatal, Retryable, body_problem, clear_stale_parts, download, head_problem, load_problem,
                             move_into_place, open_part)
from models.errors import ModelError
from models.registry import DEFAULT, PFSR_RAW, PULSE_DRIVE, REGISTRY, WeightsEntry  # noqa: F401 (the table; fetched here)

log = logging.getLogger(__name__)

RETRY_DELAYS = (2.0, 8.0)  # seconds to wait before the 2nd and 3rd attempt
TIMEOUT = 30.0  # seconds without data (or to connect) before an attempt fails


def cache_dir() -> Path:
    """`$FACEZOOM_HOME`, or `~/.cache/facezoom`."""
    home = os.environ.get("FACEZOOM_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "facezoom"


def entry(name: str) -> WeightsEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown weights {name!r}; registry names: {', '.join(REGISTRY)} (see `facezoom weights list`)") from None


def path_for(name: str) -> Path:
    """Where entry `name`'s file is (or must be placed): in the cache, or inside its installed package.
    A packaged entry whose package is missing is a `ModelError` giving the pip command."""
    e = entry(name)
    if e.package is None:
        return cache_dir() / "weights" / e.filename
    module, _, file = e.package.partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{name} ships inside the {module!r} Python package, which is not installed; run `{e.install}`")
    return Path(list(spec.submodule_search_locations)[0]) / file


def entry_for_file(path: Path) -> WeightsEntry | None:
    """The registry entry whose pinned SHA-256 a local file has (the same weights under another path), if any.
    Only a file of a pinned entry's exact size is hashed: a large checkpoint of another size costs a stat."""
    if not path.is_file():
        return None
    size = path.stat().st_size
    pinned = {e.sha256: e for e in REGISTRY.values() if e.sha256 and e.size_bytes == size}
    return pinned.get(sha256_file(path)) if pinned else None


def fit_cache_path(weights_path: Path) -> Path:
    """Where the gaussian fit of a generator's latent space is kept beside its weights (`generators.gaussian_fit`)."""
    return weights_path.with_name(weights_path.name + ".gaussian_fit.pt")


def companion_paths(name: str) -> list[tuple[Path, str, bool]]:
    """Entry `name`'s companion files: (where they go, their URL, required)."""
    return [(cache_dir() / "weights" / file, url, required) for file, url, required in entry(name).companions]


def is_present(name: str) -> bool:
    """Every required file of `name` is in place (its package installed, for a packaged entry)."""
    try:
        return path_for(name).is_file() and all(p.is_file() for p, _, required in companion_paths(name) if required)
    except ModelError:
        return False


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def git_blob_id(path: str | Path) -> str:
    """The id git (and GitHub) gives the file's contents: SHA-1 of `blob <size>\\0` followed by the bytes."""
    digest = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def pulse_file(folders: Sequence[Path], part: str) -> Path | None:
    """PULSE's `part` file (`synthesis.pt`, `mapping.pt`, `gaussian_fit.pt`) in the first of `folders`
    that has one: under its own name, or behind the hash PULSE's downloader prefixes (`<md5>_mapping.pt`;
    not its `tmp_*` leftovers of an interrupted download)."""
    for folder in folders:
        found = sorted(p for p in folder.glob(f"*{part}") if p.is_file() and re.fullmatch(rf"([0-9a-f]{{32}}_)?{re.escape(part)}", p.name))
        if len(found) > 1:
            raise ModelError(f"{folder} holds several PULSE {part} files ({', '.join(p.name for p in found)}); keep one")
        if found:
            return found[0]
    return None


def _manual(e: WeightsEntry, target: Path, reason: str) -> ModelError:
    files = [(target, e.url)] + [(p, url) for p, url, required in companion_paths(e.name) if required]
    where = " and ".join(f"{url} to {path}" for path, url in files)
    return ModelError(f"could not download {e.name}: {reason}. Download {where}, then run `facezoom weights verify {e.name}`")


def _pinned(e: WeightsEntry) -> bool:
    return e.sha256 is not None or e.git_blob is not None


def _check_download(e: WeightsEntry, tmp: Path, target: Path, digest: str, size: int, content_type: str) -> None:
    """Raise ModelError unless a downloaded file is the published one (size, SHA-256, git blob id); where
    nothing is published, Fatal unless it is a checkpoint of the format `target`'s name allows, and
    Retryable unless it loads as one (a body cut short where no length was sent)."""
    if e.size_bytes is not None and size != e.size_bytes:
        raise ModelError(f"{e.url} sent {size} bytes, the registry expects {e.size_bytes}; the published file may have changed")
    if e.sha256 is not None and digest != e.sha256:
        raise ModelError(f"{e.url} has SHA-256 {digest}, the registry expects {e.sha256}; the published file may have changed or been tampered with")
    if e.git_blob is not None and (blob := git_blob_id(tmp)) != e.git_blob:
        raise ModelError(f"{e.url} has git blob id {blob}, the repository publishes {e.git_blob}; the file may have changed or been tampered with")
    if _pinned(e):
        return
    if (problem := body_problem(tmp, named=target, content_type=content_type)) is not None:
        raise Fatal(f"the server sent {problem}; nothing was kept")
    if (problem := load_problem(tmp, named=target)) is not None:
        raise Retryable(f"the server sent {problem}")


def _cached_problem(name: str) -> str | None:
    """What is wrong with `name`'s cached file, as the rest of a sentence after its path; None if nothing.
    A file with no published hash is loaded too: a page or a cut body kept by an older facezoom records fine."""
    report = _check(name)
    if report.status == "mismatch":
        return report.detail
    problem = None if _pinned(entry(name)) else load_problem(report.path)
    return None if problem is None else f"is {problem}"


def fetch(name: str, *, progress: bool = True, force: bool = False, repair: bool = False) -> Path:
    """Entry `name`'s verified file: downloaded into the cache if missing, or found in its package.

    The file arrives in a temporary file beside the target and is renamed only once its size and
    hashes check out (and, where no hash is published, once it loads as a checkpoint). Failures
    another attempt may fix are retried (`RETRY_DELAYS`); a host that does not resolve fails at
    once; `FACEZOOM_OFFLINE=1` skips the attempt. Every failure is one `ModelError` naming the URL,
    the path to fill and the command to run next. `.part` files a killed download left are deleted
    first. `repair` (`facezoom weights fetch`): a cached file that fails its hash, or does not load,
    is said so and downloaded again; it stays until the new one has checked out.
    """
    e, target = entry(name), path_for(name)
    if e.package is None and target.parent.is_dir():
        for part in clear_stale_parts(target):
            log.info("deleted %s, left by a download that did not finish", part)
    present = is_present(name) and not force
    if e.package is not None or (present and (not repair or e.manual_only)):
        verify_cached(name)
        return target
    problem = _cached_problem(name) if present else None
    if present and problem is None:
        return target
    if problem is not None:
        log.warning("%s %s; downloading it again", target, problem)
    try:
        return _download_into(e, target, progress=progress)
    except ModelError as err:
        if problem is None:
            raise
        raise ModelError(f"{err} (first delete the damaged {target.name} there: it {problem})") from None


def _download_into(e: WeightsEntry, target: Path, *, progress: bool) -> Path:
    """Download entry `e` to `target` (see `fetch`), with its SHA-256 recorded beside it."""
    if e.manual_only:
        raise _manual(e, target, "its publisher hosts it on Google Drive, whose quota and confirmation pages no script can rely on")
    if os.environ.get("FACEZOOM_OFFLINE"):
        raise _manual(e, target, "FACEZOOM_OFFLINE is set")
    if target.is_dir():
        raise ModelError(f"cannot download {e.name}: {target} is a folder; move it away (FACEZOOM_HOME moves the whole cache)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelError(f"cannot make the model cache folder {target.parent}: {err.strerror or err}; "
                         "set FACEZOOM_HOME to a folder facezoom may write in") from None
    attempts = len(RETRY_DELAYS) + 1
    for attempt in range(1, attempts + 1):
        try:
            tmp, out = open_part(target)  # locked while open: another fetch's clear_stale_parts leaves it
        except OSError as err:
            raise ModelError(f"cannot write into the model cache folder {target.parent}: {err.strerror or err}; "
                             "set FACEZOOM_HOME to a folder facezoom may write in") from None
        try:
            log.info("downloading %s from %s (attempt %d of %d)", e.name, e.url, attempt, attempts)
            digest, size, content_type = download(e.url, out, timeout=TIMEOUT, desc=e.name, progress=progress)
            _check_download(e, tmp, target, digest, size, content_type)
            move_into_place(tmp, out, target)
            _record_path(target).write_text(f"{digest}  {target.name}\n")
            log.info("saved %s (%d bytes, SHA-256 %s) to %s", e.name, size, digest, target)
            return target
        except Retryable as err:
            if attempt == attempts:
                raise _manual(e, target, f"{err} (tried {attempts} times)") from None
            log.warning("download of %s failed (%s); retrying in %.0f s", e.name, err, RETRY_DELAYS[attempt - 1])
            time.sleep(RETRY_DELAYS[attempt - 1])
        except Fatal as err:
            raise _manual(e, target, f"{err} ({e.url})") from None
        finally:
            out.close()
            tmp.unlink(missing_ok=True)
    raise AssertionError("unreachable")


Status = Literal["ok", "recorded", "missing", "mismatch"]


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    name: str
    path: Path
    status: Status  # ok: matches the pinned SHA-256 or git blob id; recorded: matches the one recorded on arrival
    sha256: str | None  # the file's hash (its git blob id where the entry pins one; None if missing)
    expected: str | None  # what it was compared with
    detail: str  # one line for humans


def verify(name: str | None = None) -> list[VerifyReport]:
    """Hash cached files: `name`'s, or every present registry entry's when `name` is None."""
    names = [entry(name).name] if name is not None else [n for n in REGISTRY if is_present(n)]
    return [_check(n) for n in names]


def _check(name: str) -> VerifyReport:
    e = entry(name)
    try:
        path = path_for(name)
    except ModelError as err:  # a packaged entry whose package is not installed
        return VerifyReport(name, Path(e.package or e.filename), "missing", None, e.sha256, str(err))
    absent = [p for p, _, required in companion_paths(name) if required and not p.is_file()]
    if e.package is not None and not path.is_file():
        return VerifyReport(name, path, "missing", None, e.sha256, f"its package is installed but {path} is gone; reinstall it: `{e.install}`")
    if not path.is_file() or absent:
        files = " and ".join(f"{url} to {p}" for p, url in [(path, e.url)] + [(p, u) for p, u, r in companion_paths(name) if r])
        return VerifyReport(name, path, "missing", None, e.sha256,
                            f"download {files}" if e.manual_only else f"run `facezoom weights fetch {name}`, or download {files}")
    if e.git_blob is not None:
        blob = git_blob_id(path)
        ok = blob == e.git_blob
        return VerifyReport(name, path, "ok" if ok else "mismatch", blob, e.git_blob,
                            "matches the git blob id the repository publishes" if ok else "differs from the git blob id the repository publishes")
    digest = sha256_file(path)
    if e.sha256 is not None:
        ok = digest == e.sha256
        return VerifyReport(name, path, "ok" if ok else "mismatch", digest, e.sha256, "matches the pinned SHA-256" if ok else "differs from the pinned SHA-256")
    record = _record_path(path)
    recorded = (record.read_text().split() or [""])[0] if record.is_file() else None
    if recorded is not None and digest != recorded:
        return VerifyReport(name, path, "mismatch", digest, recorded, "differs from the SHA-256 recorded when it arrived (file changed or truncated)")
    if (problem := head_problem(path)) is not None:  # a page or other file saved in its place (its hash proves nothing)
        return VerifyReport(name, path, "mismatch", digest, recorded or digest, f"is {problem}")
    if recorded is None:  # placed by hand: nothing to compare with yet, so record it now
        record.write_text(f"{digest}  {path.name}\n")
        log.info("%s has no published hash; recorded its SHA-256 %s in %s", path, digest, record)
        return VerifyReport(name, path, "recorded", digest, digest, "no published hash; recorded this file's SHA-256 for later checks")
    return VerifyReport(name, path, "recorded", digest, recorded, "no published hash; matches the SHA-256 recorded when it arrived")


def verify_cached(name: str) -> Path:
    """Hash `name`'s file; raise ModelError unless it is intact."""
    report = _check(name)
    if report.status == "missing":
        raise ModelError(f"{name} is missing: {report.detail}")
    if report.status == "mismatch":
        e = entry(name)
        fix = f"reinstall it: `{e.install}`" if e.package else f"delete it and run `facezoom weights fetch {name}`"
        if report.sha256 == report.expected:  # its hash is the one recorded, but it is no checkpoint
            raise ModelError(f"{report.path} {report.detail}; {fix}")
        raise ModelError(f"{report.path} has {'git blob id' if e.git_blob else 'SHA-256'} {report.sha256} but {report.expected} "
                         f"was expected ({report.detail}); {fix}")
    return report.path


def save_checkpoint(path: str | Path, checkpoint: Mapping[str, object]) -> Path:
    """`torch.save` to a temporary file beside `path`, renamed into place when complete."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    try:
        torch.save(dict(checkpoint), tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def strip_data_parallel(state: Mapping[str, object], source: str) -> dict[str, object]:
    """A state dict without the `module.` prefix a data-parallel training run puts on every key."""
    prefixed = [k.startswith("module.") for k in state]
    if any(prefixed) and not all(prefixed):
        raise ModelError(f"{source}: some keys start with 'module.' (a data-parallel run) and some do not; the file is inconsistent")
    return {k.removeprefix("module."): v for k, v in state.items()}


def resolve(generator: str | None, *, progress: bool = True) -> Path:
    """A checkpoint path for `sr.generator`: None = the default entry; a registry name = its
    verified file (downloaded if missing); an existing file = itself; a folder holding PULSE's
    cache files = its synthesis file."""
    name = DEFAULT if generator is None else generator
    if name in REGISTRY:
        return fetch(name, progress=progress)
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        synthesis = pulse_file([path], "synthesis.pt")
        if synthesis is None:
            raise ModelError(f"sr.generator={name!r} is a folder without PULSE's synthesis.pt; pass a checkpoint file, "
                             "or the PULSE cache/ folder holding synthesis.pt and mapping.pt")
        return synthesis
    raise ModelError(
        f"sr.generator={name!r} is neither a registry name ({', '.join(REGISTRY)}) nor an existing checkpoint file or PULSE cache folder"
    )


def _plain_data() -> list:
    """What a checkpoint may hold besides tensors and Python data, for `torch.load(weights_only=True)`:
    training scripts' argparse namespaces (rosinality's `args`) and numpy scalars (a step or an
    alpha), including numpy 1's name for them. Plain data: no code of the file's choosing runs."""
    import argparse

    import numpy as np

    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    dtypes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}
    return [argparse.Namespace, np.dtype, *dtypes, scalar, (scalar, "numpy.core.multiarray.scalar")]


def _first_global(path: str | Path) -> str | None:
    """The first class or function a plain pickle file names (`module.name`), read with pickletools
    (nothing runs); None when it names none or is not a plain pickle."""
    import pickletools

    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name == "GLOBAL":
                    return str(arg).replace(" ", ".")
                if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    return f"{strings[-2]}.{strings[-1]}"
                if isinstance(arg, str):
                    strings.append(arg)
    except (ValueError, EOFError, OSError):
        return None
    return None


def load_checkpoint(path: str | Path) -> dict:
    """`torch.load(path, weights_only=True)` on the CPU, with errors that say what to do."""
    import pickle

    import torch

    _check_crcs(path)
    try:
        with torch.serialization.safe_globals(_plain_data()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"checkpoint {path} does not exist") from None
    except pickle.UnpicklingError as err:
        # torch words it "Unsupported global: GLOBAL m.f" or "unsupported GLOBAL m.f whose module m is blocked".
        found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", str(err))
        name = found.group(1) if found else _first_global(path)  # torch reads no plain pickle of protocol 4 or 5: look ourselves
        if name:  # a pickled class or function: running it would run the file's code
            raise ModelError(f"checkpoint {path} pickles {name}, which facezoom does not unpickle (a checkpoint may "
                             "hold only tensors and plain data); save the generator's state_dict() instead") from None
        raise ModelError(f"could not read checkpoint {path}: it is not a PyTorch weights file, or it is damaged; fetch it again") from None
    except OSError as err:  # torch's zip reader on a file cut short at some lengths: "[Errno 22] Invalid argument"
        raise ModelError(f"could not read checkpoint {path} ({err.strerror or err}); a file cut short by an interrupted download "
                         "or copy reads this way: fetch or copy it again, and check it with `facezoom weights verify`") from None
    except Exception as err:  # noqa: BLE001 - a pickle of any other bytes fails in any way (KeyError, IndexError, MemoryError...)
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines()[0] if str(err) else ""
        raise ModelError(f"could not read checkpoint {path} ({type(err).__name__}: {first}); it may be truncated or not a PyTorch weights file: fetch it again") from None
    if not isinstance(checkpoint, dict):
        raise ModelError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a dict of tensors")
    return checkpoint


def _check_crcs(path: str | Path) -> None:
    """torch's zip reader ignores the CRCs its files carry, and reads past a damaged directory: a
    damaged byte in the weights loaded as another number, silently. A zip checkpoint is read
    through here first (100 MB in ~0.03 s): every entry a file whose CRC holds."""
    import zipfile

    try:
        if not zipfile.is_zipfile(path):  # the legacy format (no CRCs), or not a checkpoint: torch says
            return
        with zipfile.ZipFile(path) as archive:
            # torch writes files only; its reader takes the DOS folder bit for a folder, and the tensor for zeros
            folder = next((info.filename for info in archive.infolist() if info.is_dir() or info.external_attr & 0x10), None)
            bad = archive.testzip() if folder is None else None
    except OSError:  # unreadable, or a seek past the file's start: torch's reader fails on it too, and says so
        return
    except Exception as err:  # noqa: BLE001 - a zip Python cannot read through is damaged, however it fails
        raise ModelError(f"checkpoint {path} is damaged (its zip structure does not read: {err}): fetch or copy it again") from None
    if folder is not None or bad is not None:
        why = f"{folder} reads as a folder" if folder is not None else f"{bad} fails its CRC check"
        raise ModelError(f"checkpoint {path} is damaged ({why}): fetch or copy it again")
