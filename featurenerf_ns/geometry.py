"""Camera geometry, one home per convention: poses, focal length, pixel rays, projection, mesh ray casting.

The authors' layout (see :mod:`featurenerf_ns.layout`) and pixelNeRF use:

- **OpenCV poses**: a camera JSON's ``transform_matrix`` is a camera-to-world matrix with x right, y down and
  z forward. nerfstudio's cameras take the **OpenGL** pose (x right, y up, looking down -z): the OpenCV one
  right-multiplied by :data:`OPENCV_TO_OPENGL`, as pixelNeRF does.
- **Focal length from the horizontal field of view**: ``f = W / (2 tan(camera_angle_x / 2))``, principal point
  ``(W/2, H/2)``.
- **Pixels**: the ray of pixel ``(row j, col i)`` goes through image point ``(i, j)``, so ``u = f X/Z + W/2`` is
  a column index directly. nerfstudio casts it through ``(i + 0.5, j + 0.5)``, so ``pixel_convention="authors"``
  shifts the principal point by +0.5 px to reproduce the authors' rays exactly; ``"centers"`` keeps the stored
  principal point (a continuous image coordinate).

The numpy functions work in float64 (data generation, annotation, benchmarks); the torch ones build nerfstudio
:class:`Cameras` for the model. torch, nerfstudio and trimesh are imported by the functions that use them, so the
numpy-only users (``featurenerf-synth``'s worker processes) start without them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np
from jaxtyping import Float, Int

if TYPE_CHECKING:
    import trimesh
    from nerfstudio.cameras.cameras import Cameras
    from torch import Tensor

PixelConvention = Literal["authors", "centers"]

CAMERA_ANGLE_X = 0.6911
"""Horizontal field of view (radians) of the ShapeNet renders the authors use."""
CAMERA_DISTANCE = 1.3
"""Distance from the origin of every camera of the authors' renders, looking at it."""

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
"""Right-multiplied onto an OpenCV camera-to-world matrix to get nerfstudio's (OpenGL) pose."""


def focal_from_fov(camera_angle_x: float, width: int) -> float:
    """Focal length in pixels of a horizontal field of view: ``W / (2 tan(camera_angle_x / 2))`` (in float64)."""
    return width / (2.0 * math.tan(float(camera_angle_x) / 2.0))


def fov_from_focal(focal, width):
    """Horizontal field of view (radians) of a focal length in pixels: the inverse of :func:`focal_from_fov`."""
    return 2.0 * np.arctan(np.asarray(width, dtype=np.float64) / (2.0 * np.asarray(focal, dtype=np.float64)))


def elevation_of(points) -> np.ndarray:
    """Elevation (radians) of points above the XZ plane through the origin: the inverse of :func:`sphere_direction`'s
    second angle (0 for the origin itself)."""
    p = np.asarray(points, dtype=np.float64)
    norm = np.maximum(np.linalg.norm(p, axis=-1), 1e-12)
    return np.arcsin(np.clip(p[..., 1] / norm, -1.0, 1.0))


def sphere_direction(azimuth, elevation) -> Float[np.ndarray, "*N 3"]:
    """Unit vectors at ``azimuth`` (about +Y, 0 at +Z, towards +X) and ``elevation`` above the XZ plane (radians).

    The authors' renders are +Y up: cameras at ``distance * sphere_direction(...)`` orbit the object.
    """
    az, el = np.broadcast_arrays(np.asarray(azimuth, dtype=np.float64), np.asarray(elevation, dtype=np.float64))
    return np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], axis=-1)


def look_at_opencv(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> Float[np.ndarray, "4 4"]:
    """OpenCV camera-to-world matrix of a camera at ``eye`` (3,) looking at ``target``, image up ~ ``up``."""
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=np.float64))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


def look_at_opengl(eye: Float[Tensor, "N 3"], target: Float[Tensor, "3"] | None = None) -> Float[Tensor, "N 3 4"]:
    """nerfstudio (OpenGL) camera-to-world matrices of cameras at ``eye`` looking at ``target`` (+Y up).

    The :func:`look_at_opencv` pose converted with :data:`OPENCV_TO_OPENGL`, in ``eye``'s dtype and device.
    """
    import torch

    tgt = (0.0, 0.0, 0.0) if target is None else target.detach().cpu().double().numpy()
    c2w = np.stack([look_at_opencv(e, tgt) @ OPENCV_TO_OPENGL for e in eye.detach().cpu().double().numpy()])
    return torch.from_numpy(c2w[:, :3]).to(eye)


def pixel_rays(
    c2w: Float[np.ndarray, "4 4"], focal: float, hw: tuple[int, int], offsets=((0.0, 0.0),)
) -> tuple[Float[np.ndarray, "3"], Float[np.ndarray, "S H W 3"]]:
    """Camera centre and unit world directions of every pixel's ray in the authors' pixel convention.

    Args:
        c2w: OpenCV camera-to-world matrix.
        focal: focal length in pixels; the principal point is ``(W/2, H/2)``.
        hw: ``(H, W)`` of the image.
        offsets: ``(S, 2)`` sub-pixel offsets ``(dx, dy)``: ray ``s`` of pixel ``(j, i)`` passes image point
            ``(i + dx_s, j + dy_s)``.
    """
    h, w = hw
    jj, ii = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    dirs = []
    for dx, dy in np.asarray(offsets, dtype=np.float64):
        d = np.stack([(ii + dx - w / 2) / focal, (jj + dy - h / 2) / focal, np.ones_like(ii)], axis=-1)
        dirs.append(d @ c2w[:3, :3].T)
    dirs = np.stack(dirs)
    return c2w[:3, 3].copy(), dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)


def project(
    points: Float[np.ndarray, "N 3"], c2w: Float[np.ndarray, "4 4"], focal: float, hw: tuple[int, int]
) -> tuple[Float[np.ndarray, "N 2"], Float[np.ndarray, " N"]]:
    """Image points ``[x=col, y=row]`` and camera depths of world ``points`` (the inverse of :func:`pixel_rays`)."""
    h, w = hw
    w2c = np.linalg.inv(c2w)
    cam = np.asarray(points, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    # points in the camera plane project far away rather than dividing by zero
    safe = np.where(np.abs(z) < 1e-12, 1e-12, z)
    return np.stack([focal * cam[:, 0] / safe + w / 2.0, focal * cam[:, 1] / safe + h / 2.0], axis=1), z


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
    import torch
    from nerfstudio.cameras.cameras import Cameras, CameraType

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
    import torch

    return torch.cat((cameras.fx, cameras.fy, cameras.cx, cameras.cy), dim=-1)


class MeshRayCaster:
    """First hits of rays on a triangle mesh: embree (through trimesh) when it imports, else trimesh's own caster.

    The BVH is built once and reused for every call. Embree works in float32; the distances are recomputed in
    float64 from the hit triangle's plane.
    """

    def __init__(self, mesh: trimesh.Trimesh):
        import trimesh

        self.mesh = mesh
        try:
            from trimesh.ray.ray_pyembree import RayMeshIntersector

            self.intersector = RayMeshIntersector(mesh)
        except ImportError:  # embreex is a dependency; the fallback is correct but slow
            self.intersector = trimesh.ray.ray_triangle.RayMeshIntersector(mesh)
        self._normals = mesh.face_normals
        self._v0 = mesh.triangles[:, 0]

    def first_hits(
        self, origins: Float[np.ndarray, "N 3"] | Float[np.ndarray, "3"], dirs: Float[np.ndarray, "N 3"]
    ) -> tuple[Int[np.ndarray, " N"], Float[np.ndarray, " N"]]:
        """Nearest hits of rays from ``origins`` (one per ray, or one shared) along unit ``dirs``.

        Returns:
            Face index (-1 for a miss) and distance along the ray (inf for a miss).
        """
        origins = np.broadcast_to(origins, dirs.shape)
        face = np.asarray(self.intersector.intersects_first(origins, dirs), dtype=np.int64)
        t = np.full(len(dirs), np.inf)
        hit = face >= 0
        n = self._normals[face[hit]]
        t[hit] = np.einsum("nk,nk->n", n, self._v0[face[hit]] - origins[hit]) / np.einsum("nk,nk->n", n, dirs[hit])
        return face, t
