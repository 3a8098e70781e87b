"""Sampling, compositing and rendering (parity with the authors' renderer: test_authors_parity.py)."""

import torch
import torch.nn.functional as F

from featurenerf_ns.model.rendering import (
    SamplingConfig,
    compositing_weights,
    render_rays,
    sample_around_depth,
    sample_coarse,
    sample_importance,
)
from tests.model.model_fixtures import random_cameras, random_upper_hemisphere

ALL = frozenset({"rgb", "feature", "coord", "v_nerf"})


def _setup(tiny_field, B=2, R=16):
    encoder, field = tiny_field
    c2w, intr = random_cameras(B, 32, seed=1)
    with torch.no_grad():
        latent = encoder(torch.rand(B, 3, 32, 32))
        cond = field.condition(latent, c2w, intr, (32, 32), B)
    target = random_upper_hemisphere(B, seed=2)
    origins = target[:, None, :, 3].expand(B, R, 3).contiguous()
    directions = F.normalize(-origins + 0.2 * torch.randn(B, R, 3), dim=-1)
    near = torch.full((B, R, 1), 0.8)
    far = torch.full((B, R, 1), 1.8)
    return field, cond, origins, directions, near, far, (latent, c2w, intr)


def test_white_background_fills_what_the_rays_do_not_hit(tiny_field):
    """pixelNeRF's white_bkgd: rgb + (1 - accumulation) on coarse and fine; the other outputs are unchanged."""
    field, cond, origins, directions, near, far, _ = _setup(tiny_field)
    sampling = SamplingConfig(num_coarse=16, num_fine=8, num_fine_depth=4)
    with torch.no_grad():
        black = render_rays(
            field, cond, origins, directions, near, far, sampling, ALL, torch.Generator().manual_seed(3)
        )
        white = render_rays(
            field, cond, origins, directions, near, far, sampling, ALL, torch.Generator().manual_seed(3),
            background=torch.ones(3),
        )  # fmt: skip
    for suffix in ("", "_coarse"):
        acc = black[f"accumulation{suffix}"]
        assert (acc < 0.99).any()
        torch.testing.assert_close(white[f"rgb{suffix}"], black[f"rgb{suffix}"] + (1 - acc))
        torch.testing.assert_close(white[f"v_nerf{suffix}"], black[f"v_nerf{suffix}"])


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


def test_selected_conditioning_renders_like_encoding_that_object_alone(tiny_field):
    encoder, field = tiny_field
    c2w, intr = random_cameras(6, 32, seed=4)
    images = torch.rand(6, 3, 32, 32)
    points = (torch.rand(1, 30, 3) - 0.5) * 0.6
    dirs = F.normalize(torch.randn(1, 30, 3), dim=-1)
    wanted = frozenset({"rgb", "density", "v_nerf"})
    with torch.no_grad():
        cond = field.condition(encoder(images), c2w, intr, (32, 32), 3)  # 3 objects x 2 views
        picked = field(cond.select([2]), points, dirs, wanted)
        alone = field(field.condition(encoder(images[4:]), c2w[4:], intr[4:], (32, 32), 1), points, dirs, wanted)
    for k in wanted:
        torch.testing.assert_close(getattr(picked, k), getattr(alone, k), rtol=1e-5, atol=1e-6)


def test_rays_in_any_order_and_number_per_object_render_with_their_own_object(monkeypatch):
    """get_outputs routes each ray to its object's conditioning (object_slot) and returns outputs in the rays'
    order, also when objects have different numbers of rays and the slots are shuffled."""
    from nerfstudio.cameras.rays import RayBundle

    import featurenerf_ns.model.rendering as rendering
    from tests.model.test_losses import tiny_model

    # Deterministic depths (bin starts, no fine pass) so that every ray's render depends on the ray alone.
    monkeypatch.setattr(
        rendering, "sample_coarse", lambda near, far, n, g=None: near + (far - near) * torch.linspace(0, 1, n)
    )
    model = tiny_model(num_fine_samples=0, num_fine_depth_samples=0).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # some density everywhere, and every block in play (fc_1 starts at zero)
        for block in model.field.mlp.blocks:
            torch.nn.init.normal_(block.fc_1.weight, std=0.1)
        model.field.mlp.lin_out.bias[3] = 2.0
    c2w, intr = random_cameras(3, 32, seed=3)
    with torch.no_grad():
        cond = model.encode(torch.rand(3, 1, 3, 32, 32), c2w[:, None], intr[:, None])
    counts = [5, 9, 2]
    slots = torch.cat([torch.full((n,), k) for k, n in enumerate(counts)])
    perm = torch.randperm(len(slots))
    slots = slots[perm]
    origins = c2w[slots, :, 3]
    directions = F.normalize(-origins + 0.2 * torch.randn(len(slots), 3), dim=-1)
    bundle = RayBundle(
        origins=origins, directions=directions, pixel_area=torch.ones(len(slots), 1),
        metadata={"object_slot": slots[:, None]},
    )  # fmt: skip
    with torch.no_grad():
        out = model.get_outputs(bundle, cond)
        for k in range(3):
            mine = slots == k
            alone = model.render_rays(cond.select([k]), origins[mine][None], directions[mine][None], frozenset({"rgb"}))
            torch.testing.assert_close(out["rgb"][mine], alone["rgb"][0])
            torch.testing.assert_close(out["depth"][mine], alone["depth"][0])
        other = model.render_rays(cond.select([1]), origins[slots == 0][None], directions[slots == 0][None])
    assert (other["rgb"][0] - out["rgb"][slots == 0]).abs().max() > 1e-4  # the objects do differ


def test_renders_without_coarse_outputs_give_the_same_fine_results(tiny_field):
    """``coarse=False`` (what full-image renders use) composites only the coarse weights the fine pass needs: the
    fine results are bit for bit those of the full render, and no ``{name}_coarse`` output is made."""
    field, cond, origins, directions, near, far, _ = _setup(tiny_field)
    outputs = frozenset({"rgb", "feature", "v_nerf"})
    sampling = SamplingConfig(num_coarse=16, num_fine=8, num_fine_depth=4)
    rays = (field, cond, origins, directions, near, far, sampling, outputs)
    with torch.no_grad():
        full, lean = (render_rays(*rays, torch.Generator().manual_seed(3), coarse=c) for c in (True, False))
    assert {k for k in full if k.endswith("_coarse")} == {f"{k}_coarse" for k in (*outputs, "depth", "accumulation")}
    assert {k for k in lean if k.endswith("_coarse")} == {"depth_coarse", "accumulation_coarse"}
    for k in lean:
        assert torch.equal(lean[k], full[k]), k
