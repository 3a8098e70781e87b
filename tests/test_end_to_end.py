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

from tests.conftest import TrainedRun

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


def test_ns_eval_psnr_beats_the_trivial_predictors(trained):
    """Held-out novel views: the model must beat rendering only background and rendering each target image's own
    mean colour (measured: 19.3 dB vs 17.3 and 18.0 dB), on the same eval triples ns-eval scores."""
    from featurenerf_ns.model.api import TrainedFeatureNeRF
    from featurenerf_ns.model.trivial import trivial_psnrs

    root, config = trained
    out = root / "eval.json"
    run([str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(out)], cwd=root)
    results = json.loads(out.read_text())["results"]
    dm = TrainedFeatureNeRF.load(config, device="cpu").datamanager
    assert len(dm.eval_triples) == 6
    trivial = trivial_psnrs(dm)
    print(f"PSNR: model {results['psnr']:.2f}, trivial {trivial}")
    assert results["psnr"] > max(trivial.values()) + 0.75
    assert 0.0 < results["ssim"] <= 1.0


def test_resume_continues_from_checkpoint(trained_tiny):
    ckpt_dir = trained_tiny.config.parent / "nerfstudio_models"
    proc = ns_train(trained_tiny, "resumed", "--load-dir", str(ckpt_dir), "--max-num-iterations", "10")
    assert "Done loading Nerfstudio checkpoint" in proc.stdout + proc.stderr
    resumed = trained_tiny.root / "outputs" / "chair" / "featurenerf-tiny" / "resumed" / "nerfstudio_models"
    steps = sorted(p.name for p in resumed.glob("step-*.ckpt"))
    # nerfstudio resumes at the saved step + 1 and then runs max-num-iterations more steps.
    assert steps[-1] == f"step-{trained_tiny.steps + 9:09d}.ckpt"
    assert f"step-{trained_tiny.save_every:09d}.ckpt" not in steps


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
    assert not (root / "cuda-run").exists()  # a start that fails writes nothing


def test_ns_train_without_the_data_is_one_line_and_writes_nothing(trained):
    root, _ = trained
    out = root / "no-data-run"
    data = root / "shapenet" / "chair"
    cmd = [str(BIN / "ns-train"), "featurenerf-tiny", "--data", str(data), "--output-dir", str(out)]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {root / 'shapenet'}: data root not found") and "--data synthetic/chair" in line
    assert not out.exists()
