"""CPU ray casting of synthetic objects with embree (through trimesh), in the authors' camera convention.

Cameras follow pixelNeRF and the authors' processed ShapeNet renders (see :mod:`featurenerf_ns.layout`):
``transform_matrix`` is an OpenCV camera-to-world matrix (x right, y down, z forward), the focal
length is ``f = W / (2 tan(camera_angle_x / 2))``, the principal point is ``(W/2, H/2)`` and pixel
``(row j, col i)`` is the image point ``(i, j)`` (no half-pixel offset). A pixel is supersampled on
an ``s x s`` grid of sub-pixel rays centred on that point; its alpha is the fraction of rays that hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from featurenerf_ns.synthetic.shapes import SynthObject

CAMERA_ANGLE_X = 0.6911
"""Horizontal field of view (radians) of the ShapeNet renders the authors use."""
CAMERA_DISTANCE = 1.3
"""Distance of every camera from the origin, looking at it."""
NEAR, FAR = 0.8, 1.8
"""The authors' ray bounds; every normalised object lies between them from every camera."""


def focal_length(width: int, camera_angle_x: float = CAMERA_ANGLE_X) -> float:
    """Focal length in pixels, ``W / (2 tan(camera_angle_x / 2))``."""
    return 0.5 * width / np.tan(0.5 * camera_angle_x)


def look_at(position, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenCV camera-to-world matrix (4, 4) of a camera at ``position`` looking at ``target``, image up ~ ``up``."""
    position = np.asarray(position, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - position
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=np.float64))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, position
    return c2w


def sample_poses(
    rng: np.random.Generator,
    num: int,
    distance: float = CAMERA_DISTANCE,
    min_elevation_deg: float = 5.0,
    max_elevation_deg: float = 75.0,
) -> np.ndarray:
    """``num`` random upper-hemisphere cameras (num, 4, 4) looking at the origin.

    Azimuth is uniform; elevation is area-uniform on the sphere between the two bounds, so the
    camera's height above the ground plane is always at least ``distance * sin(min_elevation)``.
    """
    az = rng.uniform(0.0, 2 * np.pi, num)
    lo, hi = np.sin(np.radians(min_elevation_deg)), np.sin(np.radians(max_elevation_deg))
    el = np.arcsin(rng.uniform(lo, hi, num))
    pos = distance * np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], axis=1)
    return np.stack([look_at(p) for p in pos])


def subpixel_offsets(supersample: int) -> np.ndarray:
    """(s*s, 2) sub-pixel offsets ``(dx, dy)`` of an ``s x s`` grid centred on the pixel's image point."""
    g = (np.arange(supersample) + 0.5) / supersample - 0.5
    dx, dy = np.meshgrid(g, g, indexing="xy")
    return np.stack([dx.ravel(), dy.ravel()], axis=1)


def camera_rays(
    c2w: np.ndarray, width: int, height: int, camera_angle_x: float = CAMERA_ANGLE_X, offsets=((0.0, 0.0),)
) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre (3,) and unit world directions (S, H, W, 3) through each pixel's image point + each offset."""
    f = focal_length(width, camera_angle_x)
    jj, ii = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    dirs = []
    for dx, dy in np.asarray(offsets, dtype=np.float64):
        d = np.stack([(ii + dx - width / 2) / f, (jj + dy - height / 2) / f, np.ones_like(ii)], axis=-1)
        dirs.append(d @ c2w[:3, :3].T)
    dirs = np.stack(dirs)
    return c2w[:3, 3].copy(), dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)


def project_points(
    points: np.ndarray, c2w: np.ndarray, width: int, camera_angle_x: float = CAMERA_ANGLE_X, height: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Image points (N, 2) ``[x=col, y=row]`` and camera depths (N,) of world ``points`` (N, 3)."""
    height = width if height is None else height
    f = focal_length(width, camera_angle_x)
    cam = (np.asarray(points, dtype=np.float64) - c2w[:3, 3]) @ c2w[:3, :3]
    z = cam[:, 2]
    return np.stack([f * cam[:, 0] / z + width / 2, f * cam[:, 1] / z + height / 2], axis=1), z


@dataclass
class ViewRender:
    """One rendered view."""

    rgba: np.ndarray
    """(H, W, 4) uint8; RGB premultiplied by coverage over black, alpha = coverage."""
    labels: np.ndarray
    """(H, W) uint8 part label (majority of the sub-pixel hits), 0 exactly where alpha is 0."""
    points: np.ndarray
    """(H, W, 3) float32 canonical hit point of the pixel's labelled part (0 where alpha is 0)."""
    normals: np.ndarray
    """(H, W, 3) float32 world-space unit normal at that point, facing the camera (0 where alpha is 0)."""
    coverage: np.ndarray
    """(H, W) float32 fraction of sub-pixel rays that hit the object."""


def _embree_intersector(mesh: trimesh.Trimesh):
    try:
        from trimesh.ray.ray_pyembree import RayMeshIntersector
    except ImportError as e:  # pragma: no cover - embreex is a dependency
        raise ImportError(
            f"the synthetic renderer needs embree ray casting (pip install embreex); import failed: {e}"
        ) from None
    return RayMeshIntersector(mesh)


class ObjectRenderer:
    """Ray casts one :class:`SynthObject` (embree BVH built once, reused for every view)."""

    def __init__(self, obj: SynthObject):
        self.obj = obj
        self.intersector = _embree_intersector(obj.mesh)
        self._normals = obj.mesh.face_normals
        self._v0 = obj.mesh.triangles[:, 0]

    def cast(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First hits of rays from ``origin`` (3,) along unit ``dirs`` (N, 3).

        Returns:
            Face index (N,) (-1 for a miss) and distance along the ray (N,) (inf for a miss).
        """
        origins = np.broadcast_to(origin, dirs.shape)
        face = np.asarray(self.intersector.intersects_first(origins, dirs), dtype=np.int64)
        t = np.full(len(dirs), np.inf)
        hit = face >= 0
        # exact distance to the hit triangle's plane in float64 (embree itself works in float32)
        n = self._normals[face[hit]]
        t[hit] = np.einsum("nk,nk->n", n, self._v0[face[hit]] - origin) / np.einsum("nk,nk->n", n, dirs[hit])
        return face, t

    def render(
        self, c2w: np.ndarray, width: int, height: int, camera_angle_x: float = CAMERA_ANGLE_X, supersample: int = 2
    ) -> ViewRender:
        """Render RGBA, part labels and per-pixel hit information of one view."""
        origin, dirs = camera_rays(c2w, width, height, camera_angle_x, subpixel_offsets(supersample))
        s = dirs.shape[0]
        flat = dirs.reshape(-1, 3)
        face, t = self.cast(origin, flat)
        hit = face >= 0
        pts = np.zeros_like(flat)
        pts[hit] = origin + t[hit, None] * flat[hit]
        lab = np.zeros(len(flat), dtype=np.int64)
        lab[hit] = self.obj.face_labels[face[hit]]
        nrm = np.zeros_like(flat)
        nrm[hit] = self._normals[face[hit]]
        nrm[hit] *= -np.sign(np.einsum("nk,nk->n", nrm[hit], flat[hit]))[:, None]
        col = np.zeros_like(flat)
        if hit.any():
            light = c2w[:3, :3] @ np.array([-0.35, -0.5, -1.0])  # from the camera, a little above and left
            light /= np.linalg.norm(light)
            shade = 0.3 + 0.7 * np.clip(nrm[hit] @ light, 0.0, 1.0)
            col[hit] = self.obj.texture.albedo(pts[hit], lab[hit]) * shade[:, None]
        hit, lab = hit.reshape(s, height, width), lab.reshape(s, height, width)
        coverage = hit.mean(axis=0)
        rgb = col.reshape(s, height, width, 3).sum(axis=0) / s
        # a pixel's label is the majority label of its sub-pixel hits; its hit info comes from one of them
        num_parts = len(self.obj.category.parts)
        counts = np.stack([(lab == k).sum(axis=0) for k in range(1, num_parts + 1)], axis=-1)
        label = np.where(coverage > 0, counts.argmax(axis=-1) + 1, 0)
        pick = np.argmax(lab == label[None], axis=0)
        jj, ii = np.indices((height, width))
        fg = coverage > 0
        points = np.where(fg[..., None], pts.reshape(s, height, width, 3)[pick, jj, ii], 0.0)
        normals = np.where(fg[..., None], nrm.reshape(s, height, width, 3)[pick, jj, ii], 0.0)
        rgba = np.empty((height, width, 4), dtype=np.uint8)
        rgba[..., :3] = np.clip(np.round(rgb * 255), 0, 255)
        rgba[..., 3] = np.round(coverage * 255)
        return ViewRender(rgba, label.astype(np.uint8), points.astype(np.float32), normals.astype(np.float32),
                          coverage.astype(np.float32))  # fmt: skip

    def visible(self, points: np.ndarray, c2w: np.ndarray, eps: float = 1e-4) -> np.ndarray:
        """Whether surface ``points`` (N, 3) are unoccluded from the camera ``c2w`` (no surface in front)."""
        origin = c2w[:3, 3]
        d = np.asarray(points, dtype=np.float64) - origin
        dist = np.linalg.norm(d, axis=1)
        face, t = self.cast(origin, d / dist[:, None])
        return (face < 0) | (t >= dist - eps)
