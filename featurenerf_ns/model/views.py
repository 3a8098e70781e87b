"""Views of a conditioned object from any camera: full images, single clicked rays, surface points, orbits.

Renders here sample each ray over the data's ``far - near`` centred on its closest approach to the object's centre
(``bounds="object"``, :func:`~featurenerf_ns.model.rendering.object_ray_bounds`), so the camera can be anywhere;
the viewer, exports and orbit videos use them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor

from featurenerf_ns.geometry import look_at_opengl, sphere_direction
from featurenerf_ns.model.featurenerf import FeatureNeRFModel
from featurenerf_ns.model.field import Conditioning

MIN_ACCUMULATION = 0.5
"""Pixels whose rays accumulate less opacity than this are background (labels, keypoint candidates, clicks)."""


def render_camera_anywhere(
    model: FeatureNeRFModel,
    cond: Conditioning,
    camera: Cameras,
    outputs: frozenset[str] = frozenset({"rgb"}),
    skip_empty: bool = True,
) -> dict[str, Float[Tensor, "H W C"]]:
    """Full image of one camera at any pose (``FeatureNeRFModel.render_camera`` with ``bounds="object"``).

    ``depth`` is the expected depth of the surface hit (far bound for rays that miss); ``skip_empty`` evaluates
    the MLP only in the conditioning's occupied space (``FeatureNeRFModel.occupancy``).
    """
    return model.render_camera(cond, camera, outputs, skip_empty=skip_empty, bounds="object")


@torch.no_grad()
def surface_point(
    model: FeatureNeRFModel,
    cond: Conditioning,
    origin: Float[Tensor, " 3"],
    direction: Float[Tensor, " 3"],
    min_accumulation: float = MIN_ACCUMULATION,
) -> tuple[Float[Tensor, " 3"] | None, float]:
    """World point where a ray meets the object (expected depth of one rendered ray) and the ray's opacity;
    the point is None when the opacity is below ``min_accumulation`` (the ray missed)."""
    out = model.render_ray_chunks(
        cond, origin.view(1, 3).float(), direction.view(1, 3).float(), skip_empty=True, bounds="object"
    )
    acc = float(out["accumulation"][0, 0])
    if acc < min_accumulation:
        return None, acc
    d = F.normalize(direction.view(3).float().to(model.device), dim=0)
    return origin.view(3).float().to(model.device) + d * out["depth"][0, 0], acc


def surface_points(depth: Float[Tensor, "H W 1"], foreground: Tensor, camera: Cameras) -> Float[Tensor, "N 3"]:
    """World points (row-major) of the ``foreground`` pixels (``(H, W)`` bool) of a render's ``depth``."""
    bundle = camera.to(depth.device).generate_rays(camera_indices=0, keep_shape=True)
    fg = foreground.to(depth.device).bool()
    d = F.normalize(bundle.directions[fg], dim=-1)
    return bundle.origins[fg] + d * depth[fg]


def orbit_cameras(reference: Cameras, num_views: int = 24, elevation_deg: float = 30.0) -> Cameras:
    """``num_views`` cameras on a circle around the origin at the reference camera's distance and intrinsics,
    starting at azimuth 0 (+Z) and turning towards +X."""
    ref = reference[0:1].to("cpu")
    radius = float(ref.camera_to_worlds[0, :3, 3].norm())
    az = np.arange(num_views) * (2 * math.pi / num_views)
    eye = torch.from_numpy(radius * sphere_direction(az, math.radians(elevation_deg))).float()
    n = num_views
    return Cameras(
        camera_to_worlds=look_at_opengl(eye),
        fx=ref.fx.expand(n, 1).clone(),
        fy=ref.fy.expand(n, 1).clone(),
        cx=ref.cx.expand(n, 1).clone(),
        cy=ref.cy.expand(n, 1).clone(),
        width=ref.width.expand(n, 1).clone(),
        height=ref.height.expand(n, 1).clone(),
        camera_type=CameraType.PERSPECTIVE,
    )
