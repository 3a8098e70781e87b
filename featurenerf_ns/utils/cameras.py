"""Camera helpers shared by benchmarks, tests and orbit renders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def look_at(eye: Float[Tensor, "N 3"], target: Float[Tensor, "3"] | None = None) -> Float[Tensor, "N 3 4"]:
    """OpenGL (nerfstudio) camera-to-world matrices of cameras at ``eye`` looking at ``target`` (+Y up)."""
    target = torch.zeros(3, dtype=eye.dtype) if target is None else target
    forward = F.normalize(target - eye, dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype).expand_as(forward)
    right = F.normalize(torch.linalg.cross(forward, up, dim=-1), dim=-1)
    true_up = torch.linalg.cross(right, forward, dim=-1)
    return torch.stack((right, true_up, -forward, eye), dim=-1)


def random_upper_hemisphere(n: int, radius: float = 1.3, seed: int = 0) -> Float[Tensor, "N 3 4"]:
    """``n`` cameras at ``radius`` above the horizon (elevation 10-70 degrees) looking at the origin."""
    g = torch.Generator().manual_seed(seed)
    azimuth = torch.rand(n, generator=g) * 2 * torch.pi
    elevation = torch.deg2rad(10 + 60 * torch.rand(n, generator=g))
    eye = radius * torch.stack(
        (torch.cos(elevation) * torch.sin(azimuth), torch.sin(elevation), torch.cos(elevation) * torch.cos(azimuth)), -1
    )
    return look_at(eye)
