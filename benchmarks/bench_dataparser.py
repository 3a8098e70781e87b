"""How long the category dataparsers take on a large fake data set (no image is decoded).

Builds, in a temporary folder, ``--objects`` objects x ``--views`` views in the authors' layout
(camera JSONs, empty PNG files except the first, which the parser reads the size from) and the
same in SRN's layout, then times parsing the train split. Printed side by side with the floor
for the same files: just ``json.load`` of every camera file (authors) or reading every pose file
(SRN), so the ratio is the parser's overhead over reading its input.

    .venv/bin/python benchmarks/bench_dataparser.py --objects 2000 --views 50
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from featurenerf_ns.dataparsers.featurenerf_dataparser import FeatureNeRFDataParserConfig
from featurenerf_ns.dataparsers.srn_dataparser import SRNDataParserConfig

SYNSET = "03001627"


def build_authors(root: Path, num_objects: int, num_views: int) -> list[Path]:
    ids = [f"{i:032x}" for i in range(num_objects)]
    pose = np.eye(4)
    pose[2, 3] = 1.3
    frames = [{"file_path": f"{v:03d}.png", "transform_matrix": pose.tolist()} for v in range(num_views)]
    text = json.dumps({"camera_angle_x": 0.69, "frames": frames})
    cams = []
    (root / "camera" / SYNSET).mkdir(parents=True)
    for obj_id in ids:
        d = root / "img" / SYNSET / obj_id
        d.mkdir(parents=True)
        for v in range(num_views):
            (d / f"{v:03d}.png").touch()
        cam = root / "camera" / SYNSET / f"{obj_id}.json"
        cam.write_text(text)
        cams.append(cam)
    Image.new("RGBA", (128, 128)).save(root / "img" / SYNSET / ids[0] / "000.png")
    (root / "splits").mkdir()
    (root / "splits" / f"{SYNSET}.json").write_text(json.dumps({"train": ids, "val": ids[:1], "test": ids[:1]}))
    return cams


def build_srn(root: Path, num_objects: int, num_views: int) -> list[Path]:
    pose_text = " ".join(str(x) for x in np.eye(4).reshape(-1))
    poses = []
    for i in range(num_objects):
        d = root / "cars_train" / f"{i:032x}"
        (d / "rgb").mkdir(parents=True)
        (d / "pose").mkdir()
        for v in range(num_views):
            (d / "rgb" / f"{v:06d}.png").touch()
            p = d / "pose" / f"{v:06d}.txt"
            p.write_text(pose_text)
            poses.append(p)
        (d / "intrinsics.txt").write_text("131.25 64. 64. 0.\n0. 0. 0.\n1.\n128 128\n")
    Image.new("RGB", (128, 128)).save(root / "cars_train" / f"{0:032x}" / "rgb" / "000000.png")
    return poses


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--views", type=int, default=50)
    args = ap.parse_args()
    n, v = args.objects, args.views
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t_build = timed(lambda: build_authors(tmp / "authors", n, v))
        cams = sorted((tmp / "authors" / "camera" / SYNSET).iterdir())
        t_srn_build = timed(lambda: build_srn(tmp / "srn", n, v))
        print(f"built {n} objects x {v} views in both layouts ({t_build + t_srn_build:.1f} s), {os.cpu_count()} cpus")

        # Warm the OS file cache identically for both measurements of each layout.
        for c in cams:
            c.read_bytes()
        floor = timed(lambda: [json.loads(c.read_text()) for c in cams])
        cfg = FeatureNeRFDataParserConfig(data=tmp / "authors" / "chair", teacher="none")
        out = None

        def run():
            nonlocal out
            out = cfg.setup().get_dataparser_outputs("train")

        t = timed(run)
        assert len(out.image_filenames) == n * v
        print(
            f"authors' layout: parse {t:.2f} s = {n / t:,.0f} objects/s ({n * v / t:,.0f} views/s); "
            f"json.load floor {floor:.2f} s; parse/floor = {t / floor:.1f}x"
        )

        pose_files = sorted((tmp / "srn" / "cars_train").glob("*/pose/*.txt"))
        floor = timed(lambda: [p.read_text() for p in pose_files])
        cfg_srn = SRNDataParserConfig(data=tmp / "srn" / "cars")

        def run_srn():
            nonlocal out
            out = cfg_srn.setup().get_dataparser_outputs("train")

        t = timed(run_srn)
        assert len(out.image_filenames) == n * v
        print(
            f"SRN layout:      parse {t:.2f} s = {n / t:,.0f} objects/s ({n * v / t:,.0f} views/s); "
            f"read-pose-files floor {floor:.2f} s; parse/floor = {t / floor:.1f}x"
        )


if __name__ == "__main__":
    main()
