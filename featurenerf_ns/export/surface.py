"""The object's surface from the field's density, and what the field says on it.

1. **Region.** The grid covers the box of the conditioning's occupied cells (the empty-space-skipping grid,
   ``FeatureNeRFModel.occupancy``: cells with positive density, dilated, padded by one cell) cut to the cube the
   renders sample around the object (half side ``(far - near) / 2``, the length of a ray's samples centred on the
   object), so its resolution is spent where renders can see density.
2. **Density grid.** ``resolution`` samples along the region's longest side, the same spacing on every axis.
3. **Level** (default, :func:`half_opacity_level`): the iso-surface is where the renders see the surface. Rays of
   views around the object (:data:`LEVEL_VIEWS`, the source camera's distance, elevation and intrinsics) are
   integrated through the grid; on each ray that becomes half opaque (the renders' foreground threshold
   ``MIN_ACCUMULATION``), the density at the point where it does is that ray's surface density, and the level is
   their median. It follows the model's own density scale: a sharp, well-trained field gives a high level just
   inside its surfaces, a soft one (little training, one view) a low one, where a fixed number would find no
   surface or a swollen one.
4. **Marching cubes** (``skimage.measure.marching_cubes``) on the grid padded with zero density, so the surface is
   closed where the object touches the region's border. Normals point outwards (down the density gradient) and
   faces are wound counter-clockwise seen from outside.
5. **Surface points** (point clouds): the marching-cubes surface sampled uniformly by area (a fixed seed), with
   the normal of the face they lie on. Sampling, rather than taking the grid cells at the iso level, puts points
   exactly on the interpolated iso-surface, spreads them evenly whatever the grid's orientation, and makes their
   number an option independent of the grid's resolution.
6. **Attributes**: each point's field colour, v_NeRF (and from it a PCA colour and transferred part labels) are
   queried at the point looking at it from outside (view direction = -normal), as a camera facing the surface sees
   it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from jaxtyping import Float, Int, UInt8
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from featurenerf_ns.export.progress import map_chunks
from featurenerf_ns.export.reference import PartReference
from featurenerf_ns.geometry import elevation_of
from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.model.field import Conditioning
from featurenerf_ns.model.occupancy import OccupancyGrid
from featurenerf_ns.model.views import MIN_ACCUMULATION, orbit_cameras
from featurenerf_ns.utils.colors import colorize_labels, label_palette
from featurenerf_ns.utils.features import PCABasis
from featurenerf_ns.utils.io import UserError

QUERY_CHUNK = 16384
"""Points queried per step of a progress bar."""
LEVEL_VIEWS = 8
"""Views around the object whose rays set the default iso-level (:func:`half_opacity_level`)."""

DensityFunction = Callable[[Float[Tensor, "N 3"]], Float[Tensor, " N"]]


@dataclass(frozen=True)
class DensityGrid:
    """Density sampled on a regular grid, indexed ``[x, y, z]``; sample ``(i, j, k)`` is at
    ``origin + spacing * (i, j, k)``."""

    density: Float[np.ndarray, "X Y Z"]
    origin: Float[np.ndarray, " 3"]
    spacing: float

    def at(self, points: Float[Tensor, "*batch 3"]) -> Float[Tensor, " *batch"]:
        """Trilinear interpolation of the density at world points (0 outside the grid)."""
        shape = torch.tensor(self.density.shape, dtype=torch.float32)
        index = (points.float() - torch.from_numpy(self.origin).float()) / self.spacing
        # grid_sample takes (x, y, z) as (W, H, D) of a (D, H, W) volume: our [x, y, z] array read backwards.
        coords = (index / (shape - 1) * 2 - 1).flip(-1).reshape(1, -1, 1, 1, 3)
        volume = torch.from_numpy(self.density).float()[None, None]
        values = F.grid_sample(volume, coords, mode="bilinear", padding_mode="zeros", align_corners=True)
        return values.view(points.shape[:-1])


@dataclass(frozen=True)
class Surface:
    """A triangle mesh with outward unit vertex normals (world coordinates)."""

    vertices: Float[np.ndarray, "V 3"]
    faces: Int[np.ndarray, "F 3"]
    normals: Float[np.ndarray, "V 3"]

    def trimesh(self) -> trimesh.Trimesh:
        return trimesh.Trimesh(self.vertices, self.faces, vertex_normals=self.normals, process=False)


def camera_elevation(camera: Cameras) -> float:
    """Elevation (degrees) of a camera's centre above the horizontal (XZ) plane through the origin."""
    return math.degrees(float(elevation_of(camera.camera_to_worlds[0, :3, 3].double().cpu().numpy())))


def density_box(occupancy: OccupancyGrid, half_side: float) -> tuple[Float[np.ndarray, " 3"], Float[np.ndarray, " 3"]]:
    """World box ``(lower, upper)`` of the occupied cells of a one-object grid (padded by one cell), cut to the cube
    ``[-half_side, half_side]^3``.

    Raises:
        UserError: no cell is occupied in that cube (the field is empty for this source).
    """
    occupied = occupancy.occupied[0].cpu().numpy()
    n = occupied.shape[0]
    cell = 2 * occupancy.bound / n
    idx = np.argwhere(occupied)
    lower = np.maximum((idx.min(0) - 1) * cell - occupancy.bound, -half_side) if len(idx) else None
    upper = np.minimum((idx.max(0) + 2) * cell - occupancy.bound, half_side) if len(idx) else None
    if lower is None or upper is None or not (upper > lower).all():
        raise UserError("the field is empty for this source (zero density around the object): nothing to export")
    return lower.astype(np.float64), upper.astype(np.float64)


def sample_density(
    density: DensityFunction, lower: np.ndarray, upper: np.ndarray, resolution: int, chunk: int = QUERY_CHUNK
) -> DensityGrid:
    """Density at ``resolution`` samples along the box's longest side (same spacing on all axes, box centred)."""
    if resolution < 2:
        raise UserError(f"--resolution must be at least 2, got {resolution}")
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    spacing = float((upper - lower).max()) / (resolution - 1)
    shape = np.maximum(np.ceil((upper - lower) / spacing - 1e-9).astype(int) + 1, 2)
    origin = (lower + upper) / 2 - spacing * (shape - 1) / 2
    axes = [torch.from_numpy(origin[i] + spacing * np.arange(shape[i])).float() for i in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    values = map_chunks(lambda s: {"density": density(points[s])}, len(points), chunk, "Density grid")["density"]
    return DensityGrid(values.reshape(*shape.tolist()).double().numpy(), origin, spacing)


def half_opacity_level(grid: DensityGrid, cameras: Cameras, min_opacity: float = MIN_ACCUMULATION) -> float:
    """The density where rays of ``cameras`` become ``min_opacity`` opaque, median over the rays that do.

    Each pixel's ray is integrated through the grid (trilinear density, ``2 x`` the grid's samples per side along
    the cube's diagonal); the density at the first point where its opacity ``1 - exp(-int density)`` reaches
    ``min_opacity`` is where that ray's surface is. Their median is the level of the surface the renders show.

    Raises:
        UserError: no ray gets that opaque (a field too transparent to have a surface).
    """
    cameras = cameras.to("cpu")
    last = grid.origin + grid.spacing * (np.array(grid.density.shape) - 1)
    far_corner = np.maximum(np.abs(grid.origin), np.abs(last))
    half = float(np.linalg.norm(far_corner))
    steps = 2 * max(grid.density.shape)
    offsets = torch.linspace(-half, half, steps, dtype=torch.float32)
    threshold = -math.log(1.0 - min_opacity)
    levels = []
    for i in range(cameras.shape[0]):
        rays = cameras.generate_rays(camera_indices=i, keep_shape=False)
        origins = rays.origins.reshape(-1, 3)
        dirs = F.normalize(rays.directions.reshape(-1, 3), dim=-1)
        t = -(origins * dirs).sum(-1, keepdim=True) + offsets
        sigma = grid.at(origins[:, None] + dirs[:, None] * t[..., None]).view(len(origins), steps)
        depth = torch.cumsum(sigma * (2 * half / (steps - 1)), dim=-1)
        hit = depth[:, -1] >= threshold
        first = (depth[hit] >= threshold).float().argmax(-1, keepdim=True)
        levels.append(sigma[hit].gather(1, first)[:, 0])
    values = torch.cat(levels)
    if values.numel() == 0:
        raise UserError(
            f"no view of the field reaches opacity {min_opacity} (it is nearly transparent): give --level to choose "
            f"the iso-surface (the density on the grid spans {grid.density.min():.3g}..{grid.density.max():.3g})"
        )
    return float(values.median())


def extract_surface(grid: DensityGrid, level: float) -> Surface:
    """Marching cubes of the density at ``level`` (closed: the grid is padded with zero density).

    Raises:
        UserError: the level is not crossed on the grid (no surface), naming the grid's density range.
    """
    from skimage.measure import marching_cubes

    low, high = float(grid.density.min()), float(grid.density.max())
    if not level > 0 or not low < level < high:
        raise UserError(
            f"no surface at --level {level:g}: the density on the grid spans {low:.3g}..{high:.3g} "
            "(give a positive level inside that range)"
        )
    padded = np.pad(grid.density, 1, constant_values=0.0)
    vertices, faces, normals, _ = marching_cubes(padded, level, spacing=(grid.spacing,) * 3)
    vertices = vertices - grid.spacing + grid.origin
    # skimage's normals point down the gradient (outwards for a density); its faces wind the other way.
    faces = np.ascontiguousarray(faces[:, ::-1]).astype(np.int64)
    normals = normals / np.clip(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12, None)
    return Surface(vertices.astype(np.float32), faces, normals.astype(np.float32))


def object_surface(
    tf: TrainedFeatureNeRF, cond: Conditioning, camera: Cameras, resolution: int, level: float | None = None
) -> tuple[Surface, float]:
    """The surface of a conditioned object (steps 1-4 of the module docstring) and its level.

    Args:
        camera: the source camera (the default level's views keep its distance, elevation and intrinsics).
        level: iso-density; None: :func:`half_opacity_level`.
    """
    model = tf.model
    lower, upper = density_box(model.occupancy(cond), 0.5 * (model.far - model.near))

    def density(points: Tensor) -> Tensor:
        return tf.query(cond, points, outputs=("density",))["density"][:, 0]

    grid = sample_density(density, lower, upper, resolution)
    if level is None:
        level = half_opacity_level(grid, orbit_cameras(camera, LEVEL_VIEWS, camera_elevation(camera)))
    return extract_surface(grid, level), level


def sample_surface(
    surface: Surface, count: int, seed: int = 0
) -> tuple[Float[np.ndarray, "N 3"], Float[np.ndarray, "N 3"]]:
    """``count`` points uniformly by area on the surface and the (outward) normals of their faces."""
    if count < 1:
        raise UserError(f"--num-points must be at least 1, got {count}")
    mesh = surface.trimesh()
    points, face_index = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return points.astype(np.float32), mesh.face_normals[face_index].astype(np.float32)


@dataclass(frozen=True)
class FieldAttributes:
    """What the field gives at surface points (one row per point)."""

    rgb: UInt8[np.ndarray, "N 3"]
    """Field colour seen from outside (view direction = -normal)."""
    v_nerf: Float[Tensor, "N W"]
    pca: UInt8[np.ndarray, "N 3"] | None
    """v_NeRF through a PCA fitted on these points (None when not asked for)."""
    labels: Int[np.ndarray, " N"] | None
    """Part labels transferred from the reference (None without one)."""

    def colors(self, kind: str, num_parts: int) -> UInt8[np.ndarray, "N 3"]:
        """Per-point colours of one kind: ``rgb``, ``pca`` or ``labels`` (label palette)."""
        if kind == "rgb":
            return self.rgb
        if kind == "pca" and self.pca is not None:
            return self.pca
        if kind == "labels" and self.labels is not None:
            return to_uint8(colorize_labels(torch.from_numpy(self.labels), label_palette(num_parts)))
        raise ValueError(f"no {kind} colours were computed")


def to_uint8(colors: Float[Tensor, "*batch 3"]) -> UInt8[np.ndarray, "*batch 3"]:
    """Colours in [0, 1] as 8-bit values."""
    return (colors.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


@torch.no_grad()
def field_attributes(
    tf: TrainedFeatureNeRF,
    cond: Conditioning,
    points: Float[np.ndarray, "N 3"],
    normals: Float[np.ndarray, "N 3"],
    pca: bool,
    reference: PartReference | None,
) -> FieldAttributes:
    """Query colour and v_NeRF at surface points (looking along -normal); PCA colours and labels from v_NeRF."""
    pts = torch.from_numpy(np.asarray(points, dtype=np.float32))
    dirs = -torch.from_numpy(np.asarray(normals, dtype=np.float32))
    out = map_chunks(
        lambda s: tf.query(cond, pts[s], dirs[s], outputs=("rgb", "v_nerf")), len(pts), QUERY_CHUNK, "Surface features"
    )
    v_nerf = out["v_nerf"].float()
    pca_colors = to_uint8(PCABasis.fit(v_nerf).apply(v_nerf)) if pca else None
    labels = reference.label(v_nerf).numpy() if reference is not None else None
    return FieldAttributes(to_uint8(out["rgb"]), v_nerf, pca_colors, labels)
