"""What an export encodes: a dataset object's source view(s), or a photo from outside the data.

A photo goes through :mod:`featurenerf_ns.model.photo`'s convention: RGBA (alpha = mask) or RGB plus ``--mask``;
with ``--camera`` it is used as it is (aspect ratio of the model's images), without one it is cropped around its
mask and seen by the category's canonical camera (azimuth 0, ``--elevation``), so the exported geometry is in
that camera's world frame. A dataset object is encoded exactly as in training and evaluation, in its own frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from nerfstudio.cameras.cameras import Cameras

from featurenerf_ns.export.reference import check_view
from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.model.field import Conditioning
from featurenerf_ns.model.photo import read_photo, read_photo_camera
from featurenerf_ns.utils.io import UserError


@dataclass
class SourceConfig:
    """The source: ``--image PHOTO [--mask M] [--camera C] [--elevation E]`` or ``--object ID [--split]
    [--views]``, exactly one."""

    image: Path | None = None
    """A photo of one object: an RGBA image (alpha = the object's mask) or an RGB image with --mask."""
    mask: Path | None = None
    """Mask of an RGB --image (object > 127, same size)."""
    camera: Path | None = None
    """The photo's camera as the authors' JSON (camera_angle_x + OpenCV transform_matrix); the photo's aspect ratio
    must then be the model's. Default: the photo is cropped around its mask and seen by the canonical camera."""
    elevation: float | None = None
    """Elevation (degrees) of the canonical camera of a photo without --camera; default the training cameras'
    median."""
    object: str | None = None
    """A dataset object id to encode instead of a photo."""
    split: Literal["train", "val", "test"] = "test"
    """Split of --object."""
    views: tuple[int, ...] = (0,)
    """Source view(s) of --object."""

    def check(self) -> None:
        """One-line :class:`UserError` for options that cannot go together (before anything is loaded)."""
        if (self.image is None) == (self.object is None):
            raise UserError("give exactly one source: --image PHOTO (a photo) or --object OBJ_ID (a dataset object)")
        if self.object is not None:
            extra = [f"--{n}" for n in ("mask", "camera", "elevation") if getattr(self, n) is not None]
            if extra:
                raise UserError(f"{', '.join(extra)} only go with --image, not with --object")
            if not self.views:
                raise UserError("--views needs at least one view")
        elif self.camera is not None and self.elevation is not None:
            raise UserError("--elevation sets the canonical camera of a photo without --camera: give one of them")

    @property
    def name(self) -> str:
        """Folder name of this source's exports: the photo's file stem, or ``<object>_<split>_v<views>``."""
        if self.image is not None:
            return self.image.stem
        return f"{self.object}_{self.split}_v{'-'.join(map(str, self.views))}"

    def read_photo(self) -> np.ndarray | None:
        """The photo's RGBA pixels (None for a dataset object); its file errors come before the model loads."""
        return None if self.image is None else read_photo(self.image, self.mask)


@dataclass(frozen=True)
class EncodedSource:
    """A source encoded by the model."""

    cond: Conditioning
    camera: Cameras
    """The (first) source view's camera: orbits keep its distance and intrinsics."""


def encode_source(tf: TrainedFeatureNeRF, config: SourceConfig, photo: np.ndarray | None) -> EncodedSource:
    """Encode the source (``photo``: :meth:`SourceConfig.read_photo`'s pixels).

    Raises:
        UserError: an unknown object or view, a camera file that does not fit the photo.
    """
    if photo is not None:
        camera = None if config.camera is None else read_photo_camera(config.camera)
        prepared = tf.prepare_image(photo, camera, elevation_deg=config.elevation)
        return EncodedSource(tf.encode_image(prepared), tf.photo_cameras(prepared.camera)[0:1])
    obj_id = str(config.object)
    for view in config.views:
        check_view(tf, config.split, obj_id, view)
    cond = tf.encode(config.split, obj_id, list(config.views))
    return EncodedSource(cond, tf.camera(config.split, obj_id, config.views[0]))
