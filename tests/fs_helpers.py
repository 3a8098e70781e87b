"""File-system conditions the tests create for real: a full disk, a folder the command may not write, a snapshot."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def temporaries(root: Path) -> list[Path]:
    """Temporary files of ``atomic_path`` under ``root`` (what a killed or failed write may leave behind)."""
    return [p for p in root.rglob(".*") if ".tmp" in p.name]


@contextlib.contextmanager
def tiny_filesystem(folder: Path, free_bytes: int) -> Iterator[Path]:
    """Mount a small tmpfs on ``folder`` (its current files copied in) with about ``free_bytes`` left free.

    Needs root with CAP_SYS_ADMIN (the project's CI and development machines); skips with the reason otherwise.
    """
    saved = folder.with_name(folder.name + ".saved")
    if folder.exists():
        folder.rename(saved)
    folder.mkdir(parents=True)
    used = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file()) if saved.exists() else 0
    size_kib = (used + free_bytes) // 1024 + 1024  # slack for rounding to pages; the filler takes it back
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        folder.rmdir()
        if saved.exists():
            saved.rename(folder)
        pytest.skip(f"a full disk is simulated with a small tmpfs, which cannot be mounted here: {proc.stderr.strip()}")
    try:
        if saved.exists():
            shutil.copytree(saved, folder, dirs_exist_ok=True)
        stat = os.statvfs(folder)
        filler = stat.f_bavail * stat.f_frsize - free_bytes
        (folder / ".filler").write_bytes(b"\0" * max(filler, 0))
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)
        folder.rmdir()
        if saved.exists():
            saved.rename(folder)


def _drop_dac_override() -> None:
    """In the child before ``exec``: take the capabilities that let root ignore file permissions out of the bounding
    set, so that the command (still root, so it can run the interpreter under /root) obeys folder modes."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run_unprivileged(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run ``cmd`` so that file permissions apply to it: as root, without the capabilities that override them."""
    preexec = _drop_dac_override if os.geteuid() == 0 else None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=preexec)
    except subprocess.SubprocessError as e:
        pytest.skip(f"cannot run a command without root's permission override here ({e})")
