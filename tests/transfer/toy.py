"""A tiny box-chair category in the authors' layout with exactly known annotations.

Used by the transfer tests and ``benchmarks/bench_transfer.py`` (it needs nothing but trimesh): every
object is a seat, a back and four legs (boxes with random proportions), part labels ``back=1, seat=2, leg=3`` (the
``chair`` vocabulary), 12 keypoints placed on faces away from edges (the same semantic id is the
same place on every object), cameras around the object at the authors' distance and field of view.
The annotation files come from :func:`featurenerf_ns.transfer.annotate.annotate_object`, so the
toy data also exercises the annotation tool; the renders are flat-shaded part colours with alpha.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from featurenerf_ns import geometry
from featurenerf_ns.categories import resolve_category
from featurenerf_ns.layout import DINO_TEACHER_FOLDER, CategoryLayout
from featurenerf_ns.transfer.annotate import annotate_object, write_object_annotations
from featurenerf_ns.utils.io import atomic_path, write_json, write_npz

PART_COLORS = np.array([[0, 0, 0], [200, 60, 60], [60, 160, 60], [60, 80, 200]], dtype=np.float64)


def toy_cameras(num_views: int, elevation_deg: float = 25.0) -> np.ndarray:
    """``(NV, 4, 4)`` cameras on a ring around the object (same for every object, like val/test data)."""
    el = math.radians(elevation_deg)
    out = []
    for v in range(num_views):
        az = math.radians(-70.0 + 140.0 * (v + 0.5) / num_views)  # the front half: keypoints stay visible
        out.append(geometry.look_at_opencv(geometry.CAMERA_DISTANCE * geometry.sphere_direction(az, el)))
    return np.stack(out)


def toy_chair(rng: np.random.Generator) -> tuple[trimesh.Trimesh, np.ndarray, np.ndarray]:
    """A random box chair: mesh, per-face part labels and ``(12, 4)`` keypoints ``[x, y, z, id]``."""
    w = rng.uniform(0.45, 0.6)  # seat width (x)
    d = rng.uniform(0.4, 0.55)  # seat depth (z)
    t = rng.uniform(0.05, 0.08)  # seat thickness
    sy = rng.uniform(-0.1, 0.0)  # seat bottom height
    bh = rng.uniform(0.3, 0.42)  # back height above the seat
    bt = rng.uniform(0.04, 0.07)  # back thickness
    lw = rng.uniform(0.05, 0.07)  # leg width
    floor = -0.45
    boxes = [
        (1, [-w / 2, sy + t, -d / 2], [w / 2, sy + t + bh, -d / 2 + bt]),  # back (at -z)
        (2, [-w / 2, sy, -d / 2], [w / 2, sy + t, d / 2]),  # seat
    ]
    for sx in (-1, 1):
        for sz in (-1, 1):
            x0 = sx * (w / 2 - lw / 2)
            z0 = sz * (d / 2 - lw / 2)
            boxes.append((3, [x0 - lw / 2, floor, z0 - lw / 2], [x0 + lw / 2, sy, z0 + lw / 2]))
    meshes, labels = [], []
    for label, lo, hi in boxes:
        lo, hi = np.asarray(lo), np.asarray(hi)
        box = trimesh.creation.box(extents=hi - lo)
        box.apply_translation((lo + hi) / 2)
        meshes.append(box)
        labels.append(np.full(len(box.faces), label))
    mesh = trimesh.util.concatenate(meshes)
    top = sy + t
    front = -d / 2 + bt  # the back's front face
    kps = [
        [0.0, top, 0.1 * d],  # 0 seat centre (a bit to the front of the back's shadow)
        [-0.3 * w, top, 0.3 * d],
        [0.3 * w, top, 0.3 * d],
        [-0.3 * w, top, 0.0],
        [0.3 * w, top, 0.0],
        [0.0, top + 0.5 * bh, front],  # 5 back centre
        [-0.3 * w, top + 0.75 * bh, front],
        [0.3 * w, top + 0.75 * bh, front],
        [0.0, sy + t / 2, d / 2],  # 8 seat front face centre
        [-0.3 * w, top + 0.3 * bh, front],
        [0.3 * w, top + 0.3 * bh, front],
        [0.0, top, 0.4 * d],
    ]
    keypoints = np.concatenate([np.asarray(kps), np.arange(len(kps))[:, None]], axis=1)
    return mesh, np.concatenate(labels), keypoints


def _write_obj(path: Path, mesh: trimesh.Trimesh) -> None:
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def build_toy_category(
    root: os.PathLike | str,
    category: str = "chair",
    num_objects: int = 6,
    num_views: int = 4,
    image_size: int = 48,
    seed: int = 0,
    num_pairs: int = 12,
    teacher_dim: int = 8,
    num_part_points: int = 3000,
    mesh_dir: os.PathLike | str | None = None,
) -> CategoryLayout:
    """Write a toy category under ``root`` (renders, cameras, annotations, teacher, split with pairs).

    Every object is a test object. ``mesh_dir`` also receives ``<obj_id>.obj`` (inputs for
    ``featurenerf-annotate``). The teacher map (``dino_feat_256``, 1/4 resolution) is the part
    one-hot averaged over 4x4 cells plus noise, so the teacher baseline is informative but imperfect.
    """
    cat = resolve_category(category)
    root = Path(root)
    layout = CategoryLayout(root, cat.synset)
    rng = np.random.default_rng(seed)
    cams = toy_cameras(num_views)
    hw = (image_size, image_size)
    focal = geometry.focal_from_fov(geometry.CAMERA_ANGLE_X, image_size)
    ids = [f"toy{seed:02d}{i:04d}" for i in range(num_objects)]
    for obj_id in ids:
        mesh, face_labels, keypoints = toy_chair(rng)
        pts, face_idx = trimesh.sample.sample_surface(mesh, num_part_points, seed=int(rng.integers(1 << 30)))
        part_labels = face_labels[face_idx]
        if mesh_dir is not None:
            _write_obj(Path(mesh_dir) / f"{obj_id}.obj", mesh)
        caster = geometry.MeshRayCaster(mesh)
        img_dir = layout.image_dir(obj_id)
        img_dir.mkdir(parents=True, exist_ok=True)
        frames = []
        for v, c2w in enumerate(cams):
            origin, dirs = geometry.pixel_rays(c2w, focal, hw)
            face, _ = caster.first_hits(origin, dirs.reshape(-1, 3))
            hit = face >= 0
            label = np.zeros(len(face), dtype=np.int64)
            label[hit] = face_labels[face[hit]]
            shade = np.ones(len(face))
            normals = mesh.face_normals[face[hit]]
            shade[hit] = 0.55 + 0.45 * np.abs(normals @ np.array([0.3, 0.8, 0.5]) / np.linalg.norm([0.3, 0.8, 0.5]))
            rgb = PART_COLORS[label] * shade[:, None]
            rgba = np.concatenate([rgb, 255.0 * hit[:, None]], axis=1).reshape(image_size, image_size, 4)
            name = f"{v:03d}.png"
            with atomic_path(img_dir / name) as tmp:
                Image.fromarray(rgba.astype(np.uint8), "RGBA").save(tmp)
            frames.append({"file_path": name, "transform_matrix": c2w.tolist()})
        write_json(layout.camera_json(obj_id), {"camera_angle_x": geometry.CAMERA_ANGLE_X, "frames": frames})
        ann = annotate_object(
            (np.asarray(mesh.vertices), np.asarray(mesh.faces)),
            cams,
            focal,
            hw,
            keypoints=keypoints,
            part_pts=pts,
            part_labels=part_labels,
            num_candidates=2048,
            seed=seed,
        )
        write_object_annotations(layout, obj_id, ann)
        # teacher: part one-hot pooled to 1/4 resolution, a few noise channels
        maps = ann.part_2d["labels"].astype(np.int64)
        onehot = np.eye(4)[maps].transpose(0, 3, 1, 2)  # (NV, 4, H, W)
        small = onehot.reshape(num_views, 4, image_size // 4, 4, image_size // 4, 4).mean(axis=(3, 5))
        noise = rng.normal(0.0, 0.15, (num_views, teacher_dim - 4, image_size // 4, image_size // 4))
        feats = np.concatenate([small, noise], axis=1).astype(np.float32)
        write_npz(layout.teacher(DINO_TEACHER_FOLDER, obj_id), feats=feats)
    pair_rng = np.random.default_rng(seed + 1)
    cross_inst, cross_view = [], []
    for _ in range(num_pairs):
        a, b = pair_rng.choice(num_objects, 2, replace=False)
        cross_inst.append({"src": ids[a], "trg": ids[b], "view": int(pair_rng.integers(num_views))})
        s, t = pair_rng.choice(num_views, 2, replace=False)
        cross_view.append(
            {"model_id": ids[int(pair_rng.integers(num_objects))], "src_view": int(s), "trg_view": int(t)}
        )
    write_json(
        layout.split_file(),
        {
            "train": [],
            "val": [],
            "test": ids,
            "valid_flags_for_test": [True] * len(ids),
            "cross_inst_pairs": cross_inst,
            "cross_view_pairs": cross_view,
        },
    )
    return layout
