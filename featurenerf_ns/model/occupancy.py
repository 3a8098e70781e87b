"""Empty-space skipping for inference: an occupancy grid per conditioning, estimated from the field itself.

After a source is encoded, the field's density is evaluated once at the centres of a coarse grid over the
sampled region and every cell whose density exceeds a threshold, grown by a few cells (dilation, a wider margin at
this first level), is marked occupied. The grid is then refined (twice by default, 32^3 -> 128^3): each occupied
cell is split into 2^3 children, the density is evaluated at their centres, and only the children occupied at that
finer level (threshold, dilation) stay. The density is thus evaluated only where the coarser level found something,
and the margin that dilation adds around every surface is a fine cell rather than a coarse one. Renders then draw
exactly the same samples as the exact path but evaluate the MLP only at the samples that fall in occupied cells (or
outside the grid); the others get density 0, hence compositing weight exactly 0, so their other outputs never
contribute. Rays that cross no occupied cell cost no MLP evaluation at all.

nerfacc's ``OccGridEstimator`` is not used: its ray marching runs only as CUDA kernels, and it places its own
samples at a fixed step, whereas skipping here must keep the stratified and importance samples of the exact path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor


@dataclass(frozen=True)
class OccupancyConfig:
    """Occupancy grid used to skip empty space when rendering without gradients."""

    first_resolution: int = 32
    """Cells per side of the first estimate (the density is evaluated once at each cell centre per conditioning).
    Named so that runs saved with the single 64^3 grid of earlier versions (``resolution: 64``) take the refined
    grid."""
    refinements: int = 2
    """Times every occupied cell is split into 2^3 and kept only where the finer level is occupied: the final grid
    has ``first_resolution * 2**refinements`` cells per side, for density evaluations in occupied cells only."""
    density_threshold: float = 0.0
    """A cell is occupied when the density at its centre exceeds this (0: any positive density)."""
    dilation: int = 1
    """Cells added around every occupied cell (at every level but a refined first one), so that structures thinner
    than a cell between two cell centres are not skipped."""
    first_dilation: int = 2
    """Cells added around the occupied cells of the first estimate when it is refined: it only decides where the
    finer levels evaluate the density, so a wide margin costs few evaluations and keeps the small parts that fall
    between its coarse cell centres."""
    bound: float | None = None
    """Half the side of the cube centred on the object's origin that the grid covers; None = far - near of the
    data. Samples outside the cube are always evaluated."""


@dataclass
class OccupancyGrid:
    """Occupied cells of the cube ``[-bound, bound]^3`` for each of ``B`` conditioned objects."""

    occupied: Bool[Tensor, "B n n n"]
    """Indexed ``[object, x, y, z]``."""
    bound: float

    def contains(self, points: Float[Tensor, "B N 3"]) -> Bool[Tensor, "B N"]:
        """Whether each point must be evaluated: it lies in an occupied cell or outside the grid."""
        B, n = self.occupied.shape[0], self.occupied.shape[-1]
        cell = ((points + self.bound) * (n / (2 * self.bound))).floor().long()
        inside = ((cell >= 0) & (cell < n)).all(-1)
        cell = cell.clamp(0, n - 1)
        flat = (cell[..., 0] * n + cell[..., 1]) * n + cell[..., 2]
        return torch.gather(self.occupied.reshape(B, -1), 1, flat) | ~inside

    def select(self, objects: list[int]) -> OccupancyGrid:
        """The grids of a subset of objects (in the given order)."""
        return OccupancyGrid(self.occupied[objects], self.bound)

    @property
    def fraction(self) -> float:
        """Share of occupied cells."""
        return float(self.occupied.float().mean())


def cell_centers(resolution: int, bound: float, device: torch.device | str = "cpu") -> Float[Tensor, "N 3"]:
    """Centres of the grid's cells in ``[x, y, z]`` row-major order (the order of :attr:`OccupancyGrid.occupied`)."""
    axis = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) * (2 * bound / resolution) - bound
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


DensityAt = Callable[[int, Float[Tensor, "N 3"]], Float[Tensor, " N"]]
"""``density(object, points)``: the field's density of one conditioned object at world points."""


def dilate(occupied: Bool[Tensor, "B n n n"], cells: int) -> Bool[Tensor, "B n n n"]:
    """Grow the occupied cells by ``cells`` in every direction (26-neighbourhood)."""
    if cells <= 0:
        return occupied
    k = 2 * cells + 1
    return F.max_pool3d(occupied[:, None].float(), k, stride=1, padding=cells)[:, 0] > 0


def occupancy_from_density(
    density: Float[Tensor, "B N"], resolution: int, config: OccupancyConfig, bound: float
) -> OccupancyGrid:
    """The first estimate: threshold the densities at the cell centres and dilate the occupied cells by
    ``config.dilation`` (``config.first_dilation`` when the grid will be refined)."""
    occupied = (density > config.density_threshold).view(-1, resolution, resolution, resolution)
    return OccupancyGrid(dilate(occupied, config.first_dilation if config.refinements > 0 else config.dilation), bound)


def refine_occupancy(grid: OccupancyGrid, density: DensityAt, config: OccupancyConfig) -> OccupancyGrid:
    """The grid at twice the resolution: the children of occupied cells whose centre's density exceeds the
    threshold, dilated by ``config.dilation`` (children) and kept within their occupied parents."""
    B, n = grid.occupied.shape[0], grid.occupied.shape[-1]
    candidates = grid.occupied
    for dim in (1, 2, 3):
        candidates = candidates.repeat_interleave(2, dim=dim)
    positive = torch.zeros_like(candidates)
    cell = grid.bound / n  # the children's side: 2 * bound / (2 * n)
    for b in range(B):
        index = candidates[b].nonzero()
        if len(index) > 0:
            centers = (index.float() + 0.5) * cell - grid.bound
            positive[b][tuple(index.T)] = density(b, centers) > config.density_threshold
    return OccupancyGrid(dilate(positive, config.dilation) & candidates, grid.bound)
