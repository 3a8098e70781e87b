"""Empty-space skipping for inference: an occupancy grid per conditioning, estimated from the field itself.

After a source is encoded, the field's density is evaluated once at the centres of a coarse grid over the
sampled region and every cell whose density exceeds a threshold, grown by a few cells (dilation), is marked
occupied. Renders then draw exactly the same samples as the exact path but evaluate the MLP only at the samples
that fall in occupied cells (or outside the grid); the others get density 0, hence compositing weight exactly 0,
so their other outputs never contribute. Rays that cross no occupied cell cost no MLP evaluation at all.

nerfacc's ``OccGridEstimator`` is not used: its ray marching runs only as CUDA kernels, and it places its own
samples at a fixed step, whereas skipping here must keep the stratified and importance samples of the exact path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor


@dataclass(frozen=True)
class OccupancyConfig:
    """Occupancy grid used to skip empty space when rendering without gradients."""

    resolution: int = 64
    """Cells per side of the grid (the density is evaluated once at each cell centre per conditioning)."""
    density_threshold: float = 0.0
    """A cell is occupied when the density at its centre exceeds this (0: any positive density)."""
    dilation: int = 1
    """Cells added around every occupied cell, so that structures thinner than a cell between two cell centres
    are not skipped."""
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


def occupancy_from_density(
    density: Float[Tensor, "B N"], resolution: int, config: OccupancyConfig, bound: float
) -> OccupancyGrid:
    """Threshold the densities at the cell centres and dilate the occupied cells by ``config.dilation``."""
    occupied = (density > config.density_threshold).view(-1, 1, resolution, resolution, resolution)
    if config.dilation > 0:
        k = 2 * config.dilation + 1
        occupied = F.max_pool3d(occupied.float(), k, stride=1, padding=config.dilation) > 0
    return OccupancyGrid(occupied[:, 0], bound)
