"""A paper-width copy of a trained run for rendering benchmarks: the same trained function in a wider MLP.

A width-512 model cannot be trained far enough on 2 CPU cores in a session, and a random or barely trained one has no
realistic occupancy (a paper-configuration run trained from scratch on the embedded chairs at ~1 s a step had no
positive density left anywhere after 500 steps). This writes a new run next to a trained one whose MLP has
``--width`` units (the paper's 512), with the paper's sample counts and render chunk, and that computes exactly the
trained run's field: the residual stream's new channels stay zero (zero rows in ``lin_in``, ``lin_z`` and every
block's ``fc_1``), while every block's new hidden units compute from random weights (Kaiming, as at initialisation)
and are read by zero columns of ``fc_1``. Every GEMM of a render is thus a dense one of the paper's size, the density
(hence the occupancy, the importance samples and what skipping evaluates) is the trained one, and v_NeRF is the
trained v_NeRF padded with zeros. The encoder stays the run's own; it runs once per source, not per sample. The copy
is a run like any other: ``ns-train ... --load-checkpoint`` trains it further, so that its new units learn too.

    .venv/bin/python benchmarks/widen_run.py --load-config outputs/chair/featurenerf-cpu/<run>/config.yml
    .venv/bin/python benchmarks/bench_render.py --load-config outputs/chair/featurenerf-cpu/<run>-w512/config.yml

The script checks that the copy computes the original's field (printing the largest difference) before it reports
success.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.model.featurenerf import FeatureNeRFModelConfig
from featurenerf_ns.utils.run_folder import write_run


def widen_state(state: dict[str, torch.Tensor], width: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The pipeline state dict with every field MLP widened to ``width`` units, computing the same function."""
    out = dict(state)
    for key, value in state.items():
        match = re.fullmatch(r"_model\.field\.(mlp|mlp_fine)\.(.+)\.(weight|bias)", key)
        if match is None:
            continue
        layer, kind = match.group(2), match.group(3)
        old = value.shape[0] if layer != "lin_out" else value.shape[-1]
        if layer == "lin_out":
            # Reads the stream's new channels, which are zero: zero columns keep its output.
            out[key] = F.pad(value, (0, width - old)) if kind == "weight" else value
        elif layer.endswith("fc_0"):
            # New hidden units: random (dense GEMMs with real values), read only by zero columns of fc_1.
            if kind == "weight":
                new = torch.randn(width, width, generator=generator) * math.sqrt(2.0 / width)
                new[:old, :old] = value
                out[key] = new
            else:
                out[key] = F.pad(value, (0, width - old))
        elif kind == "weight":
            # lin_in, lin_z and fc_1 write the residual stream: its new channels stay zero.
            out[key] = F.pad(value, (0, width - value.shape[1], 0, width - old) if layer.endswith("fc_1") else
                             (0, 0, 0, width - old))  # fmt: skip
        else:
            out[key] = F.pad(value, (0, width - old))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-config", type=Path, required=True, help="config.yml of a trained run")
    paper = FeatureNeRFModelConfig()
    parser.add_argument("--width", type=int, default=paper.field.hidden_dim, help="MLP width of the copy")
    parser.add_argument("--coarse", type=int, default=paper.num_coarse_samples, help="coarse samples per ray")
    parser.add_argument("--fine", type=int, default=paper.num_fine_samples, help="fine samples per ray")
    parser.add_argument("--fine-depth", type=int, default=paper.num_fine_depth_samples,
                        help="fine samples drawn around the coarse depth")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = yaml.load(args.load_config.read_text(), Loader=yaml.Loader)
    model_cfg = config.pipeline.model
    if args.width < model_cfg.field.hidden_dim:
        raise SystemExit(f"--width {args.width} is narrower than the run's {model_cfg.field.hidden_dim}")
    ckpt_dir = config.get_checkpoint_dir()
    ckpts = list(ckpt_dir.glob("step-*.ckpt"))
    if not ckpts:
        raise SystemExit(f"{ckpt_dir}: no checkpoint (step-*.ckpt)")
    ckpt_path = max(ckpts, key=lambda p: int(p.stem.split("-")[1]))
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)

    model_cfg.field.hidden_dim = args.width
    model_cfg.num_coarse_samples = args.coarse
    model_cfg.num_fine_samples = args.fine
    model_cfg.num_fine_depth_samples = args.fine_depth
    # The paper configuration's rays per chunk, which bounds a full render's memory at this width.
    model_cfg.eval_num_rays_per_chunk = paper.eval_num_rays_per_chunk
    config.timestamp = f"{config.timestamp}-w{args.width}"
    generator = torch.Generator().manual_seed(args.seed)
    # A fresh optimizer state (the old one has the narrow shapes), should the copy be trained further.
    wide = {"step": ckpt["step"], "pipeline": widen_state(ckpt["pipeline"], args.width, generator), "optimizers": {},
            "schedulers": {}, "scalers": {}}  # fmt: skip
    if config.get_base_dir().exists():
        raise SystemExit(f"{config.get_base_dir()}: already exists (remove it to make the copy again)")
    extra = {p.name: p.read_bytes() for p in args.load_config.parent.glob("*.json")}
    new_config = write_run(config, wide, extra)

    narrow = TrainedFeatureNeRF.load(args.load_config, device="cpu")
    widened = TrainedFeatureNeRF.load(new_config, device="cpu")
    obj = narrow.objects("test")[0].obj_id
    points = torch.rand(1, 4096, 3, generator=generator) - 0.5
    dirs = F.normalize(torch.randn(1, 4096, 3, generator=generator), dim=-1)
    names = frozenset({"rgb", "density", "feature", "v_nerf"})
    with torch.no_grad():
        a = narrow.model.field(narrow.encode("test", obj, [0]), points, dirs, names)
        b = widened.model.field(widened.encode("test", obj, [0]), points, dirs, names)
    w = a.v_nerf.shape[-1]
    diff = max(float((getattr(a, k) - getattr(b, k)).abs().max()) for k in ("rgb", "density", "feature"))
    diff = max(diff, float((a.v_nerf - b.v_nerf[..., :w]).abs().max()), float(b.v_nerf[..., w:].abs().max()))
    print(f"{new_config}: width {args.width}, {args.coarse}+{args.fine} samples; largest difference from "
          f"the original's field at 4096 points: {diff:.2e}")  # fmt: skip
    if diff > 1e-4:
        shutil.rmtree(new_config.parent)
        raise SystemExit("the widened copy does not compute the original's field (removed)")


if __name__ == "__main__":
    main()
