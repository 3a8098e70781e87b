"""Small geometry helpers shared by the model tests."""

import torch


def look_at_cameras(n: int, radius: float = 1.3, seed: int = 0) -> torch.Tensor:
    """``(n, 3, 4)`` OpenGL camera-to-world matrices on a sphere looking at the origin."""
    g = torch.Generator().manual_seed(seed)
    poses = []
    for _ in range(n):
        d = torch.nn.functional.normalize(torch.randn(3, generator=g) + torch.tensor([0, 1.5, 0]), dim=0)
        eye = d * radius
        forward = -eye / eye.norm()  # camera looks down -z
        right = torch.nn.functional.normalize(torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0])), dim=0)
        up = torch.linalg.cross(right, forward)
        poses.append(torch.stack((right, up, -forward, eye), dim=1))
    return torch.stack(poses)
