"""The session's trained tiny FeatureNeRF (tests/conftest.py), opened as ns-viewer opens it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def viewer_run(trained_tiny) -> Path:
    """``config.yml`` of the session's featurenerf-tiny run (32 px, 10 objects x 4 views)."""
    return trained_tiny.config


@pytest.fixture(scope="session")
def viewer_pipeline(viewer_run):
    """The run's pipeline as ns-viewer builds it (test split, checkpoint loaded), on CPU."""
    from nerfstudio.utils.eval_utils import eval_setup

    def cpu(config):
        config.machine.device_type = "cpu"
        return config

    _, pipeline, _, _ = eval_setup(viewer_run, test_mode="test", update_config_callback=cpu)
    return pipeline
