"""Regression benchmark of learning: does the CPU preset still learn what it learned?

Trains ``featurenerf-cpu`` on embedded categories, with distillation (the preset) and without it (lambda_distill =
lambda_coord = 0: the paper's "NeRF feature" / pixelNeRF baseline), then prints side by side, per run:

  * held-out novel-view PSNR/SSIM (``ns-eval``: the eval split's fixed source/target triples), next to the two
    trivial predictors on the same triples (only background; each target image's own mean colour);
  * the six transfer figures of ``featurenerf-eval`` on the same random test pairs (2D/3D keypoint PCK at the
    largest threshold, 2D/3D part mIoU, cross-instance; 2D keypoints and parts, novel view), next to chance and the
    teacher's 2D maps.

A change that quietly hurts learning shows as a drop in a row against the table in the issue/README. Not run in CI
(each run is the preset's ~15 minutes on 2 cores; ``--steps`` shortens it, and the table says how many ran)::

    .venv/bin/python benchmarks/bench_learning.py [--categories chair table] [--steps 4000] [--num-pairs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.model.trivial import trivial_psnrs
from featurenerf_ns.transfer.cli import EvalConfig, run
from featurenerf_ns.transfer.report import headline_score

BIN = Path(sys.executable).parent
TASKS = (
    ("keypoints", "2d", "cross-instance", "kp2d"),
    ("parts", "2d", "cross-instance", "parts2d"),
    ("keypoints", "3d", "cross-instance", "kp3d"),
    ("parts", "3d", "cross-instance", "parts3d"),
    ("keypoints", "2d", "novel-view", "kp2d-nv"),
    ("parts", "2d", "novel-view", "parts2d-nv"),
)
VARIANTS = {
    "distilled": [],
    "no distillation": ["--pipeline.model.lambda-distill", "0", "--pipeline.model.lambda-coord", "0"],
}


def train(category: str, variant: str, steps: int | None, out: Path) -> Path:
    timestamp = variant.replace(" ", "-")
    config = out / category / "featurenerf-cpu" / timestamp / "config.yml"
    if config.is_file() and (config.parent / "nerfstudio_models").is_dir():
        return config  # finished earlier: rerunning the script only re-evaluates
    cmd = [str(BIN / "ns-train"), "featurenerf-cpu", "--data", f"synthetic/{category}", "--output-dir", str(out),
           "--timestamp", timestamp, "--vis", "tensorboard", *VARIANTS[variant]]  # fmt: skip
    if steps is not None:
        cmd += ["--max-num-iterations", str(steps)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, stdout=subprocess.DEVNULL)
    print(f"trained {category} / {variant} in {time.perf_counter() - t0:.0f} s", flush=True)
    return config


def psnr_row(config: Path, out: Path) -> dict[str, float]:
    result = out / f"{config.parent.name}-{config.parents[2].name}-eval.json"
    subprocess.run([str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(result)], check=True,
                   env={**os.environ, "PYTHONWARNINGS": "ignore"}, capture_output=True)  # fmt: skip
    metrics = json.loads(result.read_text())["results"]
    trivial = trivial_psnrs(TrainedFeatureNeRF.load(config, device="cpu").datamanager)
    return {"psnr": metrics["psnr"], "ssim": metrics["ssim"], **trivial}


def transfer_rows(config: Path, out: Path, num_pairs: int) -> dict[str, dict[str, float]]:
    """{task: {method: score}}: PCK at the largest threshold or mIoU; method 'model', 'chance', 'teacher'."""
    rows: dict[str, dict[str, float]] = {}
    for task, space, setting, label in TASKS:
        baselines = ("chance",) + (("teacher",) if space == "2d" else ())
        cfg = EvalConfig(task=task, space=space, setting=setting, load_config=config, baselines=baselines,
                         method_names=("model",), pairs="random", num_pairs=num_pairs, num_vis=0,
                         output_dir=out / "transfer" / config.parent.name)  # fmt: skip
        result = json.loads(run(cfg, Console(quiet=True))["json"].read_text())
        rows[label] = {}
        for name, method in result["methods"].items():
            rows[label][name] = headline_score(method["mean"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--categories", nargs="+", default=["chair", "table"], help="embedded categories")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's 4000)")
    parser.add_argument("--num-pairs", type=int, default=50, help="random test pairs per transfer task")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/bench_learning"))
    args = parser.parse_args()

    table = []
    for category in args.categories:
        for variant in VARIANTS:
            config = train(category, variant, args.steps, args.output_dir)
            table.append((category, variant, psnr_row(config, args.output_dir),
                          transfer_rows(config, args.output_dir, args.num_pairs)))  # fmt: skip

    steps = args.steps or "preset (4000)"
    print(f"\nfeaturenerf-cpu, {steps} steps, {args.num_pairs} random test pairs per task")
    print("PSNR/SSIM: held-out novel views; trivial predictors on the same triples in brackets")
    print("transfer: model / chance / teacher (PCK at the largest threshold, or mIoU)\n")
    header = ["category", "variant", "PSNR (bg, mean)", "SSIM"] + [label for *_, label in TASKS]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for category, variant, p, t in table:
        cells = [
            category,
            variant,
            f"{p['psnr']:.2f} ({p['background']:.2f}, {p['mean colour']:.2f})",
            f"{p['ssim']:.3f}",
        ]
        for *_, label in TASKS:
            r = t[label]
            cells.append(" / ".join(f"{r[m]:.2f}" for m in ("model", "chance", "teacher") if m in r))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
