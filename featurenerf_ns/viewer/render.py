"""Rendering for the viewer: any camera pose, a single clicked ray, orbits.

Training and evaluation sample every ray between the dataset's fixed ``near``/``far`` (0.8-1.8 for
cameras 1.3 from the object). A viewer camera can be anywhere, so here each ray samples the same
length ``far - near`` centred on its closest approach to the object's centre (the world origin):
for the dataset's cameras this is the training interval, and zooming out or in keeps the object
inside the sampled range with the same sample density.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor

from featurenerf_ns.geometry import look_at_opengl
from featurenerf_ns.model.featurenerf import FeatureNeRFModel
from featurenerf_ns.model.field import Conditioning
from featurenerf_ns.model.rendering import render_rays

MIN_ACCUMULATION = 0.5
"""Pixels whose rays accumulate less opacity than this are background (labels, keypoint candidates, clicks)."""


def ray_bounds(
    origins: Float[Tensor, "*R 3"], directions: Float[Tensor, "*R 3"], half_length: float
) -> tuple[Float[Tensor, "*R 1"], Float[Tensor, "*R 1"]]:
    """``near, far`` of each (unit-direction) ray: ``half_length`` either side of its closest point to the origin."""
    closest = -(origins * directions).sum(-1, keepdim=True)
    near = (closest - half_length).clamp_min(0.0)
    return near, near + 2 * half_length


@torch.no_grad()
def render_rays_anywhere(
    model: FeatureNeRFModel,
    cond: Conditioning,
    origins: Float[Tensor, "N 3"],
    directions: Float[Tensor, "N 3"],
    outputs: frozenset[str] = frozenset({"rgb"}),
    chunk: int | None = None,
    skip_empty: bool = True,
) -> dict[str, Float[Tensor, "N C"]]:
    """Render rays of the single conditioned object from any pose (see the module docstring).

    Returns each requested output plus ``depth`` (expected distance along the ray, divided by the
    accumulation; background rays get their ``far``) and ``accumulation``. Sampling uses a generator
    seeded with the model's ``eval_seed``: the same camera always gives the same image. ``skip_empty``
    evaluates the MLP only in the conditioning's occupied space (``FeatureNeRFModel.occupancy``).
    """
    device = model.device
    origins = origins.to(device)
    directions = F.normalize(directions.to(device), dim=-1)
    generator = torch.Generator(device=device).manual_seed(model.eval_seed)
    chunk = chunk or model.config.eval_num_rays_per_chunk
    half = 0.5 * (model.far - model.near)
    occupancy = model.occupancy(cond) if skip_empty else None
    pieces: dict[str, list[Tensor]] = {}
    for i in range(0, origins.shape[0], chunk):
        o, d = origins[None, i : i + chunk], directions[None, i : i + chunk]
        near, far = ray_bounds(o, d, half)
        out = render_rays(model.field, cond, o, d, near, far, model.sampling, outputs, generator, occupancy=occupancy)
        acc = out["accumulation"]
        # Expected depth of the hit surface, not pulled towards the camera by transparent rays; empty
        # rays sit at their far bound so they do not hide 3D markers when the viewer composites depth.
        out["depth"] = torch.where(acc > 1e-3, out["depth"] / acc.clamp_min(1e-3), far)
        for k, v in out.items():
            if not k.endswith("_coarse"):
                pieces.setdefault(k, []).append(v[0])
    return {k: torch.cat(v) for k, v in pieces.items()}


@torch.no_grad()
def render_camera_anywhere(
    model: FeatureNeRFModel,
    cond: Conditioning,
    camera: Cameras,
    outputs: frozenset[str] = frozenset({"rgb"}),
    skip_empty: bool = True,
) -> dict[str, Float[Tensor, "H W C"]]:
    """Full image of one camera with :func:`render_rays_anywhere`; each output ``(H, W, C)``."""
    bundle = camera.to(model.device).generate_rays(camera_indices=0, keep_shape=True)
    H, W = bundle.origins.shape[:2]
    origins, directions = bundle.origins.reshape(-1, 3), bundle.directions.reshape(-1, 3)
    out = render_rays_anywhere(model, cond, origins, directions, outputs, skip_empty=skip_empty)
    return {k: v.view(H, W, -1) for k, v in out.items()}


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
    out = render_rays_anywhere(model, cond, origin.view(1, 3).float(), direction.view(1, 3).float())
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
    """``num_views`` cameras on a circle around the origin at the reference camera's distance and intrinsics."""
    ref = reference[0:1].to("cpu")
    radius = float(ref.camera_to_worlds[0, :3, 3].norm())
    az = torch.arange(num_views, dtype=torch.float32) * (2 * math.pi / num_views)
    el = math.radians(elevation_deg)
    eye = radius * torch.stack(
        (math.cos(el) * torch.sin(az), torch.full_like(az, math.sin(el)), math.cos(el) * torch.cos(az)), dim=-1
    )
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
