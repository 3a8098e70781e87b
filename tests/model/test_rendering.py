"""Coarse/fine rendering against the authors' (redundant) formulation, and the losses."""

import torch
import torch.nn.functional as F

from featurenerf_ns.model.reference import reference_render
from featurenerf_ns.model.rendering import (
    SamplingConfig,
    compositing_weights,
    render_rays,
    sample_around_depth,
    sample_coarse,
    sample_importance,
)
from featurenerf_ns.utils.cameras import random_upper_hemisphere as look_at_cameras

ALL = frozenset({"rgb", "feature", "coord", "v_nerf"})


def _setup(tiny_field, B=2, R=16):
    encoder, field = tiny_field
    c2w = look_at_cameras(B, seed=1)
    f = 32 / (2 * torch.tan(torch.tensor(0.6911 / 2)))
    intr = torch.tensor([f, f, 16.5, 16.5]).expand(B, 4)
    with torch.no_grad():
        latent = encoder(torch.rand(B, 3, 32, 32))
        cond = field.condition(latent, c2w, intr, (32, 32), B)
    target = look_at_cameras(B, seed=2)
    origins = target[:, None, :, 3].expand(B, R, 3).contiguous()
    directions = F.normalize(-origins + 0.2 * torch.randn(B, R, 3), dim=-1)
    near = torch.full((B, R, 1), 0.8)
    far = torch.full((B, R, 1), 1.8)
    return field, cond, origins, directions, near, far, (latent, c2w, intr)


def test_render_matches_authors_formulation(tiny_field):
    field, cond, origins, directions, near, far, (latent, c2w, intr) = _setup(tiny_field)
    sampling = SamplingConfig(num_coarse=16, num_fine=8, num_fine_depth=4)
    with torch.no_grad():
        ours = render_rays(field, cond, origins, directions, near, far, sampling, ALL, torch.Generator().manual_seed(3))
        coarse, fine = reference_render(
            field,
            latent,
            c2w,
            intr,
            (32, 32),
            origins,
            directions,
            near,
            far,
            sampling,
            torch.Generator().manual_seed(3),
        )
    for k in ("rgb", "feature", "v_nerf", "coord", "depth"):
        torch.testing.assert_close(ours[f"{k}_coarse"], coarse[k], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours[k], fine[k], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours["accumulation"], fine["weights"].sum(-1, keepdim=True), rtol=1e-4, atol=1e-5)


def test_weights_sum_to_at_most_one():
    z = torch.sort(torch.rand(100, 32) + 0.8, -1)[0]
    density = torch.rand(100, 32) * torch.tensor([0.0, 1.0, 1000.0]).repeat_interleave(34)[:100, None]
    w = compositing_weights(z, density, torch.full((100, 1), 1.8))
    assert (w >= 0).all()
    assert (w.sum(-1) <= 1 + 1e-6).all()
    assert w[:34].sum() == 0  # zero density: nothing is rendered
    assert (w[-10:].sum(-1) > 0.99).all()  # dense matter: opaque


def test_samples_stay_within_near_far():
    near, far = torch.full((10, 1), 0.8), torch.full((10, 1), 1.8)
    zc = sample_coarse(near, far, 64)
    assert (zc >= 0.8).all() and (zc <= 1.8).all()
    assert (zc.diff(dim=-1) > 0).all()
    zi = sample_importance(near, far, torch.rand(10, 64), 16)
    assert (zi >= 0.8).all() and (zi <= 1.8).all()
    zd = sample_around_depth(near, far, torch.full((10,), 1.79), 16, 0.05)
    assert (zd <= 1.8).all()
