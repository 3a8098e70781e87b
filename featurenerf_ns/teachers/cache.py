"""On-disk cache of teacher features for a whole category, resumable and shardable.

Layout: ``<root>/<folder>/<synset>/<obj_id>.npy``, one file per object holding float16 ``(NV, D, h, w)``
(views in sorted image-name order) with the all-zero (background) cells left out, read memory-mapped
by :func:`featurenerf_ns.teachers.store.open_teacher_features` (the format is described there).
Next to them ``teacher.json`` holds the *fingerprint*: every setting that changes stored values
(teacher, model, weights hash, layer, facet, sizes, prompt, image size). A cache made with other
settings is refused (:class:`StaleCacheError`) unless the run asks to overwrite it.

Every file is written under a temporary name and renamed when complete, so an interrupted run leaves
only whole files, and a rerun skips the objects already done. ``shard=(i, N)`` takes every N-th object
of the split starting at i: N machines with shards 0..N-1 together do exactly one full run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from featurenerf_ns.data.images import read_image, stored_rgba
from featurenerf_ns.dataparsers.base import read_image_size
from featurenerf_ns.layout import SPLITS, CategoryLayout, list_images, read_split_file, split_object_ids
from featurenerf_ns.teachers.base import Teacher
from featurenerf_ns.teachers.store import encode_teacher_features, open_teacher_features
from featurenerf_ns.utils.io import (
    DataError,
    UserError,
    atomic_path,
    make_dirs,
    read_json,
    remove_temporaries,
    write_json,
)

FINGERPRINT_FILE = "teacher.json"
"""Fingerprint file in each ``<root>/<folder>/<synset>`` cache folder."""
CACHE_SUFFIX = ".npy"


class StaleCacheError(DataError):
    """The cache folder was made with other teacher settings."""


def cache_path(folder: os.PathLike | str, obj_id: str) -> Path:
    """The cache file of one object."""
    return Path(folder) / f"{obj_id}{CACHE_SUFFIX}"


def read_fingerprint(folder: os.PathLike | str) -> dict[str, Any] | None:
    """The fingerprint stored in ``folder``, or None when there is none (e.g. the authors' npz folders)."""
    path = Path(folder) / FINGERPRINT_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("fingerprint"), dict):
        raise DataError(path, "expected a JSON object with a 'fingerprint' object")
    return data["fingerprint"]


def fingerprint_diff(stored: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """``key: stored != expected`` for every key of ``expected`` whose stored value differs."""
    out = []
    for key, want in expected.items():
        have = stored.get(key, "<absent>")
        # JSON turns tuples into lists; compare through a JSON-like normal form.
        if _normal(have) != _normal(want):
            out.append(f"{key}: {have!r} != {want!r}")
    return out


def check_fingerprint(folder: os.PathLike | str, expected: dict[str, Any]) -> dict[str, Any] | None:
    """Refuse a cache folder whose fingerprint disagrees with ``expected`` (training side).

    Only the keys of ``expected`` are compared, so the caller passes what it knows (for instance
    ``DinoTeacherConfig().fingerprint(category)``, or just ``{"teacher": "dino", "layer": 9}``).

    Returns:
        The stored fingerprint, or None for a folder without one (the authors' files, taken as they are).

    Raises:
        StaleCacheError: naming the fingerprint file and the differing settings.
    """
    stored = read_fingerprint(folder)
    if stored is None:
        return None
    diff = fingerprint_diff(stored, expected)
    if diff:
        raise StaleCacheError(
            Path(folder) / FINGERPRINT_FILE,
            "teacher cache made with other settings (" + "; ".join(diff) + "); re-extract with "
            "featurenerf-teacher ... --overwrite, or point to another folder",
        )
    return stored


def write_fingerprint(folder: os.PathLike | str, fingerprint: dict[str, Any]) -> None:
    write_json(
        Path(folder) / FINGERPRINT_FILE,
        {"fingerprint": _normal(fingerprint), "format": "per-object <obj_id>.npy, float16 (NV, D, h, w), see store.py"},
    )


def object_ids(split_file: os.PathLike | str, split: str) -> list[str]:
    """Object ids of ``split`` ('train', 'val', 'test' or 'all' = the three in that order, once each)."""
    if split != "all" and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS + ('all',)}")
    splits = read_split_file(split_file)
    # 'all' takes the lists the file has (a split file may have no 'val')
    names = [n for n in SPLITS if n in splits] if split == "all" else [split]
    out: list[str] = []
    seen: set[str] = set()
    for name in names:
        for i in split_object_ids(split_file, splits, name):
            if i not in seen:
                seen.add(i)
                out.append(i)
    return out


def shard_ids(ids: Sequence[str], shard: tuple[int, int]) -> list[str]:
    """Every ``N``-th id starting at ``i`` for ``shard = (i, N)``; the N shards partition ``ids``."""
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: expected 0 <= i < N")
    return list(ids[i::n])


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)``."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected i/N, e.g. 0/2") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text!r}: expected 0 <= i < N")
    return i, n


def view_paths(image_dir: Path) -> list[Path]:
    """An object's images in view order (sorted names)."""
    return [image_dir / name for name in list_images(image_dir, nonempty=True)]


def load_rgba(paths: Iterable[Path]) -> Float[np.ndarray, "NV 4 H W"]:
    """Views as stored, RGBA float32 in [0, 1] (alpha 1 for RGB files); teachers composite them."""
    out = []
    for p in paths:
        arr = stored_rgba(read_image(p, None if not out else out[0].shape[:2]))
        out.append(arr)
    return np.stack(out).transpose(0, 3, 1, 2)


@dataclass
class ExtractionReport:
    """What one extraction run did."""

    done: list[str]
    """Objects extracted by this run."""
    skipped: list[str]
    """Objects already cached with the same fingerprint (or kept as the authors' npz)."""
    seconds: float

    @property
    def objects_per_second(self) -> float:
        return len(self.done) / self.seconds if self.seconds > 0 else float("nan")


def extract_category(
    teacher: Teacher,
    layout: CategoryLayout,
    ids: Sequence[str],
    folder: str,
    overwrite: bool = False,
    keep_npz: bool = True,
    progress: bool = True,
    on_object: Callable[[str], None] | None = None,
    sparse: bool = True,
) -> ExtractionReport:
    """Extract (or finish extracting) the teacher features of ``ids`` into ``<root>/<folder>/<synset>``.

    Args:
        teacher: the teacher, already on its device.
        layout: data root and synset.
        ids: objects to do (already restricted to this run's shard).
        folder: cache folder name under the data root.
        overwrite: recompute ``ids`` even when cached, and replace a cache made with other settings
            (its ``.npy`` files are deleted, so start other shards after this one has begun).
        keep_npz: skip objects that have an ``<obj_id>.npz`` (the authors' files, read first anyway).
        progress: show a progress bar with objects/s.
        on_object: called with each object id after its file is written.
        sparse: store only the cells that are not all-zero (the foreground); False = a dense array.

    Raises:
        StaleCacheError: the folder was made with other settings and ``overwrite`` is False.
        DataError: an unreadable image or split.
    """
    out_dir = layout.root / folder / layout.synset
    first = view_paths(layout.image_dir(ids[0])) if ids else []
    fingerprint = teacher.fingerprint()
    if first:
        fingerprint["image_size"] = list(read_image_size(first[0]))
    stored = read_fingerprint(out_dir)
    if stored is not None and fingerprint_diff(stored, fingerprint):
        if not overwrite:
            check_fingerprint(out_dir, fingerprint)
        for p in out_dir.glob(f"*{CACHE_SUFFIX}"):
            if not p.name.startswith("."):
                p.unlink()
    make_dirs(out_dir)
    write_fingerprint(out_dir, fingerprint)

    todo, skipped = [], []
    for obj_id in ids:
        if keep_npz and (out_dir / f"{obj_id}.npz").is_file():
            skipped.append(obj_id)
        elif not overwrite and _complete(cache_path(out_dir, obj_id), layout.image_dir(obj_id)):
            skipped.append(obj_id)
        else:
            todo.append(obj_id)

    # this run's objects are its own (shards split the objects): what a killed run left of them can go
    remove_temporaries(cache_path(out_dir, obj_id) for obj_id in todo)
    start = time.perf_counter()
    done: list[str] = []
    with _progress(progress, len(todo), f"{fingerprint.get('teacher', 'teacher')} {layout.synset}") as advance:
        for obj_id in todo:
            rgba = torch.from_numpy(load_rgba(view_paths(layout.image_dir(obj_id))))
            feats = teacher(rgba).cpu().numpy()
            with atomic_path(cache_path(out_dir, obj_id)) as tmp:
                np.save(tmp, encode_teacher_features(feats, sparse=sparse))
            done.append(obj_id)
            if on_object is not None:
                on_object(obj_id)
            advance()
    return ExtractionReport(done=done, skipped=skipped, seconds=time.perf_counter() - start)


def _complete(path: Path, image_dir: Path) -> bool:
    """A cached file exists with one map per view (headers read only)."""
    if not path.is_file():
        return False
    try:
        shape = open_teacher_features(path).shape
    except DataError:
        return False
    try:
        return len(shape) == 4 and shape[0] == len(view_paths(image_dir))
    except DataError:
        return False


class _progress:
    """A rich progress bar with objects/s, or nothing."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.enabled, self.total, self.label = enabled, total, label

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
        )
        self.bar.__enter__()
        task = self.bar.add_task(self.label, total=self.total, rate="")
        t0 = time.perf_counter()

        def advance() -> None:
            done = self.bar.tasks[0].completed + 1
            rate = done / max(time.perf_counter() - t0, 1e-9)
            self.bar.update(task, advance=1, rate=f"{rate:.2f} objects/s")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
