"""Dataparser for pixelNeRF's SRN ShapeNet renders (``srn_cars``, ``srn_chairs``).

```
<root>/<cat>_{train,val,test}/<id>/rgb/*.png        RGB renders on white
<root>/<cat>_{train,val,test}/<id>/pose/*.txt       4x4 OpenCV camera-to-world, 16 numbers
<root>/<cat>_{train,val,test}/<id>/intrinsics.txt   first line "f cx cy _", last line "H W"
```
The chairs' train split lives one level deeper, in ``chairs_train/chairs_2.0_train``.
``--data <root>/cars`` and ``--data <root>/cars_train`` both name the data set. Images have no
alpha: the mask is the non-white pixels (see :func:`featurenerf_ns.data.images.load_view`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs

from featurenerf_ns.categories import resolve_category
from featurenerf_ns.dataparsers.base import (
    CategoryDataParser,
    CategoryDataParserConfig,
    ParsedObject,
    cap_objects,
    read_image_size,
)
from featurenerf_ns.layout import SPLITS, list_images
from featurenerf_ns.utils.io import DataError

EXCLUDED_OBJECTS = frozenset({"7edb40d76dff7455c2ff7551a4114669", "95ebb3fd80f885ad676f197a68a5168a"})
"""Cars pixelNeRF drops (bad renders in the public SRN data)."""

NEAR_FAR = {"chair": (1.25, 2.75)}
"""Per-category near/far (pixelNeRF); other categories use (0.8, 1.8)."""
DEFAULT_NEAR_FAR = (0.8, 1.8)

_SPLIT_SUFFIX = re.compile(r"_(train|val|test)$")


@dataclass
class SRNDataParserConfig(CategoryDataParserConfig):
    """pixelNeRF's SRN ShapeNet layout (srn_cars, srn_chairs)."""

    _target: type = field(default_factory=lambda: SRNDataParser)
    data: Path = Path("srn_cars/cars")
    """<root>/<cat> (or <root>/<cat>_train): the splits are <root>/<cat>_train, _val and _test."""
    near: float | None = None
    """Near distance along (unit) rays; default 1.25 for chairs, 0.8 otherwise."""
    far: float | None = None
    """Far distance along (unit) rays; default 2.75 for chairs, 1.8 otherwise."""


class SRNDataParser(CategoryDataParser):
    """Reads SRN renders into cameras (object after object) and per-object records."""

    config: SRNDataParserConfig

    def __init__(self, config: SRNDataParserConfig):
        super().__init__(config)
        self._native_hw: tuple[int, int] | None = None

    def _base(self) -> Path:
        data = Path(self.config.data)
        return data.with_name(_SPLIT_SUFFIX.sub("", data.name))

    def split_dir(self, split: str) -> Path:
        """Folder holding the object folders of ``split``."""
        base = self._base()
        folder = base.with_name(f"{base.name}_{split}")
        deeper = folder / f"{base.name}_2.0_{split}"  # chairs_train/chairs_2.0_train
        return deeper if deeper.is_dir() else folder

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        base = self._base()
        folder = self.split_dir(split)
        if not folder.parent.is_dir():
            raise DataError(folder.parent, "data root not found")
        if not folder.is_dir():
            raise DataError(folder, f"SRN split folder not found (--data names <root>/{base.name})")
        with os.scandir(folder) as it:
            ids = sorted(e.name for e in it if e.is_dir() and e.name not in EXCLUDED_OBJECTS)
        ids = cap_objects(ids, self.config.max_objects)
        if not ids:
            raise DataError(folder, f"no object folders in split {split!r}")
        objects = [self._parse_object(folder / obj_id) for obj_id in ids]

        if self._native_hw is None:
            self._native_hw = read_image_size(objects[0].image_paths[0])
        name = base.name[:-1] if base.name.endswith("s") else base.name
        try:
            cat = resolve_category(name)
            category, synset = cat.name, cat.synset
        except ValueError:
            category, synset = name, None
        near, far = NEAR_FAR.get(category, DEFAULT_NEAR_FAR)
        return self._assemble(
            objects,
            self._native_hw,
            white_background=True,
            metadata={
                "category": category,
                "synset": synset,
                "near": float(self.config.near if self.config.near is not None else near),
                "far": float(self.config.far if self.config.far is not None else far),
                "data_root": str(base.parent),
                "teacher_folder": None,
                "teacher_dim": None,
                "split_file": None,
            },
        )

    def _parse_object(self, obj_dir: Path) -> ParsedObject:
        images = list_images(obj_dir / "rgb")
        try:
            poses = sorted(n for n in os.listdir(obj_dir / "pose") if n.endswith(".txt"))
        except (FileNotFoundError, NotADirectoryError):
            raise DataError(obj_dir / "pose", "pose folder not found") from None
        if len(poses) != len(images):
            problem = f"has {len(poses)} pose files but {obj_dir / 'rgb'} has {len(images)} images"
            raise DataError(obj_dir / "pose", problem)
        if not images:
            raise DataError(obj_dir / "rgb", "no images")
        c2w = np.stack([_read_pose(obj_dir / "pose" / n) for n in poses])
        f, cx, cy = _read_intrinsics(obj_dir / "intrinsics.txt")
        intrinsics = np.tile(np.array([f, f, cx, cy]), (len(images), 1))
        prefix = os.path.join(obj_dir, "rgb", "")
        return ParsedObject(
            obj_id=obj_dir.name,
            image_paths=[prefix + n for n in images],
            c2w_opencv=c2w,
            intrinsics=intrinsics,
        )


def _read_pose(path: Path) -> np.ndarray:
    try:
        values = [float(v) for v in path.read_text().split()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"unreadable pose file ({e})") from None
    except ValueError as e:
        raise DataError(path, f"malformed pose file, expected 16 numbers ({e})") from None
    if len(values) != 16:
        raise DataError(path, f"malformed pose file, expected 16 numbers (a 4x4 matrix), found {len(values)}")
    return np.asarray(values, dtype=np.float64).reshape(4, 4)


def _read_intrinsics(path: Path) -> tuple[float, float, float]:
    """``(f, cx, cy)`` from the first line ``f cx cy _`` of an SRN ``intrinsics.txt``."""
    try:
        first = path.read_text().splitlines()[0].split()
        f, cx, cy = (float(v) for v in first[:3])
    except FileNotFoundError:
        raise DataError(path, "intrinsics file not found") from None
    except (OSError, UnicodeDecodeError, IndexError, ValueError) as e:
        raise DataError(path, f"malformed intrinsics file, expected a first line 'f cx cy _' ({e})") from None
    return f, cx, cy
