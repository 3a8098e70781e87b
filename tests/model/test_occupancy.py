"""Empty-space skipping: the occupancy grid, renders that skip empty samples, and their accuracy on a trained model."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from featurenerf_ns.geometry import look_at_opengl
from featurenerf_ns.model.field import ResnetFC
from featurenerf_ns.model.occupancy import (
    OccupancyConfig,
    OccupancyGrid,
    cell_centers,
    occupancy_from_density,
    refine_occupancy,
)
from featurenerf_ns.model.rendering import SamplingConfig, render_rays

ALL = frozenset({"rgb", "feature", "v_nerf"})


def test_grid_keeps_points_in_occupied_cells_and_outside_the_grid():
    occupied = torch.zeros(1, 4, 4, 4, dtype=torch.bool)
    occupied[0, 1, 2, 3] = True  # cell x in [-0.5, 0), y in [0, 0.5), z in [0.5, 1)
    grid = OccupancyGrid(occupied, bound=1.0)
    points = torch.tensor(
        [[-0.25, 0.25, 0.75], [-0.49, 0.01, 0.99], [0.25, 0.25, 0.75], [-0.25, 0.25, 0.25], [0.0, 0.0, 1.5]]
    )
    assert grid.contains(points[None]).tolist() == [[True, True, False, False, True]]
    # Cell centres come in the grid's [x, y, z] order.
    centers = cell_centers(4, 1.0)
    assert torch.equal(grid.contains(centers[None])[0], occupied.reshape(-1))
    assert grid.fraction == 1 / 64


def test_dilation_grows_occupied_cells_by_whole_cells():
    density = torch.zeros(2, 7**3)
    density[0, (3 * 7 + 3) * 7 + 3] = 1.0  # the centre cell of object 0
    density[1, 0] = 0.5  # below the threshold: object 1 stays empty
    final = OccupancyConfig(density_threshold=0.5, dilation=2, refinements=0)
    grid = occupancy_from_density(density, 7, final, 1.0)
    assert not grid.occupied[1].any()
    density[1, 0] = 0.6
    grid = occupancy_from_density(density, 7, final, 1.0)
    expected = torch.zeros(7, 7, 7, dtype=torch.bool)
    expected[1:6, 1:6, 1:6] = True
    assert torch.equal(grid.occupied[0], expected)
    assert int(grid.occupied[1].sum()) == 27 and bool(grid.occupied[1, :3, :3, :3].all())
    # A first estimate that will be refined takes the wider first_dilation: it only says where to look next.
    searched = occupancy_from_density(density, 7, replace(final, refinements=1, first_dilation=1), 1.0)
    assert int(searched.occupied[0].sum()) == 27


def test_refinement_keeps_the_surface_and_drops_the_coarse_margin():
    """A thin spherical shell (density > 0 within 0.03 of radius 0.5): the refined grid still holds every point
    of the shell, lies inside the coarse grid, evaluates the density only in the coarse grid's occupied cells, and
    skips most of the margin that coarse cells add around the shell."""

    def shell(points):
        return torch.relu(0.03 - (points.norm(dim=-1) - 0.5).abs())

    config = OccupancyConfig(refinements=1)  # the default margins: 2 cells at the first level, 1 at the next
    coarse = occupancy_from_density(shell(cell_centers(16, 1.0))[None], 16, config, 1.0)
    asked = []
    fine = refine_occupancy(coarse, lambda b, points: asked.append(len(points)) or shell(points), config)
    assert fine.occupied.shape == (1, 32, 32, 32)
    assert asked == [8 * int(coarse.occupied.sum())]  # only the children of occupied cells
    parents = coarse.occupied.repeat_interleave(2, 1).repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert not (fine.occupied & ~parents).any()
    on_shell = F.normalize(torch.randn(20000, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    on_shell = on_shell * (0.5 + 0.05 * (torch.rand(20000, 1, generator=torch.Generator().manual_seed(1)) - 0.5))
    assert bool(fine.contains(on_shell[None]).all()) and bool(coarse.contains(on_shell[None]).all())
    # Measured: the fine grid keeps 0.29x the coarse one (a grid merely upsampled would keep 1x).
    assert fine.fraction < 0.4 * coarse.fraction, (fine.fraction, coarse.fraction)


def _setup(tiny_field, R=64):
    encoder, field = tiny_field
    c2w = look_at_opengl(torch.tensor([[0.0, 0.6, 1.15], [1.1, 0.7, 0.0]]))
    f = 32 / (2 * torch.tan(torch.tensor(0.6911 / 2)))
    with torch.no_grad():
        cond = field.condition(encoder(torch.rand(2, 3, 32, 32)), c2w, torch.tensor([f, f, 16.5, 16.5]).expand(2, 4),
                               (32, 32), 2)  # fmt: skip
    origins = torch.tensor([[0.9, 0.5, 0.8], [-0.7, 0.9, -0.6]])[:, None].expand(2, R, 3).contiguous()
    directions = F.normalize(-origins + 0.2 * torch.randn(2, R, 3), dim=-1)
    return field, cond, origins, directions, torch.full((2, R, 1), 0.8), torch.full((2, R, 1), 1.8)


def _render(setup, occupancy, background=None):
    field, cond, origins, directions, near, far = setup
    sampling = SamplingConfig(num_coarse=16, num_fine=8, num_fine_depth=4)
    with torch.no_grad():
        return render_rays(field, cond, origins, directions, near, far, sampling, ALL, torch.Generator().manual_seed(3),
                           background=background, occupancy=occupancy)  # fmt: skip


def test_an_all_occupied_grid_renders_exactly_the_exact_path(tiny_field):
    """Same samples (same generator draws), same field values: skipping nothing changes nothing, bit for bit."""
    setup = _setup(tiny_field)
    exact = _render(setup, None)
    full = _render(setup, OccupancyGrid(torch.ones(2, 8, 8, 8, dtype=torch.bool), 1.0))
    assert exact.keys() == full.keys()
    for k in exact:
        assert torch.equal(exact[k], full[k]), k


def test_partly_occupied_grid_evaluates_only_occupied_samples_and_zeroes_the_rest(tiny_field):
    """Half the space marked empty: the render equals the exact render of a field whose density is 0 there."""
    setup = _setup(tiny_field)
    field = setup[0]
    occupied = torch.zeros(2, 8, 8, 8, dtype=torch.bool)
    occupied[:, :4] = True  # x < 0 only, inside [-2, 2]^3; everything else is outside: evaluated
    grid = OccupancyGrid(occupied, 2.0)
    skipped = _render(setup, grid)

    forward = type(field).forward

    def masked(self, cond, points, viewdirs, outputs, fine=False):
        out = forward(self, cond, points, viewdirs, outputs, fine)
        keep = grid.contains(points)  # the exact path always queries both objects' samples
        out.density = out.density * keep[..., None]
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(field), "forward", masked)
        exact_masked = _render(setup, None)
    for k in exact_masked:
        torch.testing.assert_close(skipped[k], exact_masked[k], rtol=1e-5, atol=1e-6, msg=k)


def test_an_empty_field_renders_background_without_calling_the_mlp(tiny_field, monkeypatch):
    setup = _setup(tiny_field)
    field = setup[0]
    with torch.no_grad():
        field.mlp.lin_out.bias[3] = -1e4  # sigma = relu(-1e4 + ...) = 0 everywhere
    model_points = cell_centers(32, 4.0)[None].expand(2, -1, -1)
    density = field(setup[1], model_points, F.normalize(model_points, dim=-1), frozenset({"density"})).density
    grid = occupancy_from_density(density[..., 0], 32, OccupancyConfig(), 4.0)
    assert not grid.occupied.any()

    calls = []
    forward = ResnetFC.forward
    monkeypatch.setattr(ResnetFC, "forward", lambda self, *a: calls.append(1) or forward(self, *a))
    white = torch.ones(3)
    out = _render(setup, grid, background=white)
    assert calls == []
    for suffix in ("", "_coarse"):
        assert torch.equal(out[f"rgb{suffix}"], white.expand_as(out[f"rgb{suffix}"]))
        assert not out[f"accumulation{suffix}"].any() and not out[f"v_nerf{suffix}"].any()
    _render(setup, None, background=white)
    assert len(calls) > 0  # the exact path does call it


def test_coord_is_refused_with_skipping(tiny_field):
    field, cond, origins, directions, near, far = _setup(tiny_field)
    grid = OccupancyGrid(torch.ones(2, 4, 4, 4, dtype=torch.bool), 1.0)
    with pytest.raises(ValueError, match="coord"):
        render_rays(field, cond, origins, directions, near, far, SamplingConfig(), frozenset({"coord"}), occupancy=grid)


MAX_CHANGE = {"fp32": 0.01, "bf16": 0.05}
"""Largest change of any rgb value or accumulation that skipping (fp32) and skipping + bf16 may cause."""
MIN_PSNR = {"fp32": 60.0, "bf16": 50.0}
"""Smallest rgb PSNR of the approximate render against the exact one."""
COSINE_TOLERANCE = 0.99
"""Smallest cosine similarity of v_NeRF to the exact render's at any foreground pixel (exact accumulation > 0.5)."""


@pytest.mark.slow
def test_skipping_keeps_a_trained_models_renders(trained_tiny):
    """On a trained tiny model: no skipped cell holds density, skipping changes no render beyond tolerance, and
    skipping + bf16 (where native) stays within it too."""
    from featurenerf_ns.model import gemm
    from featurenerf_ns.model.api import TrainedFeatureNeRF

    tf = TrainedFeatureNeRF.load(trained_tiny.config, device="cpu")
    model = tf.model
    outputs = ("rgb", "v_nerf")
    fractions = []
    for rec in tf.objects("test")[:2]:
        cond = tf.encode("test", rec.obj_id, [0])
        grid = model.occupancy(cond)
        fractions.append(grid.fraction)
        # The skipped space is (almost) empty: the grid is estimated at cell centres, so density between them may
        # slip through; it stays within 2% of the field's largest (measured: 0.017 and 0.007 against 2.47 and 2.41;
        # a grid that skipped occupied cells would let the full density through).
        points = (torch.rand(20000, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1) * grid.bound
        inside = grid.contains(points[None])[0]
        density = tf.query(cond, points, outputs=("density",))["density"][:, 0]
        skipped_max, occupied_max = float(density[~inside].max()), float(density[inside].max())
        print(f"density: skipped max {skipped_max:.4f}, occupied max {occupied_max:.2f}")
        assert skipped_max <= 0.02 * occupied_max
        for view in (1, 2):
            exact = tf.render(cond, "test", rec.obj_id, view, outputs)
            fg = exact["accumulation"][..., 0] > 0.5
            assert fg.any()
            variants = {"fp32": torch.float32} | ({"bf16": torch.bfloat16} if gemm.CPU_BF16 else {})
            for name, dtype in variants.items():
                model.field.inference_dtype = dtype
                fast = tf.render(cond, "test", rec.obj_id, view, outputs, skip_empty=True)
                model.field.inference_dtype = torch.float32
                for k in ("rgb", "accumulation"):
                    assert float((fast[k] - exact[k]).abs().max()) <= MAX_CHANGE[name], (name, k)
                psnr = -10 * torch.log10(F.mse_loss(fast["rgb"], exact["rgb"]).clamp_min(1e-12))
                assert float(psnr) >= MIN_PSNR[name], name
                cosine = F.cosine_similarity(fast["v_nerf"][fg], exact["v_nerf"][fg], dim=-1)
                assert float(cosine.min()) >= COSINE_TOLERANCE, name
    assert max(fractions) < 0.5  # most of the space is skipped
