"""CPU ray casting of synthetic objects with embree (through trimesh), in the authors' camera convention.

Cameras, focal length and pixel rays are those of :mod:`featurenerf_ns.geometry` (OpenCV poses, pixel
``(row j, col i)`` at image point ``(i, j)``). A pixel is supersampled on an ``s x s`` grid of sub-pixel rays
centred on that point; its alpha is the fraction of rays that hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featurenerf_ns.geometry import (
    CAMERA_ANGLE_X,
    CAMERA_DISTANCE,
    MeshRayCaster,
    focal_from_fov,
    look_at_opencv,
    pixel_rays,
    sphere_direction,
)
from featurenerf_ns.synthetic.shapes import SynthObject

NEAR, FAR = 0.8, 1.8
"""The authors' ray bounds; every normalised object lies between them from every camera."""


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
    return np.stack([look_at_opencv(p) for p in distance * sphere_direction(az, el)])


def subpixel_offsets(supersample: int) -> np.ndarray:
    """(s*s, 2) sub-pixel offsets ``(dx, dy)`` of an ``s x s`` grid centred on the pixel's image point."""
    g = (np.arange(supersample) + 0.5) / supersample - 0.5
    dx, dy = np.meshgrid(g, g, indexing="xy")
    return np.stack([dx.ravel(), dy.ravel()], axis=1)


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


class ObjectRenderer:
    """Ray casts one :class:`SynthObject` (embree BVH built once, reused for every view)."""

    def __init__(self, obj: SynthObject):
        self.obj = obj
        self.caster = MeshRayCaster(obj.mesh)

    def render(
        self, c2w: np.ndarray, width: int, height: int, camera_angle_x: float = CAMERA_ANGLE_X, supersample: int = 2
    ) -> ViewRender:
        """Render RGBA, part labels and per-pixel hit information of one view."""
        focal = focal_from_fov(camera_angle_x, width)
        origin, dirs = pixel_rays(c2w, focal, (height, width), subpixel_offsets(supersample))
        s = dirs.shape[0]
        flat = dirs.reshape(-1, 3)
        face, t = self.caster.first_hits(origin, flat)
        hit = face >= 0
        pts = np.zeros_like(flat)
        pts[hit] = origin + t[hit, None] * flat[hit]
        lab = np.zeros(len(flat), dtype=np.int64)
        lab[hit] = self.obj.face_labels[face[hit]]
        nrm = np.zeros_like(flat)
        nrm[hit] = self.obj.mesh.face_normals[face[hit]]
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
        face, t = self.caster.first_hits(origin, d / dist[:, None])
        return (face < 0) | (t >= dist - eps)
