"""Atomic file writes and the error type for bad user data.

Every file the project writes (generated data, teacher caches, evaluation results) goes through
:func:`atomic_path`: it is written under a temporary name in the same folder and renamed into place
only when complete, so an interrupted run never leaves a file that a rerun would trust.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock


class UserError(ValueError):
    """A mistake in what the user asked for or supplied; nerfstudio's commands report it as one line."""


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
    with FileLock(str(path)):
        yield


@contextlib.contextmanager
def atomic_path(path: os.PathLike | str, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    Args:
        path: final location.
        suffix: suffix of the temporary file (defaults to ``path``'s, so writers that pick a format
            from the extension, like ``np.savez`` or PIL, still work).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{suffix if suffix is not None else path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
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


def read_json(path: os.PathLike | str) -> Any:
    """Read a JSON file, raising :class:`DataError` naming the file when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None
