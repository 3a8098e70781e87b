"""Reading per-object teacher feature files.

The authors store ``<teacher>/<synset>/<obj_id>.npz`` with ``feats``: ``(NV, D, h, w)`` float32.
:func:`open_teacher_features` hides the on-disk format behind :class:`TeacherFeatures` so that the
datamanager and the transfer benchmarks read any view of any object the same way.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featurenerf_ns.utils.io import DataError


class TeacherFeatures:
    """Teacher feature maps of one object, ``(NV, D, h, w)``, read view by view."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(self.path, "teacher feature file not found")
        try:
            self._npz = np.load(self.path, allow_pickle=False)
            self._feats = self._npz["feats"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise DataError(self.path, f"not a readable teacher feature file with a 'feats' array ({e})") from None
        if self._feats.ndim != 4:
            raise DataError(self.path, f"'feats' must be (NV, D, h, w), got shape {self._feats.shape}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self._feats.shape)  # type: ignore[return-value]

    @property
    def num_views(self) -> int:
        return self._feats.shape[0]

    @property
    def dim(self) -> int:
        return self._feats.shape[1]

    def read(self, views: Sequence[int]) -> np.ndarray:
        """Feature maps of ``views`` as float32 ``(len(views), D, h, w)``."""
        return np.asarray(self._feats[list(views)], dtype=np.float32)


def open_teacher_features(path: os.PathLike | str) -> TeacherFeatures:
    """Open one object's teacher features (see :class:`TeacherFeatures`)."""
    return TeacherFeatures(path)
