"""Camera conventions, one home for each: OpenCV poses, focal length from FOV, pixel centres.

The authors' layout stores OpenCV camera-to-world matrices (x right, y down, z forward) and a
horizontal field of view; pixelNeRF right-multiplies the pose by ``diag(1, -1, -1, 1)`` to get the
OpenGL pose nerfstudio uses, puts the principal point at ``(W/2, H/2)`` and casts the ray of pixel
``(row j, col i)`` through image point ``(i, j)``. nerfstudio casts it through ``(i + 0.5, j + 0.5)``,
so ``pixel_convention="authors"`` shifts the principal point by +0.5 px to reproduce their rays
exactly; ``"centers"`` keeps the stored principal point (a continuous image coordinate).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor

PixelConvention = Literal["authors", "centers"]

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
"""Right-multiplied onto an OpenCV camera-to-world matrix to get nerfstudio's (OpenGL) pose."""


def focal_from_fov(camera_angle_x: float, width: int) -> float:
    """Focal length in pixels of a horizontal field of view: ``W / (2 tan(camera_angle_x / 2))`` (in float64)."""
    return width / (2.0 * math.tan(float(camera_angle_x) / 2.0))


def cameras_from_opencv(
    c2w_opencv: Float[np.ndarray, "N 4 4"],
    intrinsics: Float[np.ndarray, "N 4"],
    native_hw: tuple[int, int],
    out_hw: tuple[int, int] | None = None,
    pixel_convention: PixelConvention = "authors",
    metadata: dict | None = None,
) -> Cameras:
    """nerfstudio cameras from OpenCV poses and ``[fx, fy, cx, cy]`` in the authors' pixel convention.

    Args:
        c2w_opencv: camera-to-world matrices as stored in a camera JSON's ``transform_matrix``.
        intrinsics: pixels of images of size ``native_hw``, principal point in the authors' convention.
        native_hw: ``(H, W)`` the intrinsics refer to.
        out_hw: ``(H, W)`` of the images the cameras are used at (intrinsics scaled); default ``native_hw``.
        pixel_convention: see the module docstring.
        metadata: per-camera metadata (tensors of shape ``(N, 1)``).
    """
    out_h, out_w = native_hw if out_hw is None else out_hw
    sx, sy = out_w / native_hw[1], out_h / native_hw[0]
    offset = 0.5 if pixel_convention == "authors" else 0.0
    c2w = np.asarray(c2w_opencv, dtype=np.float64) @ OPENCV_TO_OPENGL
    intr = np.asarray(intrinsics, dtype=np.float64)
    num = c2w.shape[0]
    return Cameras(
        camera_to_worlds=torch.from_numpy(c2w[:, :3, :4]).float(),
        fx=torch.from_numpy(intr[:, 0:1] * sx).float(),
        fy=torch.from_numpy(intr[:, 1:2] * sy).float(),
        cx=torch.from_numpy(intr[:, 2:3] * sx + offset).float(),
        cy=torch.from_numpy(intr[:, 3:4] * sy + offset).float(),
        width=torch.full((num, 1), out_w, dtype=torch.long),
        height=torch.full((num, 1), out_h, dtype=torch.long),
        camera_type=CameraType.PERSPECTIVE,
        metadata=metadata,
    )


def cameras_from_fov(
    c2w_opencv: Float[np.ndarray, "N 4 4"],
    camera_angle_x: float,
    image_hw: tuple[int, int],
    pixel_convention: PixelConvention = "authors",
) -> Cameras:
    """Cameras of a camera JSON's frames (``transform_matrix`` + ``camera_angle_x``) for images of ``image_hw``."""
    h, w = image_hw
    f = focal_from_fov(camera_angle_x, w)
    intr = np.tile(np.array([f, f, w / 2.0, h / 2.0]), (len(c2w_opencv), 1))
    return cameras_from_opencv(c2w_opencv, intr, image_hw, None, pixel_convention)


def intrinsics_of(cameras: Cameras) -> Float[Tensor, "*N 4"]:
    """``[fx, fy, cx, cy]`` of nerfstudio cameras (the layout :meth:`FeatureNeRFModel.encode` takes)."""
    return torch.cat((cameras.fx, cameras.fy, cameras.cx, cameras.cy), dim=-1)


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
