"""CO3D end to end: a CO3D-format category of rendered synthetic chairs (PyTorch3D cameras, both
intrinsics formats, a scaled and shifted world frame) trains with the tiny preset, evaluates, loads
through the public API, and fine-tunes from a ShapeNet-layout checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.dataparsers.co3d_fixtures import mesh_category

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, f"{cmd[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


CO3D_ARGS = ["featurenerf-co3d", "--cache-dir", "cache", "--resolution", "32", "--progress", "False"]
STEPS = 500
"""Enough to beat the trivial predictors on the held-out sequence (measured: 16.6 dB vs 14.2 background and 15.1
mean colour; 300 steps: 16.0 dB)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("co3d_e2e")
    mesh_category(root / "co3d", "chair", num_sequences=5, num_frames=4)
    run(
        [BIN / "ns-train", "featurenerf-tiny", "--data", "co3d/chair", "--output-dir", "outputs", "--timestamp", "run",
         "--max-num-iterations", STEPS, "--steps-per-save", STEPS, "--pipeline.datamanager.bbox-sampling-steps", STEPS,
         "--pipeline.datamanager.eval-num-triples", "6",
         "--optimizers.field.optimizer.lr", "3e-3", "--optimizers.encoder.optimizer.lr", "3e-3", *CO3D_ARGS],
        cwd=root,
    )  # fmt: skip
    config = root / "outputs" / "chair" / "featurenerf-tiny" / "run" / "config.yml"
    assert config.is_file()
    return root, config


def test_training_writes_checkpoint_and_cache(trained):
    root, config = trained
    assert (config.parent / "nerfstudio_models" / f"step-{STEPS - 1:09d}.ckpt").is_file()
    (cache,) = [p for p in (root / "cache").iterdir() if p.is_dir()]
    info = json.loads((cache / "co3d_cache.json").read_text())
    assert info["sequences"] == {"train": 3, "val": 1, "test": 1} and info["frames"] == 20
    assert len(list((cache / "img" / "chair").glob("*/*.png"))) == 20


def test_ns_eval_beats_trivial_predictors_and_public_api(trained):
    from featurenerf_ns.model.api import TrainedFeatureNeRF
    from featurenerf_ns.model.trivial import trivial_psnrs

    root, config = trained
    run([BIN / "ns-eval", "--load-config", config, "--output-path", root / "eval.json"], cwd=root)
    psnr = json.loads((root / "eval.json").read_text())["results"]["psnr"]
    cwd = os.getcwd()
    os.chdir(root)  # the cache dir was given relative to the training run's folder
    try:
        tf = TrainedFeatureNeRF.load(config, device="cpu")
    finally:
        os.chdir(cwd)
    trivial = trivial_psnrs(tf.datamanager)
    print(f"held-out PSNR {psnr:.2f}, trivial {trivial}")
    assert psnr > max(trivial.values()) + 0.75
    meta = tf.datamanager.train_dataparser_outputs.metadata
    assert meta["dataset"] == "co3d" and tf.category == tf.synset == "chair"
    # every render's camera is at 1.3 from the chair's centre, so the normalised cameras are too and near/far
    # sit symmetrically around 1.3, a chair's radius (0.3..0.7 for the generator's unit-sized chairs) away
    r = 1.3 - tf.model.near
    assert 0.3 < r < 0.7 and tf.model.far == pytest.approx(1.3 + r, abs=0.02)
    obj = tf.objects("test")[0]
    cond = tf.encode("test", obj.obj_id, [0])
    maps = tf.render(cond, "test", obj.obj_id, 1, outputs=("rgb", "v_nerf"))
    assert maps["rgb"].shape == (32, 32, 3) and torch.isfinite(maps["v_nerf"]).all()
    # the normalisation undid the fixture's x2.5 world scale: cameras sit at 1.3 on average
    cams = tf.datamanager.train_dataparser_outputs.cameras
    for rec in meta["objects"]:
        d = cams.camera_to_worlds[rec.camera_slice, :, 3].norm(dim=-1)
        assert float(d.mean()) == pytest.approx(1.3, abs=1e-4)
    assert np.isfinite(tf.model.near)


def test_finetune_from_shapenet_checkpoint(trained, tmp_path):
    from featurenerf_ns.synthetic.generate import generate_category

    root, _ = trained
    generate_category(
        root / "sn", "chair", num_objects=6, num_views=4, image_size=32, num_pairs=2, workers=0, progress=False
    )
    run([BIN / "ns-train", "featurenerf-tiny", "--data", "sn/chair", "--output-dir", "outputs", "--timestamp", "sn",
         "--max-num-iterations", "3"], cwd=root)  # fmt: skip
    ckpt = root / "outputs" / "chair" / "featurenerf-tiny" / "sn" / "nerfstudio_models"
    # The synthetic teacher has 32 channels; the CO3D cache has no teacher, so the feature head must be
    # sized to the checkpoint's explicitly for the weights to load.
    proc = run(
        [BIN / "ns-train", "featurenerf-tiny", "--data", "co3d/chair", "--output-dir", "outputs", "--timestamp", "ft",
         "--max-num-iterations", "3", "--pipeline.model.feature-dim", "32", "--load-dir", ckpt, *CO3D_ARGS],
        cwd=root,
    )  # fmt: skip
    assert "Done loading Nerfstudio checkpoint" in proc.stdout + proc.stderr
    steps = sorted(
        p.name for p in (root / "outputs" / "chair" / "featurenerf-tiny" / "ft" / "nerfstudio_models").glob("*.ckpt")
    )
    assert steps[-1] == "step-000000005.ckpt"  # resumes at the checkpoint's step + 1, then 3 more
    # Without it the head sizes differ (391 = 4 + 384 + 3 rows vs 39): loading stops with one line that
    # says which option fixes it.
    bad = run(
        [BIN / "ns-train", "featurenerf-tiny", "--data", "co3d/chair", "--output-dir", "outputs", "--timestamp", "bad",
         "--max-num-iterations", "3", "--load-dir", ckpt, *CO3D_ARGS],
        cwd=root,
        check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    line = bad.stderr.strip().splitlines()[-1]
    hint = "pass --pipeline.model.feature-dim 32 (this run has feature-dim 384)"
    assert line == f"error: checkpoint does not fit this model: {hint}"
    assert "Traceback" not in bad.stderr
