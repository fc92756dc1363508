"""Writing outputs safely: the output policy every command follows before any work
(`check_outputs`, `make_output_folder` for folder runs: no output is an input or another output,
an existing one is replaced only with -y, every folder takes a file), what the writers accept,
the atomic temporary-file-then-rename that every output goes through (`AtomicWriter`), and a full
disk said as such (`room_to_write`)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
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


def check_output_video(path: Path, *, what: str = "the output") -> None:
    """A `UserError` now for an output video path that could only fail after the run."""
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name such as {path / 'out.mp4'}")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"{what} {path} must end in {', '.join(VIDEO_SUFFIXES)} (the containers that keep "
                        "every frame's timestamp and the audio untouched)")
    check_output_folder(path, what=what)


def check_output_folder(path: Path, *, what: str = "the output") -> None:
    """A `UserError` unless the folder `path` goes into exists, a file can be made in it (tried,
    not only asked: `os.access` says yes for root on /proc and on read-only mounts) and its disk
    has a byte free (an empty file fits on a full disk; its contents would not). `what` names
    the output in the message ("the report (--report)")."""
    folder = path.parent
    if not folder.is_dir():
        blocker = _file_on_the_way(folder)
        if blocker is not None:
            raise UserError(f"cannot write {what} {path}: {blocker} is a file, not a folder")
        raise UserError(f"cannot write {what} {path}: the folder {folder} does not exist (make it first: mkdir -p {folder})")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write {what} {path}: its folder {folder} is not writable")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as err:
        raise UserError(f"cannot write {what} {path} into the folder {folder}: {no_room_reason(err) or err.strerror}") from None
    os.close(fd)
    os.unlink(probe)
    if _free_bytes(folder) == 0:
        raise UserError(f"cannot write {path}: {no_room_reason(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))}")


def _file_on_the_way(folder: Path) -> Path | None:
    """The nearest existing ancestor of `folder` (itself included) when it is not a folder: the
    file that stands where a folder is needed (`-o in.mp4/out.mp4`)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


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

    Paths are compared resolved (relative paths, `..`, symlinks) and, where they exist, by
    inode (hard links). `inputs` and `outputs` map what each path is ("the input", "--report")
    to the path. Each path is looked at once, so a folder of thousands of videos is quick.
    """
    def keys(path: Path) -> list[tuple]:
        found = [("path", str(path.resolve()))]
        try:
            st = path.stat()
        except OSError:  # not there yet (or not reachable): the resolved spelling is all there is
            return found
        return found + [("inode", st.st_dev, st.st_ino)]

    sources: dict[tuple, str] = {}
    for what, path in inputs.items():
        for k in keys(path):
            sources.setdefault(k, what)
    seen: dict[tuple, str] = {}
    for what, path in outputs.items():
        mine = keys(path)
        for k in mine:
            if k in sources:
                raise UserError(f"{what} {path} is {sources[k]}; it would be overwritten: choose another path")
        for k in mine:
            if k in seen:
                raise UserError(f"{what} {path} is also {seen[k]}; give each output its own path")
        for k in mine:
            seen.setdefault(k, what)


def check_new_output(path: Path, *, what: str = "the output", overwrite: bool, frames_folder: bool = False, probe: bool = True) -> None:
    """The output policy for one output, before any work: a folder does not stand where a file
    goes (nor a file where a folder of frames goes); a device or FIFO is never replaced; an
    existing output is refused unless `overwrite` (the CLI's -y/--overwrite, as in ffmpeg);
    and its folder takes a file (`check_output_folder`; `probe=False`: the caller tried it)."""
    if path.exists() or path.is_symlink():
        if frames_folder and not path.is_dir():
            raise UserError(f"{what} {path} is a file; a folder of PNG frames needs a name that is not taken")
        if frames_folder and not is_frame_folder(path):
            raise UserError(f"{what} {path} already exists and holds files other than frame_00000.png, ...; "
                            "choose a new folder name or remove it")
        if not frames_folder and path.is_dir():
            raise UserError(f"{what} {path} is a folder; give a file name such as {path / ('out' + (path.suffix or '.mp4'))}")
        if path.exists() and not path.is_dir() and not path.is_file() and not path.is_symlink():
            raise UserError(f"{what} {path} is not a regular file (a device, FIFO or socket); give a file name")
        if not overwrite:
            raise UserError(f"{what} {path} exists; pass -y (--overwrite) to replace it, or choose another name")
    if probe:
        check_output_folder(path, what=what)


def is_frame_folder(path: Path) -> bool:
    """Whether `path` is a folder holding only PNG frames as `PngFolderWriter` names them (a previous run's)."""
    return path.is_dir() and all(re.fullmatch(r"frame_\d{5,}\.png", p.name) for p in path.iterdir())


def check_outputs(inputs: dict[str, Path], outputs: dict[str, Path], *, overwrite: bool, frames_folders: tuple[str, ...] = ()) -> None:
    """The output policy for a run, before any work (every command and mode): no output is an
    input or another output (`check_distinct`), and each may be written (`check_new_output`).
    `frames_folders` names the outputs (keys of `outputs`) that are folders of PNG frames."""
    check_distinct(inputs, outputs)
    for what, path in outputs.items():
        check_new_output(path, what=what, overwrite=overwrite, frames_folder=what in frames_folders)


def make_output_folder(folder: Path, *, source: Path, targets: dict[Path, Path], overwrite: bool) -> None:
    """A folder run's outputs, checked together before any work, then its folder made.

    `targets` maps each input of the folder `source` to its output in `folder`. Refused: a
    `folder` that is a file or the input folder, one that cannot be made (`check_output_folder`
    on its parent), two inputs whose outputs share a name (both named), an output that is an
    input, and (unless `overwrite`) an output that exists already."""
    if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
        raise UserError(f"a folder input writes a folder of results: {folder} is a file; give a folder name")
    check_distinct({"the input folder": source}, {"the output folder": folder})
    if not folder.exists():
        check_output_folder(folder, what="the output folder")
    named = {f"the output of {src}": dst for src, dst in targets.items()}
    check_distinct({f"the input {src}": src for src in targets}, named)
    if folder.exists():
        for i, (what, path) in enumerate(named.items()):
            check_new_output(path, what=what, overwrite=overwrite, probe=i == 0)  # one folder: tried once
        return
    try:
        folder.mkdir()
    except OSError as err:
        raise UserError(f"cannot make the output folder {folder}: {no_room_reason(err) or err.strerror}") from None


@contextlib.contextmanager
def folder_run(folder: Path) -> Iterator[None]:
    """A folder run (video, zoom, enhance): an output folder it made and left empty (stopped before
    its first result, every input skipped, an error) is taken away at the end; one that was there stays."""
    existed = folder.exists() or folder.is_symlink()
    try:
        yield
    finally:
        if not existed:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only ever an empty folder


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
