"""A tiny FeatureNeRF trained once per session for the viewer tests (ns-train featurenerf-tiny on 8 objects)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from featurenerf_ns.synthetic.generate import generate_category

BIN = Path(sys.executable).parent
TRAIN_STEPS = 300
"""More than the preset's 20 steps, so the renders show an object (the browser test looks at its pixels)."""


@pytest.fixture(scope="session")
def viewer_run(tmp_path_factory) -> Path:
    """``config.yml`` of a featurenerf-tiny run (32 px, 8 objects x 4 views)."""
    root = tmp_path_factory.mktemp("viewer")
    generate_category(
        root / "data", "chair", num_objects=8, num_views=4, image_size=32, num_pairs=4, workers=0, progress=False
    )
    cmd = [str(BIN / "ns-train"), "featurenerf-tiny", "--data", str(root / "data" / "chair"),
           "--output-dir", str(root / "outputs"), "--timestamp", "run", "--max-num-iterations", str(TRAIN_STEPS),
           "--steps-per-save", str(TRAIN_STEPS),
           # Rays inside the objects' boxes all along: with the preset's 5 steps of it, 300 steps learn an almost
           # transparent field (accumulation ~0.01 on the object), and the renders would show nothing.
           "--pipeline.datamanager.bbox-sampling-steps", str(TRAIN_STEPS)]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"ns-train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    config = root / "outputs" / "chair" / "featurenerf-tiny" / "run" / "config.yml"
    assert config.is_file()
    return config


@pytest.fixture(scope="session")
def viewer_pipeline(viewer_run):
    """The run's pipeline as ns-viewer builds it (test split, checkpoint loaded), on CPU."""
    from nerfstudio.utils.eval_utils import eval_setup

    def cpu(config):
        config.machine.device_type = "cpu"
        return config

    _, pipeline, _, _ = eval_setup(viewer_run, test_mode="test", update_config_callback=cpu)
    return pipeline
