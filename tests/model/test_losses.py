"""Losses against hand-computed cases, and learning on a single object."""

from __future__ import annotations

import torch

from featurenerf_ns.data.datamanager import sample_teacher
from featurenerf_ns.method_configs import _tiny
from featurenerf_ns.synthetic.generate import generate_category


def tiny_model(**overrides):
    from nerfstudio.data.scene_box import SceneBox

    cfg = _tiny().pipeline.model
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg.setup(
        scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])),
        num_train_data=1,
        metadata={"teacher_dim": 4, "near": 0.8, "far": 1.8},
    ).train()


def _outputs(n=6, d=4, coord=0.0, feature=0.0, rgb=0.5):
    return {
        "rgb": torch.full((n, 3), rgb),
        "rgb_coarse": torch.full((n, 3), rgb),
        "feature": torch.full((n, d), feature),
        "feature_coarse": torch.full((n, d), feature),
        "coord": torch.full((n, 3), coord),
        "coord_coarse": torch.full((n, 3), coord),
    }


def test_coordinate_loss_vanishes_for_an_exact_head():
    model = tiny_model()
    batch = {"image": torch.full((6, 3), 0.5), "teacher": torch.zeros(6, 4)}
    assert model.get_loss_dict(_outputs(coord=0.0), batch)["coord_loss"] == 0
    # 0.25 * (mean(0.1^2) coarse + mean(0.1^2) fine)
    torch.testing.assert_close(model.get_loss_dict(_outputs(coord=0.1), batch)["coord_loss"], torch.tensor(0.005))


def test_exact_coordinate_head_gives_zero_residual():
    """A head that outputs the query point itself: residual (and so L_coord) is exactly zero."""
    model = tiny_model()
    field = model.field
    width = field.mlp.width
    points = torch.randn(2, 5, 3)
    v = torch.zeros(10, width)
    v[:, :3], v[:, 3:6] = points.reshape(-1, 3), -points.reshape(-1, 3)
    with torch.no_grad():
        rows = slice(4 + field.feature_dim, 7 + field.feature_dim)
        field.mlp.lin_out.weight[rows] = 0
        field.mlp.lin_out.weight[rows, :3] = torch.eye(3)
        field.mlp.lin_out.weight[rows, 3:6] = -torch.eye(3)
        field.mlp.lin_out.bias[rows] = 0
    out = field.heads(field.mlp.lin_out, v, points.reshape(-1, 3), frozenset({"coord"}), 2, 5)
    assert out.coord.abs().max() == 0


def test_distillation_loss_hand_computed():
    # A 2-channel 2x2 teacher map over a 4x4 image; the authors sample it at pixel/size*2-1
    # with align_corners=False: pixel (x=2, y=0) -> grid (0, -1) -> between cells, top border.
    feats = torch.tensor([[[1.0, 3.0], [5.0, 7.0]], [[0.0, 0.0], [2.0, 2.0]]])[None]
    xs, ys = torch.tensor([0, 2]), torch.tensor([0, 2])
    got = sample_teacher(feats, torch.tensor([0, 0]), xs, ys, (4, 4))
    # (x=0,y=0) -> grid (-1,-1) -> pixel coords (-0.5,-0.5): bilinear with zero padding = 0.25 * cell(0,0)
    # (x=2,y=2) -> grid (0,0) -> the centre: average of the four cells.
    expected = torch.tensor([[0.25, 0.0], [4.0, 1.0]])
    torch.testing.assert_close(got, expected)
    model = tiny_model()
    outputs = _outputs(n=2, d=2, feature=1.0)
    loss = model.get_loss_dict(outputs, {"image": torch.full((2, 3), 0.5), "teacher": got})["distill_loss"]
    mse = ((1.0 - expected) ** 2).mean()
    torch.testing.assert_close(loss, 0.25 * 2 * mse)


def test_nerf_feature_baseline_has_no_distillation():
    from featurenerf_ns.method_configs import _nerf_feature

    cfg = _nerf_feature()
    assert cfg.method_name == "featurenerf-nerf-feature"
    assert cfg.pipeline.model.lambda_distill == 0 and cfg.pipeline.model.lambda_coord == 0


SEED = 0
"""A fixed initialisation: on this dark object over black, some initialisations of so small a network settle on an
empty field within 150 steps (the authors' ReLU density stops receiving gradient; measured: 2 of seeds 0-3 at any
lr in 5e-4..2e-3), so the seed is pinned rather than left to the suite's order."""


def test_single_object_overfitting_raises_psnr_and_lowers_every_loss(tmp_path):
    generate_category(
        tmp_path, "chair", num_objects=3, num_views=6, image_size=32, num_pairs=2, workers=0, progress=False
    )
    cfg = _tiny().pipeline
    cfg.datamanager.dataparser.data = tmp_path / "chair"
    cfg.datamanager.dataparser.max_objects = 1
    # Rays inside the object's box throughout: drawn over the whole image, one object's rays are mostly background
    # and a short run may settle on an empty field.
    cfg.datamanager.bbox_sampling_steps = 1000
    cfg.datamanager.rays_per_object = 128
    cfg.model.field.hidden_dim = 64
    torch.manual_seed(SEED)
    pipe = cfg.setup(device="cpu", test_mode="val")
    opt = torch.optim.Adam(pipe.parameters(), lr=2e-3)
    dm = pipe.datamanager
    rec = dm.train_objects[0]
    views = dm.load_views(rec, [0, 3], with_teacher=False)
    cams = dm.train_dataparser_outputs.cameras
    inputs = dm.source_conditioning_inputs(cams, [rec], [[0]], views.rgba[:1, ..., :3].permute(0, 3, 1, 2)[None])

    def psnr() -> float:
        pipe.eval()
        cond = pipe.model.encode(inputs["images"], inputs["c2w"], inputs["intrinsics"])
        rgb = pipe.model.render_camera(cond, cams[rec.camera_index(3) : rec.camera_index(3) + 1])["rgb"]
        pipe.train()
        # On the object's pixels: the black background is easy from the first step.
        fg = views.rgba[1, ..., 3] > 0
        return float(-10 * torch.log10(((rgb - views.rgba[1, ..., :3])[fg] ** 2).mean()))

    # A fixed batch from the training distribution (rays, teacher rows) scores every loss term before and after.
    fixed_rays, fixed_batch = dm.next_train(0)

    def fixed_losses() -> dict[str, float]:
        # Training mode (all terms), the same stratified jitter each time.
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(0)
            outputs = pipe.model(fixed_rays, pipe._encode(fixed_batch))
            losses = pipe.model.get_loss_dict(outputs, fixed_batch, pipe.model.get_metrics_dict(outputs, fixed_batch))
        return {k: float(v) for k, v in losses.items()}

    before, losses_before = psnr(), fixed_losses()
    for step in range(150):
        _, losses, _ = pipe.get_train_loss_dict(step)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    after, losses_after = psnr(), fixed_losses()
    print(f"foreground PSNR before {before:.2f} dB, after {after:.2f} dB; losses {losses_before} -> {losses_after}")
    # Distillation and coordinate regression learn too, not only colour.
    assert set(losses_before) == {"rgb_loss", "distill_loss", "coord_loss"}
    for k in losses_before:
        assert losses_after[k] < 0.7 * losses_before[k], k
    assert after > before + 3.0, (before, after)
