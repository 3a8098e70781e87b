"""Throughput of the transfer benchmarks (``featurenerf-eval``) at the paper's scale, without a model.

Builds a toy category at 128 px (``tests/transfer/toy.py``, teacher with the DINO width
384 at 32x32), draws 1000 random pairs like the split files have, and times a subset of them for
each task with the data-side sources (teacher = the paper's 2D baseline, oracle = annotation
features; a trained model adds its rendering time on top of these numbers). Printed side by side
in the same run:

  * pairs/s per task and source (2D keypoints/parts cross-instance and novel view, 3D keypoints/parts);
  * the matching kernel alone: chunked (default blocks of <= 16M similarities) vs one full
    similarity matrix, on 128-px foregrounds with 384-d features (time ratio and block memory);
  * the feature cache: the same pairs with the per-run cache vs with caching disabled.

    .venv/bin/python benchmarks/bench_transfer.py [--pairs 200] [--objects 20] [--views 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from featurenerf_ns.transfer.data import CategoryData, random_pairs
from featurenerf_ns.transfer.evaluate import TaskSpec, evaluate_method
from featurenerf_ns.transfer.matching import DEFAULT_MAX_CHUNK_ELEMENTS, nearest_neighbors
from featurenerf_ns.transfer.sources import OracleSource, TeacherSource

# The cameras/data are test fixtures: take them from this checkout's tests/ (another package may own `tests`).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.transfer.toy import build_toy_category  # noqa: E402


def time_matching(data: CategoryData, dim: int = 384, repeats: int = 5) -> None:
    obj = data.objects()[0]
    n_src = int(data.foreground(obj, 0).sum())
    n_trg = int(data.foreground(data.objects()[1], 0).sum())
    g = torch.Generator().manual_seed(0)
    src, trg = torch.randn(n_src, dim, generator=g), torch.randn(n_trg, dim, generator=g)
    variants = (("chunked (default)", None), ("one full matrix", n_trg))
    times: dict[str, list[float]] = {label: [] for label, _ in variants}
    results = {}
    for _ in range(repeats):  # interleaved, so load from other processes hits both alike
        for label, chunk in variants:
            t0 = time.perf_counter()
            results[label], _ = nearest_neighbors(trg, src, chunk=chunk)
            times[label].append(time.perf_counter() - t0)
    assert torch.equal(results["chunked (default)"], results["one full matrix"])
    for label, chunk in variants:
        rows = chunk or max(1, DEFAULT_MAX_CHUNK_ELEMENTS // n_src)
        block_mb = min(rows, n_trg) * n_src * 4 / 2**20
        ms = 1e3 * statistics.median(times[label])
        print(f"  {label:<18} {n_trg} x {n_src} x {dim}: {ms:7.1f} ms (median of {repeats}), block {block_mb:6.1f} MB")
    ratio = statistics.median(times["chunked (default)"]) / statistics.median(times["one full matrix"])
    print(f"  chunked / full time ratio: {ratio:.2f} (identical matches)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200, help="pairs timed per task (of 1000 drawn)")
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="device of the teacher maps (and so of their matching)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        build_toy_category(
            Path(tmp), num_objects=args.objects, num_views=args.views, image_size=args.image_size, teacher_dim=384
        )
        print(f"toy category: {args.objects} objects x {args.views} views x {args.image_size} px "
              f"built in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        data = CategoryData(tmp, "chair")
        pairs = {s: random_pairs(data, s, 1000, seed=0)[: args.pairs] for s in ("cross-instance", "novel-view")}
        fg = int(data.foreground(data.objects()[0], 0).sum())
        print(f"\npairs/s over {args.pairs} pairs (of 1000 drawn), ~{fg} foreground pixels per image")
        print(f"  {'task':<36} {'teacher':>10} {'oracle':>10}")
        for task, space, setting in (
            ("keypoints", "2d", "cross-instance"),
            ("parts", "2d", "cross-instance"),
            ("keypoints", "2d", "novel-view"),
            ("parts", "2d", "novel-view"),
            ("keypoints", "3d", "cross-instance"),
            ("parts", "3d", "cross-instance"),
        ):
            spec = TaskSpec(task, space, setting)
            cells = []
            for source in (TeacherSource(data, device=args.device), OracleSource(data)):
                if space == "3d" and not source.supports_3d:
                    cells.append("n/a")
                    continue
                res = evaluate_method(source, data, pairs[setting], spec)
                cells.append(f"{res.pairs_per_s:.1f}")
            print(f"  {spec.slug:<36} {cells[0]:>10} {cells[1]:>10}")
        print("\nmatching kernel (target fg x source fg x dim):")
        time_matching(data)
        print("\nfeature cache (teacher, keypoints 2d cross-instance: map production dominates):")
        spec = TaskSpec("keypoints", "2d", "cross-instance")
        cached = evaluate_method(TeacherSource(data, device=args.device), data, pairs["cross-instance"], spec)
        uncached = evaluate_method(
            TeacherSource(data, device=args.device, cache_bytes=0), data, pairs["cross-instance"], spec
        )
        print(f"  cached {cached.pairs_per_s:.1f} pairs/s, uncached {uncached.pairs_per_s:.1f} pairs/s, "
              f"ratio {cached.pairs_per_s / uncached.pairs_per_s:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
