"""The product end to end: generate a tiny category, ns-train a tiny preset, ns-eval it, resume it,
and load it through the public API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featurenerf_ns.model.pipeline import RENDER_SOURCE_ENV
from featurenerf_ns.utils.io import UserError
from tests.conftest import TrainedRun, run_headless

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def ns_train(run_: TrainedRun, timestamp: str, *extra: str) -> subprocess.CompletedProcess:
    """``ns-train featurenerf-tiny`` on the session's tiny category."""
    data, out = str(run_.data), str(run_.root / "outputs")
    args = ["featurenerf-tiny", "--data", data, "--output-dir", out, "--timestamp", timestamp, *extra]
    return run([str(BIN / "ns-train"), *args], cwd=run_.root)


@pytest.fixture(scope="module")
def trained(trained_tiny: TrainedRun):
    return trained_tiny.root, trained_tiny.config


def test_ns_train_writes_checkpoints(trained_tiny):
    ckpts = sorted((trained_tiny.config.parent / "nerfstudio_models").glob("step-*.ckpt"))
    last = trained_tiny.steps - 1
    assert ckpts and ckpts[-1].name == f"step-{last:09d}.ckpt"
    # Everything in the checkpoint loads with torch>=2.6's weights_only default.
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
    assert state["step"] == last and "pipeline" in state


@pytest.fixture(scope="module")
def ns_eval_results(trained) -> dict[str, float]:
    """``ns-eval`` of the session's tiny run: the ``results`` of its JSON."""
    root, config = trained
    out = root / "eval.json"
    run([str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(out)], cwd=root)
    return json.loads(out.read_text())["results"]


def test_ns_eval_psnr_beats_the_trivial_predictors(trained, ns_eval_results):
    """Held-out novel views: the model must beat rendering only background and rendering each target image's own
    mean colour (measured: 19.3 dB vs 17.3 and 18.0 dB), on the same eval triples ns-eval scores."""
    from featurenerf_ns.model.api import TrainedFeatureNeRF
    from featurenerf_ns.model.trivial import trivial_psnrs

    _, config = trained
    results = ns_eval_results
    dm = TrainedFeatureNeRF.load(config, device="cpu").datamanager
    assert len(dm.eval_triples) == 6
    trivial = trivial_psnrs(dm)
    print(f"PSNR: model {results['psnr']:.2f}, trivial {trivial}")
    assert results["psnr"] > max(trivial.values()) + 0.75
    assert 0.0 < results["ssim"] <= 1.0


def _teacher_at_pixels(feats: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """``(h, w, D)`` teacher map at every pixel of an ``H x W`` image, bilinear with zero padding at the authors'
    sample points: pixel ``(y, x)`` reads the map at cell coordinate ``(y h / H - 0.5, x w / W - 0.5)``."""
    (H, W), (h, w) = image_hw, feats.shape[:2]
    padded = np.pad(feats.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    sy, sx = np.arange(H) * h / H - 0.5, np.arange(W) * w / W - 0.5
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    fy, fx = (sy - y0)[:, None, None], (sx - x0)[None, :, None]
    y0, x0 = np.clip(y0 + 1, 0, h + 1), np.clip(x0 + 1, 0, w + 1)  # +1: the padding row/column
    y1, x1 = np.clip(y0 + 1, 0, h + 1), np.clip(x0 + 1, 0, w + 1)
    top = padded[y0][:, x0] * (1 - fx) + padded[y0][:, x1] * fx
    bottom = padded[y1][:, x0] * (1 - fx) + padded[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def _distillation_error(tf, feature_rows: torch.Tensor | None = None) -> dict[str, float]:
    """Distillation error over ns-eval's triples, computed here: rendered through the public API, the teacher read
    from its file; optionally with the feature head's output rows replaced."""
    from featurenerf_ns.teachers.store import open_teacher_features

    dm, lin_out = tf.datamanager, tf.model.field.mlp.lin_out
    rows = slice(4, 4 + tf.model.feature_dim)  # the authors' output order: rgb(3), sigma(1), feature(D), coord(3)
    trained_rows = lin_out.weight.data[rows].clone()
    if feature_rows is not None:
        lin_out.weight.data[rows] = feature_rows
    mse, cosine = [], []
    try:
        for obj, src, trg in dm.eval_triples:
            rec = dm.eval_objects[obj]
            cond = tf.encode("test", rec.obj_id, [src])
            feature = tf.render(cond, "test", rec.obj_id, trg, ("rgb", "feature"))["feature"].double().numpy()
            stored = open_teacher_features(rec.teacher_path).read([trg])[0].transpose(1, 2, 0)
            teacher = _teacher_at_pixels(stored, dm.image_hw)
            mse.append(((feature - teacher) ** 2).mean())
            fg = np.abs(teacher).sum(-1) > 0
            norms = np.linalg.norm(feature[fg], axis=-1) * np.linalg.norm(teacher[fg], axis=-1)
            cosine.append(((feature[fg] * teacher[fg]).sum(-1) / np.maximum(norms, 1e-8)).mean())
    finally:
        lin_out.weight.data[rows] = trained_rows
    return {"distill_mse": float(np.mean(mse)), "distill_cosine": float(np.mean(cosine))}


def test_ns_eval_reports_the_held_out_distillation_error(trained, ns_eval_results):
    """ns-eval's feature MSE and cosine to the teacher on the eval triples equal an independent computation, and the
    trained head beats a random one of the same scale. (Measured: MSE 0.122 and cosine 0.39, random head 0.166 and
    0.07; the head's bias alone, i.e. the teacher's mean direction, scores 0.116 and 0.40: 500 tiny steps learn
    little more than that.)"""
    from featurenerf_ns.model.api import TrainedFeatureNeRF

    _, config = trained
    tf = TrainedFeatureNeRF.load(config, device="cpu")
    here = _distillation_error(tf)
    assert ns_eval_results["distill_mse"] == pytest.approx(here["distill_mse"], rel=1e-4)
    assert ns_eval_results["distill_cosine"] == pytest.approx(here["distill_cosine"], rel=1e-4, abs=1e-5)
    weights = tf.model.field.mlp.lin_out.weight.data[4 : 4 + tf.model.feature_dim]
    generator = torch.Generator().manual_seed(0)
    random = _distillation_error(tf, torch.randn(weights.shape, generator=generator) * weights.std())
    print(f"distillation: trained {here}, random head {random}")
    assert here["distill_cosine"] > random["distill_cosine"] + 0.2
    assert here["distill_mse"] < 0.9 * random["distill_mse"]


def test_tensorboard_shows_feature_teacher_depth_images_and_the_distillation_error(trained_tiny):
    """The tiny run's event file (eval images every 10 steps): the rendered feature next to the teacher's map
    (whose half is the teacher's PCA colouring of one of the run's eval triples), depth, and the distillation
    scalars, whose cosine grows over training."""
    import io

    import yaml
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from featurenerf_ns.utils.features import PCABasis

    events = EventAccumulator(str(trained_tiny.config.parent), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert {"Eval Images/feature_pca", "Eval Images/depth", "Eval Images/img"} <= set(tags["images"])
    assert {"Eval Images Metrics/distill_mse", "Eval Images Metrics/distill_cosine"} <= set(tags["scalars"])
    pictures = events.Images("Eval Images/feature_pca")
    assert len(pictures) == trained_tiny.steps // 10 - 1  # nerfstudio's eval image steps: 10, 20, ..., 490
    assert (pictures[-1].height, pictures[-1].width) == (32, 64)
    depth = events.Images("Eval Images/depth")[-1]
    assert (depth.height, depth.width) == (32, 32)

    # Training evaluates on the validation split (ns-eval on the test split).
    run_config = yaml.load(trained_tiny.config.read_text(), Loader=yaml.Loader)
    dm = run_config.pipeline.datamanager.setup(device="cpu", test_mode="val")
    expected = []
    for i in range(len(dm.eval_triples)):
        teacher = dm.eval_example(i)[1]["teacher"]
        fg = teacher.abs().amax(-1) > 0
        expected.append((PCABasis.fit(teacher[fg]).apply(teacher) * fg[..., None]).numpy())
    for picture in pictures[-6:]:
        pixels = np.asarray(Image.open(io.BytesIO(picture.encoded_image_string)).convert("RGB")) / 255.0
        gap = min(np.abs(pixels[:, :32] - e).max() for e in expected)
        assert gap <= 1.0 / 255 + 1e-6
    cosine = [e.value for e in events.Scalars("Eval Images Metrics/distill_cosine")]
    print(f"eval-image cosine: first {np.mean(cosine[:6]):.3f}, last {np.mean(cosine[-6:]):.3f}")
    assert np.mean(cosine[-6:]) > np.mean(cosine[:6]) + 0.1


def _parameters(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["pipeline"]
    return {k: v for k, v in state.items() if k.startswith("_model.") and v.is_floating_point() and v.numel()}


def test_resume_continues_exactly_like_an_uninterrupted_run(trained_tiny):
    """N steps, stop, resume M steps == N + M steps in one run (same parameters to fp32 round-off): the checkpoint
    carries the optimiser, torch's generator and the datamanager's sampler (including the plan it had prefetched).
    The runs cross an eval batch, an eval image and the end of bbox sampling (the tiny preset's 5/10/5 steps)."""
    n, m = 7, 5
    ns_train(trained_tiny, "whole", "--max-num-iterations", str(n + m))
    ns_train(trained_tiny, "first", "--max-num-iterations", str(n))
    first = trained_tiny.root / "outputs" / "chair" / "featurenerf-tiny" / "first" / "nerfstudio_models"
    proc = ns_train(trained_tiny, "resumed", "--load-dir", str(first), "--max-num-iterations", str(m))
    assert "Done loading Nerfstudio checkpoint" in proc.stdout + proc.stderr
    runs = trained_tiny.root / "outputs" / "chair" / "featurenerf-tiny"
    last = f"step-{n + m - 1:09d}.ckpt"
    # nerfstudio resumes at the saved step + 1 and then runs max-num-iterations more steps.
    assert sorted(p.name for p in (runs / "resumed" / "nerfstudio_models").glob("*.ckpt"))[-1] == last
    whole, resumed = (
        _parameters(runs / "whole" / "nerfstudio_models" / last),
        _parameters(runs / "resumed" / "nerfstudio_models" / last),
    )
    start = _parameters(first / f"step-{n - 1:09d}.ckpt")
    assert whole.keys() == resumed.keys()
    moved = max((whole[k] - start[k]).abs().max().item() for k in whole)
    gap = max((whole[k] - resumed[k]).abs().max().item() for k in whole)
    print(f"largest change over the last {m} steps {moved:.2e}, resumed vs whole {gap:.2e}")
    assert moved > 1e-4
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], rtol=1e-5, atol=1e-6, msg=k)


def test_ns_render_renders_the_default_source_without_the_viewer(trained, monkeypatch):
    """ns-render builds no viewer panel (nor imports the viewer package) and renders the pipeline's default source
    (view 0 of the first test object): rgb, depth and accumulation only, v_NeRF is not composited."""
    from featurenerf_ns.model.api import TrainedFeatureNeRF

    if shutil.which("ffmpeg") is None:
        pytest.skip("ns-render needs ffmpeg (scripts/install.sh installs it as root)")
    root, config = trained
    out = root / "render"
    args = ["interpolate", "--load-config", str(config), "--output-path", str(out), "--output-format", "images",
            "--interpolation-steps", "2", "--rendered-output-names", "rgb"]  # fmt: skip
    run_headless("nerfstudio.scripts.render", args, cwd=root, timeout=600)
    assert len(list(out.glob("*.jpg"))) >= 2

    tf = TrainedFeatureNeRF.load(config, device="cpu")
    obj = tf.objects("test")[0]
    camera = tf.camera("test", obj.obj_id, 1)
    shown = tf.model.get_outputs_for_camera(camera)
    assert set(shown) == {"rgb", "depth", "accumulation"}
    expected = tf.render(tf.encode("test", obj.obj_id, [0]), "test", obj.obj_id, 1, outputs=("rgb",))
    torch.testing.assert_close(shown["rgb"], expected["rgb"])

    # The source can be named (ns-render takes no pipeline options: the environment, or render_source in config.yml).
    other = tf.objects("train")[1].obj_id
    named = root / "render_named"
    args[args.index("--output-path") + 1] = str(named)
    run_headless("nerfstudio.scripts.render", args, cwd=root, timeout=600, env={RENDER_SOURCE_ENV: f"train/{other}:2"})
    first = lambda folder: np.asarray(Image.open(sorted(folder.glob("*.jpg"))[0]), dtype=np.float32)  # noqa: E731
    assert np.abs(first(named) - first(out)).mean() > 1.0  # another object's field, another image
    monkeypatch.setenv(RENDER_SOURCE_ENV, f"train/{other}:2")
    tf2 = TrainedFeatureNeRF.load(config, device="cpu")
    expected = tf2.render(tf2.encode("train", other, [2]), "test", obj.obj_id, 1, outputs=("rgb",))
    torch.testing.assert_close(tf2.model.get_outputs_for_camera(camera)["rgb"], expected["rgb"])
    for bad in ("chair_1:0", "test/", f"train/{other}:x", "test/no_such_object"):
        monkeypatch.setenv(RENDER_SOURCE_ENV, bad)
        with pytest.raises(UserError, match="FEATURENERF_RENDER_SOURCE|not in the test split"):
            TrainedFeatureNeRF.load(config, device="cpu").model.get_outputs_for_camera(camera)


def test_featurenerf_edit_writes_the_edited_render(trained):
    root, config = trained
    proc = run(
        [
            str(BIN / "featurenerf-edit"),
            "--load-config",
            str(config),
            "--part",
            "seat",
            "--render-views",
            "0",
            "1",
            "--min-accumulation",
            "0.0",
            "--output-dir",
            str(root / "edit"),
        ],
        cwd=root,
    )
    pngs = sorted((root / "edit").glob("edit_seat_*.png"))
    assert len(pngs) == 2 and "wrote" in proc.stdout
    from PIL import Image

    assert Image.open(pngs[0]).size == (3 * 32, 32)  # source | target render | edited


def test_public_api_renders_and_queries(trained):
    from featurenerf_ns.model.api import TrainedFeatureNeRF

    _, config = trained
    tf = TrainedFeatureNeRF.load(config, device="cpu")
    obj = tf.objects("test")[0]
    cond = tf.encode("test", obj.obj_id, [0])
    maps = tf.render(cond, "test", obj.obj_id, 1, outputs=("rgb", "v_nerf", "feature"))
    assert maps["rgb"].shape == (32, 32, 3)
    assert maps["v_nerf"].shape == (32, 32, 32)
    assert maps["feature"].shape == (32, 32, tf.model.feature_dim)
    assert ((maps["accumulation"] >= 0) & (maps["accumulation"] <= 1 + 1e-5)).all()
    q = tf.query(cond, torch.zeros(5, 3))
    assert q["v_nerf"].shape == (5, 32) and q["density"].shape == (5, 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_ns_train_on_cuda_without_a_gpu_is_one_clear_line(trained):
    root, _ = trained
    data = str(root / "data" / "chair")
    cmd = [str(BIN / "ns-train"), "featurenerf-tiny", "--data", data, "--output-dir", str(root / "cuda-run")]
    cmd += ["--machine.device-type", "cuda"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert "error: cuda is not available on this machine" in proc.stderr
    assert "--machine.device-type cpu" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (root / "cuda-run").exists()  # a start that fails writes nothing


def test_ns_train_without_the_data_is_one_line_and_writes_nothing(trained):
    root, _ = trained
    out = root / "no-data-run"
    data = root / "shapenet" / "chair"
    cmd = [str(BIN / "ns-train"), "featurenerf-tiny", "--data", str(data), "--output-dir", str(out)]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {root / 'shapenet'}: data root not found") and "--data synthetic/chair" in line
    assert not out.exists()
