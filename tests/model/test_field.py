"""The field: gradient/no-gradient paths, multi-view pooling, latent sampling (parity: test_authors_parity.py)."""

import torch
import torch.nn.functional as F

from tests.model.model_fixtures import random_cameras


def _inputs(num_views, B=2, N=50, size=32):
    c2w, intr = random_cameras(B * num_views, size)
    points = (torch.rand(B, N, 3) - 0.5) * 0.6
    viewdirs = F.normalize(torch.randn(B, N, 3), dim=-1)
    return c2w, intr, points, viewdirs


def test_grad_and_nograd_paths_agree(tiny_field):
    encoder, field = tiny_field
    c2w, intr, points, viewdirs = _inputs(1)
    latent = encoder(torch.rand(2, 3, 32, 32))
    cond = field.condition(latent, c2w, intr, (32, 32), 2)
    with_grad = field(cond, points, viewdirs, frozenset({"rgb", "v_nerf"}))
    with torch.no_grad():
        without = field(cond, points, viewdirs, frozenset({"rgb", "v_nerf"}))
    torch.testing.assert_close(with_grad.v_nerf, without.v_nerf, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(with_grad.rgb, without.rgb)


def test_multiview_pooling_of_identical_views_equals_single_view(tiny_field):
    encoder, field = tiny_field
    c2w, intr, points, viewdirs = _inputs(1)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        single = field(
            field.condition(encoder(images), c2w, intr, (32, 32), 2),
            points,
            viewdirs,
            frozenset({"rgb", "density", "v_nerf"}),
        )
        doubled = images.repeat_interleave(2, 0)
        cond2 = field.condition(
            encoder(doubled), c2w.repeat_interleave(2, 0), intr.repeat_interleave(2, 0), (32, 32), 2
        )
        assert cond2.num_views == 2
        double = field(cond2, points, viewdirs, frozenset({"rgb", "density", "v_nerf"}))
    torch.testing.assert_close(double.v_nerf, single.v_nerf, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(double.density, single.density, rtol=1e-5, atol=1e-6)


def test_gradients_reach_the_encoder(tiny_field):
    encoder, field = tiny_field
    encoder.train()
    c2w, intr, points, viewdirs = _inputs(1)
    cond = field.condition(encoder(torch.rand(2, 3, 32, 32)), c2w, intr, (32, 32), 2)
    out = field(cond, points, viewdirs, frozenset({"rgb", "feature"}))
    (out.rgb.sum() + out.feature.sum()).backward()
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert encoder.model.conv1.weight.grad.abs().sum() > 0


def test_positional_encoding_layout():
    from featurenerf_ns.model.field import PositionalEncoding

    pe = PositionalEncoding(num_freqs=2, freq_factor=1.5)
    x = torch.tensor([[0.1, -0.2, 0.3]])
    out = pe(x)[0]
    assert out.shape == (3 + 2 * 2 * 3,)
    torch.testing.assert_close(out[:3], x[0])
    torch.testing.assert_close(out[3:6], torch.sin(1.5 * x[0]))
    torch.testing.assert_close(out[6:9], torch.cos(1.5 * x[0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[9:12], torch.sin(3.0 * x[0]))


def test_sample_latent_equals_grid_sample_values_and_gradients():
    from featurenerf_ns.model.field import sample_latent

    torch.manual_seed(0)
    maps = torch.randn(2, 5, 6, 7, requires_grad=True)  # (BS, C, h, w)
    # Points inside, on the border and outside the map (border padding clamps them).
    xy = torch.cat((torch.rand(2, 20, 2) * torch.tensor([6.0, 5.0]), torch.tensor([[[-2.0, 1.5], [6.0, 5.0]]] * 2)), 1)
    xy.requires_grad_(True)
    rows = maps.permute(0, 2, 3, 1).reshape(-1, 5)
    ours = sample_latent(rows, (6, 7), xy)
    grid = xy / torch.tensor([6.0, 5.0]) * 2 - 1
    ref = F.grid_sample(maps, grid.unsqueeze(2), align_corners=True, padding_mode="border")[..., 0]
    ref = ref.transpose(1, 2).reshape(-1, 5)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    ours_grads = torch.autograd.grad(ours, (maps, xy), g)
    ref_grads = torch.autograd.grad(ref, (maps, xy), g)
    torch.testing.assert_close(ours_grads[0], ref_grads[0])
    torch.testing.assert_close(ours_grads[1], ref_grads[1], rtol=1e-4, atol=1e-5)


def test_chunked_inference_matches_single_pass(tiny_field, monkeypatch):
    import featurenerf_ns.model.field as field_module

    encoder, field = tiny_field
    c2w, intr, points, viewdirs = _inputs(2)
    wanted = frozenset({"rgb", "density", "feature", "coord", "v_nerf"})
    with torch.no_grad():
        cond = field.condition(encoder(torch.rand(4, 3, 32, 32)), c2w, intr, (32, 32), 2)
        whole = field(cond, points, viewdirs, wanted)
        monkeypatch.setattr(field_module, "INFERENCE_ROWS", 28)  # 7 points per slice for 2 objects x 2 views
        sliced = field(cond, points, viewdirs, wanted)
    for k in wanted:
        torch.testing.assert_close(getattr(sliced, k), getattr(whole, k), rtol=1e-5, atol=1e-6)


def test_bf16_inference_only_where_the_hardware_multiplies_it(tiny_field, monkeypatch):
    """``inference_dtype`` bf16: used without gradients on hardware with native bf16 (within tolerance of fp32),
    ignored with gradients and on hardware without it (then equal to fp32)."""
    from featurenerf_ns.model import gemm

    encoder, field = tiny_field
    c2w, intr, points, viewdirs = _inputs(2, N=3000)
    with torch.no_grad():
        cond = field.condition(encoder(torch.rand(4, 3, 32, 32)), c2w, intr, (32, 32), 2)
        outputs = frozenset({"rgb", "density", "feature", "v_nerf"})
        exact = field(cond, points, viewdirs, outputs)
        field.inference_dtype = torch.bfloat16
        reduced = field(cond, points, viewdirs, outputs)
    with_grad = field(cond, points, viewdirs, outputs)
    torch.testing.assert_close(with_grad.v_nerf, exact.v_nerf, rtol=1e-5, atol=1e-6)
    if gemm.CPU_BF16:
        assert reduced.v_nerf.dtype == torch.float32
        assert not torch.equal(reduced.v_nerf, exact.v_nerf)
        cosine = F.cosine_similarity(reduced.v_nerf, exact.v_nerf, dim=-1)
        assert float(cosine.min()) > 0.999
        torch.testing.assert_close(reduced.rgb, exact.rgb, rtol=0, atol=2e-2)
        torch.testing.assert_close(reduced.feature, exact.feature, rtol=0, atol=5e-2)
    monkeypatch.setattr(gemm, "CPU_BF16", False)
    with torch.no_grad():
        emulated = field(cond, points, viewdirs, outputs)
    for k in ("rgb", "density", "feature", "v_nerf"):
        assert torch.equal(getattr(emulated, k), getattr(exact, k)), k
