"""Camera conventions: focal length, look-at in both conventions, rays vs projection vs nerfstudio, ray casting."""

import math
import sys

import numpy as np
import pytest
import torch
import trimesh

from featurenerf_ns.geometry import (
    CAMERA_ANGLE_X,
    OPENCV_TO_OPENGL,
    MeshRayCaster,
    cameras_from_fov,
    focal_from_fov,
    look_at_opencv,
    look_at_opengl,
    pixel_rays,
    project,
    sphere_direction,
)


def test_focal_from_fov_known_answer():
    # tan(fov / 2) = 1/2 puts the image border one focal length / 2 from the axis: f = W
    assert focal_from_fov(2 * math.atan(0.5), 64) == pytest.approx(64.0, rel=1e-15)
    assert focal_from_fov(math.pi / 2, 40) == pytest.approx(20.0, rel=1e-15)


def test_sphere_direction_known_answers():
    d = sphere_direction([0.0, math.pi / 2, 0.3], [0.0, 0.0, math.pi / 2])
    np.testing.assert_allclose(d, [[0, 0, 1], [1, 0, 0], [0, 1, 0]], atol=1e-15)  # +Z, +X, straight up
    np.testing.assert_allclose(np.linalg.norm(sphere_direction(1.0, 0.4)), 1.0, rtol=1e-15)


def test_look_at_opencv_axes():
    eye = np.array([0.3, 0.8, 1.1])
    c2w = look_at_opencv(eye, target=(0.0, 0.1, 0.0))
    R = c2w[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-15)
    assert np.linalg.det(R) == pytest.approx(1.0)
    forward = np.array([0.0, 0.1, 0.0]) - eye
    np.testing.assert_allclose(R[:, 2], forward / np.linalg.norm(forward), atol=1e-15)  # z looks at the target
    assert R[1, 1] < 0 and R[1, 0] == 0.0  # y points down the image (world up is image up), x stays horizontal
    np.testing.assert_array_equal(c2w[:3, 3], eye)
    np.testing.assert_array_equal(c2w[3], [0, 0, 0, 1])


def test_look_at_opengl_is_opencv_flipped_and_nerfstudio_convention():
    eye = torch.tensor([[0.0, 0.5, 1.2], [1.0, 0.2, -0.4]], dtype=torch.float64)
    c2w = look_at_opengl(eye)
    assert c2w.shape == (2, 3, 4) and c2w.dtype == torch.float64
    for k in range(2):
        expected = (look_at_opencv(eye[k].numpy()) @ OPENCV_TO_OPENGL)[:3]
        np.testing.assert_array_equal(c2w[k].numpy(), expected)
        # nerfstudio looks down -z with +y up: -z points at the origin, y has a positive world-up component
        np.testing.assert_allclose(-c2w[k, :, 2].numpy(), -eye[k].numpy() / eye[k].norm().item(), atol=1e-15)
        assert c2w[k, 1, 1] > 0
    assert look_at_opengl(eye.float()).dtype == torch.float32


def test_projection_inverts_pixel_rays_with_offsets():
    c2w = look_at_opencv([0.4, 0.9, 0.8])
    focal = focal_from_fov(CAMERA_ANGLE_X, 40)
    offsets = np.array([[0.0, 0.0], [0.25, -0.25]])
    origin, dirs = pixel_rays(c2w, focal, (30, 40), offsets)
    assert dirs.shape == (2, 30, 40, 3)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=-1), 1.0, atol=1e-15)
    jj, ii = np.indices((30, 40))
    for s, (dx, dy) in enumerate(offsets):
        uv, z = project(origin + 1.3 * dirs[s].reshape(-1, 3), c2w, focal, (30, 40))
        np.testing.assert_allclose(uv, np.stack([ii.ravel() + dx, jj.ravel() + dy], 1), atol=1e-9)
        assert np.all(z > 0)


def test_authors_cameras_cast_the_pixel_rays():
    """nerfstudio's rays of :func:`cameras_from_fov` (authors' convention) are :func:`pixel_rays`' rays."""
    c2w = look_at_opencv([0.6, 0.7, 0.9])
    cams = cameras_from_fov(c2w[None], CAMERA_ANGLE_X, (24, 32), "authors")
    bundle = cams.generate_rays(camera_indices=0, keep_shape=True)
    origin, dirs = pixel_rays(c2w, focal_from_fov(CAMERA_ANGLE_X, 32), (24, 32))
    np.testing.assert_allclose(bundle.directions.numpy(), dirs[0], atol=2e-6)
    np.testing.assert_allclose(bundle.origins[0, 0].numpy(), origin, atol=1e-6)


def _box_caster() -> MeshRayCaster:
    return MeshRayCaster(trimesh.creation.box(extents=(0.4, 0.4, 0.4)))


def _cast_known_answer(caster: MeshRayCaster) -> None:
    origins = np.array([[0.0, 0.0, 1.0], [0.1, -0.05, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    dirs = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    face, t = caster.first_hits(origins, dirs)
    np.testing.assert_allclose(t, [0.8, 0.8, np.inf, 0.2], atol=1e-12)
    assert face[2] == -1 and (face[[0, 1, 3]] >= 0).all()
    normals = caster.mesh.face_normals[face[[0, 1, 3]]]
    np.testing.assert_allclose(normals, [[0, 0, 1], [0, 0, 1], [1, 0, 0]], atol=1e-12)  # front, front, right face
    # one shared origin broadcasts to every ray
    _, t_shared = caster.first_hits(origins[0], dirs[:2])
    np.testing.assert_array_equal(t_shared, t[[0, 0]])


def test_mesh_ray_caster_embree_known_answer():
    from trimesh.ray.ray_pyembree import RayMeshIntersector

    caster = _box_caster()
    assert isinstance(caster.intersector, RayMeshIntersector)
    _cast_known_answer(caster)


def test_mesh_ray_caster_falls_back_without_embree(monkeypatch):
    monkeypatch.setitem(sys.modules, "trimesh.ray.ray_pyembree", None)  # makes its import fail
    caster = _box_caster()
    assert isinstance(caster.intersector, trimesh.ray.ray_triangle.RayMeshIntersector)
    _cast_known_answer(caster)


def test_fov_and_elevation_invert_their_forward_formulas():
    from featurenerf_ns.geometry import elevation_of, focal_from_fov, fov_from_focal, sphere_direction

    for fov in (0.3, 0.6911, 1.2):
        assert abs(float(fov_from_focal(focal_from_fov(fov, 128), 128)) - fov) < 1e-12
    elevations = np.radians([-60.0, 0.0, 15.0, 89.0])
    points = 2.5 * sphere_direction(np.radians([10.0, 100.0, -150.0, 45.0]), elevations)
    np.testing.assert_allclose(elevation_of(points), elevations, atol=1e-12)
