"""``featurenerf-eval spair`` end to end: a FeatureNeRF trained (tiny preset) on a CO3D-format category
is scored on an SPair-format fixture next to the teacher baseline, through the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dataparsers.co3d_fixtures import mesh_category
from tests.transfer.spair_fixtures import make_spair

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def run(cmd, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_featurenerf_eval_spair_with_trained_model_and_teacher(tmp_path):
    mesh_category(tmp_path / "co3d", "chair", num_sequences=3, num_frames=3)
    make_spair(tmp_path / "SPair-71k", num_images=3)
    run(
        [BIN / "ns-train", "featurenerf-tiny", "--data", "co3d/chair", "--output-dir", "outputs", "--timestamp", "run",
         "--max-num-iterations", "3", "featurenerf-co3d", "--cache-dir", "cache", "--resolution", "32",
         "--progress", "False"],
        cwd=tmp_path,
    )  # fmt: skip
    config = tmp_path / "outputs" / "chair" / "featurenerf-tiny" / "run" / "config.yml"
    proc = run(
        [BIN / "featurenerf-eval", "spair", "--data", "SPair-71k", "--categories", "chair", "--load-config", config,
         "--output-dir", "results", "--device", "cpu", "--teacher.random-init",
         "--teacher.arch", "embed_dim", "24", "depth", "2", "num_heads", "2", "patch_size", "8",
         "--teacher.layer", "1", "--teacher.input-size", "32"],
        cwd=tmp_path,
    )  # fmt: skip
    out = json.loads((tmp_path / "results" / "spair" / "keypoints_spair_test.json").read_text())
    names = [m["name"] for m in out["methods"]]
    assert names == ["featurenerf-tiny/run (v_nerf)", "teacher"]
    assert out["image_size"] == 32 and out["canonical_camera"]["distance"] == 1.3
    # the canonical camera's focal length is the training cameras' median (square 32 px crops here)
    assert 10.0 < out["canonical_camera"]["focal_px"] < 200.0
    for m in out["methods"]:
        assert m["pairs"] == out["num_pairs"] > 0
        assert all(0.0 <= v <= 1.0 for v in m["pck_per_pair_mean"] + m["pck_per_keypoint"])
        assert len(m["per_pair"][0]["pred_kps"]) == m["per_pair"][0]["num_kps"]
    assert "PCK@0.1" in proc.stdout and (tmp_path / "results" / "spair" / "keypoints_spair_test.md").is_file()
