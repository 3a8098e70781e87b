"""The annotations and pairs of one category in the authors' processed layout, as the benchmarks read them.

:class:`CategoryData` reads (and caches) what the transfer protocol needs per object: 2D keypoints
and part maps per view, 3D keypoints with candidate points, 3D part points, the RGBA renders (for
figures and, without part maps, the foreground mask) and the cameras. :func:`split_pairs` and
:func:`random_pairs` give the evaluation pairs.

Foreground (the authors' rule): a pixel is foreground when its 2D part label is non-zero; without a
part map the render's alpha (> 0.5) is used instead.
"""

from __future__ import annotations

import functools
import math
import os
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from featurenerf_ns.categories import Category, resolve_category
from featurenerf_ns.geometry import focal_from_fov, project
from featurenerf_ns.layout import IMAGE_SUFFIXES, CategoryLayout
from featurenerf_ns.utils.io import DataError, check_finite, read_json

Setting = Literal["cross-instance", "novel-view"]


def _load_npz(path: Path, keys: tuple[str, ...], allow_pickle: bool = False) -> dict[str, np.ndarray]:
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


def read_camera_json(path: os.PathLike | str, width: int) -> tuple[np.ndarray, float]:
    """OpenCV camera-to-world matrices ``(NV, 4, 4)`` and the focal length in pixels at ``width``."""
    meta = read_json(path)
    try:
        fov = float(meta["camera_angle_x"])
        c2w = np.asarray([f["transform_matrix"] for f in meta["frames"]], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(path, f"expected camera_angle_x and frames[].transform_matrix ({e})") from None
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise DataError(path, f"transform_matrix must be 4x4, got shape {c2w.shape}")
    check_finite(path, "transform_matrix", c2w)
    if not 0.0 < fov < math.pi:
        raise DataError(path, f"camera_angle_x must be in (0, pi), got {fov}")
    return c2w, focal_from_fov(fov, width)


def resolve_data_path(data: os.PathLike | str, category: str | None = None) -> tuple[Path, Category]:
    """Split ``--data`` into the layout root and the category.

    Accepts ``<root>/<category>`` (name or synset; the dataparsers' convention) or ``<root>`` with
    ``category`` given (or inferable when ``<root>/img`` holds exactly one synset).
    """
    path = Path(data)
    if category is not None:
        cat = resolve_category(category)
        if (path / "img").is_dir():
            return path, cat
        if (path.parent / "img").is_dir():
            return path.parent, cat
        raise DataError(path, "no img/ folder here or in the parent: not the authors' processed layout")
    if (path / "img").is_dir():
        synsets = sorted(p.name for p in (path / "img").iterdir() if p.is_dir())
        if len(synsets) == 1:
            return path, resolve_category(synsets[0])
        raise DataError(path, f"holds categories {synsets}; name one (<root>/<category> or --category)")
    try:
        cat = resolve_category(path.name)
    except ValueError as e:
        raise DataError(path, str(e)) from None
    if not (path.parent / "img").is_dir():
        raise DataError(path.parent, "no img/ folder: not the authors' processed layout")
    return path.parent, cat


class CategoryData:
    """Annotations, renders and cameras of one category (cached per object)."""

    def __init__(
        self,
        root: os.PathLike | str,
        category: str,
        split_file: os.PathLike | str | None = None,
        cache_objects: int = 64,
    ):
        self.root = Path(root)
        self.category = resolve_category(category)
        self.synset = self.category.synset
        self.layout = CategoryLayout(self.root, self.synset)
        self.split_path = Path(split_file) if split_file is not None else self.layout.split_file()
        cached = functools.lru_cache(maxsize=cache_objects)
        self.kp_2d = cached(self._kp_2d)  # type: ignore[method-assign]
        self.part_2d = cached(self._part_2d)  # type: ignore[method-assign]
        self.kp_3d = cached(self._kp_3d)  # type: ignore[method-assign]
        self.part_3d = cached(self._part_3d)  # type: ignore[method-assign]
        self.cameras = cached(self._cameras)  # type: ignore[method-assign]
        self.image_names = cached(self._image_names)  # type: ignore[method-assign]

    # ------------------------------------------------------------------ splits and objects
    @functools.cached_property
    def split(self) -> dict:
        """The split file's content (``train``/``val``/``test``, pair lists)."""
        return read_json(self.split_path)

    def has_split_file(self) -> bool:
        return self.split_path.is_file()

    def objects(self, split: str = "test") -> list[str]:
        """Object ids of ``split`` from the split file, else every object with renders."""
        if self.has_split_file():
            ids = self.split.get(split)
            if ids is None:
                raise DataError(self.split_path, f"no {split!r} list (keys: {sorted(self.split)})")
            return list(ids)
        folder = self.root / "img" / self.synset
        if not folder.is_dir():
            raise DataError(folder, "render folder not found")
        return sorted(p.name for p in folder.iterdir() if p.is_dir())

    def _image_names(self, obj_id: str) -> tuple[str, ...]:
        folder = self.layout.image_dir(obj_id)
        if not folder.is_dir():
            raise DataError(folder, "render folder not found")
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES) and not n.startswith("."))
        if not names:
            raise DataError(folder, "no images")
        return tuple(names)

    def num_views(self, obj_id: str) -> int:
        return len(self.image_names(obj_id))

    @functools.cached_property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the renders (from the first object's first image)."""
        obj = self.objects("test")[0] if self.objects("test") else self.objects("train")[0]
        return self.image(obj, 0).shape[:2]

    # ------------------------------------------------------------------ per-object files
    def image(self, obj_id: str, view: int) -> np.ndarray:
        """RGBA render ``(H, W, 4)`` uint8 (alpha 255 when the file has none)."""
        path = self.layout.image_dir(obj_id) / self.image_names(obj_id)[view]
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGBA"))
        except (OSError, ValueError) as e:
            raise DataError(path, f"not a readable image ({e})") from None

    def _kp_2d(self, obj_id: str) -> tuple[np.ndarray, ...]:
        path = self.layout.kp_2d(obj_id)
        labels = _load_npz(path, ("labels",), allow_pickle=True)["labels"]
        views = []
        for v, arr in enumerate(labels):
            a = np.asarray(arr, dtype=np.float64).reshape(-1, 3) if np.size(arr) else np.zeros((0, 3))
            if a.ndim != 2 or a.shape[1] != 3:
                raise DataError(path, f"view {v}: keypoints must be (K, 3) [x, y, id], got {np.shape(arr)}")
            views.append(a)
        return tuple(views)

    def _part_2d(self, obj_id: str) -> np.ndarray:
        path = self.layout.part_2d(obj_id)
        labels = _load_npz(path, ("labels",))["labels"]
        if labels.ndim != 3:
            raise DataError(path, f"'labels' must be (NV, H, W), got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(path, f"'labels' must hold integer part labels, got {labels.dtype}")
        if labels.shape[1:] != self.image_size:
            h, w = self.image_size
            raise DataError(path, f"part maps are {labels.shape[1]}x{labels.shape[2]} but the renders are {h}x{w}")
        return labels.astype(np.int64)

    def _kp_3d(self, obj_id: str) -> tuple[np.ndarray, np.ndarray]:
        path = self.layout.kp_3d(obj_id)
        z = _load_npz(path, ("labels", "pts"))
        labels = np.asarray(z["labels"], dtype=np.float64)
        pts = np.asarray(z["pts"], dtype=np.float64)
        if labels.ndim != 2 or labels.shape[1] != 4:
            raise DataError(path, f"'labels' must be (K, 4) [x, y, z, id], got shape {labels.shape}")
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
            raise DataError(path, f"'pts' must be (N, 3) candidate points, got shape {pts.shape}")
        return labels, pts

    def _part_3d(self, obj_id: str) -> tuple[np.ndarray, np.ndarray]:
        path = self.layout.part_3d(obj_id)
        z = _load_npz(path, ("pts", "labels"))
        pts = np.asarray(z["pts"], dtype=np.float64)
        labels = np.asarray(z["labels"]).astype(np.int64).reshape(-1)
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) != len(labels):
            raise DataError(path, f"'pts' (N, 3) and 'labels' (N,) disagree: {pts.shape} vs {labels.shape}")
        return pts, labels

    def has_part_2d(self, obj_id: str) -> bool:
        return self.layout.part_2d(obj_id).is_file()

    def foreground(self, obj_id: str, view: int) -> np.ndarray:
        """``(H, W)`` bool: non-zero part label, else render alpha > 0.5."""
        if self.has_part_2d(obj_id):
            return self.part_2d(obj_id)[view] != 0
        return self.image(obj_id, view)[..., 3] > 127

    def _cameras(self, obj_id: str) -> tuple[np.ndarray, float]:
        """OpenCV camera-to-world ``(NV, 4, 4)`` and the focal length at the render size."""
        return read_camera_json(self.layout.camera_json(obj_id), self.image_size[1])

    def project(self, obj_id: str, view: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image points ``(N, 2)`` [x=col, y=row] (layout.py's convention) and camera depths of world points."""
        c2w, focal = self.cameras(obj_id)
        return project(points, c2w[view], focal, self.image_size)


# ---------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class Pair:
    """One evaluation pair: transfer from (``src``, ``src_view``) to (``trg``, ``trg_view``)."""

    src: str
    trg: str
    src_view: int
    trg_view: int

    def to_json(self) -> dict:
        if self.src == self.trg:
            return {"model_id": self.src, "src_view": self.src_view, "trg_view": self.trg_view}
        return {"src": self.src, "trg": self.trg, "view": self.src_view}


def split_pairs(data: CategoryData, setting: Setting) -> list[Pair]:
    """The split file's pairs.

    ``cross_inst_pairs`` entries are ``{src, trg, view}``; ``cross_view_pairs`` entries are
    ``{model_id, src_view, trg_view}``.
    """
    key = "cross_inst_pairs" if setting == "cross-instance" else "cross_view_pairs"
    entries = data.split.get(key)
    if entries is None:
        raise DataError(data.split_path, f"no {key!r} list; use --pairs random")
    pairs = []
    try:
        for e in entries:
            if setting == "cross-instance":
                pairs.append(Pair(str(e["src"]), str(e["trg"]), int(e["view"]), int(e["view"])))
            else:
                pairs.append(Pair(str(e["model_id"]), str(e["model_id"]), int(e["src_view"]), int(e["trg_view"])))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(data.split_path, f"malformed {key} entry ({e})") from None
    for obj in sorted({p.src for p in pairs} | {p.trg for p in pairs}):
        if not data.layout.image_dir(obj).is_dir():
            raise DataError(
                data.split_path, f"{key} names object {obj!r}, which has no renders in {data.layout.image_dir(obj)}"
            )
    return pairs


def random_pairs(
    data: CategoryData, setting: Setting, num_pairs: int, seed: int = 0, split: str = "test"
) -> list[Pair]:
    """``num_pairs`` pairs drawn with ``seed`` from ``split``'s objects (distinct objects / distinct views)."""
    objects = data.objects(split)
    rng = random.Random(seed)
    pairs = []
    if setting == "cross-instance":
        if len(objects) < 2:
            raise DataError(
                data.split_path, f"cross-instance pairs need two objects in {split!r}, found {len(objects)}"
            )
        for _ in range(num_pairs):
            src, trg = rng.sample(objects, 2)
            view = rng.randrange(min(data.num_views(src), data.num_views(trg)))
            pairs.append(Pair(src, trg, view, view))
    else:
        for _ in range(num_pairs):
            obj = rng.choice(objects)
            nv = data.num_views(obj)
            if nv < 2:
                raise DataError(data.layout.image_dir(obj), "novel-view pairs need two views")
            s, t = rng.sample(range(nv), 2)
            pairs.append(Pair(obj, obj, s, t))
    return pairs
