"""The panel's *source*: which object views or photo condition the field, and its conditioning.

A source is either views of an object of the data (their own cameras) or a photo: an RGBA image file or an uploaded
PNG, read and prepared as every photo is (:mod:`featurenerf_ns.model.photo`: cropped around its mask, seen by the
category's canonical camera). It is encoded once when it changes, and again (the same images) when training has moved
the weights on.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float, UInt8
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from featurenerf_ns.data.images import read_image
from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.model.field import Conditioning
from featurenerf_ns.model.photo import MASK_THRESHOLD, read_photo
from featurenerf_ns.utils.io import DataError, UserError

SOURCE_ERRORS = (ValueError, IndexError)
"""What a bad source raises (``UserError``/``DataError`` are ``ValueError``\\ s): the panel reports it and keeps the
previous source."""
NEEDS_MASK = "has no alpha channel: the viewer needs the object's mask, save the photo as an RGBA PNG (alpha = mask)"


@dataclass
class Source:
    """The image(s) conditioning the field and where they were seen from."""

    key: tuple
    """What was selected: ``("object", "<split>/<id>", views)``, ``("file", path)`` or ``("upload", name, digest)``."""
    label: str
    """Markdown naming the source (panel, folder names of exports)."""
    camera: Cameras
    """The camera of the first source image (on the model's device)."""
    rgb: Float[Tensor, "S H W 3"]
    """In [0, 1], composited on the dataset's background, as the encoder sees them."""
    mask: Bool[Tensor, "S H W"]
    """Foreground of the images (their alpha)."""
    encode: Callable[[], Conditioning]
    """Encodes the images with the model's current weights."""


@dataclass(frozen=True)
class Upload:
    """An image uploaded from the browser, decoded."""

    name: str
    digest: str
    """SHA-1 of the file's bytes: the same name uploaded again with other pixels is another source."""
    rgba: UInt8[np.ndarray, "H W 4"]


def read_source_photo(path: Path) -> UInt8[np.ndarray, "H W 4"]:
    """A photo for the viewer (:func:`~featurenerf_ns.model.photo.read_photo`); an image without alpha is one line
    saying a mask is needed (the viewer has no mask file option)."""
    if read_image(path).shape[-1] != 4:
        raise DataError(path, NEEDS_MASK)
    return read_photo(path)


def decode_upload(name: str, content: bytes) -> Upload:
    """Decode an uploaded image; errors name the uploaded file, not the temporary copy read here."""
    name = Path(name).name or "upload.png"
    with tempfile.TemporaryDirectory(prefix="featurenerf-upload-") as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        try:
            rgba = read_source_photo(path)
        except DataError as e:
            raise UserError(f"{name}: {e.problem}") from None
    return Upload(name, hashlib.sha1(content).hexdigest(), rgba)


def parse_views(text: str) -> tuple[int, ...]:
    """View indices typed as ``0`` or ``0,2`` (``;`` works too)."""
    try:
        views = tuple(int(v) for v in text.replace(";", ",").split(",") if v.strip())
    except ValueError:
        raise ValueError(f"source views must be comma-separated integers, got {text!r}") from None
    if not views:
        raise ValueError("give at least one source view")
    return views


class SourceState:
    """The selected source and its conditioning, encoded once per change and once per training step."""

    def __init__(self, tf: TrainedFeatureNeRF) -> None:
        self.tf = tf
        self.source: Source | None = None
        self.cond: Conditioning | None = None
        self.upload: Upload | None = None
        """The last image uploaded (a source once selected)."""
        self.encode_count = 0
        """Number of encodings so far (tests check that a change encodes once)."""
        self._encoded_step: int | None = None
        self._failed_key: tuple | None = None

    def retry(self) -> None:
        """Let :meth:`select` try a key that failed before again (the user changed something)."""
        self._failed_key = None

    def select(self, key: tuple, step: int | None) -> bool:
        """Make ``key`` the source, encoding it, unless it already is (then re-encode if training moved to another
        ``step``). A key that failed is not retried until :meth:`retry`.

        Returns:
            True when the source changed.
        Raises:
            ValueError, IndexError: a bad source (unreadable file, wrong view); the previous source stays.
        """
        if self.source is not None and key == self.source.key:
            if step is not None and step != self._encoded_step:
                self.cond = self._encode(self.source)
                self._encoded_step = step
            return False
        if self.source is not None and key == self._failed_key:
            return False
        try:
            source = self.load(key)
        except SOURCE_ERRORS:
            self._failed_key = key
            raise
        cond = self._encode(source)
        # Assigned together at the end: an interrupted load or encoding leaves the previous state intact.
        self.source, self.cond, self._encoded_step, self._failed_key = source, cond, step, None
        return True

    def _encode(self, source: Source) -> Conditioning:
        self.encode_count += 1
        return source.encode()

    def load(self, key: tuple) -> Source:
        """The :class:`Source` of a key (see :attr:`Source.key`), not encoded yet."""
        kind = key[0]
        if kind == "object":
            return self._object_source(key)
        if kind == "file":
            if not key[1]:
                raise ValueError("type the path of an image file in 'Image file'")
            path = Path(key[1]).expanduser()
            return self._photo_source(key, f"`{path.name}`", read_source_photo(path))
        if self.upload is None or key[2] != self.upload.digest:
            raise ValueError("upload an RGBA PNG with 'Upload image' first")
        return self._photo_source(key, f"`{self.upload.name}` (uploaded)", self.upload.rgba)

    def _object_source(self, key: tuple) -> Source:
        _, choice, views = key
        split, _, obj_id = choice.partition("/")
        tf = self.tf
        rec = tf.record(split, obj_id)
        for v in views:
            if not 0 <= v < rec.num_views:
                raise ValueError(f"{obj_id} has views 0..{rec.num_views - 1}, asked for {v}")
        rgba = tf.load_rgba(split, obj_id, views)
        label = f"{choice}, view{'s' if len(views) > 1 else ''} {', '.join(map(str, views))}"
        return Source(
            key, label, tf.camera(split, obj_id, views[0]), rgba[..., :3], rgba[..., 3] > 0.5,
            lambda: tf.encode(split, obj_id, views),
        )  # fmt: skip

    def _photo_source(self, key: tuple, label: str, rgba: UInt8[np.ndarray, "H W 4"]) -> Source:
        tf = self.tf
        prepared = tf.prepare_image(rgba)
        rgb = tf.source_images(prepared.rgba).permute(0, 2, 3, 1)
        mask = torch.from_numpy(prepared.rgba[..., 3] > MASK_THRESHOLD)
        camera = tf.photo_cameras(prepared.camera)[0:1]
        return Source(key, label, camera, rgb, mask, lambda: tf.encode_image(prepared))
