"""Views around the conditioned object: cameras on a circle -> rendered panels side by side -> frames.

The cameras keep the source camera's distance from the object's centre and its intrinsics
(:func:`~featurenerf_ns.model.views.orbit_cameras`), optionally rescaled. Each frame is its panels side by side:
``rgb`` (the field's colour on the data's background), ``pca`` (v_NeRF through a PCA fitted once on the source
view's foreground, the viewer's choice, so colours do not flicker between frames; faded by the opacity) and
``labels`` (parts transferred from a reference, background black).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from jaxtyping import UInt8
from nerfstudio.cameras.cameras import Cameras

from featurenerf_ns.export.progress import track
from featurenerf_ns.export.reference import PartReference
from featurenerf_ns.export.source import EncodedSource
from featurenerf_ns.export.surface import camera_elevation, to_uint8
from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.model.views import MIN_ACCUMULATION, orbit_cameras
from featurenerf_ns.utils.colors import colorize_labels, label_palette
from featurenerf_ns.utils.features import PCABasis
from featurenerf_ns.utils.io import UserError

Panel = Literal["rgb", "pca", "labels"]


def scaled(cameras: Cameras, scale: float) -> Cameras:
    """The cameras with their image size (and intrinsics) times ``scale``."""
    if not scale > 0:
        raise UserError(f"--scale must be positive, got {scale}")
    out = cameras[:]
    if scale != 1.0:
        out.rescale_output_resolution(scale)
    if int(out.width.min()) < 1 or int(out.height.min()) < 1:
        raise UserError(f"--scale {scale} leaves no pixel of the {int(cameras.width[0])} px wide source camera")
    return out


@torch.no_grad()
def orbit_frames(
    tf: TrainedFeatureNeRF,
    source: EncodedSource,
    num_views: int,
    elevation_deg: float | None,
    panels: Sequence[Panel],
    reference: PartReference | None = None,
    scale: float = 1.0,
) -> list[UInt8[np.ndarray, "H W 3"]]:
    """Frames of ``num_views`` views around the object, each ``len(panels)`` renders wide.

    Args:
        elevation_deg: of the orbit; None: the source camera's.
        panels: ``rgb``, ``pca``, ``labels`` in the order they appear (``labels`` needs ``reference``).
    """
    if num_views < 1:
        raise UserError(f"--num-views must be at least 1, got {num_views}")
    elevation = camera_elevation(source.camera) if elevation_deg is None else elevation_deg
    cameras = scaled(orbit_cameras(source.camera, num_views, elevation), scale)
    outputs = ("rgb", "v_nerf") if {"pca", "labels"} & set(panels) else ("rgb",)
    basis = None
    if "pca" in panels:
        out = tf.render_view(source.cond, scaled(source.camera, scale), ("v_nerf",))
        fg = out["accumulation"][..., 0] >= MIN_ACCUMULATION
        basis = PCABasis.fit(out["v_nerf"][fg] if bool(fg.any()) else out["v_nerf"].flatten(0, 1))
    palette = label_palette(len(reference.part_names)) if reference is not None else None
    frames = []
    for i in track(range(num_views), "Orbit frames"):
        out = tf.render_view(source.cond, cameras[i : i + 1], outputs)
        acc = out["accumulation"]
        images = []
        for panel in panels:
            if panel == "rgb":
                image = out["rgb"]
            elif panel == "pca":
                image = basis.apply(out["v_nerf"]) * acc.clamp(0, 1)  # type: ignore[union-attr]
            else:
                v = out["v_nerf"]
                labels = reference.label(v.flatten(0, 1), (acc[..., 0] >= MIN_ACCUMULATION).flatten())  # type: ignore[union-attr]
                image = colorize_labels(labels.view(acc.shape[:2]), palette)  # type: ignore[arg-type]
            images.append(to_uint8(image.cpu()))
        frames.append(np.concatenate(images, axis=1))
    return frames
