"""Readers for the public keypoint and part annotations that the processed layout is built from.

- KeypointNet (``annotations/<class>.json``): per model, keypoints with a ``semantic_id``, an ``xyz``
  and ``mesh_info{face_index, face_uv}``; the mesh point is ``face_uv`` (barycentric weights) applied
  to the face's three vertices of ShapeNetCore v2 ``model_normalized.obj`` (faces in file order).
- ShapeNet-part (``shapenetcore_partanno_segmentation_benchmark_v0``): ``<synset>/points/<id>.pts`` and
  ``<synset>/points_label/<id>.seg`` (1-based labels).
- PartNet level-1 semantics: raw ``data/<anno_id>/{result.json, meta.json, point_sample/pts-10000.txt,
  point_sample/label-10000.txt}`` (labels are leaf node ids of ``result.json``) with the names of
  ``stats/after_merging2_label_ids/<Cat>-level-1.txt``.

Every reader raises :class:`~featurenerf_ns.utils.io.DataError` naming the file on malformed input.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featurenerf_ns.utils.io import DataError, read_json

Mesh = tuple[np.ndarray, np.ndarray]
"""``(vertices (V, 3) float64, faces (F, 3) int64)``."""


# ---------------------------------------------------------------------- meshes
def load_obj(path: os.PathLike | str) -> Mesh:
    """Vertices and triangles of a Wavefront OBJ, faces in file order (polygons fan-triangulated).

    File order matters: KeypointNet's ``face_index`` counts the triangles of ``model_normalized.obj``
    as read in order, which mesh libraries that merge or regroup by material do not preserve.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "mesh file not found")
    verts: list[list[float]] = []
    faces: list[list[int]] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                if line.startswith("v "):
                    parts = line.split()
                    if len(parts) < 4:
                        raise DataError(path, f"line {lineno}: vertex needs 3 coordinates")
                    verts.append([float(parts[1]), float(parts[2]), float(parts[3])])
                elif line.startswith("f "):
                    idx = []
                    for tok in line.split()[1:]:
                        i = int(tok.split("/")[0])
                        idx.append(i - 1 if i > 0 else len(verts) + i)
                    if len(idx) < 3:
                        raise DataError(path, f"line {lineno}: face needs 3 vertices")
                    for k in range(1, len(idx) - 1):
                        faces.append([idx[0], idx[k], idx[k + 1]])
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        raise DataError(path, f"malformed OBJ ({e})") from None
    if not verts or not faces:
        raise DataError(path, "OBJ has no vertices or no faces")
    v = np.asarray(verts, dtype=np.float64)
    fa = np.asarray(faces, dtype=np.int64)
    if fa.min() < 0 or fa.max() >= len(v):
        raise DataError(path, f"face refers to a vertex outside 1..{len(v)}")
    return v, fa


# ---------------------------------------------------------------------- KeypointNet
@dataclass
class ModelKeypoints:
    """The keypoints of one model."""

    class_id: str
    model_id: str
    points: np.ndarray
    """``(K, 3)`` positions (mesh frame)."""
    semantic_ids: np.ndarray
    """``(K,)`` semantic ids (the same id means the same keypoint across models)."""

    @property
    def labels(self) -> np.ndarray:
        """``(K, 4)`` ``[x, y, z, semantic_id]``: the ``kp_3d_anno`` ``labels`` layout."""
        return np.concatenate([self.points, self.semantic_ids[:, None].astype(np.float64)], axis=1)


def read_keypointnet(
    path: os.PathLike | str,
    mesh_for: Callable[[str], Mesh | None] | None = None,
    model_ids: Iterable[str] | None = None,
) -> dict[str, ModelKeypoints]:
    """Read a KeypointNet annotation file.

    Args:
        path: ``annotations/<class>.json``.
        mesh_for: ``model_id -> (vertices, faces)`` of ``model_normalized.obj`` (or None when absent);
            when it gives a mesh, keypoints are the barycentric ``face_uv`` points of
            ``mesh_info.face_index``, else the stored ``xyz``.
        model_ids: read only these models.

    Returns:
        ``model_id -> ModelKeypoints``.
    """
    path = Path(path)
    entries = read_json(path)
    if not isinstance(entries, list):
        raise DataError(path, "expected a list of per-model annotations")
    wanted = set(model_ids) if model_ids is not None else None
    out: dict[str, ModelKeypoints] = {}
    for n, entry in enumerate(entries):
        try:
            model_id = str(entry["model_id"])
            class_id = str(entry.get("class_id", ""))
            kps = entry["keypoints"]
        except (KeyError, TypeError):
            raise DataError(path, f"entry {n}: needs model_id and keypoints") from None
        if wanted is not None and model_id not in wanted:
            continue
        mesh = mesh_for(model_id) if mesh_for is not None else None
        pts, ids = [], []
        for k, kp in enumerate(kps):
            where = f"model {model_id} keypoint {k}"
            try:
                ids.append(int(kp["semantic_id"]))
                if mesh is not None:
                    face = int(kp["mesh_info"]["face_index"])
                    uv = np.asarray(kp["mesh_info"]["face_uv"], dtype=np.float64)
                    if uv.shape != (3,):
                        raise DataError(path, f"{where}: face_uv must have 3 weights, got {uv.shape}")
                    if not 0 <= face < len(mesh[1]):
                        raise DataError(path, f"{where}: face_index {face} outside the mesh's {len(mesh[1])} faces")
                    pts.append(mesh[0][mesh[1][face]].T @ uv)
                else:
                    xyz = np.asarray(kp["xyz"], dtype=np.float64)
                    if xyz.shape != (3,):
                        raise DataError(path, f"{where}: xyz must have 3 coordinates")
                    pts.append(xyz)
            except (KeyError, TypeError, ValueError) as e:
                if isinstance(e, DataError):
                    raise
                raise DataError(path, f"{where}: malformed ({e!r})") from None
        out[model_id] = ModelKeypoints(
            class_id,
            model_id,
            np.asarray(pts, dtype=np.float64).reshape(-1, 3),
            np.asarray(ids, dtype=np.int64),
        )
    return out


# ---------------------------------------------------------------------- ShapeNet-part
def _read_rows(path: Path, what: str, min_cols: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, f"{what} file not found")
    try:
        arr = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise DataError(path, f"malformed {what} file ({e})") from None
    if arr.size == 0 or arr.shape[1] < min_cols:
        raise DataError(path, f"{what} file needs at least {min_cols} column(s) per line, got shape {arr.shape}")
    return arr


def read_points(path: os.PathLike | str) -> np.ndarray:
    """``(N, 3)`` points of a whitespace-separated text file (``.pts``, ``pts-10000.txt``; extra columns ignored)."""
    return _read_rows(Path(path), "point", 3)[:, :3]


def read_labels(path: os.PathLike | str) -> np.ndarray:
    """``(N,)`` integer labels, one per line (``.seg``, ``label-10000.txt``)."""
    path = Path(path)
    arr = _read_rows(path, "label", 1)
    if arr.shape[1] != 1 or not np.all(arr == np.round(arr)):
        raise DataError(path, "expected one integer label per line")
    return arr[:, 0].astype(np.int64)


def _fields_per_line(path: os.PathLike | str) -> Iterator[tuple[int, list[str], str]]:
    """``(line number, whitespace-separated fields, line)`` of each non-blank line of a text file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            yield lineno, line.split(), line


def read_shapenet_part(root: os.PathLike | str, synset: str, model_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(N, 3)`` and 1-based part labels ``(N,)`` of one ShapeNet-part model."""
    root = Path(root)
    pts = read_points(root / synset / "points" / f"{model_id}.pts")
    seg_path = root / synset / "points_label" / f"{model_id}.seg"
    labels = read_labels(seg_path)
    if len(labels) != len(pts):
        raise DataError(seg_path, f"{len(labels)} labels for {len(pts)} points")
    return pts, labels


# ---------------------------------------------------------------------- PartNet
def read_partnet_level_names(path: os.PathLike | str) -> dict[str, int]:
    """``<Cat>-level-1.txt`` (lines ``<id> <path>``, e.g. ``1 chair/chair_back``) as ``{path: id}``."""
    out = {}
    for lineno, parts, line in _fields_per_line(path):
        if len(parts) < 2 or not parts[0].isdigit():
            raise DataError(path, f"line {lineno}: expected '<id> <path>', got {line!r}")
        out[parts[1]] = int(parts[0])
    return out


def read_partnet_merging(path: os.PathLike | str) -> dict[str, str]:
    """``merging2_hierarchy_mapping/<Cat>.txt`` (lines ``<raw path> <merged path>``) as a dict."""
    out = {}
    for lineno, parts, _ in _fields_per_line(path):
        if len(parts) != 2:
            raise DataError(path, f"line {lineno}: expected '<raw path> <merged path>'")
        out[parts[0]] = parts[1]
    return out


def partnet_leaf_labels(
    tree: list | dict, level_names: dict[str, int], merging: dict[str, str] | None = None, where: str = "result.json"
) -> dict[int, int]:
    """Map each leaf node id of a PartNet ``result.json`` tree to its level-1 label (0 when none).

    A node's path is the ``/``-joined ``name``s from the root (``chair/chair_back``), mapped through
    ``merging`` when given; every leaf under a node whose path is a level-1 name gets that label.
    """
    leaf_label: dict[int, int] = {}

    def leaves(node) -> list[int]:
        if node.get("children"):
            return [i for c in node["children"] for i in leaves(c)]
        return [int(node["id"])]

    def visit(node, prefix: str) -> None:
        name = prefix + "/" + node["name"] if prefix else node["name"]
        mapped = merging.get(name, name) if merging else name
        if mapped in level_names:
            for leaf in leaves(node):
                leaf_label[leaf] = level_names[mapped]
        for c in node.get("children", []) or []:
            visit(c, name)

    roots = tree if isinstance(tree, list) else [tree]
    try:
        for r in roots:
            for leaf in leaves(r):
                leaf_label.setdefault(leaf, 0)
            visit(r, "")
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(where, f"malformed PartNet tree ({e!r})") from None
    return leaf_label


def read_partnet_meta(anno_dir: os.PathLike | str) -> dict:
    """``meta.json`` of a PartNet annotation (``model_id``, ``model_cat``, ...)."""
    return read_json(Path(anno_dir) / "meta.json")


def read_partnet_level1(
    anno_dir: os.PathLike | str, level_names: dict[str, int], merging: dict[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(N, 3)`` and level-1 labels ``(N,)`` (0 = unlabelled) of one raw PartNet annotation."""
    anno_dir = Path(anno_dir)
    pts = read_points(anno_dir / "point_sample" / "pts-10000.txt")
    label_path = anno_dir / "point_sample" / "label-10000.txt"
    leaf_ids = read_labels(label_path)
    if len(leaf_ids) != len(pts):
        raise DataError(label_path, f"{len(leaf_ids)} labels for {len(pts)} points")
    tree_path = anno_dir / "result.json"
    mapping = partnet_leaf_labels(read_json(tree_path), level_names, merging, where=str(tree_path))
    unknown = sorted(set(leaf_ids.tolist()) - set(mapping))
    if unknown:
        raise DataError(label_path, f"leaf ids {unknown[:5]} are not leaves of {tree_path.name}")
    return pts, np.asarray([mapping[int(i)] for i in leaf_ids], dtype=np.int64)
