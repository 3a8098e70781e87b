"""Time the procedural data generator: N objects x V views at S px, written in the authors' layout.

    .venv/bin/python benchmarks/bench_synthetic.py [--num-objects 100] [--num-views 50] [--image-size 128]

Prints seconds, objects/s, rays/s (sub-pixel rays cast for the images), bytes written, and the
per-stage split of one object measured in this process (shape, render, teacher, files).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from featurenerf_ns.synthetic.generate import generate_category
from featurenerf_ns.synthetic.render import ObjectRenderer, sample_poses
from featurenerf_ns.synthetic.shapes import make_object
from featurenerf_ns.synthetic.teacher import SyntheticTeacher


def stage_split(category: str, num_views: int, size: int) -> dict[str, float]:
    """Seconds per object spent in each stage, single process, for one object."""
    t = time.perf_counter()
    obj = make_object(category, np.random.default_rng(0))
    sample = obj.sample_surface(np.random.default_rng(0), 2048)
    del sample
    t_shape = time.perf_counter() - t
    r, teacher = ObjectRenderer(obj), SyntheticTeacher(category)
    rng = np.random.default_rng(0)
    t_render = t_teacher = 0.0
    for c2w in sample_poses(np.random.default_rng(1), num_views):
        t = time.perf_counter()
        view = r.render(c2w, size, size)
        t_render += time.perf_counter() - t
        t = time.perf_counter()
        teacher.features(view, c2w, rng)
        t_teacher += time.perf_counter() - t
    return {"shape+surface samples": t_shape, "render": t_render, "teacher": t_teacher}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-objects", type=int, default=100)
    p.add_argument("--num-views", type=int, default=50)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--category", default="chair")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    p.add_argument("--keep", type=Path, default=None, help="write here and keep the data (default: a temp dir)")
    a = p.parse_args()
    root = a.keep or Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        t = time.perf_counter()
        stats = generate_category(
            root, a.category, num_objects=a.num_objects, num_views=a.num_views, image_size=a.image_size,
            workers=a.workers, progress=False,
        )  # fmt: skip
        sec = time.perf_counter() - t
        on_disk = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    finally:
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{a.category}: {a.num_objects} objects x {a.num_views} views at {a.image_size} px, "
          f"{a.workers or os.cpu_count()} workers on {os.cpu_count()} cores")  # fmt: skip
    print(f"  seconds        {sec:.2f} (includes worker start-up and pair selection)")
    print(f"  objects/s      {a.num_objects / sec:.2f}")
    print(f"  views/s        {a.num_objects * a.num_views / sec:.1f}")
    print(f"  rays/s         {stats['rays'] / sec:.3g} (2x2 sub-pixel rays)")
    print(f"  bytes written  {on_disk:,} ({on_disk / a.num_objects / 1e6:.2f} MB/object)")
    split = stage_split(a.category, a.num_views, a.image_size)
    total = sum(split.values())
    print("  one object, single process: " + ", ".join(f"{k} {v:.2f}s" for k, v in split.items())
          + f" (files and PNG encoding are the rest of the per-object time, total here {total:.2f}s)")  # fmt: skip


if __name__ == "__main__":
    main()
