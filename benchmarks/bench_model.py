"""Speed of the FeatureNeRF model on this machine, side by side with plain matmul in the same run.

For the paper configuration and the CPU preset it prints:
  * plain ``torch.mm`` GFLOP/s (4096x512 @ 512x512, fp32): the machine's reference speed;
  * MLP samples/s and GFLOP/s, forward only and forward+backward, as a fraction of matmul speed;
  * one training step (B objects x R rays, one source view, coarse + fine, losses, backward, Adam);
  * one full-image feature render (v_NeRF composited), its time and peak memory (measured in a
    fresh subprocess so that earlier allocations do not count).
Random weights and inputs, as the authors' timings (shared/reference/featurenerf-official.md):
11.65 s per training step, 168 s and 17 GB per 128x128 render, ~35% / ~26% of matmul speed.

Usage: python benchmarks/bench_model.py [--configs paper cpu] [--repeats 3] [--skip-render]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from featurenerf_ns.method_configs import _cpu, _paper
from featurenerf_ns.utils.cameras import random_upper_hemisphere


def model_for(name: str, feature_dim: int = 384):
    cfg = (_paper() if name == "paper" else _cpu()).pipeline
    model_cfg = cfg.model
    model_cfg.encoder.weights = None
    model_cfg.feature_dim = feature_dim
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


def matmul_gflops(repeats: int) -> float:
    a, b = torch.randn(4096, 512), torch.randn(512, 512)
    t = timed(lambda: torch.mm(a, b), repeats * 10)
    return 2 * 4096 * 512 * 512 / t / 1e9


def mlp_flops_per_sample(model) -> float:
    mlp = model.field.mlp
    width, d_in, d_out = mlp.width, mlp.lin_in.in_features, mlp.lin_out.out_features
    return 2 * (d_in * width + len(mlp.blocks) * 2 * width * width + width * d_out)


def random_cameras(n: int, size: int):
    c2w = random_upper_hemisphere(n)
    f = size / (2 * torch.tan(torch.tensor(0.6911 / 2)))
    intr = torch.tensor([f, f, size / 2 + 0.5, size / 2 + 0.5]).expand(n, 4)
    return c2w, intr


def bench_mlp(model, repeats: int, n: int = 16384) -> dict:
    mlp = model.field.mlp
    x_in = torch.randn(n, mlp.lin_in.in_features)
    z = torch.randn(n, len(mlp.lin_z) * mlp.width)
    flops = mlp_flops_per_sample(model)

    def fwd():
        with torch.no_grad():
            model.field.heads(mlp(x_in, z, 1, 1), x_in[:, :3], frozenset({"rgb", "density"}), 1, n)

    def fwd_bwd():
        out = mlp(x_in, z, 1, 1)
        model.field.mlp.lin_out(torch.relu(out)).sum().backward()

    t_f, t_fb = timed(fwd, repeats), timed(fwd_bwd, repeats)
    return {
        "mlp_fwd_samples_per_s": n / t_f,
        "mlp_fwd_gflops": n * flops / t_f / 1e9,
        "mlp_train_samples_per_s": n / t_fb,
        "mlp_train_gflops": 3 * n * flops / t_fb / 1e9,
    }


def bench_train_step(model, dm, size: int, repeats: int) -> dict:
    B, R = dm.objects_per_batch, dm.rays_per_object
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    c2w, intr = random_cameras(B * 2, size)
    images = torch.rand(B, 1, 3, size, size)
    origins = c2w[B:, None, :, 3].expand(B, R, 3).contiguous()
    directions = torch.nn.functional.normalize(-origins + 0.3 * torch.randn(B, R, 3), dim=-1)
    rgb_gt, feat_gt = torch.rand(B * R, 3), torch.randn(B * R, model.feature_dim)

    def step():
        opt.zero_grad()
        cond = model.encode(images, c2w[:B, None], intr[:B, None])
        out = model.render_rays(cond, origins, directions, frozenset({"rgb", "feature", "coord"}))
        flat = {k: v.reshape(B * R, -1) for k, v in out.items()}
        losses = model.get_loss_dict(flat, {"image": rgb_gt, "teacher": feat_gt})
        sum(losses.values()).backward()
        opt.step()

    t = timed(step, repeats)
    samples = B * R * (model.sampling.num_coarse + model.sampling.num_fine)
    return {"train_step_s": t, "train_mlp_samples_per_s": samples / t}


def bench_reference(model, dm, size: int, repeats: int, render_rays: int = 512) -> dict:
    """The authors' order of computation (featurenerf_ns.model.reference) on the same inputs, same machine.

    The training step is timed in full. Rendering is timed on ``render_rays`` rays for both formulations
    and scaled to a full image (rays are independent; the authors' renderer takes ~17 GB for a full one).
    """
    from featurenerf_ns.model.reference import reference_render

    B, R = dm.objects_per_batch, dm.rays_per_object
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    c2w, intr = random_cameras(B * 2, size)
    images = torch.rand(B, 3, size, size)
    origins = c2w[B:, None, :, 3].expand(B, R, 3).contiguous()
    directions = torch.nn.functional.normalize(-origins + 0.3 * torch.randn(B, R, 3), dim=-1)
    near, far = torch.full((B, R, 1), 0.8), torch.full((B, R, 1), 1.8)
    rgb_gt, feat_gt = torch.rand(B, R, 3), torch.randn(B, R, model.feature_dim)
    cfg = model.config
    mse = torch.nn.functional.mse_loss

    def step():
        opt.zero_grad()
        latent = model.encoder(images)
        coarse, fine = reference_render(
            model.field, latent, c2w[:B], intr[:B], (size, size), origins, directions, near, far, model.sampling
        )
        loss = sum(mse(o["rgb"], rgb_gt) for o in (coarse, fine))
        loss = loss + cfg.lambda_distill * sum(mse(o["feature"], feat_gt) for o in (coarse, fine))
        loss = loss + cfg.lambda_coord * sum(o["coord"].square().mean() for o in (coarse, fine))
        loss.backward()
        opt.step()

    train_s = timed(step, max(1, repeats - 1))
    model.eval()
    o1, d1 = origins[:1, :1].expand(1, render_rays, 3), directions[:1, :1].expand(1, render_rays, 3)
    d1 = torch.nn.functional.normalize(d1 + 0.3 * torch.randn(1, render_rays, 3), dim=-1)
    with torch.no_grad():
        latent = model.encoder(images[:1])
        cond = model.field.condition(latent, c2w[:1], intr[:1], (size, size), 1)
        n1, f1 = near[:1, :1].expand(1, render_rays, 1), far[:1, :1].expand(1, render_rays, 1)
        ref_s = timed(
            lambda: reference_render(
                model.field, latent, c2w[:1], intr[:1], (size, size), o1, d1, n1, f1, model.sampling
            ),
            1,
        )
        ours_s = timed(lambda: model.render_rays(cond, o1, d1, frozenset({"v_nerf"})), 1)
    scale = size * size / render_rays
    return {"ref_train_step_s": train_s, "ref_render_s": ref_s * scale, "ours_render_subset_s": ours_s * scale}


def bench_render(name: str) -> dict:
    """Runs in a fresh process: time and peak RSS of one full-image v_NeRF render."""
    model, dm, size = model_for(name)
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
    return {"render_s": t, "render_size": size, "render_peak_extra_mb": peak - base, "render_peak_rss_mb": peak}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["paper", "cpu"], choices=["paper", "cpu"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-render", action="store_true")
    parser.add_argument("--reference", action="store_true", help="also time the authors' order of computation")
    parser.add_argument("--render-only", choices=["paper", "cpu"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render_only:
        print(json.dumps(bench_render(args.render_only)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    mm = matmul_gflops(args.repeats)
    print(f"plain torch.mm 4096x512 @ 512x512: {mm:.1f} GFLOP/s")
    for name in args.configs:
        model, dm, size = model_for(name)
        res = {"matmul_gflops": mm, **bench_mlp(model, args.repeats)}
        res.update(bench_train_step(model, dm, size, args.repeats))
        if args.reference:
            res.update(bench_reference(model, dm, size, args.repeats))
        if not args.skip_render:
            proc = subprocess.run(
                [sys.executable, __file__, "--render-only", name], capture_output=True, text=True, check=True
            )
            res.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        mm_now = matmul_gflops(args.repeats)
        print(f"\n== {name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {size}px) ==")
        print(
            f"  MLP forward:        {res['mlp_fwd_samples_per_s']:,.0f} samples/s, {res['mlp_fwd_gflops']:.1f} GFLOP/s"
            f" = {res['mlp_fwd_gflops'] / mm:.0%} of matmul"
        )
        print(
            f"  MLP fwd+bwd:        {res['mlp_train_samples_per_s']:,.0f} samples/s, {res['mlp_train_gflops']:.1f}"
            f" GFLOP/s = {res['mlp_train_gflops'] / mm:.0%} of matmul"
        )
        print(
            f"  training step:      {res['train_step_s']:.3f} s ({res['train_mlp_samples_per_s']:,.0f} MLP samples/s)"
        )
        if "render_s" in res:
            print(
                f"  {size}x{size} v_NeRF render: {res['render_s']:.2f} s, peak memory "
                f"{res['render_peak_extra_mb']:.0f} MB above the loaded model "
                f"(whole process during the render: {res['render_peak_rss_mb']:.0f} MB)"
            )
        if "ref_train_step_s" in res:
            ref_t, ref_r, ours_r = res["ref_train_step_s"], res["ref_render_s"], res["ours_render_subset_s"]
            print(
                f"  authors' order of computation, same run: training step {ref_t:.3f} s = "
                f"{ref_t / res['train_step_s']:.1f}x ours; {size}x{size} render (scaled from 512 rays) "
                f"{ref_r:.1f} s vs ours {ours_r:.1f} s = {ref_r / ours_r:.1f}x"
            )
        print(f"  matmul re-measured after: {mm_now:.1f} GFLOP/s (drift check)")
        if name == "paper" and "render_s" in res:
            print(
                "  vs the authors' implementation as measured in shared/reference (11.65 s/step, 168 s/render, "
                f"matmul then 364-438 GFLOP/s): {11.65 / res['train_step_s']:.1f}x, {168 / res['render_s']:.1f}x"
            )


if __name__ == "__main__":
    main()
