"""Readers of the ShapeNet-part and PartNet index files that ``featurenerf-annotate`` does not use.

The tests read the public formats with them (``synsetoffset2category.txt``,
``train_test_split/shuffled_<split>_file_list.json``, PartNet's ``sem_seg_h5`` files with ``data`` and
``label_seg``, which need h5py); each raises :class:`~featurenerf_ns.utils.io.DataError` naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from featurenerf_ns.transfer.annotations import _fields_per_line
from featurenerf_ns.utils.io import DataError, read_json


def read_synsetoffset2category(path: os.PathLike | str) -> dict[str, str]:
    """``synsetoffset2category.txt`` as ``{class name: synset}`` (e.g. ``{"Chair": "03001627"}``)."""
    out = {}
    for lineno, parts, line in _fields_per_line(path):
        if len(parts) != 2 or not parts[1].isdigit():
            raise DataError(path, f"line {lineno}: expected '<Name> <synset>', got {line!r}")
        out[parts[0]] = parts[1]
    return out


def read_shapenet_part_split(path: os.PathLike | str) -> list[tuple[str, str]]:
    """``shuffled_<split>_file_list.json`` as ``[(synset, model_id), ...]``."""
    path = Path(path)
    entries = read_json(path)
    out = []
    if not isinstance(entries, list):
        raise DataError(path, "expected a list of 'shape_data/<synset>/<id>' entries")
    for e in entries:
        parts = str(e).strip("/").split("/")
        if len(parts) < 3 or parts[-3] != "shape_data":
            raise DataError(path, f"entry {e!r} is not 'shape_data/<synset>/<id>'")
        out.append((parts[-2], parts[-1]))
    return out


def read_partnet_sem_seg_h5(path: os.PathLike | str) -> tuple[np.ndarray, np.ndarray, list | None]:
    """``sem_seg_h5/<Cat>-1/<split>-NN.h5``: points ``(B, N, 3)``, labels ``(B, N)`` and the records of
    the sibling ``<split>-NN.json`` (anno ids; None when absent)."""
    path = Path(path)
    try:
        import h5py
    except ImportError:
        raise DataError(
            path, "reading PartNet HDF5 needs h5py (pip install h5py), or use the raw point_sample files"
        ) from None
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with h5py.File(path, "r") as f:
            if "data" not in f or "label_seg" not in f:
                raise DataError(path, f"expected datasets 'data' and 'label_seg', found {sorted(f.keys())}")
            pts = np.asarray(f["data"], dtype=np.float64)
            labels = np.asarray(f["label_seg"]).astype(np.int64)
    except OSError as e:
        raise DataError(path, f"not a readable HDF5 file ({e})") from None
    if pts.ndim != 3 or pts.shape[2] < 3 or labels.shape != pts.shape[:2]:
        raise DataError(path, f"'data' (B, N, 3) and 'label_seg' (B, N) disagree: {pts.shape} vs {labels.shape}")
    records = None
    json_path = path.with_suffix(".json")
    if json_path.is_file():
        try:
            records = json.loads(json_path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(json_path, f"not valid JSON ({e})") from None
    return pts[..., :3], labels, records
