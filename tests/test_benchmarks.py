"""The benchmark scripts still run against the current code, on tiny inputs (nothing here is timed): a script that no
test runs drifts from the APIs it calls, as ``bench_model.py`` once did. ``bench_learning.py`` is left out: it trains
the CPU preset on the embedded categories, which the suite does not generate."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TrainedRun

pytestmark = pytest.mark.slow
BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def run_script(name: str, *args: str) -> str:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def widened(trained_tiny: TrainedRun) -> Path:
    out = run_script("widen_run.py", "--load-config", str(trained_tiny.config), "--width", "64", "--coarse", "8",
                     "--fine", "4", "--fine-depth", "2")  # fmt: skip
    match = re.search(r"largest difference from the original's field at 4096 points: (\S+)", out)
    assert match is not None, out
    assert float(match.group(1)) <= 1e-4
    config = trained_tiny.config.parent.with_name(f"{trained_tiny.config.parent.name}-w64") / "config.yml"
    assert config.is_file()
    return config


def test_widen_run_writes_a_wider_run_of_the_same_field(trained_tiny, widened):
    original = yaml.load(trained_tiny.config.read_text(), Loader=yaml.Loader).pipeline.model
    wide = yaml.load(widened.read_text(), Loader=yaml.Loader).pipeline.model
    assert original.field.hidden_dim < 64 == wide.field.hidden_dim
    assert (wide.num_coarse_samples, wide.num_fine_samples) == (8, 4)


def test_bench_render_prints_every_variant_and_the_transfer_figures(widened):
    out = run_script("bench_render.py", "--load-config", str(widened), "--size", "16", "--frame-size", "8",
                     "--repeats", "1", "--num-objects", "1", "--num-pairs", "1")  # fmt: skip
    for variant in ("exact fp32", "skip, one 64^3 grid", "skip", "skip + bf16"):
        assert re.search(rf"^\| {re.escape(variant)} \| [0-9.]+ s \| [0-9.]+x \|", out, re.M), out
    assert re.search(r"^\| exact fp32 \| [0-9.]+ s \| 1\.0x \|.*\| 1\.0000 / 1\.0000 \|", out, re.M), out
    assert re.search(r"^\| skip \+ bf16 \| [0-9.]{6} \| [0-9.]{6} \|$", out, re.M), out


def test_bench_model_measures_the_mlp(trained_tiny):
    spec = importlib.util.spec_from_file_location("bench_model", BENCHMARKS / "bench_model.py")
    bench_model = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(bench_model)  # type: ignore[union-attr]
    from featurenerf_ns.model.api import TrainedFeatureNeRF

    model = TrainedFeatureNeRF.load(trained_tiny.config, device="cpu").model
    result = bench_model.bench_mlp(model, repeats=1, n=256)
    assert result["mlp_fwd_samples_per_s"] > 0 and result["mlp_train_samples_per_s"] > 0


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("bench_synthetic.py", ["--num-objects", "2", "--num-views", "2", "--image-size", "16", "--workers", "1"],
         r"bytes written +[0-9,]+"),
        ("bench_dataparser.py", ["--objects", "20", "--views", "3"], r"SRN layout: +parse [0-9.]+ s"),
        ("bench_teachers.py", ["--objects", "1", "--views", "1"],
         r"read one view \(ms\): ours vs authors npz +[0-9.]+"),
        ("bench_transfer.py", ["--pairs", "2", "--objects", "3", "--views", "2", "--image-size", "32"],
         r"cached [0-9.]+ pairs/s, uncached [0-9.]+ pairs/s"),
    ],
)  # fmt: skip
def test_the_other_benchmarks_run_on_tiny_inputs(script, args, expected):
    assert re.search(expected, run_script(script, *args)), script
