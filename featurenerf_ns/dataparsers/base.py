"""What the category dataparsers share: options, camera construction and the outputs they return.

Each format-specific parser (the authors' layout, SRN) reads its files into a list of
:class:`ParsedObject` (OpenCV camera-to-world poses and pixelNeRF-style intrinsics at the stored
image size) and hands them to :meth:`CategoryDataParser._assemble`, which builds nerfstudio
``Cameras`` and the per-object :class:`~featurenerf_ns.dataparsers.records.ObjectRecord` metadata.

Pixel conventions and camera construction: :mod:`featurenerf_ns.geometry`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from PIL import Image

from featurenerf_ns.dataparsers.records import ObjectRecord
from featurenerf_ns.geometry import PixelConvention, cameras_from_opencv
from featurenerf_ns.utils.io import DataError, UserError


@dataclass
class ParsedObject:
    """One object as read from disk, before it becomes cameras and an :class:`ObjectRecord`."""

    obj_id: str
    image_paths: list[str]
    """Image file of each view, in view order."""
    c2w_opencv: np.ndarray
    """``(V, 4, 4)`` OpenCV camera-to-world matrices (x right, y down, z forward)."""
    intrinsics: np.ndarray
    """``(V, 4)`` ``[fx, fy, cx, cy]`` in pixels of the stored images, authors' pixel convention."""
    files: dict[str, str | None] = field(default_factory=dict)
    """Optional per-object files: keys of :class:`ObjectRecord` ending in ``_path`` (teacher, annotations)."""


@dataclass
class CategoryDataParserConfig(DataParserConfig):
    """Options shared by the category-level (many objects, few views each) dataparsers."""

    _target: type = field(default_factory=lambda: CategoryDataParser)
    image_size: int | None = None
    """Train/render at this square size (e.g. 64): cameras are scaled, images are resized with area
    interpolation when loaded. None keeps the stored size."""
    pixel_convention: PixelConvention = "authors"
    """'authors': rays through integer pixel coordinates as in pixelNeRF/FeatureNeRF (principal
    point shifted by +0.5 px in nerfstudio's pixel-centre convention); 'centers': rays through pixel
    centres with the stored principal point."""
    max_objects: int | None = None
    """Use at most this many objects per split (the first ones of the split's list), for quick runs."""


class CategoryDataParser(DataParser):
    """Base of the category dataparsers: builds ``DataparserOutputs`` from :class:`ParsedObject`s."""

    config: CategoryDataParserConfig

    def _output_size(self, native_hw: tuple[int, int]) -> tuple[int, int]:
        if self.config.image_size is None:
            return native_hw
        if self.config.image_size <= 0:
            raise UserError(f"--pipeline.datamanager.dataparser.image-size {self.config.image_size}: must be positive")
        return (self.config.image_size, self.config.image_size)

    def _assemble(
        self,
        objects: list[ParsedObject],
        native_hw: tuple[int, int],
        white_background: bool,
        metadata: dict,
    ) -> DataparserOutputs:
        """Cameras, image filenames and object records of one split.

        Args:
            objects: the split's objects, in order.
            native_hw: ``(H, W)`` of the stored images (the size the intrinsics refer to).
            white_background: whether images are composited on white (else black).
            metadata: format-specific entries of ``DataparserOutputs.metadata`` (category, near/far, ...).
        """
        out_h, out_w = self._output_size(native_hw)
        records: list[ObjectRecord] = []
        first = 0
        for obj in objects:
            n = len(obj.image_paths)
            records.append(
                ObjectRecord(
                    obj_id=obj.obj_id, first_view=first, num_views=n, image_paths=tuple(obj.image_paths), **obj.files
                )
            )
            first += n

        object_index = torch.repeat_interleave(
            torch.arange(len(objects)), torch.tensor([r.num_views for r in records])
        ).view(-1, 1)
        view_index = torch.cat([torch.arange(r.num_views) for r in records]).view(-1, 1)
        cameras = cameras_from_opencv(
            np.concatenate([o.c2w_opencv for o in objects]),
            np.concatenate([o.intrinsics for o in objects]),
            native_hw,
            (out_h, out_w),
            self.config.pixel_convention,
            metadata={"object_index": object_index.long(), "view_index": view_index.long()},
        )
        image_filenames = [Path(p) for r in records for p in r.image_paths]
        bg = 1.0 if white_background else 0.0
        return DataparserOutputs(
            image_filenames=image_filenames,
            cameras=cameras,
            alpha_color=torch.full((3,), bg),
            scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])),
            metadata={
                "objects": records,
                "image_size": (out_h, out_w),
                "native_image_size": tuple(native_hw),
                "white_background": white_background,
                **metadata,
            },
        )


def read_image_size(path: os.PathLike | str) -> tuple[int, int]:
    """``(H, W)`` of an image from its header (the pixels are not decoded)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise DataError(path, "image not found") from None
    except (OSError, ValueError) as e:
        raise DataError(path, f"not a readable image ({e})") from None
    return int(h), int(w)


def cap_objects(ids: list[str], max_objects: int | None) -> list[str]:
    """The first ``max_objects`` ids (all when None)."""
    return ids if max_objects is None else ids[: max(0, max_objects)]
