"""The surface pipeline on analytic densities (no model): grid, level, marching cubes, sampling, writers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from featurenerf_ns.export.files import atomic_folder, write_ply
from featurenerf_ns.export.surface import (
    DensityGrid,
    density_box,
    extract_surface,
    half_opacity_level,
    sample_density,
    sample_surface,
)
from featurenerf_ns.geometry import look_at_opengl
from featurenerf_ns.model.occupancy import OccupancyGrid
from featurenerf_ns.utils.io import UserError

RADIUS = 0.3


def ball(points: torch.Tensor, peak: float = 50.0, softness: float = 0.02) -> torch.Tensor:
    """A soft ball of radius RADIUS: density ``peak`` inside, falling to 0 over ``softness`` around the sphere."""
    return peak * torch.sigmoid((RADIUS - points.norm(dim=-1)) / softness)


@pytest.fixture(scope="module")
def grid() -> DensityGrid:
    return sample_density(ball, np.full(3, -0.5), np.full(3, 0.5), 41)


def test_grid_samples_the_box_evenly(grid):
    assert grid.density.shape == (41, 41, 41) and grid.spacing == pytest.approx(0.025)
    assert np.allclose(grid.origin, -0.5)
    # trilinear lookup reproduces the samples at grid points and is 0 outside
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [2.0, 0.0, 0.0]])
    assert np.allclose(grid.at(pts).numpy()[:2], ball(pts)[:2].numpy(), rtol=1e-4)
    assert float(grid.at(pts)[2]) == 0.0


def test_marching_cubes_finds_the_sphere_with_outward_normals(grid):
    surface = extract_surface(grid, 25.0)  # half the peak: exactly at RADIUS
    r = np.linalg.norm(surface.vertices, axis=1)
    assert abs(r.mean() - RADIUS) < 0.005 and r.std() < 0.005
    assert (np.sum(surface.normals * surface.vertices, axis=1) > 0).all()
    mesh = surface.trimesh()
    outward = np.sum(mesh.face_normals * mesh.triangles_center, axis=1)
    assert (outward[mesh.area_faces > 1e-12] > 0).all()  # faces wound outwards too (marching cubes makes some flat)
    assert mesh.is_watertight
    points, normals = sample_surface(surface, 500)
    assert points.shape == (500, 3) and abs(np.linalg.norm(points, axis=1).mean() - RADIUS) < 0.005
    assert np.allclose((normals * points).sum(1) / np.linalg.norm(points, axis=1), 1.0, atol=0.05)


def test_surface_is_closed_where_the_object_touches_the_box():
    cut = sample_density(ball, np.array([-0.5, -0.5, 0.0]), np.array([0.5, 0.5, 0.5]), 41)
    assert extract_surface(cut, 25.0).trimesh().is_watertight


def test_level_outside_the_density_range_is_one_line(grid):
    with pytest.raises(UserError, match=r"no surface at --level 100: the density on the grid spans [0-9.e-]+\.\.50 "):
        extract_surface(grid, 100.0)


def _cameras(num: int = 4, distance: float = 1.3, size: int = 24):
    from nerfstudio.cameras.cameras import Cameras

    az = np.arange(num) * 2 * math.pi / num
    eye = torch.from_numpy(distance * np.stack([np.sin(az), np.full(num, 0.3), np.cos(az)], -1)).float()
    f = torch.full((num, 1), float(size))
    return Cameras(camera_to_worlds=look_at_opengl(eye), fx=f, fy=f, cx=f / 2, cy=f / 2, width=size, height=size)


def test_default_level_is_where_rays_turn_half_opaque():
    """A sharp ball: rays turn opaque right at its sphere, so the level's surface is the ball's. A soft one:
    the level follows its density scale (there is a surface, inside the density's range)."""
    sharp = sample_density(lambda p: ball(p, 200.0, 0.005), np.full(3, -0.5), np.full(3, 0.5), 41)
    level = half_opacity_level(sharp, _cameras())
    r = np.linalg.norm(extract_surface(sharp, level).vertices, axis=1)
    assert abs(r.mean() - RADIUS) < 0.02
    soft = sample_density(lambda p: ball(p, 2.0, 0.05), np.full(3, -0.5), np.full(3, 0.5), 41)
    level = half_opacity_level(soft, _cameras())
    assert 0 < level < 2.0 and len(extract_surface(soft, level).vertices) > 0
    empty = sample_density(lambda p: ball(p, 0.1, 0.05), np.full(3, -0.5), np.full(3, 0.5), 11)
    with pytest.raises(UserError, match=r"nearly transparent\): give --level"):
        half_opacity_level(empty, _cameras())


def test_density_box_is_the_occupied_cells_cut_to_the_render_cube():
    occupied = torch.zeros(1, 8, 8, 8, dtype=torch.bool)
    occupied[0, 3:5, 2:4, 4] = True
    lower, upper = density_box(OccupancyGrid(occupied, 1.0), 0.6)
    assert np.allclose(lower, [-0.5, -0.6, -0.25]) and np.allclose(upper, [0.5, 0.25, 0.5])
    with pytest.raises(UserError, match="empty"):
        density_box(OccupancyGrid(torch.zeros(1, 8, 8, 8, dtype=torch.bool), 1.0), 0.6)


def test_ply_keeps_colours_normals_and_attributes(tmp_path):
    pts = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    colors = np.arange(15, dtype=np.uint8).reshape(5, 3)
    write_ply(tmp_path / "p.ply", pts, colors, normals=pts, attributes={"label": np.arange(5, dtype=np.uint8)})
    raw = trimesh.load(tmp_path / "p.ply").metadata["_ply_raw"]["vertex"]["data"]
    assert np.array_equal(raw["label"], np.arange(5)) and np.array_equal(raw["green"], colors[:, 1])
    assert np.allclose(raw["nx"], pts[:, 0])
    assert [p.name for p in tmp_path.iterdir()] == ["p.ply"]


def test_atomic_folder_leaves_nothing_on_error_and_replaces_on_success(tmp_path):
    target = tmp_path / "frames"
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "a.png").write_bytes(b"x")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    for name in ("old", "new"):
        with atomic_folder(target) as tmp:
            (tmp / f"{name}.png").write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["frames"] and [p.name for p in target.iterdir()] == ["new.png"]
