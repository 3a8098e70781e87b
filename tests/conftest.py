"""Fixtures shared across the test folders: the authors' parity fixture, a tiny generated category and one tiny
model trained once per session (the end-to-end, viewer, transfer and CLI tests all read it)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from featurenerf_ns.synthetic.generate import generate_category
from featurenerf_ns.utils.hocon import read_hocon

PARITY_ENV = "FEATURENERF_PARITY_FIXTURE"
DEFAULT_PARITY = Path(__file__).resolve().parents[1].parent / "shared" / "parity" / "authors-small"

BIN = Path(sys.executable).parent
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


@dataclass(frozen=True)
class TrainedRun:
    """A featurenerf-tiny run: ``root/data/chair`` (32 px, 10 objects x 4 views) and its ``config.yml``."""

    root: Path
    config: Path
    steps: int
    save_every: int

    @property
    def data(self) -> Path:
        return self.root / "data" / "chair"


TRAINED_STEPS = 500
"""Enough for the tiny network to beat chance clearly on all six transfer tasks and the trivial colour predictors
on held-out novel views (measured: see tests/test_end_to_end.py and tests/transfer/test_model_e2e.py); ~1 min."""


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory) -> TrainedRun:
    """``ns-train featurenerf-tiny`` for 500 steps on a generated chair category, once per session.

    Rays stay inside the objects' boxes all along and the learning rate is 3e-3: with the preset's 20-step settings
    the field stays almost transparent (accumulation ~0.01 on the object), and nothing downstream could be judged.
    """
    root = tmp_path_factory.mktemp("trained_tiny")
    generate_category(
        root / "data", "chair", num_objects=10, num_views=4, image_size=32, num_pairs=4, workers=0, progress=False
    )
    save_every = TRAINED_STEPS // 2
    cmd = [str(BIN / "ns-train"), "featurenerf-tiny", "--data", str(root / "data" / "chair"),
           "--output-dir", str(root / "outputs"), "--timestamp", "run",
           "--max-num-iterations", str(TRAINED_STEPS), "--steps-per-save", str(save_every),
           "--pipeline.datamanager.bbox-sampling-steps", str(TRAINED_STEPS),
           "--pipeline.datamanager.eval-num-triples", "6",
           "--optimizers.field.optimizer.lr", "3e-3", "--optimizers.encoder.optimizer.lr", "3e-3"]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"ns-train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    config = root / "outputs" / "chair" / "featurenerf-tiny" / "run" / "config.yml"
    assert config.is_file()
    return TrainedRun(root, config, TRAINED_STEPS, save_every)


HEADLESS = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('viewer modules:', sorted(m for m in sys.modules if m.startswith("
    "'featurenerf_ns.viewer')), file=sys.stderr))\n"
    "sys.argv = sys.argv[1:]\n"
    "from {module} import entrypoint\n"
    "entrypoint()\n"
)
"""Runs a console script's entry point, then reports which ``featurenerf_ns.viewer`` modules it imported."""


def run_headless(
    module: str, args: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``module``'s ``entrypoint`` with ``args`` (and extra environment variables ``env``); assert it succeeded
    without importing featurenerf_ns.viewer."""
    code = HEADLESS.format(module=module)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code, module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, f"{module} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "viewer modules: []" in proc.stderr, proc.stderr[-2000:]
    return proc
