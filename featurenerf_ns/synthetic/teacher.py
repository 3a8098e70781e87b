"""A synthetic stand-in for a 2D foundation-model teacher (DINO-shaped feature maps).

What it is: a feature map per rendered view, ``(D, H/4, W/4)`` like the authors' DINO cache
(``dino_feat_256``: 384 x 32 x 32 for 128-px renders, background cells zeroed with the alpha mask),
built from the renderer's ground truth so that distillation can be trained and *measured* before any
real foundation model is available. Per pixel it mixes, through a fixed random projection that
depends only on the category (so every object of a category shares one feature space):

- semantic content: the part identity (one-hot) and a smooth position inside the object's canonical
  frame (low-frequency Fourier features of the canonical hit point), i.e. what a good 2D model is
  hoped to encode; these terms are the same wherever a 3D point is seen from;
- a view-dependent term from the surface normal in the *camera* frame, and a smooth random field in
  image space drawn anew for every view, so the maps are not 3D-consistent across views, like real
  2D features;
- 4 x 4 patch pooling (low resolution, mixing part boundaries and the black background like a ViT
  patch) and iid noise per cell.

What it is not: a model of DINO or of any real network; its features are only as "semantic" as the
ground-truth part labels and canonical coordinates they are computed from, so numbers obtained with
it measure the distillation and transfer machinery, not the quality of a foundation model.
"""

from __future__ import annotations

import zlib

import numpy as np

from featurenerf_ns.categories import resolve_category
from featurenerf_ns.synthetic.render import ViewRender
from featurenerf_ns.synthetic.shapes import LONGEST_EDGE

PATCH = 4
"""Patch size: the feature map is 1/4 of the image resolution (32 x 32 for 128 px), like DINO ViT-S/8 on 2x."""


def _upsample_bilinear(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """(D, g, g) -> (D, h, w) bilinear (align-corners) interpolation."""
    g0, g1 = grid.shape[1:]
    ys, xs = np.linspace(0, g0 - 1, h), np.linspace(0, g1 - 1, w)
    y0, x0 = np.clip(np.floor(ys).astype(int), 0, g0 - 2), np.clip(np.floor(xs).astype(int), 0, g1 - 2)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a, b = grid[:, y0][:, :, x0], grid[:, y0][:, :, x0 + 1]
    c, d = grid[:, y0 + 1][:, :, x0], grid[:, y0 + 1][:, :, x0 + 1]
    return (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d)


class SyntheticTeacher:
    """Synthetic teacher of one category: fixed projections, per-view randomness from the caller's generator."""

    def __init__(
        self,
        category: str,
        dim: int = 32,
        noise_std: float = 0.1,
        field_std: float = 0.4,
        normal_std: float = 0.4,
        field_grid: int = 3,
    ):
        self.category = resolve_category(category)
        self.dim = dim
        self.noise_std, self.field_std, self.normal_std, self.field_grid = noise_std, field_std, normal_std, field_grid
        self.num_parts = len(self.category.parts)
        rng = np.random.default_rng(np.random.SeedSequence([0x5EED7EAC, zlib.crc32(self.category.name.encode())]))
        s = self.num_parts + 15
        self.sem_proj = rng.normal(size=(s, dim)) / np.sqrt(s / 3.0)
        self.normal_proj = rng.normal(size=(3, dim))

    def semantic(self, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """View-independent part of the feature of canonical surface ``points`` (N, 3) with part ``labels`` (N,)."""
        q = np.asarray(points, dtype=np.float64) / (0.5 * LONGEST_EDGE)  # about [-1, 1]
        onehot = np.eye(self.num_parts)[np.asarray(labels) - 1] * 2.5
        four = [q]
        for k in (1.0, 2.0):
            four += [np.sin(0.5 * np.pi * k * q), np.cos(0.5 * np.pi * k * q)]
        return np.concatenate([onehot] + four, axis=1) @ self.sem_proj

    def features(self, view: ViewRender, c2w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Feature map (D, H/4, W/4) float32 of one rendered view; background cells are exactly 0."""
        height, width = view.labels.shape
        h, w = height // PATCH, width // PATCH
        fg = view.coverage > 0
        pix = np.zeros((height, width, self.dim))
        if fg.any():
            cam_normal = view.normals[fg] @ c2w[:3, :3]  # world -> camera frame
            f = self.semantic(view.points[fg], view.labels[fg]) + self.normal_std * cam_normal @ self.normal_proj
            pix[fg] = f * view.coverage[fg, None]
        pix = pix[: h * PATCH, : w * PATCH].reshape(h, PATCH, w, PATCH, self.dim).mean(axis=(1, 3))
        cov = view.coverage[: h * PATCH, : w * PATCH].reshape(h, PATCH, w, PATCH).mean(axis=(1, 3))
        grid = rng.normal(size=(self.dim, self.field_grid, self.field_grid))
        field = _upsample_bilinear(grid, h, w).transpose(1, 2, 0)
        feats = pix + self.field_std * cov[..., None] * field + self.noise_std * rng.normal(size=(h, w, self.dim))
        # background cells zeroed like the authors' DINO cache: nearest-downsampled alpha mask
        mask = view.rgba[::PATCH, ::PATCH, 3][:h, :w] > 0
        feats[~mask] = 0.0
        return feats.transpose(2, 0, 1).astype(np.float32)
