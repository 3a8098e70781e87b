"""The product end to end: generate a tiny category, ns-train a tiny preset, ns-eval it, resume it,
and load it through the public API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from featurenerf_ns.synthetic.generate import generate_category

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def ns_train(root: Path, timestamp: str, *extra: str) -> subprocess.CompletedProcess:
    """``ns-train featurenerf-tiny`` on the module's tiny category."""
    data, out = str(root / "data" / "chair"), str(root / "outputs")
    args = ["featurenerf-tiny", "--data", data, "--output-dir", out, "--timestamp", timestamp, *extra]
    return run([str(BIN / "ns-train"), *args], cwd=root)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    generate_category(
        root / "data", "chair", num_objects=8, num_views=4, image_size=32, num_pairs=4, workers=0, progress=False
    )
    ns_train(root, "run")
    config = root / "outputs" / "chair" / "featurenerf-tiny" / "run" / "config.yml"
    assert config.is_file()
    return root, config


def test_ns_train_writes_checkpoints(trained):
    _, config = trained
    ckpts = sorted((config.parent / "nerfstudio_models").glob("step-*.ckpt"))
    assert ckpts and ckpts[-1].name == "step-000000019.ckpt"
    # Everything in the checkpoint loads with torch>=2.6's weights_only default.
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
    assert state["step"] == 19 and "pipeline" in state


def test_ns_eval_reports_psnr_ssim(trained):
    root, config = trained
    out = root / "eval.json"
    run([str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(out)], cwd=root)
    results = json.loads(out.read_text())["results"]
    assert 5.0 < results["psnr"] < 60.0
    assert 0.0 < results["ssim"] <= 1.0


def test_resume_continues_from_checkpoint(trained):
    root, config = trained
    ckpt_dir = config.parent / "nerfstudio_models"
    proc = ns_train(root, "resumed", "--load-dir", str(ckpt_dir), "--max-num-iterations", "30")
    assert "Done loading Nerfstudio checkpoint" in proc.stdout + proc.stderr
    resumed = root / "outputs" / "chair" / "featurenerf-tiny" / "resumed" / "nerfstudio_models"
    steps = sorted(p.name for p in resumed.glob("step-*.ckpt"))
    # nerfstudio resumes at the saved step + 1 and then runs max-num-iterations more steps.
    assert steps[-1] == "step-000000049.ckpt"
    assert "step-000000009.ckpt" not in steps and "step-000000019.ckpt" not in steps


def test_ns_render_renders_the_default_source(trained):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ns-render needs ffmpeg (scripts/install.sh installs it as root)")
    root, config = trained
    out = root / "render"
    run(
        [
            str(BIN / "ns-render"),
            "interpolate",
            "--load-config",
            str(config),
            "--output-path",
            str(out),
            "--output-format",
            "images",
            "--interpolation-steps",
            "2",
            "--rendered-output-names",
            "rgb",
        ],
        cwd=root,
    )
    assert len(list(out.glob("*.jpg"))) >= 2


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
    assert proc.returncode != 0
    assert "error: cuda is not available on this machine" in proc.stderr
    assert "--machine.device-type cpu" in proc.stderr
    assert "Traceback" not in proc.stderr
