"""Speed of the FeatureNeRF model on this machine, side by side with plain matmul in the same run.

For the paper configuration and the CPU preset, and for each variant below, it prints MLP samples/s
and GFLOP/s (forward, forward+backward) as a fraction of plain fp32 matmul speed, one training step
(B objects x R rays, one source view, coarse + fine, losses, backward, Adam), and one full-image
v_NeRF render with its peak memory. Variants, each measured in a fresh process:

  authors     the authors' order of computation (benchmarks/authors_order.py, same weights) with
              PyTorch's defaults: how their implementation computes, on this machine, in this run;
              its render is timed on 512 rays and scaled (a full image needs ~17 GB that way)
  defaults    our computation with PyTorch's defaults (MKL GEMMs, glibc returning freed memory)
  memory      + freed CPU memory kept for reuse (model option ``retain_freed_memory``)
  ours        + oneDNN GEMMs for the MLP (model option ``onednn_gemm``): what ``ns-train`` runs

Plain matmul (4096x512 @ 512x512, fp32) is measured with both libraries PyTorch ships: ``torch.mm``
(MKL) and oneDNN's linear; percentages are against the faster. Random weights and inputs, as the
authors' timings (shared/reference/featurenerf-official.md): 11.65 s per training step, 168 s and
17 GB per 128x128 render, ~35% / ~26% of matmul speed (taken when torch.mm ran at 364-438 GFLOP/s).

Usage: python benchmarks/bench_model.py [--configs paper cpu] [--variants authors defaults memory ours]
       [--repeats 3] [--skip-render]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from featurenerf_ns.method_configs import _cpu, _paper

# The cameras/data are test fixtures: take them from this checkout's tests/ (another package may own `tests`).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.model.model_fixtures import random_cameras  # noqa: E402

VARIANTS = {
    "authors": {"label": "authors' order, torch defaults", "onednn": False, "retain": False},
    "defaults": {"label": "ours, torch defaults", "onednn": False, "retain": False},
    "memory": {"label": "ours + freed memory kept", "onednn": False, "retain": True},
    "ours": {"label": "ours + oneDNN GEMM (shipped)", "onednn": True, "retain": True},
}


def model_for(name: str, variant: str = "ours", feature_dim: int = 384):
    cfg = (_paper() if name == "paper" else _cpu()).pipeline
    model_cfg = cfg.model
    model_cfg.encoder.weights = None
    model_cfg.feature_dim = feature_dim
    model_cfg.onednn_gemm = VARIANTS[variant]["onednn"]
    model_cfg.retain_freed_memory = VARIANTS[variant]["retain"]
    from nerfstudio.data.scene_box import SceneBox

    model = model_cfg.setup(
        scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1, metadata={"near": 0.8, "far": 1.8}
    )
    size = cfg.datamanager.dataparser.image_size or 128
    return model, cfg.datamanager, size


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(repeats: int) -> dict[str, float]:
    """Plain fp32 matmul speed with each GEMM library PyTorch ships (MKL via ``torch.mm``, and oneDNN)."""
    from featurenerf_ns.model.gemm import ONEDNN_AVAILABLE

    a, b = torch.randn(4096, 512), torch.randn(512, 512)
    flop = 2 * 4096 * 512 * 512
    result = {"mkl": flop / timed(lambda: torch.mm(a, b), repeats * 10) / 1e9}
    if ONEDNN_AVAILABLE:
        bt = b.t().contiguous()
        t = timed(lambda: torch.ops.mkldnn._linear_pointwise(a, bt, None, "none", [], ""), repeats * 10)
        result["onednn"] = flop / t / 1e9
    return result


def mlp_flops_per_sample(model) -> float:
    mlp = model.field.mlp
    width, d_in, d_out = mlp.width, mlp.lin_in.in_features, mlp.lin_out.out_features
    return 2 * (d_in * width + len(mlp.blocks) * 2 * width * width + width * d_out)


def bench_mlp(model, repeats: int, n: int = 16384) -> dict:
    mlp = model.field.mlp
    x_in = torch.randn(n, mlp.lin_in.in_features)
    z = torch.randn(n, len(mlp.lin_z) * mlp.width)
    flops = mlp_flops_per_sample(model)
    # Every output row, so that all the FLOPs counted are computed.
    heads = frozenset({"rgb", "density", "feature", "coord"})

    def run():
        out = model.field.heads(mlp.lin_out, mlp(x_in, z, 1, 1), x_in[:, :3], heads, 1, n)
        return sum(getattr(out, k).sum() for k in heads)

    def fwd():
        with torch.no_grad():
            run()

    def fwd_bwd():
        run().backward()

    t_f, t_fb = timed(fwd, repeats), timed(fwd_bwd, repeats)
    return {
        "mlp_fwd_samples_per_s": n / t_f,
        "mlp_fwd_gflops": n * flops / t_f / 1e9,
        "mlp_train_samples_per_s": n / t_fb,
        "mlp_train_gflops": 3 * n * flops / t_fb / 1e9,
    }


def _train_batch(model, dm, size: int) -> SimpleNamespace:
    """Random inputs of one training step: B objects with one source view each, R target rays per object."""
    B, R = dm.objects_per_batch, dm.rays_per_object
    c2w, intr = random_cameras(B * 2, size)
    origins = c2w[B:, None, :, 3].expand(B, R, 3).contiguous()
    return SimpleNamespace(
        B=B,
        R=R,
        c2w=c2w[:B],
        intr=intr[:B],
        images=torch.rand(B, 3, size, size),
        origins=origins,
        directions=torch.nn.functional.normalize(-origins + 0.3 * torch.randn(B, R, 3), dim=-1),
        rgb=torch.rand(B, R, 3),
        feature=torch.randn(B, R, model.feature_dim),
    )


def _time_training(model, loss_fn, repeats: int) -> float:
    """Median seconds of ``zero_grad; loss_fn().backward(); Adam step``."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad()
        loss_fn().backward()
        opt.step()

    return timed(step, repeats)


def bench_train_step(model, dm, size: int, repeats: int) -> dict:
    b = _train_batch(model, dm, size)

    def loss():
        cond = model.encode(b.images[:, None], b.c2w[:, None], b.intr[:, None])
        out = model.render_rays(cond, b.origins, b.directions, frozenset({"rgb", "feature", "coord"}))
        flat = {k: v.reshape(b.B * b.R, -1) for k, v in out.items()}
        batch = {"image": b.rgb.reshape(-1, 3), "teacher": b.feature.reshape(b.B * b.R, -1)}
        return sum(model.get_loss_dict(flat, batch).values())

    t = _time_training(model, loss, repeats)
    samples = b.B * b.R * (model.sampling.num_coarse + model.sampling.num_fine)
    return {"train_step_s": t, "train_mlp_samples_per_s": samples / t}


def bench_reference_train_step(model, dm, size: int, repeats: int) -> dict:
    """One training step in the authors' order of computation (benchmarks/authors_order.py), same losses."""
    from authors_order import reference_render

    b = _train_batch(model, dm, size)
    near, far = torch.full((b.B, b.R, 1), model.near), torch.full((b.B, b.R, 1), model.far)
    cfg = model.config
    mse = torch.nn.functional.mse_loss

    def loss():
        latent = model.encoder(b.images)
        coarse, fine = reference_render(
            model.field, latent, b.c2w, b.intr, (size, size), b.origins, b.directions, near, far, model.sampling
        )
        total = sum(mse(o["rgb"], b.rgb) for o in (coarse, fine))
        total = total + cfg.lambda_distill * sum(mse(o["feature"], b.feature) for o in (coarse, fine))
        return total + cfg.lambda_coord * sum(o["coord"].square().mean() for o in (coarse, fine))

    return {"train_step_s": _time_training(model, loss, repeats)}


def bench_reference_render(model, size: int, render_rays: int = 512) -> dict:
    """The authors' order of computation timed on ``render_rays`` rays, scaled to a full image.

    Rays are independent; rendered this way a full image would hold ~17 GB of samples at once.
    """
    from authors_order import reference_render

    model.eval()
    c2w, intr = random_cameras(2, size)
    origins = c2w[1:, None, :, 3].expand(1, render_rays, 3)
    directions = torch.nn.functional.normalize(-origins + 0.3 * torch.randn(1, render_rays, 3), dim=-1)
    near, far = torch.full((1, render_rays, 1), model.near), torch.full((1, render_rays, 1), model.far)
    with torch.no_grad():
        latent = model.encoder(torch.rand(1, 3, size, size))
        t = timed(
            lambda: reference_render(
                model.field, latent, c2w[:1], intr[:1], (size, size), origins, directions, near, far, model.sampling
            ),
            1,
        )
    return {"render_s": t * size * size / render_rays, "render_scaled": True}


def bench_render(name: str, variant: str) -> dict:
    """Time and peak RSS of one full-image v_NeRF render (run first thing in a fresh process)."""
    model, dm, size = model_for(name, variant)
    model.eval()
    c2w, intr = random_cameras(2, size)
    from nerfstudio.cameras.cameras import Cameras

    camera = Cameras(
        camera_to_worlds=c2w[1:],
        fx=intr[1:, :1],
        fy=intr[1:, 1:2],
        cx=intr[1:, 2:3],
        cy=intr[1:, 3:4],
        width=size,
        height=size,
    )
    with torch.no_grad():
        cond = model.encode(torch.rand(1, 1, 3, size, size), c2w[:1, None], intr[:1, None])
    base = _rss_mb("VmRSS")
    _reset_peak_rss()
    start = time.perf_counter()
    out = model.render_camera(cond, camera, frozenset({"v_nerf"}))
    t = time.perf_counter() - start
    peak = _rss_mb("VmHWM")
    assert out["v_nerf"].shape == (size, size, model.field.mlp.width)
    return {"render_s": t, "render_peak_extra_mb": peak - base}


def worker(name: str, variant: str, task: str, repeats: int) -> dict:
    """One measurement in this (fresh) process: ``train`` (MLP + training step) or ``render``."""
    model, dm, size = model_for(name, variant)
    if variant == "authors":
        return (
            bench_reference_train_step(model, dm, size, repeats)
            if task == "train"
            else bench_reference_render(model, size)
        )
    if task == "render":
        return bench_render(name, variant)
    return {**bench_mlp(model, repeats), **bench_train_step(model, dm, size, repeats)}


def _rss_mb(field: str) -> float:
    """Resident memory of this process from /proc (VmRSS: now, VmHWM: peak since the last reset)."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM, so the peak measured next is the render's own.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _spawn(name: str, variant: str, task: str, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, variant, task, "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}/{variant}/{task} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _print_table(name: str, size: int, rows: dict[str, dict], peak: float) -> None:
    def pct(gflops: float | None) -> str:
        return "-" if gflops is None else f"{gflops:.0f} GFLOP/s ({gflops / peak:.0%})"

    print(
        f"  {'variant':32} {'MLP forward':>20} {'MLP fwd+bwd':>20} {'training step':>14} {'render':>11} {'peak mem':>9}"
    )
    for variant, r in rows.items():
        render = "-" if "render_s" not in r else f"{r['render_s']:.1f} s" + ("*" if r.get("render_scaled") else "")
        mem = f"{r['render_peak_extra_mb']:.0f} MB" if "render_peak_extra_mb" in r else "-"
        step = f"{r['train_step_s']:.2f} s" if "train_step_s" in r else "-"
        print(
            f"  {VARIANTS[variant]['label']:32} {pct(r.get('mlp_fwd_gflops')):>20} "
            f"{pct(r.get('mlp_train_gflops')):>20} {step:>14} {render:>11} {mem:>9}"
        )
    if any(r.get("render_scaled") for r in rows.values()):
        print(f"  * timed on 512 rays, scaled to {size}x{size}")
    if "ours" in rows and "mlp_train_samples_per_s" in rows["ours"]:
        r = rows["ours"]
        print(
            f"  shipped MLP: {r['mlp_fwd_samples_per_s']:,.0f} samples/s forward, "
            f"{r['mlp_train_samples_per_s']:,.0f} samples/s forward+backward; training step "
            f"{r['train_mlp_samples_per_s']:,.0f} MLP samples/s"
        )
    if "ours" in rows and "authors" in rows:
        ours, ref = rows["ours"], rows["authors"]
        ratios = [f"training step {ref['train_step_s'] / ours['train_step_s']:.1f}x"]
        if "render_s" in ours and "render_s" in ref:
            ratios.append(f"render {ref['render_s'] / ours['render_s']:.1f}x")
        print(f"  shipped vs the authors' order of computation, same run: {', '.join(ratios)} faster")
    if name == "paper" and "ours" in rows and "render_s" in rows["ours"]:
        ours = rows["ours"]
        print(
            "  shipped vs the authors' implementation as measured in shared/reference (11.65 s/step, "
            f"168 s and 17 GB/render): {11.65 / ours['train_step_s']:.1f}x, {168 / ours['render_s']:.1f}x faster, "
            f"{ours['render_peak_extra_mb'] / 1024:.2f} GB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["paper", "cpu"], choices=["paper", "cpu"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-render", action="store_true")
    parser.add_argument("--worker", nargs=3, metavar=("CONFIG", "VARIANT", "TASK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.repeats)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    mm = matmul_gflops(args.repeats)
    peak = max(mm.values())
    print("plain fp32 matmul 4096x512 @ 512x512: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in mm.items()))
    for name in args.configs:
        model, _, size = model_for(name)
        print(f"\n== {name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {size}px) ==")
        rows = {}
        for variant in args.variants:
            rows[variant] = _spawn(name, variant, "train", args.repeats)
            if not args.skip_render:
                rows[variant].update(_spawn(name, variant, "render", args.repeats))
        _print_table(name, size, rows, peak)
    after = matmul_gflops(args.repeats)
    print("\nmatmul re-measured after (drift check): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in after.items()))


if __name__ == "__main__":
    main()
