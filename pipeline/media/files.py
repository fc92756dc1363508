"""Writing outputs safely: what the writers accept, checks made before a run, the atomic
temporary-file-then-rename that every output goes through (`AtomicWriter`), and a full disk
said as such (`room_to_write`)."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from pipeline.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm")  # what `VideoWriter` writes: containers that keep every pts and the audio


# Why the machine refuses a write for lack of room, as a user reads it.
NO_ROOM = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is larger than its file system allows",
}


def no_room_reason(err: OSError) -> str | None:
    """'the disk is full (No space left on device); free some space or write to another disk' for
    a write refused for lack of room; None for any other error."""
    reason = NO_ROOM.get(err.errno)
    return f"{reason} ({os.strerror(err.errno)}); free some space or write to another disk" if reason else None


@contextlib.contextmanager
def room_to_write(path: Path) -> Iterator[None]:
    """Inside, a write refused for lack of room (PyAV's errors are `OSError`s too) is a one-line
    `UserError` naming `path`, the output as the user named it (not its temporary file)."""
    try:
        yield
    except OSError as err:
        reason = no_room_reason(err)
        if reason is None:
            raise
        raise UserError(f"cannot write {path}: {reason}") from None


def check_output_video(path: Path) -> None:
    """A `UserError` now for an output video path that could only fail after the run."""
    if path.is_dir():
        raise UserError(f"the output {path} is a folder; give a file name such as {path / 'out.mp4'}")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"the output {path} must end in {', '.join(VIDEO_SUFFIXES)} (the containers that keep "
                        "every frame's timestamp and the audio untouched)")
    check_output_folder(path)


def check_output_folder(path: Path) -> None:
    """A `UserError` unless the folder `path` goes into exists, a file can be made in it (tried,
    not only asked: `os.access` says yes for root on /proc and on read-only mounts) and its disk
    has a byte free (an empty file fits on a full disk; its contents would not)."""
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise UserError(f"output folder is not writable: {folder}")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as err:
        raise UserError(f"cannot write into the output folder {folder}: {no_room_reason(err) or err.strerror}") from None
    os.close(fd)
    os.unlink(probe)
    if _free_bytes(folder) == 0:
        raise UserError(f"cannot write {path}: {no_room_reason(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))}")


def _free_bytes(folder: Path) -> int | None:
    """Bytes this process may still write on the disk of `folder`; None where it cannot be told."""
    try:
        disk = os.statvfs(folder)
    except (AttributeError, OSError):  # no statvfs (Windows), or a file system without it
        return None
    if not disk.f_blocks:  # a file system that counts no blocks (some FUSE mounts)
        return None
    free = disk.f_bfree if os.geteuid() == 0 else disk.f_bavail  # root may use the reserved blocks
    return free * disk.f_frsize


def check_distinct(inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """A `UserError` if an output is an input or another output of the same run.

    Paths are compared resolved (relative paths, `..`, symlinks) and, where both exist, by
    inode (hard links). `inputs` and `outputs` map what each path is ("the input", "--report")
    to the path.
    """
    def same(a: Path, b: Path) -> bool:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()

    named = list(outputs.items())
    for i, (what, path) in enumerate(named):
        for other, source in inputs.items():
            if same(path, source):
                raise UserError(f"{what} {path} is {other}; it would be overwritten: choose another path")
        for other, earlier in named[:i]:
            if same(path, earlier):
                raise UserError(f"{what} {path} is also {other}; give each output its own path")


class AtomicWriter:
    """An output that appears only when complete: leaving its `with` block normally calls
    `close()` (which moves the finished file into place); leaving it through an exception, or
    a `close()` that fails, calls `_discard()` (which deletes the partial file)."""

    def close(self) -> None:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self._discard()
                raise
        else:
            self._discard()


def format_for(path: Path) -> str | None:
    return {".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".mp4": "mp4", ".avi": "avi"}.get(path.suffix.lower())


def temp_path_beside(path: Path) -> Path:
    """A fresh temporary file in the output's folder (same suffix), so the final rename is atomic."""
    check_output_folder(path)
    folder = path.parent
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=folder)
    except OSError as err:
        raise UserError(f"cannot write into the output folder {folder}: {err.strerror}") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp makes owner-only files; an output gets the usual mode
    return Path(name)
