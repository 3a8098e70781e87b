"""Reading per-object teacher feature files.

Formats, all ``(NV, D, h, w)`` to the reader:

- the authors' ``<teacher>/<synset>/<obj_id>.npz`` with ``feats`` float32 (read as they are; the
  array is decompressed on the first :meth:`TeacherFeatures.read`, its shape comes from the header);
- this project's cache ``<teacher>/<synset>/<obj_id>.npy`` (:mod:`featurenerf_ns.teachers.cache`),
  float16, memory-mapped so that reading a few views touches only those views' bytes, either

  - *dense*: a plain ``(NV, D, h, w)`` float16 array, or
  - *sparse* (the default written by :func:`write_teacher_features`): a 1-D uint8 array holding a
    64-byte header (magic ``FNTFEAT1``, then int64 ``NV, D, h, w, P``), the bit-packed map of the
    ``P`` cells that are not all-zero (view, row, col order; padded to 64 bytes), then those cells'
    ``(P, D)`` float16 vectors. Teachers zero the background, so this keeps only the foreground
    (about a third of a ShapeNet view) and is lossless with respect to the dense float16 array.

:func:`open_teacher_features` hides the format behind :class:`TeacherFeatures` so that the
datamanager and the transfer benchmarks read any view of any object the same way.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featurenerf_ns.utils.io import DataError

_BAD = "not a readable teacher feature file"
SPARSE_MAGIC = b"FNTFEAT1"
_HEADER = 64


class TeacherFeatures:
    """Teacher feature maps of one object, ``(NV, D, h, w)``, read view by view."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(self.path, "teacher feature file not found")
        self._feats: np.ndarray | None = None
        self._sparse: _Sparse | None = None
        if self.path.suffix == ".npy":
            try:
                arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise DataError(self.path, f"{_BAD} ({e})") from None
            if arr.ndim == 1 and arr.dtype == np.uint8 and bytes(arr[: len(SPARSE_MAGIC)]) == SPARSE_MAGIC:
                self._sparse = _Sparse(self.path, arr)
                shape = self._sparse.shape
            else:
                self._feats, shape = _floats(self.path, arr), arr.shape
        else:
            shape = _npz_shape(self.path)
        if len(shape) != 4:
            raise DataError(self.path, f"'feats' must be (NV, D, h, w), got shape {tuple(shape)}")
        self._shape = tuple(int(s) for s in shape)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self._shape  # type: ignore[return-value]

    @property
    def num_views(self) -> int:
        return self._shape[0]

    @property
    def dim(self) -> int:
        return self._shape[1]

    def _array(self) -> np.ndarray:
        if self._feats is None:
            try:
                with np.load(self.path, allow_pickle=False) as npz:
                    feats = npz["feats"]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
                raise DataError(self.path, f"{_BAD} with a 'feats' array ({e})") from None
            self._feats = _floats(self.path, feats)
        return self._feats

    def read(self, views: Sequence[int]) -> np.ndarray:
        """Feature maps of ``views`` as float32 ``(len(views), D, h, w)``."""
        views = [int(v) for v in views]
        bad = [v for v in views if not -self.num_views <= v < self.num_views]
        if bad:
            raise DataError(self.path, f"views {bad} out of range for {self.num_views} views")
        feats = self._sparse.read(views) if self._sparse is not None else self._array()[views].astype(np.float32)
        if not np.isfinite(feats).all():
            # a NaN would not fail here but turn distillation losses and similarity scores into noise
            raise DataError(self.path, f"views {views} hold NaN or infinite features")
        return feats


class _Sparse:
    """Reader of the sparse float16 layout (see the module docstring)."""

    def __init__(self, path: Path, buf: np.ndarray):
        if buf.size < _HEADER:
            raise DataError(path, f"{_BAD} (truncated header)")
        nv, d, h, w, p = (int(x) for x in np.frombuffer(buf[8:48].tobytes(), dtype="<i8"))
        self.shape = (nv, d, h, w)
        bits = nv * h * w
        mask_bytes = _pad64((bits + 7) // 8)
        start = _HEADER + mask_bytes
        if buf.size != start + 2 * p * d:
            raise DataError(path, f"{_BAD} (size {buf.size} bytes does not match its header {self.shape}, {p} cells)")
        self.mask = np.unpackbits(np.asarray(buf[_HEADER : _HEADER + (bits + 7) // 8]))[:bits].reshape(nv, h * w)
        self.mask = self.mask.astype(bool)
        counts = self.mask.sum(1)
        if int(counts.sum()) != p:
            raise DataError(path, f"{_BAD} (mask has {int(counts.sum())} cells, header says {p})")
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.cells = buf[start:].view("<f2").reshape(p, d)

    def read(self, views: list[int]) -> np.ndarray:
        nv, d, h, w = self.shape
        out = np.zeros((len(views), d, h * w), dtype=np.float32)
        for i, v in enumerate(views):
            v = v % nv
            out[i][:, self.mask[v]] = self.cells[self.offsets[v] : self.offsets[v + 1]].T
        return out.reshape(len(views), d, h, w)


def _floats(path: Path, feats: np.ndarray) -> np.ndarray:
    if not np.issubdtype(feats.dtype, np.floating):
        raise DataError(path, f"{_BAD}: features must be floats, got {feats.dtype}")
    return feats


def _pad64(n: int) -> int:
    return (n + 63) // 64 * 64


def encode_teacher_features(feats: np.ndarray, sparse: bool = True) -> np.ndarray:
    """The array :func:`numpy.save` writes for ``feats`` ``(NV, D, h, w)``: dense or sparse float16."""
    if feats.ndim != 4:
        raise ValueError(f"teacher features must be (NV, D, h, w), got shape {feats.shape}")
    half = np.ascontiguousarray(feats, dtype=np.float16)
    if not sparse:
        return half
    nv, d, h, w = half.shape
    cells = half.reshape(nv, d, h * w).transpose(0, 2, 1)  # (NV, hw, D)
    mask = (cells != 0).any(-1)  # after the float16 cast: what a dense float16 file would hold
    packed = cells[mask]
    header = np.zeros(_HEADER, np.uint8)
    header[:8] = np.frombuffer(SPARSE_MAGIC, np.uint8)
    header[8:48] = np.frombuffer(np.array([nv, d, h, w, packed.shape[0]], dtype="<i8").tobytes(), np.uint8)
    bits = np.packbits(mask.reshape(-1))
    mask_block = np.zeros(_pad64(bits.size), np.uint8)
    mask_block[: bits.size] = bits
    return np.concatenate([header, mask_block, np.ascontiguousarray(packed, dtype="<f2").reshape(-1).view(np.uint8)])


def _npz_shape(path: Path) -> tuple[int, ...]:
    """Shape of an npz's ``feats`` from its header only (no decompression of the data)."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open("feats.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, _ = read_header(f)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(path, f"{_BAD} with a 'feats' array ({e})") from None
    return tuple(shape)


def open_teacher_features(path: os.PathLike | str) -> TeacherFeatures:
    """Open one object's teacher features (see :class:`TeacherFeatures`)."""
    return TeacherFeatures(path)
