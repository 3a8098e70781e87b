"""Fixtures shared across the test folders: the authors' parity fixture and a tiny generated category."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from featurenerf_ns.synthetic.generate import generate_category
from featurenerf_ns.utils.hocon import read_hocon

PARITY_ENV = "FEATURENERF_PARITY_FIXTURE"
DEFAULT_PARITY = Path(__file__).resolve().parents[1].parent / "shared" / "parity" / "authors-small"

TINY = dict(num_objects=10, num_views=4, image_size=48, seed=0, teacher_dim=16, num_pairs=30, workers=0, progress=False)


@dataclass
class ParityFixture:
    """Outputs of the authors' own code (see the fixture folder's README.md)."""

    folder: Path
    arrays: dict[str, np.ndarray]
    conf: dict

    @property
    def checkpoint(self) -> Path:
        return self.folder / "pixel_nerf_latest"

    @property
    def conf_path(self) -> Path:
        return self.folder / "model.conf"


@pytest.fixture(scope="session")
def parity() -> ParityFixture:
    """The parity fixture folder: ``$FEATURENERF_PARITY_FIXTURE``, default ``../shared/parity/authors-small``.

    A missing folder fails (a skipped parity test would hide that nothing was compared).
    """
    folder = Path(os.environ.get(PARITY_ENV) or DEFAULT_PARITY)
    if not (folder / "fixture.npz").is_file():
        pytest.fail(f"parity fixture not found: {folder}/fixture.npz (set {PARITY_ENV})")
    with np.load(folder / "fixture.npz") as f:
        arrays = {k: f[k] for k in f.files}
    return ParityFixture(folder, arrays, read_hocon(folder / "model.conf"))


@pytest.fixture(scope="session")
def tiny():
    """Settings of the tiny category (generate_category keyword arguments)."""
    return dict(TINY)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A tiny generated chair category (10 objects x 4 views x 48 px), shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("synth_tiny")
    generate_category(root, "chair", **TINY)
    return root
