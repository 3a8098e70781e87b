"""Parity with the authors' own code: their checkpoint, imported, reproduces their recorded outputs.

The fixture (``$FEATURENERF_PARITY_FIXTURE``, see ``tests/conftest.py``) holds what the authors'
``PixelNeRFEmbedNet``, ``NeRFEmbedRenderer`` and ``train.py`` losses computed for its checkpoint. Every
size (image, widths, feature channels, sample counts, backbone) comes from the fixture and its
``model.conf``.

Tolerance, per array: ``max |ours - theirs| <= max(1e-5, min(4 * fp32_noise, 1e-3)) * max |theirs|``, where
``fp32_noise = max |ours_fp32 - ours_fp64| / max |theirs|`` is how far float32 rounding moves our own result
(the same code run in float64). On the shipped fixture every array stays at 1e-5. At the paper's size the
gradients do not: summed over ~50k samples and through BatchNorm's training-mode backward, fp32 rounding
moves the encoder's by ~3e-4 of their scale and the MLP's by ~5e-5 (ours and, measured on fixtures made by
running the authors' code at that size, theirs alike, up to ~3x ours), so no fp32 implementation can agree
with another to 1e-5 there.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

import featurenerf_ns.model.field as field_module
from featurenerf_ns.geometry import cameras_from_fov, cameras_from_opencv, intrinsics_of
from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.model.authors_checkpoint import read_authors_checkpoint, to_model_state
from featurenerf_ns.model.import_cli import ImportConfig, import_checkpoint
from featurenerf_ns.model.photo import PhotoCamera
from featurenerf_ns.model.rendering import SampleDepths
from featurenerf_ns.utils.hocon import hocon_get

RTOL = 1e-5
NOISE_FACTOR = 4.0
MAX_RTOL = 1e-3
FIELD_OUTPUTS = {"rgb": "rgb", "sigma": "density", "embed": "feature", "coord": "coord", "vnerf": "v_nerf"}


def _double(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().double().cpu()


def assert_parity(ours, theirs, name: str, ours64=None) -> None:
    """``ours`` (fp32) within the module's tolerance of ``theirs``; ``ours64`` (the same computed in float64)
    measures fp32 rounding, None keeps the tolerance at 1e-5."""
    theirs = _double(theirs)
    ours = _double(ours).reshape(theirs.shape)
    scale = float(theirs.abs().max())
    assert scale > 0, f"{name}: the reference is all zeros (nothing would be compared)"
    noise = 0.0 if ours64 is None else float((ours - _double(ours64).reshape(theirs.shape)).abs().max()) / scale
    rtol = max(RTOL, min(NOISE_FACTOR * noise, MAX_RTOL))
    err = float((ours - theirs).abs().max()) / scale
    assert err <= rtol, f"{name}: max error {err:.3g} x scale > tolerance {rtol:.3g} (fp32 noise {noise:.3g})"


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


@pytest.fixture(scope="module")
def imported64(imported):
    """The same model in float64: how far fp32 rounding moves our results."""
    return in_float64(imported)


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


def fixture_photos(tf: TrainedFeatureNeRF, a: dict, num_views: int):
    """The fixture's source images as photos with the authors' cameras, at their own size (as the authors encode)."""
    rgba = a["src_rgba"][:num_views]
    camera = PhotoCamera(a["src_transform_matrix"][:num_views], float(a["camera_angle_x"]))
    return tf.prepare_image(rgba, camera, image_size=rgba.shape[1:3])


def field_outputs(parity, tf: TrainedFeatureNeRF, num_views: int, outputs=tuple(FIELD_OUTPUTS.values())) -> dict:
    """Our field at the fixture's points, conditioned on its first ``num_views`` source images."""
    a = parity.arrays
    cond = tf.encode_image(fixture_photos(tf, a, num_views))
    return tf.query(cond, torch.from_numpy(a["points"]), torch.from_numpy(a["viewdirs"]), outputs=outputs)


def in_float64(tf: TrainedFeatureNeRF) -> TrainedFeatureNeRF:
    return TrainedFeatureNeRF(copy.deepcopy(tf.model).double(), tf.datamanager)


@pytest.mark.parametrize("num_views", [1, 2])
def test_field_outputs_match(parity, imported, imported64, num_views, gemm_backend):
    ours, ours64 = field_outputs(parity, imported, num_views), field_outputs(parity, imported64, num_views)
    for theirs, name in FIELD_OUTPUTS.items():
        reference = parity.arrays[f"field_{num_views}view_{theirs}"]
        assert_parity(ours[name], reference, f"{num_views}-view {theirs}", ours64[name])


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


def test_render_matches_their_renderer(parity, imported, imported64, gemm_backend):
    a = parity.arrays
    rays = torch.from_numpy(a["rays"])
    depths = SampleDepths(
        coarse=torch.from_numpy(a["z_coarse"])[None],
        fine=torch.from_numpy(new_fine_depths(a["z_coarse"], a["z_fine"]))[None],
    )
    outs = []
    for tf in (imported, imported64):
        cond = tf.encode_image(fixture_photos(tf, a, 1))
        outs.append(tf.render_rays(cond, rays[:, :3], rays[:, 3:6], ("rgb", "feature", "coord", "v_nerf"), depths))
    names = {"rgb": "rgb", "depth": "depth", "embed": "feature", "coord": "coord"}
    for stage, suffix in (("coarse", "_coarse"), ("fine", "")):
        for theirs, ours in names.items():
            key = ours + suffix
            assert_parity(outs[0][key], a[f"render_{stage}_{theirs}"], f"{stage} {theirs}", outs[1][key])
    assert_parity(outs[0]["v_nerf"], a["render_fine_vnerf"], "fine v_nerf", outs[1]["v_nerf"])


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
        """Encode, render with the given depths, and the loss terms (in the model's dtype); also the outputs."""
        dtype = next(model.parameters()).dtype
        cond = model.encode(self.images.to(dtype), self.c2w.to(dtype), self.intrinsics.to(dtype))
        depths = SampleDepths(
            *(None if t is None else t.to(dtype) for t in (depths.coarse, depths.fine, depths.around_depth))
        )
        rays = self.rays.to(dtype)
        out = model.render_rays(
            cond, rays[..., :3], rays[..., 3:6], frozenset({"rgb", "feature", "coord"}), depths=depths
        )
        batch = {k: v.to(dtype) for k, v in self.batch.items()}
        losses = model.get_loss_dict({k: v.reshape(-1, v.shape[-1]) for k, v in out.items()}, batch)
        return losses, sum(losses.values()), out


def around_depth_samples(model, tb: TrainBatch, reference: dict[str, np.ndarray]) -> SampleDepths:
    """The fixture's depths, with the fine samples their renderer drew around the coarse depth told apart.

    The fixture records the fine depths sorted, which loses that; it matters for the gradient because their
    ``sample_fine_depth`` does not detach the depth, so gradients also flow through those samples' positions
    (except where the clamp to near/far holds them). The reference gradient minus ours with every depth held
    fixed is, per ray, ``s_r * d(depth_r)/d(theta)`` with ``s_r`` the sum of dL/dz over that ray's unclamped
    around-depth samples: a least-squares fit of ``s_r`` over the MLP's row-wise listed parameters, then per ray
    ``Kd`` new samples whose dL/dz sum closest to ``s_r`` (the gradient depends on the pick only through that
    sum). Nothing here is asserted: a pick that does not reproduce the authors' gradient can only make the
    exact comparison that follows fail.
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
    # Least squares on every entry of those layers, as normal equations accumulated layer by layer.
    num_rays = depth.numel()
    normal = torch.zeros(num_rays, num_rays, dtype=torch.float64)
    rhs = torch.zeros(num_rays, dtype=torch.float64)
    fixed = dict(zip(names, g_fixed, strict=True))
    coarse_calls = [c for c in calls if "grad" in c]
    assert sorted(c["name"] for c in coarse_calls) == sorted(names), "expected one coarse call per listed layer"
    for call in coarse_calls:
        k, x, grad = call["name"], call["x"], call["grad"]
        per_ray = torch.einsum("rko,rki->roi", grad.view(num_rays, -1, grad.shape[1]), x.view(num_rays, -1, x.shape[1]))
        jac = per_ray.reshape(num_rays, -1)
        normal += (jac @ jac.T).double()
        rhs += (jac @ (torch.from_numpy(reference[k]).reshape(-1) - fixed[k].reshape(-1))).double()
    # Rays that see no density have no depth gradient: their s_r is free and does not matter (minimum norm).
    s = torch.linalg.lstsq(normal, rhs[:, None], driver="gelsd").solution[:, 0].view(depth.shape)

    near, far = model.near, model.far
    clamped = (tb.z_new <= near) | (tb.z_new >= far)  # their clamp passes no gradient to these
    g = torch.where(clamped, 0.0, dl_dz.detach().double())
    kd = model.config.num_fine_depth_samples
    chosen = torch.zeros(g.shape, dtype=torch.bool)
    for idx in np.ndindex(*depth.shape):
        chosen[idx + (_subset_with_sum(g[idx].numpy(), float(s[idx]), kd),)] = True
    shape = (*tb.z_new.shape[:-1], -1)
    z_depth = tb.z_new[chosen].view(shape)
    # Offsets from our coarse depth; clamped samples get offsets far past the bound so that our clamp holds them.
    offsets = torch.where(z_depth <= near, -1e6, torch.where(z_depth >= far, 1e6, z_depth - depth.detach()[..., None]))
    return SampleDepths(coarse=tb.z_coarse, fine=tb.z_new[~chosen].view(shape), around_depth=offsets)


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
    reference = {
        k.removeprefix("train_grad__").replace("__", ".").replace("mlp_coarse.", "field.mlp."): a[k]
        for k in a
        if k.startswith("train_grad__")
    }
    assert reference
    model64 = copy.deepcopy(model).double().train()
    model.train()
    try:
        tb = TrainBatch(parity, model)
        depths = around_depth_samples(model, tb, reference)
        results = []
        for m in (model, model64):
            m.load_state_dict(saved)
            m.zero_grad(set_to_none=True)
            losses, total, _ = tb.losses(m, depths)
            total.backward()
            grads = {name: p.grad for name, p in m.named_parameters() if name in reference}
            results.append((losses, total, grads))
        (losses, total, grads), (losses64, total64, grads64) = results
        assert_parity(losses["rgb_loss"], a["train_loss_rgb"], "rgb loss", losses64["rgb_loss"])
        assert_parity(losses["distill_loss"], a["train_loss_embed"], "distill loss", losses64["distill_loss"])
        assert_parity(losses["coord_loss"], a["train_loss_coord"], "coord loss", losses64["coord_loss"])
        assert_parity(total, a["train_loss_total"], "total loss", total64)
        assert set(grads) == set(reference)
        for name, theirs in reference.items():
            assert_parity(grads[name], theirs, f"gradient of {name}", grads64[name])
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
    out = field_outputs(parity, tf, 1)
    assert set(out) == {"rgb", "density", "v_nerf"}  # the heads it lacks are left out
    out64 = field_outputs(parity, in_float64(tf), 1)
    for theirs, ours in (("rgb", "rgb"), ("sigma", "density"), ("vnerf", "v_nerf")):
        assert_parity(out[ours], a[f"field_1view_{theirs}"], theirs, out64[ours])

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
    renders = []
    with torch.no_grad():
        for m in (model, copy.deepcopy(model).double()):
            dt = next(m.parameters()).dtype
            images = tf.source_images(a["src_rgba"][:1])[None].to(dt)
            cond = m.encode(images, cams.camera_to_worlds[None].to(dt), intrinsics_of(cams)[None].to(dt))
            d = SampleDepths(depths.coarse.to(dt), depths.fine.to(dt))
            o, r = rays[None, :, :3].to(dt), rays[None, :, 3:6].to(dt)
            renders.append(m.render_rays(cond, o, r, frozenset({"rgb", "v_nerf"}), depths=d))
    out, out64 = renders
    for theirs, key in (("rgb", "rgb"), ("depth", "depth"), ("vnerf", "v_nerf")):
        assert_parity(out[key][0], a[f"render_fine_{theirs}"], f"separate fine MLP: fine {theirs}", out64[key][0])
    # Other fine weights change the fine pass only.
    with torch.no_grad():
        cond = model.encode(
            tf.source_images(a["src_rgba"][:1])[None], cams.camera_to_worlds[None], intrinsics_of(cams)[None]
        )
        model.field.mlp_fine.lin_out.bias[3] += 1.0
        again = model.render_rays(cond, rays[None, :, :3], rays[None, :, 3:6], frozenset({"rgb"}), depths=depths)
    torch.testing.assert_close(again["rgb_coarse"], out["rgb_coarse"])
    assert (again["rgb"] - out["rgb"]).abs().max() > 1e-3
