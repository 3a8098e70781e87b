"""The authors' order of computation, with our modules' weights, for ``bench_model.py``'s side-by-side timing.

pixelNeRF / FeatureNeRF sample the raw encoder latent at every point and apply ``lin_z`` per
sample, and their fine pass evaluates the shared MLP again on all coarse + fine samples. These
functions do that with our field's weights, so the benchmark can time both orders in one run. It is
a timing aid only: equality with the authors' outputs is proven against their recorded outputs
(``tests/model/test_authors_parity.py``), not against this file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from featurenerf_ns.model.field import FeatureNeRFField
from featurenerf_ns.model.rendering import (
    SamplingConfig,
    compositing_weights,
    sample_around_depth,
    sample_coarse,
    sample_importance,
)


def reference_field(
    field: FeatureNeRFField,
    latent: Float[Tensor, "BS L h w"],
    c2w: Float[Tensor, "BS 3 4"],
    intrinsics: Float[Tensor, "BS 4"],
    image_wh: tuple[int, int],
    points: Float[Tensor, "B N 3"],
    viewdirs: Float[Tensor, "B N 3"],
) -> tuple[Tensor, Tensor]:
    """v_NeRF ``(B*N, W)`` and the raw output layer ``(B*N, 4 + D (+3))`` in the authors' order of computation."""
    B, N, _ = points.shape
    S = latent.shape[0] // B
    rot = c2w[:, :3, :3].transpose(1, 2)
    trans = -torch.bmm(rot, c2w[:, :3, 3:])
    pts = points.repeat_interleave(S, 0)
    xyz_rot = (rot[:, None] @ pts.unsqueeze(-1))[..., 0]
    xyz = xyz_rot + trans[:, None, :, 0]
    dirs = (rot[:, None] @ viewdirs.repeat_interleave(S, 0).unsqueeze(-1))[..., 0]
    x_in = torch.cat((field.code(xyz_rot.reshape(-1, 3)), dirs.reshape(-1, 3)), -1)
    focal = torch.stack((intrinsics[:, 0], -intrinsics[:, 1]), -1)
    uv = -xyz[..., :2] / xyz[..., 2:] * focal[:, None] + (intrinsics[:, None, 2:4] - 0.5)
    h, w = latent.shape[-2:]
    lat_wh = torch.tensor([w, h], dtype=uv.dtype)
    scale = lat_wh / (lat_wh - 1) * 2.0 / torch.tensor(image_wh, dtype=uv.dtype)
    lat = F.grid_sample(latent, (uv * scale - 1).unsqueeze(2), align_corners=True, padding_mode="border")
    lat = lat[..., 0].transpose(1, 2).reshape(-1, latent.shape[1])
    mlp = field.mlp
    x = mlp.lin_in(x_in)
    for i, block in enumerate(mlp.blocks):
        if i == mlp.combine_layer:
            x = x.view(B, S, N, -1).mean(1).reshape(B * N, -1)
        if i < len(mlp.lin_z):
            x = x + mlp.lin_z[i](lat)
        x = x + block.fc_1(F.relu(block.fc_0(F.relu(x))))
    return x, mlp.lin_out(F.relu(x))


def reference_render(
    field: FeatureNeRFField,
    latent: Float[Tensor, "BS L h w"],
    c2w: Float[Tensor, "BS 3 4"],
    intrinsics: Float[Tensor, "BS 4"],
    image_wh: tuple[int, int],
    origins: Float[Tensor, "B R 3"],
    directions: Float[Tensor, "B R 3"],
    near: Tensor,
    far: Tensor,
    sampling: SamplingConfig,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Coarse and fine renders (rgb, feature, v_nerf, coord, depth, weights), fine pass re-evaluating all samples."""
    B, R, _ = origins.shape
    D = field.feature_dim

    def composite(z: Tensor) -> dict[str, Tensor]:
        K = z.shape[-1]
        pts = origins.unsqueeze(2) + z.unsqueeze(-1) * directions.unsqueeze(2)
        dirs = directions.unsqueeze(2).expand_as(pts)
        v, raw = reference_field(
            field, latent, c2w, intrinsics, image_wh, pts.reshape(B, -1, 3), dirs.reshape(B, -1, 3)
        )
        raw = raw.view(B, R, K, -1)
        w = compositing_weights(z, torch.relu(raw[..., 3]), far)
        out = {
            "rgb": (w.unsqueeze(-1) * torch.sigmoid(raw[..., :3])).sum(2),
            "feature": (w.unsqueeze(-1) * raw[..., 4 : 4 + D]).sum(2),
            "v_nerf": (w.unsqueeze(-1) * v.view(B, R, K, -1)).sum(2),
            "depth": (w * z).sum(-1, keepdim=True),
            "weights": w,
        }
        if field.regress_coord:
            out["coord"] = (raw[..., 4 + D :] - pts).mean(2)
        return out

    zc = sample_coarse(near, far, sampling.num_coarse, generator)
    coarse = composite(zc)
    zi = sample_importance(near, far, coarse["weights"], sampling.num_fine - sampling.num_fine_depth, generator)
    zd = sample_around_depth(near, far, coarse["depth"][..., 0], sampling.num_fine_depth, sampling.depth_std, generator)
    fine = composite(torch.sort(torch.cat((zc, zi, zd), -1), -1)[0])
    return coarse, fine
