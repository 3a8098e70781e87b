"""Interactive rendering of a trained model: exact fp32 vs empty-space skipping (with a single 64^3 grid and with the
default refined one) vs skipping + bf16, side by side.

Needs a trained run (embedded data, so that the occupancy is a trained one, not a random field's):

    .venv/bin/python benchmarks/bench_render.py --load-config outputs/chair/featurenerf-cpu/<run>/config.yml

Prints, per variant, the time of one ``--size`` render of ``rgb`` + ``v_nerf`` (median over ``--repeats``, the
variants interleaved), the occupancy grid's one-off estimate per conditioning, the render's peak memory (above what
the process already holds: the allocator keeps freed memory, so a variant that fits in what an earlier one left shows
0), and its accuracy against the exact fp32 render of the same conditioning: rgb PSNR, and the cosine similarity of
v_NeRF per foreground pixel (exact accumulation > 0.5), over ``--num-objects`` test objects. Then the 2D part mIoU and
keypoint PCK of ``featurenerf-eval`` computed each way on the same ``--num-pairs`` pairs, and the time of one
``--frame-size`` viewer frame (the viewer's own renderer) with each variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console

from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.model.views import render_camera_anywhere
from featurenerf_ns.transfer.cli import EvalConfig, run
from featurenerf_ns.transfer.report import headline_score

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import _reset_peak_rss, _rss_mb  # noqa: E402

VARIANTS = {
    "exact fp32": (False, "float32", {}),
    "skip, one 64^3 grid": (True, "float32", {"first_resolution": 64, "refinements": 0}),
    "skip": (True, "float32", {}),
    "skip + bf16": (True, "bfloat16", {}),
}
"""name -> (skip empty space, inference dtype, changes to the run's occupancy grid settings)."""
TRANSFER_VARIANTS = ("exact fp32", "skip", "skip + bf16")
"""Variants whose transfer figures are computed (featurenerf-eval renders with the run's own grid settings)."""


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(F.mse_loss(a.clamp(0, 1), b.clamp(0, 1)).clamp_min(1e-12)))


def bench_renders(
    tf: TrainedFeatureNeRF, size: int, repeats: int, num_objects: int, frame_size: int, chunk: int | None
) -> dict:
    model = tf.model
    objects = tf.objects("test")[:num_objects]
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    frames: dict[str, list[float]] = {k: [] for k in VARIANTS}
    grid_s: dict[str, list[float]] = {k: [] for k in VARIANTS}
    peak: dict[str, float] = {}
    acc: dict[str, dict[str, list[float]]] = {
        k: {"psnr": [], "cosine": [], "min_cosine": [], "occupied": []} for k in VARIANTS
    }
    outputs = frozenset({"rgb", "v_nerf"})
    occupancy = model.config.occupancy
    for i, rec in enumerate(objects):
        camera = tf.camera("test", rec.obj_id, 1)
        camera.rescale_output_resolution(size / int(camera.width[0, 0]))
        frame = tf.camera("test", rec.obj_id, 2)
        frame.rescale_output_resolution(frame_size / int(frame.width[0, 0]))
        exact = None
        for r in range(repeats if i == 0 else 1):
            for name, (skip, dtype, grid) in VARIANTS.items():
                model.field.inference_dtype = getattr(torch, dtype)
                model.config.occupancy = replace(occupancy, **grid)
                cond = tf.encode("test", rec.obj_id, [0])
                start = time.perf_counter()
                if skip:
                    acc[name]["occupied"].append(model.occupancy(cond).fraction)
                grid_s[name].append(time.perf_counter() - start)
                base = _rss_mb("VmRSS")
                _reset_peak_rss()
                start = time.perf_counter()
                out = model.render_camera(cond, camera, outputs, chunk, skip_empty=skip)
                if i == 0:
                    times[name].append(time.perf_counter() - start)
                    peak[name] = max(peak.get(name, 0.0), _rss_mb("VmHWM") - base)
                    start = time.perf_counter()
                    render_camera_anywhere(model, cond, frame, frozenset({"rgb"}), skip_empty=skip)
                    frames[name].append(time.perf_counter() - start)
                if exact is None:
                    exact = out
                if r == 0:
                    fg = exact["accumulation"][..., 0] > 0.5
                    cos = F.cosine_similarity(out["v_nerf"][fg], exact["v_nerf"][fg], dim=-1)
                    acc[name]["psnr"].append(psnr(out["rgb"], exact["rgb"]))
                    acc[name]["cosine"].append(float(cos.mean()) if fg.any() else float("nan"))
                    acc[name]["min_cosine"].append(float(cos.min()) if fg.any() else 1.0)
    model.field.inference_dtype = torch.float32
    model.config.occupancy = occupancy
    return {
        name: {
            "render_s": statistics.median(times[name]),
            "grid_s": statistics.median(grid_s[name]),
            "frame_s": statistics.median(frames[name]),
            "peak_mb": peak[name],
            "psnr": statistics.mean(acc[name]["psnr"]),
            "cosine": statistics.mean(acc[name]["cosine"]),
            "min_cosine": min(acc[name]["min_cosine"]),
            "occupied": statistics.mean(acc[name]["occupied"]) if acc[name]["occupied"] else 1.0,
        }
        for name in VARIANTS
    }


def bench_transfer(config: Path, num_pairs: int, out: Path) -> dict:
    rows: dict[str, dict[str, float]] = {}
    for name in TRANSFER_VARIANTS:
        skip, dtype, _ = VARIANTS[name]
        rows[name] = {}
        for task in ("parts", "keypoints"):
            cfg = EvalConfig(task=task, space="2d", load_config=config, pairs="random", num_pairs=num_pairs,
                             num_vis=0, skip_empty=skip, inference_dtype=dtype,  # type: ignore[arg-type]
                             method_names=("model",), output_dir=out / name.replace(" ", "") / task)  # fmt: skip
            result = json.loads(run(cfg, Console(quiet=True))["json"].read_text())
            rows[name][task] = headline_score(result["methods"]["model"]["mean"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-config", type=Path, required=True, help="config.yml of a trained run")
    parser.add_argument("--size", type=int, default=128, help="render size (pixels per side)")
    parser.add_argument("--frame-size", type=int, default=64, help="viewer frame size while the camera moves")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-objects", type=int, default=4, help="test objects for the accuracy figures")
    parser.add_argument("--num-pairs", type=int, default=20, help="transfer pairs (0: skip the transfer figures)")
    parser.add_argument("--chunk", type=int, default=None, help="rays per chunk of the renders (default: the run's)")
    args = parser.parse_args()
    # Line by line: the transfer runs that follow replace the console, which dropped rows still buffered.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    tf = TrainedFeatureNeRF.load(args.load_config, device="cpu")
    cfg = tf.model.config
    print(
        f"{args.load_config}: width {cfg.field.hidden_dim}, {cfg.num_coarse_samples}+{cfg.num_fine_samples} samples, "
        f"grid {cfg.occupancy.first_resolution}^3 refined {cfg.occupancy.refinements}x, dilation "
        f"{cfg.occupancy.first_dilation}/{cfg.occupancy.dilation}, {args.chunk or cfg.eval_num_rays_per_chunk} rays "
        f"per chunk, {torch.get_num_threads()} threads"
    )
    rows = bench_renders(tf, args.size, args.repeats, args.num_objects, args.frame_size, args.chunk)
    exact = rows["exact fp32"]["render_s"]
    print(f"| variant | {args.size}px render | speed-up | grid (once per source) | peak MB above resident | occupied "
          f"| rgb PSNR vs exact | v_NeRF cosine (fg mean / min) | {args.frame_size}px viewer frame |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['render_s']:.3f} s | {exact / r['render_s']:.1f}x | {r['grid_s']:.3f} s | "
              f"{r['peak_mb']:.0f} | {r['occupied']:.3f} | {r['psnr']:.1f} dB | {r['cosine']:.4f} / "
              f"{r['min_cosine']:.4f} | {r['frame_s']:.3f} s |")  # fmt: skip
    if args.num_pairs > 0:
        with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
            transfer = bench_transfer(args.load_config, args.num_pairs, Path(tmp))
        print(f"\n| variant | 2D parts mIoU | 2D keypoints PCK ({args.num_pairs} random pairs) |")
        print("| --- | --- | --- |")
        for name, t in transfer.items():
            print(f"| {name} | {t['parts']:.4f} | {t['keypoints']:.4f} |")


if __name__ == "__main__":
    main()
