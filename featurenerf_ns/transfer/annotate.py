"""``featurenerf-annotate``: build ``kp_2d_anno``/``kp_3d_anno``/``part_2d_anno``/``part_3d_anno`` from public data.

For each object with a camera JSON (``camera/<synset>/<obj_id>.json``) and a mesh (``.obj``):

- ``kp_3d_anno``: ``labels`` ``(K, 4)`` ``[x, y, z, semantic_id]`` from KeypointNet (barycentric
  ``face_uv`` points of the mesh) and ``pts``: ``num_candidates`` points sampled on the mesh surface
  (the candidate targets of 3D keypoint transfer);
- ``kp_2d_anno``: ``labels``, per view a ``(K_v, 3)`` int array ``[x=col, y=row, id]``: the rounded
  projections of the keypoints visible from that camera (no mesh hit closer than the keypoint);
- ``part_3d_anno``: ``pts`` ``(N, 3)`` and ``labels`` ``(N,)`` from ShapeNet-part or PartNet level 1;
- ``part_2d_anno``: ``labels`` ``(NV, H, W)``: CPU ray casting of the mesh (embree through trimesh),
  each hit pixel labelled like the nearest labelled 3D point to the hit point, 0 where no hit.

Rays and projections are :mod:`featurenerf_ns.geometry`'s (the authors' pixel convention, OpenCV
camera-to-world ``transform_matrix``). Annotation point sets whose frame differs from the mesh's (ShapeNet-part and
PartNet normalise differently from ShapeNetCore v2) can be mapped with ``--align bbox`` (axis-aligned
bounding boxes matched per axis). Files are written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import trimesh
import tyro
from rich.console import Console
from rich.progress import track
from scipy.spatial import cKDTree

from featurenerf_ns.geometry import MeshRayCaster, pixel_rays, project
from featurenerf_ns.layout import CategoryLayout
from featurenerf_ns.transfer.annotations import (
    Mesh,
    load_obj,
    read_keypointnet,
    read_partnet_level1,
    read_partnet_level_names,
    read_partnet_merging,
    read_partnet_meta,
    read_shapenet_part,
)
from featurenerf_ns.transfer.data import read_cameras, resolve_data_path
from featurenerf_ns.utils.errors import report_user_errors
from featurenerf_ns.utils.io import DataError, UserError, write_npz


# ---------------------------------------------------------------------- per view
def part_labels_2d(
    caster: MeshRayCaster, c2w: np.ndarray, focal: float, hw: tuple[int, int], pts: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """``(H, W)`` part labels: the nearest labelled point's label at each pixel's first hit, 0 elsewhere."""
    origin, dirs = pixel_rays(c2w, focal, hw)
    dirs = dirs.reshape(-1, 3)
    face, t = caster.first_hits(origin, dirs)
    hit = face >= 0
    out = np.zeros(hw[0] * hw[1], dtype=np.int64)
    if hit.any():
        _, nearest = cKDTree(pts).query(origin + t[hit, None] * dirs[hit])
        out[hit] = labels[nearest]
    return out.reshape(hw)


def visible_keypoints_2d(
    caster: MeshRayCaster,
    c2w: np.ndarray,
    focal: float,
    hw: tuple[int, int],
    keypoints: np.ndarray,
    tolerance: float = 0.01,
) -> np.ndarray:
    """``(K_v, 3)`` int ``[x=col, y=row, id]`` of the keypoints (``(K, 4)``) visible from this camera.

    A keypoint is visible when it is in front of the camera, rounds to a pixel inside the image, and
    the ray from the camera centre towards it hits the mesh no closer than ``tolerance`` before it.
    """
    h, w = hw
    if len(keypoints) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    xyz = keypoints[:, :3]
    uv, z = project(xyz, c2w, focal, hw)
    px = np.round(uv).astype(np.int64)
    inside = (z > 0) & (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    origin = c2w[:3, 3]
    to_kp = xyz - origin
    dist = np.linalg.norm(to_kp, axis=1)
    _, hit_dist = caster.first_hits(origin, to_kp / dist[:, None])
    visible = inside & (hit_dist >= dist - tolerance)
    return np.concatenate([px[visible], keypoints[visible, 3:4].astype(np.int64)], axis=1)


def bbox_align(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Map ``points`` so their axis-aligned bounding box matches ``target``'s (per-axis scale and shift)."""
    lo, hi = points.min(0), points.max(0)
    tlo, thi = target.min(0), target.max(0)
    scale = np.where(hi - lo > 1e-12, (thi - tlo) / np.maximum(hi - lo, 1e-12), 1.0)
    return (points - lo) * scale + tlo


@dataclass
class ObjectAnnotations:
    """The four processed annotation files of one object (None: input not given)."""

    kp_3d: dict[str, np.ndarray] | None = None
    kp_2d: dict[str, np.ndarray] | None = None
    part_3d: dict[str, np.ndarray] | None = None
    part_2d: dict[str, np.ndarray] | None = None


def annotate_object(
    mesh: Mesh,
    c2w: np.ndarray,
    focal: float,
    hw: tuple[int, int],
    keypoints: np.ndarray | None = None,
    part_pts: np.ndarray | None = None,
    part_labels: np.ndarray | None = None,
    num_candidates: int = 2048,
    seed: int = 0,
    tolerance: float = 0.01,
) -> ObjectAnnotations:
    """Processed annotations of one object seen by cameras ``c2w`` ``(NV, 4, 4)``.

    Args:
        keypoints: ``(K, 4)`` ``[x, y, z, id]`` in the mesh frame.
        part_pts, part_labels: labelled points ``(N, 3)``, ``(N,)`` in the mesh frame.
    """
    caster = MeshRayCaster(trimesh.Trimesh(vertices=mesh[0], faces=mesh[1], process=False))
    out = ObjectAnnotations()
    if keypoints is not None:
        cand, _ = trimesh.sample.sample_surface(caster.mesh, num_candidates, seed=seed)
        out.kp_3d = {"labels": keypoints.astype(np.float32), "pts": np.asarray(cand, dtype=np.float32)}
        per_view = np.empty(len(c2w), dtype=object)
        for v in range(len(c2w)):
            per_view[v] = visible_keypoints_2d(caster, c2w[v], focal, hw, keypoints, tolerance)
        out.kp_2d = {"labels": per_view}
    if part_pts is not None and part_labels is not None:
        out.part_3d = {"pts": part_pts.astype(np.float32), "labels": part_labels.astype(np.int64)}
        maps = np.stack([part_labels_2d(caster, c2w[v], focal, hw, part_pts, part_labels) for v in range(len(c2w))])
        dtype = np.uint8 if maps.max(initial=0) < 256 else np.int32
        out.part_2d = {"labels": maps.astype(dtype)}
    return out


def write_object_annotations(layout: CategoryLayout, obj_id: str, ann: ObjectAnnotations) -> list[Path]:
    """Write the present files atomically; returns their paths."""
    written = []
    for arrays, path in (
        (ann.kp_3d, layout.kp_3d(obj_id)),
        (ann.kp_2d, layout.kp_2d(obj_id)),
        (ann.part_3d, layout.part_3d(obj_id)),
        (ann.part_2d, layout.part_2d(obj_id)),
    ):
        if arrays is not None:
            write_npz(path, compressed=True, **arrays)
            written.append(path)
    return written


# ---------------------------------------------------------------------- CLI
def find_mesh(meshes: Path, synset: str, obj_id: str) -> Path | None:
    """The first existing of the usual places of an object's ``.obj`` under ``meshes``."""
    for p in (
        meshes / f"{obj_id}.obj",
        meshes / obj_id / "models" / "model_normalized.obj",
        meshes / synset / obj_id / "models" / "model_normalized.obj",
        meshes / synset / f"{obj_id}.obj",
        meshes / obj_id / "model.obj",
    ):
        if p.is_file():
            return p
    return None


@dataclass
class AnnotateConfig:
    """Options of ``featurenerf-annotate``."""

    data: Path
    """<root>/<category> (or <root> with --category) in the authors' layout; needs camera/ and img/
    (or --image-size)."""
    meshes: Path
    """Folder of meshes: <id>.obj, <id>/models/model_normalized.obj or <synset>/<id>/models/model_normalized.obj."""
    category: str | None = None
    """Category name or synset when --data is the layout root."""
    keypointnet: Path | None = None
    """KeypointNet annotations/<class>.json: writes kp_3d_anno and kp_2d_anno."""
    shapenet_part: Path | None = None
    """Root of shapenetcore_partanno_segmentation_benchmark_v0: writes part_3d_anno and part_2d_anno."""
    partnet: Path | None = None
    """PartNet data/ folder (<anno_id>/meta.json, result.json, point_sample/): level-1 parts, used
    instead of ShapeNet-part where both exist."""
    partnet_level_names: Path | None = None
    """stats/after_merging2_label_ids/<Cat>-level-1.txt (needed with --partnet)."""
    partnet_merging: Path | None = None
    """Optional stats/merging2_hierarchy_mapping/<Cat>.txt applied to node paths first."""
    align: Literal["none", "bbox"] = "none"
    """Map part points into the mesh frame: none (same frame) or bbox (match bounding boxes)."""
    objects: tuple[str, ...] = ()
    """Objects to annotate (default: every camera JSON of the category)."""
    image_size: int | None = None
    """Square image size when there are no renders to read it from."""
    num_candidates: int = 2048
    """Surface points stored as kp_3d_anno 'pts' (3D keypoint candidates)."""
    visibility_tolerance: float = 0.01
    """A keypoint is hidden when the mesh is hit this much (object units) before it."""
    seed: int = 0
    """Seed of the candidate point sampling."""


def _image_size(cfg: AnnotateConfig, layout: CategoryLayout, obj_id: str) -> tuple[int, int]:
    if cfg.image_size is not None:
        return (cfg.image_size, cfg.image_size)
    folder = layout.image_dir(obj_id)
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".png")) if folder.is_dir() else []
    if not names:
        raise DataError(folder, "no renders to read the image size from; pass --image-size")
    from PIL import Image

    with Image.open(folder / names[0]) as im:
        return (im.size[1], im.size[0])


def _partnet_index(partnet: Path, wanted: set[str]) -> dict[str, Path]:
    index = {}
    for d in sorted(p for p in partnet.iterdir() if (p / "meta.json").is_file()):
        model_id = str(read_partnet_meta(d).get("model_id", ""))
        if model_id in wanted and model_id not in index:
            index[model_id] = d
    return index


def run(cfg: AnnotateConfig, console: Console | None = None) -> dict[str, list[Path]]:
    """Annotate every object; returns the written files per object."""
    console = console or Console()
    root, category = resolve_data_path(cfg.data, cfg.category)
    layout = CategoryLayout(root, category.synset)
    if cfg.keypointnet is None and cfg.shapenet_part is None and cfg.partnet is None:
        raise UserError("nothing to do: give --keypointnet, --shapenet-part and/or --partnet")
    if cfg.partnet is not None and cfg.partnet_level_names is None:
        raise UserError("--partnet needs --partnet-level-names (<Cat>-level-1.txt)")
    cam_dir = root / "camera" / category.synset
    objects: Sequence[str] = cfg.objects or sorted(p.stem for p in cam_dir.glob("*.json"))
    if not objects:
        raise DataError(cam_dir, "no camera JSON files")
    meshes: dict[str, Mesh] = {}

    def mesh_for(obj_id: str) -> Mesh | None:
        if obj_id not in meshes:
            path = find_mesh(cfg.meshes, category.synset, obj_id)
            if path is None:
                return None
            meshes[obj_id] = load_obj(path)
        return meshes[obj_id]

    keypoints = read_keypointnet(cfg.keypointnet, mesh_for, objects) if cfg.keypointnet is not None else {}
    level_names = read_partnet_level_names(cfg.partnet_level_names) if cfg.partnet_level_names else {}
    merging = read_partnet_merging(cfg.partnet_merging) if cfg.partnet_merging else None
    partnet_dirs = _partnet_index(cfg.partnet, set(objects)) if cfg.partnet is not None else {}
    written: dict[str, list[Path]] = {}
    missing_mesh = []
    for obj_id in track(objects, description="annotating", console=console):
        mesh = mesh_for(obj_id)
        if mesh is None:
            missing_mesh.append(obj_id)
            continue
        hw = _image_size(cfg, layout, obj_id)
        c2w, focal = read_cameras(layout.camera_json(obj_id), hw[1])
        kps = keypoints[obj_id].labels if obj_id in keypoints else None
        part_pts = part_labels = None
        if cfg.partnet is not None and obj_id in partnet_dirs:
            part_pts, part_labels = read_partnet_level1(partnet_dirs[obj_id], level_names, merging)
        elif (
            cfg.shapenet_part is not None
            and (cfg.shapenet_part / category.synset / "points" / f"{obj_id}.pts").is_file()
        ):
            part_pts, part_labels = read_shapenet_part(cfg.shapenet_part, category.synset, obj_id)
        if part_pts is not None and cfg.align == "bbox":
            part_pts = bbox_align(part_pts, mesh[0][np.unique(mesh[1])])
        ann = annotate_object(
            mesh, c2w, focal, hw, kps, part_pts, part_labels, cfg.num_candidates, cfg.seed, cfg.visibility_tolerance
        )
        written[obj_id] = write_object_annotations(layout, obj_id, ann)
    if missing_mesh:
        console.print(
            f"[yellow]no mesh under {cfg.meshes} for {len(missing_mesh)} object(s): {missing_mesh[:5]}[/yellow]"
        )
    console.print(f"annotated {len(written)} object(s) of {category.name} under {root}")
    return written


@report_user_errors
def entrypoint(args: list[str] | None = None) -> None:
    """``featurenerf-annotate`` console script (``args``: the command line, default ``sys.argv``)."""
    run(
        tyro.cli(
            AnnotateConfig,
            args=args,
            description="Build the processed keypoint and part annotation files from "
            "KeypointNet, ShapeNet-part or PartNet, meshes and the category's cameras.",
        )
    )


if __name__ == "__main__":
    entrypoint()
