"""Dataparser for the authors' processed ShapeNet layout (see :mod:`featurenerf_ns.layout`).

``--data <root>/<category>`` where ``<category>`` is a name (``chair``) or a synset id
(``03001627``): files live under ``<root>/img/<synset>/...``, so ``<root>/<category>`` itself need
not exist. ``--data synthetic/<category>`` (the default) generates the embedded synthetic category
when that root has no split file for it.

Parsing reads the split file, each object's camera JSON and a listing of each image folder, and
the header of one image; images, annotations and teacher features are opened later, lazily, by the
datamanager.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.utils.rich_utils import CONSOLE

from featurenerf_ns.categories import Category, resolve_category
from featurenerf_ns.dataparsers.base import (
    CategoryDataParser,
    CategoryDataParserConfig,
    ParsedObject,
    cap_objects,
    read_image_size,
)
from featurenerf_ns.geometry import focal_from_fov
from featurenerf_ns.layout import (
    ANNOTATION_SUFFIX,
    DINO_TEACHER_FOLDER,
    DINOV2_TEACHER_FOLDER,
    SPLITS,
    SYNTHETIC_TEACHER_FOLDER,
    CategoryLayout,
    find_split_file,
    list_images,
    read_camera_json,
    read_split_file,
    require_split_file,
    split_object_ids,
)
from featurenerf_ns.teachers.cache import CACHE_SUFFIX, check_fingerprint
from featurenerf_ns.teachers.store import open_teacher_features
from featurenerf_ns.utils.io import DataError

SYNTHETIC_ROOT_NAME = "synthetic"
"""``--data synthetic/<category>`` names the embedded synthetic data."""

EXCLUDED_OBJECTS = frozenset({"f9c1d7748c15499c6f2bd1c4e9adb41"})
"""Objects the authors' loader drops from every split (broken in their processed data)."""

# Annotation folders and the ObjectRecord field each one fills.
_ANNOTATION_FOLDERS = {
    "kp_2d_path": "kp_2d_anno",
    "kp_3d_path": "kp_3d_anno",
    "part_2d_path": "part_2d_anno",
    "part_3d_path": "part_3d_anno",
}


@dataclass
class FeatureNeRFDataParserConfig(CategoryDataParserConfig):
    """The authors' processed ShapeNet layout (img/, camera/, annotations, teacher features, splits)."""

    _target: type = field(default_factory=lambda: FeatureNeRFDataParser)
    data: Path = Path("synthetic/chair")
    """<root>/<category>, category given by name (chair) or synset id (03001627); files are read from
    <root>/img/<synset>, <root>/camera/<synset>, ... 'synthetic/<category>' uses (and if needed
    generates) the embedded synthetic data."""
    splits_file: Path | None = None
    """Split file (JSON with train/val/test lists of object ids). Default: <root>/splits/<synset>.json,
    else <root>/assets/splits/<synset>.json (the authors' repository layout)."""
    teacher: str = "auto"
    """Teacher feature folder under <root>: 'auto' = synth_feat_32 if present, else dino_feat_256, else
    dinov2_feat_448, else none; 'none' = no teacher; any other value = that folder (must exist)."""
    near: float = 0.8
    """Near distance along (unit) rays."""
    far: float = 1.8
    """Far distance along (unit) rays."""
    synthetic_objects: int = 100
    """Number of objects of the embedded synthetic category when it has to be generated."""


class FeatureNeRFDataParser(CategoryDataParser):
    """Reads the authors' layout into cameras (object after object) and per-object records."""

    config: FeatureNeRFDataParserConfig

    def __init__(self, config: FeatureNeRFDataParserConfig):
        super().__init__(config)
        self._resolved: tuple[CategoryLayout, Category, Path, dict] | None = None
        self._native_hw: tuple[int, int] | None = None
        self._teacher_dim: int | None = None

    # ----------------------------------------------------------------------------------------- paths
    def _resolve(self) -> tuple[CategoryLayout, Category, Path, dict]:
        """Data root, category, split file and its contents (once per parser)."""
        if self._resolved is not None:
            return self._resolved
        data = Path(self.config.data)
        try:
            category = self._category(data.name)
        except ValueError as e:
            raise DataError(data, f"{e} (--data is <root>/<category>)") from None
        root = data.parent
        split_file = find_split_file(CategoryLayout(root, category.synset), self.config.splits_file)
        if split_file is None and root.name == SYNTHETIC_ROOT_NAME and self.config.splits_file is None:
            from featurenerf_ns.synthetic.generate import ensure_default_category

            # The default 'synthetic/<category>' lives in the user's cache; an explicit '<dir>/synthetic/<category>'
            # is generated where it was named.
            cache_dir = None if root == Path(SYNTHETIC_ROOT_NAME) else root.parent
            root = Path(
                ensure_default_category(category.name, num_objects=self.config.synthetic_objects, cache_dir=cache_dir)
            )
            CONSOLE.print(f"Using the embedded synthetic '{category.name}' data in {root}")
        if not root.is_dir():
            raise DataError(
                root,
                f"data root not found: --data {data} must be <root>/<category> with <root>/img/{category.synset}/, "
                f"<root>/camera/{category.synset}/ and <root>/splits/{category.synset}.json (the authors' processed "
                f"ShapeNet data, github.com/jianglongye/featurenerf); --data synthetic/{category.name} trains on the "
                "embedded synthetic category",
            )
        layout = CategoryLayout(root, category.synset)
        split_file = require_split_file(layout, self.config.splits_file)
        self._resolved = (layout, category, split_file, read_split_file(split_file))
        return self._resolved

    def _category(self, name: str) -> Category:
        """The category that ``--data``'s last component names (raises ValueError for an unknown one).

        A hook for layouts of other categories: the CO3D parser (:mod:`featurenerf_ns.dataparsers.co3d`)
        overrides it to accept any CO3D category name, whose "synset" folder is the name itself.
        """
        return resolve_category(name)

    def _teacher_folder(self, layout: CategoryLayout) -> str | None:
        choice = self.config.teacher
        if choice == "none":
            return None
        if choice == "auto":
            for folder in (SYNTHETIC_TEACHER_FOLDER, DINO_TEACHER_FOLDER, DINOV2_TEACHER_FOLDER):
                if (layout.root / folder / layout.synset).is_dir():
                    return folder
            return None
        if not (layout.root / choice / layout.synset).is_dir():
            raise DataError(layout.root / choice / layout.synset, "teacher feature folder not found (--teacher)")
        return choice

    # -------------------------------------------------------------------------------------- parsing
    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        layout, category, split_file, splits = self._resolve()
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        ids = self._split_ids(split_file, splits, split)
        if not ids and split == "val" and self._split_ids(split_file, splits, "test"):
            # Small data sets (e.g. a few synthetic objects) may have no validation objects.
            CONSOLE.print(f"[yellow]{split_file}: split 'val' lists no objects; validating on 'test'")
            ids = self._split_ids(split_file, splits, "test")
        if not ids:
            raise DataError(split_file, f"split {split!r} lists no objects")

        teacher = self._teacher_folder(layout)
        # One listing per annotation folder instead of one stat per object and file.
        present = {
            key: _files_by_id(layout.root / folder / layout.synset, (ANNOTATION_SUFFIX,))
            for key, folder in _ANNOTATION_FOLDERS.items()
        }
        if teacher is not None:
            # The authors' features are .npz; featurenerf-teacher's cache writes .npy.
            present["teacher_path"] = _files_by_id(
                layout.root / teacher / layout.synset, (ANNOTATION_SUFFIX, CACHE_SUFFIX)
            )
        meshes = _names(layout.root / "mesh" / layout.synset)

        objects = []
        for obj_id in ids:
            obj = self._parse_object(layout, obj_id, split_file)
            for key, files in present.items():
                if obj_id in files:
                    folder = teacher if key == "teacher_path" else _ANNOTATION_FOLDERS[key]
                    obj.files[key] = str(layout.root / folder / layout.synset / files[obj_id])
            if layout.mesh(obj_id).name in meshes:
                obj.files["mesh_path"] = str(layout.mesh(obj_id))
            objects.append(obj)

        if self._native_hw is None:
            self._native_hw = read_image_size(objects[0].image_paths[0])
        if teacher is not None:
            # features of other renders (another size) would be silently misaligned with these images
            check_fingerprint(layout.root / teacher / layout.synset, {"image_size": list(self._native_hw)})
        if teacher is not None and self._teacher_dim is None and present["teacher_path"]:
            # Any file of the folder will do (a split, e.g. val, may have no teacher features).
            first = present["teacher_path"][min(present["teacher_path"])]
            self._teacher_dim = open_teacher_features(layout.root / teacher / layout.synset / first).dim
        teacher_dim = self._teacher_dim if teacher is not None else None
        return self._assemble(
            objects,
            self._native_hw,
            white_background=False,
            metadata={
                "category": category.name,
                "synset": category.synset,
                "near": float(self.config.near),
                "far": float(self.config.far),
                "data_root": str(layout.root),
                "teacher_folder": teacher,
                "teacher_dim": teacher_dim,
                "split_file": str(split_file),
            },
        )

    def _split_ids(self, split_file: Path, splits: dict, split: str) -> list[str]:
        ids = split_object_ids(split_file, splits, split)
        return cap_objects([i for i in ids if i not in EXCLUDED_OBJECTS], self.config.max_objects)

    def _parse_object(self, layout: CategoryLayout, obj_id: str, split_file: Path) -> ParsedObject:
        cam_path = layout.camera_json(obj_id)
        img_dir = layout.image_dir(obj_id)
        if not cam_path.is_file() and not img_dir.is_dir():
            raise DataError(split_file, f"lists object {obj_id!r}, which has neither {cam_path} nor {img_dir}")
        cams = read_camera_json(cam_path)
        images = list_images(img_dir)
        if len(cams.file_paths) != len(images):
            raise DataError(cam_path, f"has {len(cams.file_paths)} frames but {img_dir} has {len(images)} images")

        image_set = set(images)
        prefix = os.path.join(img_dir, "")  # string joins: pathlib costs more than the JSON parsing here
        paths = []
        for i, file_path in enumerate(cams.file_paths):
            if file_path is None:
                name = images[i]
            else:
                name = os.path.basename(file_path)
                if name not in image_set and f"{name}.png" in image_set:
                    name = f"{name}.png"
                if name not in image_set:
                    raise DataError(cam_path, f"frame {i} names {file_path!r}, which is not in {img_dir}")
            paths.append(prefix + name)

        intrinsics = cams.intrinsics.copy()
        missing = np.isnan(intrinsics[:, 0])
        if missing.any():
            if self._native_hw is None:
                self._native_hw = read_image_size(paths[0])
            h, w = self._native_hw
            focal = focal_from_fov(cams.camera_angle_x, w)
            intrinsics[missing] = (focal, focal, w / 2.0, h / 2.0)
        return ParsedObject(obj_id=obj_id, image_paths=paths, c2w_opencv=cams.c2w, intrinsics=intrinsics)


def _names(folder: Path) -> set[str]:
    try:
        return set(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return set()


def _files_by_id(folder: Path, suffixes: tuple[str, ...]) -> dict[str, str]:
    """``{object id: file name}`` of a per-object folder; the first suffix wins when several exist."""
    files: dict[str, str] = {}
    for suffix in reversed(suffixes):
        files.update({n[: -len(suffix)]: n for n in _names(folder) if n.endswith(suffix)})
    return files
