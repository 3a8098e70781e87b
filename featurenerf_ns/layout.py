"""Paths of the authors' processed ShapeNet layout (and of what this project adds to it), and the one reader of
its files (``read_*``, :func:`list_images`, :func:`find_split_file`): every consumer validates a file the same way
and reports a bad one as a :class:`~featurenerf_ns.utils.io.DataError` naming it.

```
<root>/img/<synset>/<obj_id>/*.png          RGBA renders, sorted names = view order
<root>/camera/<synset>/<obj_id>.json        {"camera_angle_x", "frames": [{"file_path", "transform_matrix"}]}
<root>/kp_2d_anno/<synset>/<obj_id>.npz     labels: object array, per view (K,3) [x=col, y=row, kp_id]
<root>/kp_3d_anno/<synset>/<obj_id>.npz     labels: (K,4) [x,y,z,kp_id]; pts: (N,3) candidate points
<root>/part_2d_anno/<synset>/<obj_id>.npz   labels: (NV,H,W) int, 0 = background
<root>/part_3d_anno/<synset>/<obj_id>.npz   pts: (N,3); labels: (N,)
<root>/<teacher>/<synset>/<obj_id>.npz      feats: (NV,D,h,w), e.g. teacher = dino_feat_256
<root>/mesh/<synset>/<obj_id>.ply           (generated data only) mesh with per-face part labels
<root>/splits/<synset>.json                 train/val/test, cross_inst_pairs, cross_view_pairs
```
``transform_matrix`` is an OpenCV camera-to-world matrix (x right, y down, z forward); the
authors' loader right-multiplies it by ``diag(1, -1, -1, 1)`` to get pixelNeRF's (OpenGL) pose.
Pixel coordinates follow pixelNeRF: pixel ``(row j, col i)`` is at image point ``(i, j)`` and the
principal point is ``(W/2, H/2)``, so ``u = f X/Z + W/2`` gives a column index directly. A frame may carry its
own ``intrinsics`` ``[fx, fy, cx, cy]`` (pixels) instead of the shared ``camera_angle_x`` (CO3D caches do).
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from featurenerf_ns.utils.io import DataError, check_finite, read_json

SPLITS = ("train", "val", "test")
"""The object lists of a split file (and of CO3D's set lists); ``ns-eval`` and the viewer use ``test``."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""Image files of a render folder (matched case-insensitively); their sorted names are the view order."""
ANNOTATION_SUFFIX = ".npz"
"""Annotation files and the authors' teacher features."""
MESH_SUFFIX = ".ply"
"""Labelled meshes of generated data."""
SYNTHETIC_TEACHER_FOLDER = "synth_feat_32"
"""Folder of the synthetic teacher's features (see :mod:`featurenerf_ns.synthetic.teacher`)."""
DINO_TEACHER_FOLDER = "dino_feat_256"
"""Folder of the authors' DINO features."""
DINOV2_TEACHER_FOLDER = "dinov2_feat_448"
"""Folder of the DINOv2 teacher's features (``featurenerf-teacher dinov2``: ViT-S/14 at 448 px, 384 x 32 x 32)."""


@dataclass(frozen=True)
class CategoryLayout:
    """File locations of one category under a data root in the authors' layout."""

    root: Path
    synset: str

    def image_dir(self, obj_id: str) -> Path:
        return self.root / "img" / self.synset / obj_id

    def camera_json(self, obj_id: str) -> Path:
        return self.root / "camera" / self.synset / f"{obj_id}.json"

    def kp_2d(self, obj_id: str) -> Path:
        return self.root / "kp_2d_anno" / self.synset / f"{obj_id}{ANNOTATION_SUFFIX}"

    def kp_3d(self, obj_id: str) -> Path:
        return self.root / "kp_3d_anno" / self.synset / f"{obj_id}{ANNOTATION_SUFFIX}"

    def part_2d(self, obj_id: str) -> Path:
        return self.root / "part_2d_anno" / self.synset / f"{obj_id}{ANNOTATION_SUFFIX}"

    def part_3d(self, obj_id: str) -> Path:
        return self.root / "part_3d_anno" / self.synset / f"{obj_id}{ANNOTATION_SUFFIX}"

    def teacher(self, folder: str, obj_id: str) -> Path:
        return self.root / folder / self.synset / f"{obj_id}{ANNOTATION_SUFFIX}"

    def mesh(self, obj_id: str) -> Path:
        return self.root / "mesh" / self.synset / f"{obj_id}{MESH_SUFFIX}"

    def split_file(self) -> Path:
        return self.root / "splits" / f"{self.synset}.json"

    def split_file_candidates(self) -> tuple[Path, Path]:
        """Where a split file may be, first match wins: ours, then the authors' repository's ``assets/splits``."""
        return self.split_file(), self.root / "assets" / "splits" / f"{self.synset}.json"


# ---------------------------------------------------------------------------------------------- readers


def find_split_file(layout: CategoryLayout, explicit: os.PathLike | str | None = None) -> Path | None:
    """The split file to use: ``explicit`` (``--splits-file``) when given, else the first existing candidate of
    :meth:`CategoryLayout.split_file_candidates`; None when there is none.

    A candidate that exists but is not a file (a folder) is still chosen, so reading it names the problem.

    Raises:
        DataError: ``explicit`` does not exist.
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.exists():
            raise DataError(path, "split file not found")
        return path
    return next((p for p in layout.split_file_candidates() if p.exists()), None)


def require_split_file(layout: CategoryLayout, explicit: os.PathLike | str | None = None) -> Path:
    """:func:`find_split_file`, raising a :class:`DataError` that names both candidates when there is none."""
    path = find_split_file(layout, explicit)
    if path is None:
        ours, authors = layout.split_file_candidates()
        raise DataError(ours, f"split file not found (nor {authors}); pass --splits-file")
    return path


def read_split_file(path: os.PathLike | str) -> dict:
    """A split file's content: ``train``/``val``/``test`` object lists and, optionally, the pair lists."""
    splits = read_json(path)
    if not isinstance(splits, dict):
        raise DataError(path, "expected a JSON object with 'train', 'val' and 'test' lists")
    return splits


def split_object_ids(path: os.PathLike | str, splits: dict, split: str) -> list[str]:
    """The object ids that ``splits`` (:func:`read_split_file` of ``path``) lists under ``split``."""
    if split not in splits:
        raise DataError(path, f"no {split!r} list (keys: {sorted(splits)})")
    ids = splits[split]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise DataError(path, f"expected a list of object ids under {split!r}")
    return ids


def list_images(folder: os.PathLike | str, nonempty: bool = False) -> list[str]:
    """Sorted image file names (not paths) of a view folder: the view order.

    Args:
        folder: the folder.
        nonempty: raise when it holds no image (else an empty list is returned).
    """
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it if e.name.lower().endswith(IMAGE_SUFFIXES) and not e.name.startswith(".")]
    except FileNotFoundError:
        raise DataError(folder, "image folder not found") from None
    except NotADirectoryError:
        raise DataError(folder, "expected an image folder, found a file") from None
    if nonempty and not names:
        raise DataError(folder, f"no images ({'/'.join(IMAGE_SUFFIXES)})")
    names.sort()
    return names


class CameraFile(NamedTuple):
    """An object's camera JSON, validated."""

    camera_angle_x: float | None
    """Horizontal field of view in radians, shared by the frames without intrinsics; None when absent (CO3D caches
    give every frame its intrinsics)."""
    file_paths: list[str | None]
    """Each frame's ``file_path`` as written (None when the frame has none: the view order is the sorted names)."""
    c2w: np.ndarray
    """``(V, 4, 4)`` float64 OpenCV camera-to-world matrices."""
    intrinsics: np.ndarray
    """``(V, 4)`` float64 ``[fx, fy, cx, cy]`` in pixels; NaN rows for the frames that use ``camera_angle_x``."""


def read_camera_json(path: os.PathLike | str) -> CameraFile:
    """Read and check a camera JSON: ``frames`` with a finite 4x4 ``transform_matrix`` each, and per frame either
    ``intrinsics`` ``[fx, fy, cx, cy]`` or the file's ``camera_angle_x`` (in (0, pi))."""
    cams = read_json(path)
    try:
        frames = cams["frames"]
        if not isinstance(frames, list):
            raise TypeError("'frames' is not a list")
        c2w = np.asarray([f["transform_matrix"] for f in frames], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as e:
        problem = f"malformed camera file, expected 'frames' with 'transform_matrix' ({e})"
        raise DataError(path, problem) from None
    if not frames:
        raise DataError(path, "has no frames")
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise DataError(path, f"transform_matrix must be 4x4, got shape {c2w.shape[1:]}")
    check_finite(path, "transform_matrix", c2w)

    fov = cams.get("camera_angle_x")
    if fov is not None:
        try:
            fov = float(fov)
        except (TypeError, ValueError):
            raise DataError(path, f"camera_angle_x must be a number, got {fov!r}") from None
        if not 0.0 < fov < math.pi:
            raise DataError(path, f"camera_angle_x must be in (0, pi), got {fov}")
    intrinsics = np.full((len(frames), 4), np.nan)
    for i, frame in enumerate(frames):
        given = frame.get("intrinsics") if isinstance(frame, dict) else None
        if given is not None:
            try:
                intrinsics[i] = np.asarray(given, dtype=np.float64).reshape(4)
            except (TypeError, ValueError):
                raise DataError(path, f"frame {i}: 'intrinsics' must be [fx, fy, cx, cy]") from None
            # NaN marks the frames without intrinsics: a given one must be finite
            if not np.isfinite(intrinsics[i]).all():
                raise DataError(path, f"intrinsics of frame {i} is not finite (NaN or infinity)")
        elif fov is None:
            raise DataError(path, f"frame {i} has no 'intrinsics' and the file has no 'camera_angle_x'")
    file_paths = [f.get("file_path") if isinstance(f, dict) else None for f in frames]
    return CameraFile(fov, [None if p is None else str(p) for p in file_paths], c2w, intrinsics)


def _load_npz(path: Path, keys: tuple[str, ...], allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` file (all read into memory)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "annotation file not found")
    try:
        with np.load(path, allow_pickle=allow_pickle) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DataError(path, f"missing array(s) {missing}; found {sorted(z.files)}")
            return {k: z[k] for k in keys}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(path, f"not a readable .npz file ({e})") from None


def read_kp_2d(path: os.PathLike | str) -> list[np.ndarray]:
    """2D keypoints per view, each ``(K, 3)`` float64 [x=col, y=row, id], of a ``kp_2d_anno`` file."""
    labels = _load_npz(Path(path), ("labels",), allow_pickle=True)["labels"]
    if labels.ndim == 0:
        raise DataError(path, f"'labels' must hold one keypoint array per view, got {labels!r}")
    views = []
    for v, arr in enumerate(labels):
        try:
            a = np.asarray(arr, dtype=np.float64)
        except (TypeError, ValueError):
            a = None
        # a view's (K, 3) array may be stored flat; a view without keypoints may be any empty array
        if a is None or a.ndim > 2 or a.size % 3 or (a.ndim == 2 and a.size and a.shape[1] != 3):
            raise DataError(path, f"view {v}: keypoints must be (K, 3) [x, y, id], got {np.shape(arr)}")
        views.append(a.reshape(-1, 3))
    return views


def read_kp_3d(path: os.PathLike | str) -> tuple[np.ndarray, np.ndarray]:
    """3D keypoints ``(K, 4)`` [x, y, z, id] and candidate points ``(N, 3)`` (float64) of a ``kp_3d_anno`` file."""
    z = _load_npz(Path(path), ("labels", "pts"))
    labels = np.asarray(z["labels"], dtype=np.float64)
    pts = np.asarray(z["pts"], dtype=np.float64)
    if labels.ndim != 2 or labels.shape[1] != 4:
        raise DataError(path, f"'labels' must be (K, 4) [x, y, z, id], got shape {labels.shape}")
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise DataError(path, f"'pts' must be (N, 3) candidate points, got shape {pts.shape}")
    return labels, pts


def read_part_2d(path: os.PathLike | str) -> np.ndarray:
    """2D part maps ``(NV, H, W)`` int64 (0 = background) of a ``part_2d_anno`` file."""
    labels = _load_npz(Path(path), ("labels",))["labels"]
    if labels.ndim != 3:
        raise DataError(path, f"'labels' must be (NV, H, W), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(path, f"'labels' must hold integer part labels, got {labels.dtype}")
    return labels.astype(np.int64)


def read_part_3d(path: os.PathLike | str) -> tuple[np.ndarray, np.ndarray]:
    """Labelled points ``(N, 3)`` float64 and their part labels ``(N,)`` int64 of a ``part_3d_anno`` file."""
    z = _load_npz(Path(path), ("pts", "labels"))
    pts = np.asarray(z["pts"], dtype=np.float64)
    labels = np.asarray(z["labels"]).astype(np.int64).reshape(-1)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) != len(labels):
        raise DataError(path, f"'pts' (N, 3) and 'labels' (N,) disagree: {pts.shape} vs {labels.shape}")
    return pts, labels
