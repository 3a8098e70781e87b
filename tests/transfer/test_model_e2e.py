"""featurenerf-eval on a real (tiny, briefly trained) FeatureNeRF through the public model API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from featurenerf_ns.transfer.cli import EvalConfig, run

pytestmark = pytest.mark.slow
generate = pytest.importorskip("featurenerf_ns.synthetic.generate")
pytest.importorskip("featurenerf_ns.model.api")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer_e2e")
    generate.generate_category(
        root / "data", "chair", num_objects=10, num_views=4, image_size=32, num_pairs=3, workers=0, progress=False
    )
    cmd = [str(Path(sys.executable).parent / "ns-train"), "featurenerf-tiny", "--data", str(root / "data" / "chair"),
           "--output-dir", str(root / "outputs"), "--timestamp", "run"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, root / "outputs" / "chair" / "featurenerf-tiny" / "run" / "config.yml"


@pytest.mark.parametrize("task, space", [("keypoints", "2d"), ("parts", "3d")])
def test_trained_model_against_baselines(trained, task, space):
    root, config = trained
    cfg = EvalConfig(task=task, space=space, load_config=config, baselines=("teacher", "oracle"),
                     output_dir=root / "eval", num_vis=2)  # fmt: skip
    paths = run(cfg, Console(width=200))
    result = json.loads(paths["json"].read_text())
    assert result["image_size"] == [32, 32] and result["num_pairs"] == 3
    model = result["methods"]["featurenerf-tiny/run (v_nerf)"]["mean"]
    oracle = result["methods"]["oracle"]["mean"]
    if task == "keypoints":
        assert list(result["methods"]) == ["featurenerf-tiny/run (v_nerf)", "teacher", "oracle"]
        assert all(0.0 <= v <= 1.0 for v in model["pck"].values())
        assert oracle["pck"]["2.5"] == 1.0  # 10 px at 128 = 2.5 px at 32
    else:
        assert "teacher" in result["skipped_methods"]
        assert 0.0 <= model["miou"] <= 1.0 and oracle["miou"] > 0.95
    assert paths["qualitative"].is_file() and paths["curve"].is_file()
