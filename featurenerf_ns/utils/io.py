"""Atomic file writes and the error types for bad user data.

Every file the project writes (generated data, teacher caches, evaluation results) goes through
:func:`atomic_path`: it is written under a temporary name in the same folder and renamed into place
only when complete, so an interrupted run never leaves a file that a rerun would trust (and
:func:`remove_temporaries` clears what it left behind). A write the file system refuses (no permission, a full
disk, a file where a folder belongs) is a :class:`DataError` naming the file, like a malformed input.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock


class UserError(ValueError):
    """A mistake in what the user asked for or supplied: every command, ours and nerfstudio's, reports it as one
    line and exit status 2 (:mod:`featurenerf_ns.utils.errors`)."""


class DataError(UserError):
    """A problem with a user's data file, reported as one line that names the file."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@contextlib.contextmanager
def exclusive_lock(path: os.PathLike | str) -> Iterator[None]:
    """Hold an inter-process lock on ``path`` (created if needed) for the ``with`` block: concurrent commands wait
    for one another instead of building the same files twice. Portable (``filelock``: ``fcntl`` on POSIX,
    ``msvcrt`` on Windows, chosen when locking, not at import)."""
    path = Path(path)
    make_dirs(path.parent)
    lock = FileLock(str(path))
    with naming_write_errors(path):
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


_WRITE_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
    | {errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG}
)
"""Errors of a write that the user's file system causes (no permission, no space, a file or folder in the way)."""


def write_error(path: os.PathLike | str, error: OSError) -> DataError:
    """The one-line :class:`DataError` for an ``OSError`` met while writing or creating ``path``."""
    path = Path(path)
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            return DataError(path, f"cannot write: {blocking} is a file, not a folder")
    if error.errno == errno.EISDIR:
        return DataError(path, "cannot write: a folder is in the way of this file")
    return DataError(path, f"cannot write ({error.strerror or error})")


@contextlib.contextmanager
def naming_write_errors(path: os.PathLike | str) -> Iterator[None]:
    """Turn the file system's refusal of a write in the block (no permission, disk full, ...) into a
    :class:`DataError` naming ``path`` (for writers that cannot go through :func:`atomic_path`)."""
    try:
        yield
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        raise write_error(path, e) from None


def make_dirs(path: os.PathLike | str) -> Path:
    """Create the folder ``path`` and its parents; a :class:`DataError` naming it when the file system refuses."""
    path = Path(path)
    with naming_write_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def check_writable(path: os.PathLike | str) -> None:
    """Raise a :class:`DataError` naming ``path`` when the folder ``path`` could not be created or written, checked
    without writing anything: a file where it or a parent must be a folder, or no write permission."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise DataError(path, f"cannot write: {p} is a file, not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise DataError(path, f"cannot write: no write permission on {p}")
            return


_TEMPORARY = re.compile(r"\.(.+)\.[a-z0-9_]+\.tmp.*")
"""Name of :func:`atomic_path`'s temporary file; group 1 is the name of the file it becomes."""


def remove_temporaries(paths: Iterable[os.PathLike | str]) -> None:
    """Delete what :func:`atomic_path` left of these files in a run that was killed while writing them.

    One listing per folder. Only for files that no other process can be writing now (that write would fail).
    """
    names: dict[Path, set[str]] = {}
    for p in map(Path, paths):
        names.setdefault(p.parent, set()).add(p.name)
    for folder, wanted in names.items():
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            match = _TEMPORARY.fullmatch(entry.name)
            if match and match.group(1) in wanted:
                Path(entry.path).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: os.PathLike | str, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    A write that the file system refuses (no permission, disk full, a file where a folder belongs) raises a
    :class:`DataError` naming ``path``; nothing is left behind and an existing ``path`` is untouched.

    Args:
        path: final location.
        suffix: suffix of the temporary file (defaults to ``path``'s, so writers that pick a format
            from the extension, like ``np.savez`` or PIL, still work).
    """
    path = Path(path)
    make_dirs(path.parent)
    with naming_write_errors(path):
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".tmp{suffix if suffix is not None else path.suffix}", dir=path.parent
        )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        # Only failures of writing the temporary file (named, or unnamed as in a failed write()) and of the
        # rename are the output's; an input the block failed to read keeps its own error.
        if e.errno not in _WRITE_ERRNOS or e.filename not in (None, tmp, tmp_path):
            raise
        raise write_error(path, e) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: os.PathLike | str, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent))


def write_npz(path: os.PathLike | str, compressed: bool = False, **arrays: Any) -> None:
    """Write arrays to an ``.npz`` file atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)


def check_finite(path: os.PathLike | str, what: str, values: np.ndarray) -> None:
    """Raise a :class:`DataError` naming ``path`` when a row of ``values`` (one per frame) holds a NaN or infinity:
    such a camera would not fail where it is read but much later, as garbage rays or an index error in training."""
    bad = ~np.isfinite(np.asarray(values, dtype=np.float64).reshape(len(values), -1)).all(axis=1)
    if bad.any():
        raise DataError(path, f"{what} of frame {int(np.argmax(bad))} is not finite (NaN or infinity)")


def read_json(path: os.PathLike | str) -> Any:
    """Read a JSON file, raising :class:`DataError` naming the file when missing or malformed."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a folder, expected a JSON file")
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None
    except OSError as e:
        raise DataError(path, f"cannot read ({e.strerror or e})") from None
