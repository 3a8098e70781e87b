"""Parity with the authors' own code: their checkpoint, imported, reproduces their recorded outputs.

The fixture (``$FEATURENERF_PARITY_FIXTURE``, see ``tests/conftest.py``) holds what the authors'
``PixelNeRFEmbedNet``, ``NeRFEmbedRenderer`` and ``train.py`` losses computed for its checkpoint. Every
size (image, widths, feature channels, sample counts, backbone) comes from the fixture and its
``model.conf``. Tolerance: ``max |ours - theirs| <= 1e-5 * max |theirs|`` per array, in fp32.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import featurenerf_ns.model.field as field_module
from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.model.authors_checkpoint import read_authors_checkpoint, to_model_state
from featurenerf_ns.model.import_cli import ImportConfig, import_checkpoint
from featurenerf_ns.model.rendering import SampleDepths
from featurenerf_ns.utils.cameras import cameras_from_fov, cameras_from_opencv, intrinsics_of
from featurenerf_ns.utils.hocon import hocon_get

RTOL = 1e-5
FIELD_OUTPUTS = {"rgb": "rgb", "sigma": "density", "embed": "feature", "coord": "coord", "vnerf": "v_nerf"}


def assert_parity(ours, theirs, name: str, rtol: float = RTOL) -> None:
    ours = torch.as_tensor(ours).detach().double().cpu().reshape(np.shape(theirs))
    theirs = torch.as_tensor(np.asarray(theirs)).double()
    scale = float(theirs.abs().max())
    err = float((ours - theirs).abs().max())
    assert scale > 0, f"{name}: the reference is all zeros (nothing would be compared)"
    assert err <= rtol * scale, f"{name}: max error {err:.3g} > {rtol:g} x {scale:.3g}"


def new_fine_depths(z_coarse: np.ndarray, z_fine: np.ndarray) -> np.ndarray:
    """The fine pass's own samples: their sorted coarse + fine depths minus the coarse ones (per ray)."""
    flat_c, flat_f = z_coarse.reshape(-1, z_coarse.shape[-1]), z_fine.reshape(-1, z_fine.shape[-1])
    new = []
    for c, f in zip(flat_c, flat_f, strict=True):
        rest = list(f)
        for v in c:
            rest.remove(v)
        new.append(rest)
    return np.asarray(new, dtype=np.float32).reshape(*z_fine.shape[:-1], -1)


@pytest.fixture(scope="module")
def imported(parity, tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported")
    config = import_checkpoint(
        ImportConfig(
            checkpoint=parity.checkpoint,
            config=parity.conf_path,
            data=tiny_root / "chair",
            output_dir=out,
            timestamp="parity",
            device_type="cpu",
        )
    )
    return TrainedFeatureNeRF.load(config, device="cpu")


def test_architecture_comes_from_the_weights_and_agrees_with_the_config(parity, imported):
    conf = parity.conf
    # Without the config: the shapes, plus whether the last 3 outputs are coordinates (31 = 4 + 24 + 3 could
    # also be 4 + 27; the paper's 391 = 4 + 384 + 3 is read without help).
    ckpt = read_authors_checkpoint(parity.checkpoint, regress_coord=hocon_get(conf, "model.regress_coord"))
    arch = ckpt.architecture
    assert arch.backbone == hocon_get(conf, "model.encoder.backbone")
    assert arch.num_layers == hocon_get(conf, "model.encoder.num_layers")
    assert arch.hidden_dim == hocon_get(conf, "model.mlp_coarse.d_hidden")
    assert arch.num_blocks == hocon_get(conf, "model.mlp_coarse.n_blocks")
    assert arch.combine_layer == hocon_get(conf, "model.mlp_coarse.combine_layer")
    assert arch.feature_dim == hocon_get(conf, "model.d_embed") == parity.arrays["field_1view_embed"].shape[-1]
    assert arch.regress_coord is True and arch.share_mlp is True
    model = imported.model
    assert (
        model.config.num_coarse_samples == hocon_get(conf, "renderer.n_coarse") == parity.arrays["z_coarse"].shape[-1]
    )
    assert model.config.num_fine_samples == hocon_get(conf, "renderer.n_fine")
    assert model.config.num_fine_depth_samples == hocon_get(conf, "renderer.n_fine_depth")
    assert model.config.lambda_distill == hocon_get(conf, "loss.lambda_embed")
    assert model.field.config.hidden_dim == parity.arrays["field_1view_vnerf"].shape[-1]


def test_encoder_input_is_the_authors_bit_for_bit(parity, imported):
    ours = imported.encoder_input(parity.arrays["src_rgba"])
    np.testing.assert_array_equal(ours.numpy(), parity.arrays["src_encoder_input"])


@pytest.mark.parametrize("num_views", [1, 2])
def test_field_outputs_match(parity, imported, num_views, gemm_backend):
    a = parity.arrays
    cond = imported.encode_image(
        a["src_rgba"][:num_views], a["src_transform_matrix"][:num_views], float(a["camera_angle_x"])
    )
    out = imported.query(
        cond, torch.from_numpy(a["points"]), torch.from_numpy(a["viewdirs"]), outputs=tuple(FIELD_OUTPUTS.values())
    )
    for theirs, ours in FIELD_OUTPUTS.items():
        assert_parity(out[ours], a[f"field_{num_views}view_{theirs}"], f"{num_views}-view {theirs}")


def test_camera_rays_are_the_authors_rays(parity, imported):
    """Cameras built from the camera-JSON values cast the authors' rays (integer pixel coordinates)."""
    a = parity.arrays
    H, W = a["src_rgba"].shape[1:3]
    cam = cameras_from_fov(a["tgt_transform_matrix"][None], float(a["camera_angle_x"]), (H, W))
    bundle = cam.generate_rays(camera_indices=0, keep_shape=True)
    rows, cols = torch.from_numpy(a["ray_pixels"]).T
    rays = torch.from_numpy(a["rays"])
    torch.testing.assert_close(bundle.origins[rows, cols], rays[:, :3], rtol=0, atol=1e-6)
    torch.testing.assert_close(bundle.directions[rows, cols], rays[:, 3:6], rtol=0, atol=1e-6)
    assert (rays[:, 6] == imported.model.near).all() and (rays[:, 7] == imported.model.far).all()


def test_render_matches_their_renderer(parity, imported, gemm_backend):
    a = parity.arrays
    cond = imported.encode_image(a["src_rgba"][:1], a["src_transform_matrix"][:1], float(a["camera_angle_x"]))
    rays = torch.from_numpy(a["rays"])
    depths = SampleDepths(
        coarse=torch.from_numpy(a["z_coarse"])[None],
        fine=torch.from_numpy(new_fine_depths(a["z_coarse"], a["z_fine"]))[None],
    )
    out = imported.render_rays(cond, rays[:, :3], rays[:, 3:6], ("rgb", "feature", "coord", "v_nerf"), depths)
    names = {"rgb": "rgb", "depth": "depth", "embed": "feature", "coord": "coord"}
    for stage, suffix in (("coarse", "_coarse"), ("fine", "")):
        for theirs, ours in names.items():
            assert_parity(out[ours + suffix], a[f"render_{stage}_{theirs}"], f"{stage} {theirs}")
    assert_parity(out["v_nerf"], a["render_fine_vnerf"], "fine v_nerf")


class TrainBatch:
    """The fixture's training batch (their train.py step) in our model's terms."""

    def __init__(self, parity, model):
        a = parity.arrays
        x = a["train_src_encoder_input"]  # (B, 1, 3, H, W) in [-1, 1], from 8-bit images
        B, S, _, H, W = x.shape
        self.images = torch.from_numpy((np.round((x + 1.0) * 127.5) / 255.0).astype(np.float32))
        np.testing.assert_array_equal(model.encoder.network_input(self.images).numpy(), x)  # the same 8-bit images
        intr = np.concatenate([np.stack([a["train_focal"]] * 2, -1), a["train_c"]], -1).repeat(S, 0)
        cams = cameras_from_opencv(a["train_src_transform_matrix"].reshape(-1, 4, 4), intr, (H, W))
        poses = torch.from_numpy(a["train_src_poses"]).reshape(-1, 4, 4)[:, :3]
        torch.testing.assert_close(cams.camera_to_worlds, poses, rtol=0, atol=0)
        self.c2w = cams.camera_to_worlds.view(B, S, 3, 4)
        self.intrinsics = intrinsics_of(cams).view(B, S, 4)
        self.rays = torch.from_numpy(a["train_rays"])
        self.z_coarse = torch.from_numpy(a["train_z_coarse"])
        self.z_new = torch.from_numpy(new_fine_depths(a["train_z_coarse"], a["train_z_fine"]))
        self.batch = {
            "image": torch.from_numpy(a["train_rgb_gt"]).reshape(-1, 3),
            "teacher": torch.from_numpy(a["train_feat_gt"]).reshape(B * self.rays.shape[1], -1),
        }

    def losses(self, model, depths: SampleDepths) -> tuple[dict, torch.Tensor, dict]:
        """Encode, render with the given depths, and the loss terms; also the rendered outputs."""
        cond = model.encode(self.images, self.c2w, self.intrinsics)
        wanted = frozenset({"rgb", "feature", "coord"})
        out = model.render_rays(cond, self.rays[..., :3], self.rays[..., 3:6], wanted, depths=depths)
        losses = model.get_loss_dict({k: v.reshape(-1, v.shape[-1]) for k, v in out.items()}, self.batch)
        return losses, sum(losses.values()), out


def around_depth_samples(model, tb: TrainBatch, reference: dict[str, np.ndarray]) -> torch.Tensor:
    """Which of the fine pass's new samples their renderer drew around the coarse depth, ``(B, R, Kf)`` bool.

    The fixture records the fine depths sorted, which loses that; it matters for the gradient because their
    ``sample_fine_depth`` does not detach the depth, so gradients also flow through those samples' positions.
    The reference gradient minus ours with every depth held fixed is, per ray, ``s_r * d(depth_r)/d(theta)``
    with ``s_r`` the sum of dL/dz over that ray's around-depth samples: a least-squares fit of ``s_r`` over the
    MLP's listed parameters, then per ray ``Kd`` new samples whose dL/dz sum closest to ``s_r`` (the gradient
    depends on the pick only through that sum). Nothing here is asserted: a pick that does not reproduce the
    authors' gradient can only make the exact comparison that follows fail.
    """
    params = dict(model.named_parameters())
    # Row-wise layers (each MLP row is one sample of one ray); lin_z acts on shared feature-map cells instead.
    names = [k for k in reference if ".mlp." in k and ".lin_z." not in k and ".lin_out." not in k]
    assert names, "the fixture lists no gradient of the MLP's blocks or lin_in"
    by_id = {id(params[k]): k for k in names}
    calls: list[dict] = []
    original = field_module.linear

    def recording(x, weight, bias):
        y = original(x, weight, bias)
        if id(weight) in by_id and y.requires_grad:
            call = {"name": by_id[id(weight)], "x": x.detach()}
            y.register_hook(lambda grad, call=call: call.__setitem__("grad", grad.detach()))
            calls.append(call)
        return y

    z_new = tb.z_new.clone().requires_grad_(True)
    field_module.linear = recording
    try:
        _, total, out = tb.losses(model, SampleDepths(tb.z_coarse, z_new))
    finally:
        field_module.linear = original
    *g_fixed, dl_dz = torch.autograd.grad(total, [params[k] for k in names] + [z_new], retain_graph=True)
    depth = out["depth_coarse"][..., 0]
    # d(depth_r)/dW for every ray at once: depth_r depends only on its own ray's coarse rows, so the backward of
    # sum_r depth_r gives each row's output gradient; the per-ray gradient is the sum over its rows of
    # grad (x) input. Only the coarse pass's calls reach the coarse depth.
    for call in calls:
        call.pop("grad", None)
    torch.autograd.grad(depth.sum(), [params[k] for k in names])
    rng = np.random.default_rng(0)
    columns, residual = [], []
    num_rays = depth.numel()
    for call in (c for c in calls if "grad" in c):
        k, x, grad = call["name"], call["x"], call["grad"]
        rows_per_ray = x.shape[0] // num_rays
        out_i = torch.from_numpy(rng.integers(0, grad.shape[1], 8 * num_rays // len(names) + 1))
        in_i = torch.from_numpy(rng.integers(0, x.shape[1], len(out_i)))
        per_row = grad[:, out_i].double() * x[:, in_i].double()  # (rows, entries)
        columns.append(per_row.view(num_rays, rows_per_ray, -1).sum(1).T)
        theirs = torch.from_numpy(reference[k]).double()[out_i, in_i]
        ours = dict(zip(names, g_fixed, strict=True))[k].double()[out_i, in_i]
        residual.append(theirs - ours)
    assert len(columns) == len(names), "expected one coarse call per listed layer"
    s = torch.linalg.lstsq(torch.cat(columns), torch.cat(residual)[:, None]).solution[:, 0].view(depth.shape)

    kd = model.config.num_fine_depth_samples
    g = dl_dz.detach().double()
    chosen = torch.zeros(g.shape, dtype=torch.bool)
    for idx in np.ndindex(*depth.shape):
        pick = _subset_with_sum(g[idx].numpy(), float(s[idx]), kd)
        chosen[idx + (pick,)] = True
    return chosen


def _subset_with_sum(values: np.ndarray, target: float, k: int) -> list[int]:
    """Indices of ``k`` of ``values`` whose sum is closest to ``target`` (meet in the middle: every subset of
    each half, then for each split of ``k`` the nearest sum by binary search)."""

    def subsets(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bits = (np.arange(1 << len(v))[:, None] >> np.arange(len(v))) & 1
        return bits.sum(1), bits @ v, bits

    half = len(values) // 2
    size_a, sum_a, bits_a = subsets(values[:half])
    size_b, sum_b, bits_b = subsets(values[half:])
    best_err, best = np.inf, None
    for j in range(max(0, k - (len(values) - half)), min(k, half) + 1):
        a, b = np.flatnonzero(size_a == j), np.flatnonzero(size_b == k - j)
        b = b[np.argsort(sum_b[b])]
        need = target - sum_a[a]
        pos = np.searchsorted(sum_b[b], need)
        for cand in (np.clip(pos - 1, 0, len(b) - 1), np.clip(pos, 0, len(b) - 1)):
            err = np.abs(sum_b[b[cand]] - need)
            i = int(err.argmin())
            if err[i] < best_err:
                best_err, best = err[i], np.concatenate([bits_a[a[i]], bits_b[b[cand[i]]]])
    return np.flatnonzero(best).tolist()


def test_training_step_losses_and_gradients_match(parity, imported, gemm_backend):
    a = parity.arrays
    model = imported.model
    saved = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm statistics move in training mode
    params = dict(model.named_parameters())
    reference = {
        k.removeprefix("train_grad__").replace("__", ".").replace("mlp_coarse.", "field.mlp."): a[k]
        for k in a
        if k.startswith("train_grad__")
    }
    assert reference
    model.train()
    try:
        tb = TrainBatch(parity, model)
        chosen = around_depth_samples(model, tb, reference)
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            depth = tb.losses(model, SampleDepths(tb.z_coarse, tb.z_new))[2]["depth_coarse"]
        model.load_state_dict(saved)
        kd = model.config.num_fine_depth_samples
        shape = (*tb.z_new.shape[:-1], -1)
        depths = SampleDepths(
            coarse=tb.z_coarse,
            fine=tb.z_new[~chosen].view(shape),
            around_depth=tb.z_new[chosen].view(*shape[:-1], kd) - depth,
        )
        losses, total, _ = tb.losses(model, depths)
        total.backward()
        assert_parity(losses["rgb_loss"], a["train_loss_rgb"], "rgb loss")
        assert_parity(losses["distill_loss"], a["train_loss_embed"], "distill loss")
        assert_parity(losses["coord_loss"], a["train_loss_coord"], "coord loss")
        assert_parity(total, a["train_loss_total"], "total loss")
        for name, theirs in reference.items():
            assert_parity(params[name].grad, theirs, f"gradient of {name}")
    finally:
        model.zero_grad(set_to_none=True)
        model.load_state_dict(saved)
        model.eval()


def test_pixelnerf_layout_imports_as_nerf_feature_model(parity, tiny_root, tmp_path):
    """pixelNeRF's network is FeatureNeRF's without the feature and coordinate outputs: its rgb, density and
    v_NeRF are the same numbers, and its separate fine MLP is honoured."""
    a = parity.arrays
    state = torch.load(parity.checkpoint, map_location="cpu", weights_only=True)
    pixelnerf = {}
    for k, v in state.items():
        if k.endswith("lin_out.weight") or k.endswith("lin_out.bias"):
            v = v[:4].clone()
        pixelnerf[k] = v.clone()
    path = tmp_path / "pixel_nerf_latest"
    torch.save(pixelnerf, path)
    config = import_checkpoint(
        ImportConfig(checkpoint=path, data=tiny_root / "chair", output_dir=tmp_path / "out", device_type="cpu")
    )
    assert config.parent.parent.name == "featurenerf-nerf-feature"
    tf = TrainedFeatureNeRF.load(config, device="cpu")
    assert tf.model.feature_dim == 0 and not tf.model.config.regress_coord
    cond = tf.encode_image(a["src_rgba"][:1], a["src_transform_matrix"][:1], float(a["camera_angle_x"]))
    out = tf.query(cond, torch.from_numpy(a["points"]), torch.from_numpy(a["viewdirs"]), ("rgb", "density", "v_nerf"))
    assert set(out) == {"rgb", "density", "v_nerf"}
    for theirs, ours in (("rgb", "rgb"), ("sigma", "density"), ("vnerf", "v_nerf")):
        assert_parity(out[ours], a[f"field_1view_{theirs}"], theirs)

    # A separate fine MLP (pixelNeRF's training) holding the same weights renders the authors' fine pass: it
    # re-evaluates every sample, as their renderer does, instead of reusing the coarse ones.
    ckpt = read_authors_checkpoint(path)
    arch = dataclasses.replace(ckpt.architecture, share_mlp=False)
    model_config = arch.apply(tf.model.config)
    model = type(tf.model)(config=model_config, scene_box=tf.model.scene_box, num_train_data=0).eval()
    own = model.state_dict()
    mapped, _ = to_model_state(dataclasses.replace(ckpt, architecture=arch), own)
    mapped.update(
        {k.replace("field.mlp.", "field.mlp_fine."): v for k, v in mapped.items() if k.startswith("field.mlp.")}
    )
    model.load_state_dict(mapped, strict=False)
    assert model.field.mlp_fine is not None
    H, W = a["src_rgba"].shape[1:3]
    cams = cameras_from_fov(a["src_transform_matrix"][:1], float(a["camera_angle_x"]), (H, W))
    rays = torch.from_numpy(a["rays"])
    depths = SampleDepths(
        coarse=torch.from_numpy(a["z_coarse"])[None],
        fine=torch.from_numpy(new_fine_depths(a["z_coarse"], a["z_fine"]))[None],
    )
    with torch.no_grad():
        cond = model.encode(
            tf.source_images(a["src_rgba"][:1])[None], cams.camera_to_worlds[None], intrinsics_of(cams)[None]
        )
        out = model.render_rays(
            cond, rays[None, :, :3], rays[None, :, 3:6], frozenset({"rgb", "v_nerf"}), depths=depths
        )
    assert_parity(out["rgb"][0], a["render_fine_rgb"], "separate fine MLP: fine rgb")
    assert_parity(out["depth"][0], a["render_fine_depth"], "separate fine MLP: fine depth")
    assert_parity(out["v_nerf"][0], a["render_fine_vnerf"], "separate fine MLP: fine v_nerf")
    # Other fine weights change the fine pass only.
    with torch.no_grad():
        model.field.mlp_fine.lin_out.bias[3] += 1.0
        again = model.render_rays(cond, rays[None, :, :3], rays[None, :, 3:6], frozenset({"rgb"}), depths=depths)
    torch.testing.assert_close(again["rgb_coarse"], out["rgb_coarse"])
    assert (again["rgb"] - out["rgb"]).abs().max() > 1e-3
