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
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from featurenerf_ns.categories import Category, resolve_category
from featurenerf_ns.geometry import focal_from_fov, project
from featurenerf_ns.layout import (
    CategoryLayout,
    find_split_file,
    list_images,
    read_camera_json,
    read_kp_2d,
    read_kp_3d,
    read_part_2d,
    read_part_3d,
    read_split_file,
    split_object_ids,
)
from featurenerf_ns.utils.io import DataError

Setting = Literal["cross-instance", "novel-view"]


def read_cameras(path: os.PathLike | str, width: int) -> tuple[np.ndarray, float]:
    """OpenCV camera-to-world matrices ``(NV, 4, 4)`` of a camera JSON and the focal length in pixels at ``width``
    (from ``camera_angle_x``: the benchmarks project with one focal length per object)."""
    cams = read_camera_json(path)
    if cams.camera_angle_x is None:
        raise DataError(path, "no camera_angle_x: the benchmarks need the authors' shared field of view")
    return cams.c2w, focal_from_fov(cams.camera_angle_x, width)


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
        # the dataparser's resolution, so a benchmark reads the split file that training read
        self.split_path = find_split_file(self.layout, split_file) or self.layout.split_file()
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
        return read_split_file(self.split_path)

    def has_split_file(self) -> bool:
        return self.split_path.exists()

    def objects(self, split: str = "test") -> list[str]:
        """Object ids of ``split`` from the split file, else every object with renders."""
        if self.has_split_file():
            return list(split_object_ids(self.split_path, self.split, split))
        folder = self.root / "img" / self.synset
        if not folder.is_dir():
            raise DataError(folder, "render folder not found")
        return sorted(p.name for p in folder.iterdir() if p.is_dir())

    def _image_names(self, obj_id: str) -> tuple[str, ...]:
        return tuple(list_images(self.layout.image_dir(obj_id), nonempty=True))

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
        return tuple(read_kp_2d(self.layout.kp_2d(obj_id)))

    def _part_2d(self, obj_id: str) -> np.ndarray:
        path = self.layout.part_2d(obj_id)
        labels = read_part_2d(path)
        if labels.shape[1:] != self.image_size:
            h, w = self.image_size
            raise DataError(path, f"part maps are {labels.shape[1]}x{labels.shape[2]} but the renders are {h}x{w}")
        return labels

    def _kp_3d(self, obj_id: str) -> tuple[np.ndarray, np.ndarray]:
        return read_kp_3d(self.layout.kp_3d(obj_id))

    def _part_3d(self, obj_id: str) -> tuple[np.ndarray, np.ndarray]:
        return read_part_3d(self.layout.part_3d(obj_id))

    def has_part_2d(self, obj_id: str) -> bool:
        return self.layout.part_2d(obj_id).is_file()

    def foreground(self, obj_id: str, view: int) -> np.ndarray:
        """``(H, W)`` bool: non-zero part label, else render alpha > 0.5."""
        if self.has_part_2d(obj_id):
            return self.part_2d(obj_id)[view] != 0
        return self.image(obj_id, view)[..., 3] > 127

    def _cameras(self, obj_id: str) -> tuple[np.ndarray, float]:
        """OpenCV camera-to-world ``(NV, 4, 4)`` and the focal length at the render size."""
        return read_cameras(self.layout.camera_json(obj_id), self.image_size[1])

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
