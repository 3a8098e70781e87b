"""Random cameras around the origin for the field and rendering tests (and ``benchmarks/bench_model.py``)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from featurenerf_ns.geometry import CAMERA_ANGLE_X, CAMERA_DISTANCE, focal_from_fov, look_at_opengl, sphere_direction


def random_upper_hemisphere(n: int, radius: float = CAMERA_DISTANCE, seed: int = 0) -> Float[Tensor, "N 3 4"]:
    """``n`` cameras at ``radius`` above the horizon (elevation 10-70 degrees) looking at the origin."""
    g = torch.Generator().manual_seed(seed)
    azimuth = torch.rand(n, generator=g) * 2 * torch.pi
    elevation = torch.deg2rad(10 + 60 * torch.rand(n, generator=g))
    eye = radius * sphere_direction(azimuth.double().numpy(), elevation.double().numpy())
    return look_at_opengl(torch.from_numpy(eye)).float()


def random_cameras(n: int, size: int, seed: int = 0) -> tuple[Float[Tensor, "N 3 4"], Float[Tensor, "N 4"]]:
    """Poses of :func:`random_upper_hemisphere` and ``[fx, fy, cx, cy]`` of the authors' cameras at ``size`` px.

    The principal point is the authors' ``size / 2`` in nerfstudio's pixel-centre convention (+0.5).
    """
    f = focal_from_fov(CAMERA_ANGLE_X, size)
    return random_upper_hemisphere(n, seed=seed), torch.tensor([f, f, size / 2 + 0.5, size / 2 + 0.5]).expand(n, 4)
