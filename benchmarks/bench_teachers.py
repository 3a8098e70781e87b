"""Teacher extraction speed and cache size, side by side with the authors' file format.

Measures, in one run on this machine:
  1. objects/s of ``extract_category`` with the real-size DINO ViT-S/8 architecture (random weights:
     no download here; the weights do not change the cost) at the default settings
     (128-px RGBA views -> 256 px -> 384 x 32 x 32), on CPU unless --device says otherwise;
  2. bytes per object of this project's cache (sparse float16 ``.npy``; and dense float16) against the
     authors' format (``np.savez_compressed(feats=float32)``) and the raw float32 array, same features;
  3. time to read one view of one object from each format (memory-mapped ``.npy`` vs. npz).

    .venv/bin/python benchmarks/bench_teachers.py [--objects 2 --views 4 --device cpu]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from featurenerf_ns.layout import CategoryLayout
from featurenerf_ns.teachers.base import resolve_device
from featurenerf_ns.teachers.cache import cache_path, extract_category
from featurenerf_ns.teachers.dino import DinoTeacherConfig
from featurenerf_ns.teachers.store import encode_teacher_features, open_teacher_features

SYNSET = "03001627"


def make_objects(root: Path, n_objects: int, n_views: int, size: int = 128, seed: int = 0) -> list[str]:
    """RGBA views of a shaded ellipse covering about a third of the image (like ShapeNet renders)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    ids = [f"obj{i:03d}" for i in range(n_objects)]
    for obj_id in ids:
        d = root / "img" / SYNSET / obj_id
        d.mkdir(parents=True)
        for v in range(n_views):
            cy, cx, ry, rx = (
                rng.uniform(0.4, 0.6),
                rng.uniform(0.4, 0.6),
                rng.uniform(0.25, 0.4),
                rng.uniform(0.2, 0.35),
            )
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            img = np.zeros((size, size, 4), np.uint8)
            shade = (255 * (0.3 + 0.7 * np.stack([yy, xx, 1 - yy], -1))).astype(np.uint8)
            img[..., :3] = np.where(inside[..., None], shade, 0)
            img[..., 3] = inside * 255
            Image.fromarray(img, "RGBA").save(d / f"{v:03d}.png")
    (root / "splits").mkdir(parents=True)
    (root / "splits" / f"{SYNSET}.json").write_text(json.dumps({"train": ids, "val": [], "test": []}))
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        ids = make_objects(root, args.objects, args.views)
        layout = CategoryLayout(root, SYNSET)
        teacher = DinoTeacherConfig(random_init=True).setup(category="chair", device=device)
        teacher(torch.zeros(1, 4, 128, 128))  # warm-up (allocator, kernels)
        report = extract_category(teacher, layout, ids, "dino_feat_256", progress=False)
        folder = root / "dino_feat_256" / SYNSET

        ours, dense, theirs, raw = [], [], [], []
        read_ours, read_theirs = [], []
        for obj_id in ids:
            npy = cache_path(folder, obj_id)
            store = open_teacher_features(npy)
            feats32 = store.read(range(store.num_views))
            npz = Path(tmp) / f"{obj_id}.npz"
            with open(npz, "wb") as f:
                np.savez_compressed(f, feats=feats32)  # the authors' generate_dino_feat.py format
            dense_path = Path(tmp) / f"{obj_id}_dense.npy"
            np.save(dense_path, encode_teacher_features(feats32, sparse=False))
            ours.append(npy.stat().st_size)
            dense.append(dense_path.stat().st_size)
            theirs.append(npz.stat().st_size)
            raw.append(feats32.nbytes)
            t0 = time.perf_counter()
            open_teacher_features(npy).read([args.views - 1])
            read_ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            open_teacher_features(npz).read([args.views - 1])
            read_theirs.append(time.perf_counter() - t0)
        fg = float(np.mean([open_teacher_features(cache_path(folder, i))._sparse.mask.mean() for i in ids]))

    per = f"{args.views} views of 128 px"
    print(f"DINO ViT-S/8 (real-size architecture, random weights), 384 x 32 x 32 per view, {per}, device {device}")
    print(f"extraction: {report.objects_per_second:.3f} objects/s ({report.seconds / len(ids):.2f} s/object)")
    print(f"foreground cells: {100 * fg:.0f}% of the map (background cells are zero)")
    rows = [
        ("bytes/object: ours sparse f16 vs authors npz", np.mean(ours), np.mean(theirs)),
        ("bytes/object: ours sparse f16 vs raw f32", np.mean(ours), np.mean(raw)),
        ("bytes/object: dense f16 (--no-sparse) vs npz", np.mean(dense), np.mean(theirs)),
        ("read one view (ms): ours vs authors npz", 1e3 * np.median(read_ours), 1e3 * np.median(read_theirs)),
    ]
    print(f"{'':<48}{'ours':>14}{'theirs':>14}{'ratio':>8}")
    for label, a, b in rows:
        print(f"{label:<48}{a:>14,.2f}{b:>14,.2f}{a / b:>8.2f}")


if __name__ == "__main__":
    main()
