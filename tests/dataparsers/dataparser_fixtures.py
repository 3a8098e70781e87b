"""Tiny data sets in the authors' layout and in SRN's layout, written with numpy/PIL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from featurenerf_ns.geometry import look_at_opencv

SYNSET = "03001627"  # chair


def view_poses(n: int, radius: float = 1.3) -> list[np.ndarray]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + 0.3
    return [look_at_opencv([radius * np.cos(a), radius * np.sin(a), 0.4], up=(0.0, 0.0, 1.0)) for a in angles]


def write_rgba(path: Path, size: int = 32, empty: bool = False, hw: tuple[int, int] | None = None) -> None:
    h, w = hw or (size, size)
    arr = np.zeros((h, w, 4), dtype=np.uint8)
    arr[..., 0] = 200
    arr[..., 1] = np.arange(w, dtype=np.uint8)[None, :] * 4
    arr[..., 2] = 50
    if not empty:
        arr[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, 3] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGBA").save(path)


def write_rgb_on_white(path: Path, size: int = 32) -> None:
    arr = np.full((size, size, 3), 255, dtype=np.uint8)
    arr[size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = (10, 120, 30)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").save(path)


def make_authors_layout(
    root: Path,
    ids: dict[str, list[str]] | None = None,
    num_views: int = 3,
    size: int = 32,
    fov: float = 0.6911112070083618,
    synset: str = SYNSET,
    splits_dir: str = "splits",
    teachers: dict[str, int] | None = None,
    annotations: bool = True,
) -> Path:
    """Write objects in the authors' layout under ``root``; returns ``root``."""
    ids = ids or {"train": ["obj_a", "obj_b", "obj_c"], "val": ["obj_d"], "test": ["obj_e", "obj_a"]}
    all_ids = sorted({i for v in ids.values() for i in v})
    for obj_id in all_ids:
        frames = []
        for v, pose in enumerate(view_poses(num_views)):
            name = f"{v:03d}.png"
            write_rgba(root / "img" / synset / obj_id / name, size)
            frames.append({"file_path": name, "transform_matrix": pose.tolist()})
        cam = root / "camera" / synset / f"{obj_id}.json"
        cam.parent.mkdir(parents=True, exist_ok=True)
        cam.write_text(json.dumps({"camera_angle_x": fov, "frames": frames}))
        if annotations:
            for folder in ("kp_2d_anno", "kp_3d_anno", "part_2d_anno", "part_3d_anno"):
                p = root / folder / synset / f"{obj_id}.npz"
                p.parent.mkdir(parents=True, exist_ok=True)
                np.savez(p, labels=np.zeros(3))
        for folder, dim in (teachers or {}).items():
            p = root / folder / synset / f"{obj_id}.npz"
            p.parent.mkdir(parents=True, exist_ok=True)
            np.savez(p, feats=np.zeros((num_views, dim, 4, 4), dtype=np.float32))
    split = root / splits_dir / f"{synset}.json"
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text(json.dumps(ids))
    return root


def make_srn_layout(
    root: Path,
    name: str = "cars",
    ids: dict[str, list[str]] | None = None,
    num_views: int = 3,
    size: int = 32,
    focal: float = 40.0,
) -> Path:
    """Write objects in pixelNeRF's SRN layout: ``root/<name>_{split}/<id>/...``; returns ``root``."""
    ids = ids or {"train": ["c1", "c2"], "val": ["c3"], "test": ["c4"]}
    for split, objs in ids.items():
        folder = root / f"{name}_{split}"
        if name == "chairs" and split == "train":
            folder = folder / "chairs_2.0_train"
        for obj_id in objs:
            d = folder / obj_id
            for v, pose in enumerate(view_poses(num_views)):
                write_rgb_on_white(d / "rgb" / f"{v:06d}.png", size)
                (d / "pose").mkdir(parents=True, exist_ok=True)
                (d / "pose" / f"{v:06d}.txt").write_text(" ".join(f"{x:.8f}" for x in pose.reshape(-1)))
            (d / "intrinsics.txt").write_text(f"{focal} {size / 2} {size / 2} 0.\n0. 0. 0.\n1.\n{size} {size}\n")
    return root
