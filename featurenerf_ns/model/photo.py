"""Images from outside the data ("photos"): one convention for users' scripts, exports, the viewer and SPair.

A photo is RGBA (alpha = the object's mask) or RGB plus a mask file. The model was trained on views of an object
centred at the origin seen by cameras on a sphere around it, so a photo is brought to that situation:

- **With a camera** (:class:`PhotoCamera`, the authors' camera JSON: OpenCV camera-to-world ``transform_matrix``
  and horizontal field of view ``camera_angle_x``, principal point at the image centre): the image is used as it is,
  resized to the model's image size; its aspect ratio must be the model's.
- **Without one** (the *canonical camera*): the object is cut out as a square around its mask's bounding box with
  a margin (:func:`crop_transform`, the CO3D preprocessing's crop) and resized to the model's size, and the camera
  is the category's typical one: at the training cameras' median distance from the origin and median field of
  view, looking at the origin with +Y up, at azimuth 0 (on +Z) and a chosen elevation
  (``TrainedFeatureNeRF.canonical_camera``). By default the margin makes the object fill the crop as much as it
  fills the training views (median over training views), so it appears at the size the model knows.

The field is then expressed in that camera's world frame: an orbit around the origin turns around the object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jaxtyping import Float, UInt8
from PIL import Image

from featurenerf_ns.data.images import read_image
from featurenerf_ns.dataparsers.co3d_cache import crop_resize, square_crop_box
from featurenerf_ns.utils.io import DataError, UserError, read_json

MASK_THRESHOLD = 127
"""Alpha (or mask) values above this are the object."""


@dataclass(frozen=True)
class PhotoCamera:
    """Cameras of photos in the authors' convention (see the module docstring)."""

    transform_matrix: Float[np.ndarray, "V 4 4"]
    """OpenCV camera-to-world matrices (x right, y down, z forward), one per image."""
    camera_angle_x: float
    """Horizontal field of view in radians."""

    def __post_init__(self) -> None:
        m = np.asarray(self.transform_matrix, dtype=np.float64)
        m = m.reshape(-1, 4, 4) if m.size % 16 == 0 and m.size else m
        if m.ndim != 3 or m.shape[1:] != (4, 4) or not np.isfinite(m).all():
            raise UserError(f"transform_matrix must be finite (4, 4) or (V, 4, 4) matrices, got shape {m.shape}")
        if not (0.0 < float(self.camera_angle_x) < np.pi):
            raise UserError(f"camera_angle_x must be a field of view in radians in (0, pi), got {self.camera_angle_x}")
        object.__setattr__(self, "transform_matrix", m)
        object.__setattr__(self, "camera_angle_x", float(self.camera_angle_x))

    @property
    def num_views(self) -> int:
        return int(self.transform_matrix.shape[0])


@dataclass(frozen=True)
class CropTransform:
    """Square crop ``[left, left + side)^2`` of an image resized to ``size``; pixel-index coordinates."""

    left: int
    top: int
    side: int
    size: int
    image_hw: tuple[int, int]

    @property
    def k(self) -> float:
        return self.size / self.side

    def to_crop(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        return (xy + 0.5 - np.array([self.left, self.top])) * self.k - 0.5

    def from_crop(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        return (xy + 0.5) / self.k + np.array([self.left, self.top]) - 0.5

    def inside_image(self) -> np.ndarray:
        """``(size, size)`` bool: crop pixels whose centre maps inside the original image."""
        c = self.from_crop(np.arange(self.size, dtype=np.float64)[:, None].repeat(2, 1))
        h, w = self.image_hw
        cols = (c[:, 0] >= -0.5) & (c[:, 0] <= w - 0.5)
        rows = (c[:, 1] >= -0.5) & (c[:, 1] <= h - 0.5)
        return rows[:, None] & cols[None, :]

    def apply(self, image: Image.Image, resample: Image.Resampling) -> Image.Image:
        """The crop of a PIL image (zero outside it), resized to ``size``."""
        return crop_resize(image, self.left, self.top, self.side, self.size, resample)


def crop_transform(
    bbox: tuple[int, int, int, int], image_hw: tuple[int, int], size: int, margin: float
) -> CropTransform:
    """The square crop around an inclusive pixel box ``(x0, y0, x1, y1)``: side ``(1 + 2 margin) max(w, h)``."""
    left, top, side = square_crop_box(bbox, margin)
    return CropTransform(left, top, side, size, image_hw)


def mask_box(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive ``(x0, y0, x1, y1)`` of the pixels above :data:`MASK_THRESHOLD` of an ``(H, W)`` uint8 mask."""
    rows, cols = np.nonzero(alpha > MASK_THRESHOLD)
    if rows.size == 0:
        return None
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def read_photo(path: Path, mask: Path | None = None) -> UInt8[np.ndarray, "H W 4"]:
    """A photo as RGBA pixels: an RGBA image (alpha = mask), or an RGB image plus a mask image (object > 127).

    Raises:
        DataError: naming the file: unreadable, no alpha channel and no mask, a mask of another size, or a mask
            without any object pixel.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a folder, expected an image file")
    pixels = read_image(path)
    if mask is not None:
        mask = Path(mask)
        if mask.is_dir():
            raise DataError(mask, "is a folder, expected a mask image")
        try:
            with Image.open(mask) as im:
                alpha = np.asarray(im.convert("L"))
        except FileNotFoundError:
            raise DataError(mask, "mask not found") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(mask, f"not a readable mask image ({e})") from None
        if alpha.shape != pixels.shape[:2]:
            raise DataError(
                mask,
                f"mask is {alpha.shape[0]}x{alpha.shape[1]} but the image {path.name} is "
                f"{pixels.shape[0]}x{pixels.shape[1]} (HxW)",
            )
        rgba = np.concatenate([pixels[..., :3], alpha[..., None]], axis=-1)
        where = mask
    elif pixels.shape[-1] == 4:
        rgba, where = pixels, path
    else:
        raise DataError(path, "has no alpha channel: give a mask image (--mask) or save the photo as RGBA PNG")
    if mask_box(rgba[..., 3]) is None:
        raise DataError(where, "the mask is empty: no pixel marks the object (alpha/mask > 127)")
    return np.ascontiguousarray(rgba)


def read_photo_camera(path: Path) -> PhotoCamera:
    """Cameras of photos from a JSON in the authors' convention: ``{"camera_angle_x", "frames": [{"transform_matrix"},
    ...]}`` (one frame per photo) or ``{"camera_angle_x", "transform_matrix"}``."""
    data = read_json(path)
    if not isinstance(data, dict) or "camera_angle_x" not in data:
        raise DataError(path, "expected a JSON object with camera_angle_x and transform_matrix (or frames)")
    try:
        if "frames" in data:
            matrices = [f["transform_matrix"] for f in data["frames"]]
        elif "transform_matrix" in data:
            matrices = [data["transform_matrix"]]
        else:
            raise KeyError("transform_matrix")
        return PhotoCamera(np.asarray(matrices, dtype=np.float64), float(data["camera_angle_x"]))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(path, f"not a camera in the authors' convention ({e})") from None


def resize_rgba(rgba: UInt8[np.ndarray, "H W 4"], hw: tuple[int, int]) -> UInt8[np.ndarray, "h w 4"]:
    """Resize RGBA pixels (colour and alpha resampled separately, no premultiplication); a no-op at the same size."""
    if tuple(rgba.shape[:2]) == tuple(hw):
        return rgba
    size = (hw[1], hw[0])
    rgb = Image.fromarray(np.ascontiguousarray(rgba[..., :3])).resize(size, Image.Resampling.LANCZOS)
    alpha = Image.fromarray(np.ascontiguousarray(rgba[..., 3])).resize(size, Image.Resampling.BILINEAR)
    return np.concatenate([np.asarray(rgb), np.asarray(alpha)[..., None]], axis=-1)


def crop_photo(rgba: UInt8[np.ndarray, "H W 4"], size: int, margin: float) -> tuple[np.ndarray, CropTransform]:
    """The object of a photo cut out square around its mask (see :func:`crop_transform`), ``(size, size, 4)``;
    pixels outside the photo are transparent."""
    box = mask_box(rgba[..., 3])
    if box is None:
        raise UserError("the photo's mask is empty: no pixel marks the object")
    t = crop_transform(box, rgba.shape[:2], size, margin)
    rgb = t.apply(Image.fromarray(np.ascontiguousarray(rgba[..., :3])), Image.Resampling.LANCZOS)
    alpha = t.apply(Image.fromarray(np.ascontiguousarray(rgba[..., 3])), Image.Resampling.BILINEAR)
    return np.concatenate([np.asarray(rgb), np.asarray(alpha)[..., None]], axis=-1), t


def margin_for_fill(fill: float) -> float:
    """The crop margin that makes an object's longer box side ``fill`` of the crop's side."""
    return max(0.0, (1.0 / float(np.clip(fill, 1e-3, 1.0)) - 1.0) / 2.0)


def object_fill(alpha: np.ndarray) -> float | None:
    """Longer side of the mask's bounding box over the image's longer side (None for an empty mask)."""
    box = mask_box(alpha)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return max(x1 + 1 - x0, y1 + 1 - y0) / max(alpha.shape[:2])


def photo_json(camera: PhotoCamera) -> str:
    """A :class:`PhotoCamera` as the authors' camera JSON (what :func:`read_photo_camera` reads)."""
    frames = [{"transform_matrix": m.tolist()} for m in camera.transform_matrix]
    return json.dumps({"camera_angle_x": camera.camera_angle_x, "frames": frames}, indent=1)
