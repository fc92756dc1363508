"""Pretrained weights: one registry, a cache folder, verified downloads, safe loading.

Every published checkpoint facezoom can use is one `WeightsEntry` in `REGISTRY`: where it is
published, its SHA-256 where the publisher gives one (None = not published; we never invent
one), its licence, its key layout (see `models.generators`) and how the file becomes a state
dict. Files live in the cache folder (`$FACEZOOM_HOME`, default `~/.cache/facezoom`) under
`weights/`. A download goes to a temporary file beside its target, is hashed while it streams,
checked, and only then renamed into place; failed attempts are retried. Each load from the
cache hashes the file again: against the published SHA-256, or, where none is published,
against the SHA-256 recorded when the file first arrived (`<file>.sha256`), which catches a
truncated or altered file though it cannot prove the first copy authentic. Checkpoints are
read with `torch.load(weights_only=True)`: no pickled code runs. Importing this module does no
I/O. The `weights list|fetch|verify|path` command is a thin wrapper over these functions.

PULSE (Menon et al., CVPR 2020) lost many users to Google Drive quota errors; both entries
here are GitHub release assets, and the offline error says exactly where to put the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import logging
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal, Mapping

from models.errors import ModelError

log = logging.getLogger(__name__)

NON_COMMERCIAL = "non-commercial use only"


@dataclasses.dataclass(frozen=True)
class WeightsEntry:
    name: str  # the registry name users type (`sr.generator=...`)
    url: str  # where the publisher hosts the file
    filename: str  # the file name in the cache
    sha256: str | None  # published SHA-256; None = the publisher gives none
    size_bytes: int | None  # exact size when published (checked); None = unknown
    approx_size: str  # for humans: what the download costs
    licence: str
    source: str  # who trained and published it, and where it is described
    layout: str  # key layout: one of models.generators.LAYOUTS, or "pfsr" (models.networks.pfsr)
    converter: str  # how the file's contents become the generator's state dict
    arch: tuple[tuple[str, object], ...]  # architecture settings the file must match exactly
    description: str
    manual_only: bool = False  # hosted where no script can download it (a Google Drive page): place it by hand


PFSR_CELEBA = WeightsEntry(
    name="pfsr-celeba",
    url="https://github.com/DeokyunKim/Progressive-Face-Super-Resolution",  # its README links the file (Google Drive)
    filename="generator_checkpoint_singleGPU.ckpt",
    sha256=None,  # not published
    size_bytes=None,  # not published
    approx_size="~36 MB (9.0M float32 weights)",
    licence=f"{NON_COMMERCIAL}: trained on CelebA (non-commercial research only); the PFSR repository states no licence",
    source="Kim et al., BMVC 2019, DeokyunKim/Progressive-Face-Super-Resolution (its demo.py/eval.py default); "
           "hosted on Google Drive, which facezoom cannot download from: download it by hand: the Google Drive link in that repository's README",
    layout="pfsr",
    converter="take 'model_state_dict' (with 'step', 'alpha', 'iteration')",
    arch=(("channels", (512, 256, 128, 64)),),
    description="Progressive Face SR 16x16 -> 128x128, CelebA-aligned faces (sr.backend=ffsr's default); manual download",
    manual_only=True,
)

REGISTRY: dict[str, WeightsEntry] = {
    e.name: e
    for e in (
        WeightsEntry(
            name="stylegan2-ffhq-512",
            url="https://github.com/TencentARC/GFPGAN/releases/download/v0.1.0/StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth",
            filename="StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth",
            sha256=None,  # not published by TencentARC/GFPGAN
            size_bytes=None,  # not published
            approx_size="~100 MB (25.6M float32 weights)",
            licence=f"{NON_COMMERCIAL}: trained on FFHQ (NVIDIA, CC BY-NC-SA 4.0); released with GFPGAN",
            source="TencentARC/GFPGAN release v0.1.0 (the StyleGAN2 prior GFPGAN was trained with), BasicSR StyleGAN2Generator",
            layout="basicsr-stylegan2",
            converter="take the 'params_ema' state dict",
            arch=(("resolution", 512), ("channel_multiplier", 1)),
            description="StyleGAN2 FFHQ 512x512, channel multiplier 1 (the default: faster; can render at 128/256)",
        ),
        WeightsEntry(
            name="stylegan1-ffhq-1024",
            url="https://github.com/lernapparat/lernapparat/releases/download/v2019-02-01/karras2019stylegan-ffhq-1024x1024.for_g_all.pt",
            filename="karras2019stylegan-ffhq-1024x1024.for_g_all.pt",
            sha256=None,  # not published by lernapparat
            size_bytes=None,  # not published
            approx_size="~105 MB (26.2M float32 weights)",
            licence=f"{NON_COMMERCIAL}: NVIDIA StyleGAN FFHQ weights, CC BY-NC 4.0",
            source="NVlabs/stylegan FFHQ 1024 (Karras et al. 2019), converted to PyTorch by lernapparat; the network PULSE used",
            layout="lernapparat-stylegan1",
            converter="none (a flat g_mapping.*/g_synthesis.* state dict)",
            arch=(("resolution", 1024),),
            description="StyleGAN (v1) FFHQ 1024x1024, as in the PULSE paper (always renders 1024)",
        ),
        PFSR_CELEBA,
        dataclasses.replace(
            PFSR_CELEBA,
            name="pfsr-celeba-ddp",
            filename="generator_checkpoint.ckpt",
            source="Kim et al., BMVC 2019, DeokyunKim/Progressive-Face-Super-Resolution, the distributed (apex) training run; "
                   "hosted on Google Drive, which facezoom cannot download from: download it by hand: the Google Drive link in that repository's README",
            converter="take 'model_state_dict', dropping the data-parallel 'module.' prefixes",
            description="Progressive Face SR 16x16 -> 128x128, the multi-GPU run's weights; manual download",
        ),
    )
}
DEFAULT = "stylegan2-ffhq-512"

RETRY_DELAYS = (2.0, 8.0)  # seconds to wait before the 2nd and 3rd attempt
TIMEOUT = 60.0  # seconds without data before an attempt fails
CHUNK = 1 << 20


def cache_dir() -> Path:
    """`$FACEZOOM_HOME`, or `~/.cache/facezoom`."""
    home = os.environ.get("FACEZOOM_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "facezoom"


def entry(name: str) -> WeightsEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown weights {name!r}; registry names: {', '.join(REGISTRY)} (see `weights list`)") from None


def path_for(name: str) -> Path:
    """Where the cache keeps (or will keep) registry entry `name`."""
    return cache_dir() / "weights" / entry(name).filename


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _manual(e: WeightsEntry, target: Path, reason: str) -> ModelError:
    return ModelError(
        f"could not download {e.name}: {reason}. On a machine with network access, open {e.url}, follow the "
        f"link its README gives for {e.filename}, and place that file at {target} (then `weights verify {e.name}`)"
    )


class _Retryable(Exception):
    """A failure another attempt may fix (connection, timeout, 5xx, truncated body)."""


class _Fatal(Exception):
    """A failure retrying will not fix (4xx)."""


def _download(url: str, dest: Path, *, desc: str, progress: bool) -> tuple[str, int]:
    """Stream `url` into `dest`; return its SHA-256 and size. Raises _Retryable or _Fatal."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "facezoom"})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as err:
        if err.code >= 500 or err.code == 429:
            raise _Retryable(f"HTTP {err.code} {err.reason}") from err
        raise _Fatal(f"HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise _Retryable(str(getattr(err, "reason", err))) from err
    digest, size = hashlib.sha256(), 0
    with response, open(dest, "wb") as out:
        expected = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr, disable=not progress) as bar:
            try:
                while block := response.read(CHUNK):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as err:
                raise _Retryable(f"connection lost after {size} bytes ({err})") from err
    if expected is not None and size != expected:
        raise _Retryable(f"got {size} of {expected} bytes")
    return digest.hexdigest(), size


def fetch(name: str, *, progress: bool = True, force: bool = False) -> Path:
    """Download registry entry `name` into the cache (if missing) and return its path.

    The file arrives in a temporary file beside the target and is renamed only once its size and
    SHA-256 check out. Network failures are retried (`RETRY_DELAYS`); `FACEZOOM_OFFLINE=1`
    skips the attempt. Every failure is one `ModelError` naming the URL and the path to fill.
    """
    e, target = entry(name), path_for(name)
    if target.is_file() and not force:
        verify_cached(name)
        return target
    if e.manual_only:
        raise _manual(e, target, "its publisher hosts it on Google Drive, which no script can download from")
    if os.environ.get("FACEZOOM_OFFLINE"):
        raise _manual(e, target, "FACEZOOM_OFFLINE is set")
    target.parent.mkdir(parents=True, exist_ok=True)
    attempts = len(RETRY_DELAYS) + 1
    for attempt in range(1, attempts + 1):
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            log.info("downloading %s from %s (attempt %d of %d)", name, e.url, attempt, attempts)
            digest, size = _download(e.url, tmp, desc=name, progress=progress)
            if e.size_bytes is not None and size != e.size_bytes:
                raise ModelError(f"{e.url} sent {size} bytes, the registry expects {e.size_bytes}; the published file may have changed")
            if e.sha256 is not None and digest != e.sha256:
                raise ModelError(f"{e.url} has SHA-256 {digest}, the registry expects {e.sha256}; the published file may have changed or been tampered with")
            os.replace(tmp, target)
            _record_path(target).write_text(f"{digest}  {target.name}\n")
            log.info("saved %s (%d bytes, SHA-256 %s) to %s", name, size, digest, target)
            return target
        except _Retryable as err:
            if attempt == attempts:
                raise _manual(e, target, f"{err} (tried {attempts} times)") from None
            log.warning("download of %s failed (%s); retrying in %.0f s", name, err, RETRY_DELAYS[attempt - 1])
            time.sleep(RETRY_DELAYS[attempt - 1])
        except _Fatal as err:
            raise _manual(e, target, f"{err} from {e.url}") from None
        finally:
            tmp.unlink(missing_ok=True)
    raise AssertionError("unreachable")


Status = Literal["ok", "recorded", "missing", "mismatch"]


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    name: str
    path: Path
    status: Status  # ok: matches the published SHA-256; recorded: matches the one recorded on arrival
    sha256: str | None  # the file's SHA-256 (None if missing)
    expected: str | None  # what it was compared with
    detail: str  # one line for humans


def verify(name: str | None = None) -> list[VerifyReport]:
    """Hash cached files: `name`'s, or every cached registry file when `name` is None."""
    names = [entry(name).name] if name is not None else [n for n in REGISTRY if path_for(n).is_file()]
    return [_check(n) for n in names]


def _check(name: str) -> VerifyReport:
    e, path = entry(name), path_for(name)
    if not path.is_file():
        return VerifyReport(name, path, "missing", None, e.sha256, f"not in the cache; `weights fetch {name}` or place {e.url} at {path}")
    digest = sha256_file(path)
    record = _record_path(path)
    if e.sha256 is not None:
        ok = digest == e.sha256
        return VerifyReport(name, path, "ok" if ok else "mismatch", digest, e.sha256, "matches the published SHA-256" if ok else "differs from the published SHA-256")
    if not record.is_file():  # placed by hand: nothing to compare with yet, so record it now
        record.write_text(f"{digest}  {path.name}\n")
        log.info("%s has no published SHA-256; recorded %s in %s", path, digest, record)
        return VerifyReport(name, path, "recorded", digest, digest, "no published SHA-256; recorded this file's hash for later checks")
    recorded = record.read_text().split()[0] if record.read_text().split() else ""
    ok = digest == recorded
    detail = "no published SHA-256; matches the hash recorded when it arrived" if ok else "differs from the hash recorded when it arrived (file changed or truncated)"
    return VerifyReport(name, path, "recorded" if ok else "mismatch", digest, recorded, detail)


def verify_cached(name: str) -> Path:
    """Hash `name`'s cached file; raise ModelError unless it is intact."""
    report = _check(name)
    if report.status == "missing":
        raise ModelError(f"{name} is not in the cache: {report.detail}")
    if report.status == "mismatch":
        raise ModelError(
            f"{report.path} has SHA-256 {report.sha256} but {report.expected} was expected ({report.detail}); "
            f"delete it and run `weights fetch {name}`"
        )
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
    verified cached file (downloaded if missing); an existing file = itself."""
    name = DEFAULT if generator is None else generator
    if name in REGISTRY:
        return fetch(name, progress=progress)
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise ModelError(
        f"sr.generator={name!r} is neither a registry name ({', '.join(REGISTRY)}) nor an existing checkpoint file"
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


def load_checkpoint(path: str | Path) -> dict:
    """`torch.load(path, weights_only=True)` on the CPU, with errors that say what to do."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(_plain_data()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"checkpoint {path} does not exist") from None
    except pickle.UnpicklingError as err:
        # torch words it "Unsupported global: GLOBAL m.f" or "unsupported GLOBAL m.f whose module m is blocked".
        found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", str(err))
        if found:  # a pickled class or function: running it would run the file's code
            raise ModelError(f"checkpoint {path} pickles {found.group(1)}, which facezoom does not unpickle (a checkpoint may "
                             "hold only tensors and plain data); save the generator's state_dict() instead") from None
        raise ModelError(f"could not read checkpoint {path}: it is not a PyTorch weights file, or it is damaged; fetch it again") from None
    except (RuntimeError, EOFError, ValueError) as err:
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines()[0] if str(err) else ""
        raise ModelError(f"could not read checkpoint {path} ({type(err).__name__}: {first}); it may be truncated or not a PyTorch weights file: fetch it again") from None
    if not isinstance(checkpoint, dict):
        raise ModelError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a dict of tensors")
    return checkpoint
