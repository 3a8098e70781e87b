"""Binary PLY of a triangle mesh with a per-face part label, and deterministic ``.npz`` writing.

The PLY is standard (``double x, y, z`` vertices; faces as ``list uchar int vertex_indices`` plus a
``uchar part`` property), so meshlab/trimesh open it; :func:`read_labeled_ply` reads the labels back.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import trimesh

from featurenerf_ns.utils.io import DataError, atomic_path

_FACE_DTYPE = np.dtype([("n", "u1"), ("v", "<i4", (3,)), ("part", "u1")])


def labeled_ply_bytes(vertices: np.ndarray, faces: np.ndarray, face_labels: np.ndarray) -> bytes:
    """Binary little-endian PLY bytes of a triangle mesh with a ``part`` label per face."""
    vertices = np.ascontiguousarray(vertices, dtype="<f8")
    rec = np.empty(len(faces), dtype=_FACE_DTYPE)
    rec["n"], rec["v"], rec["part"] = 3, faces, face_labels
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment featurenerf_ns synthetic object; part = 1 + part index\n"
        f"element vertex {len(vertices)}\nproperty double x\nproperty double y\nproperty double z\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nproperty uchar part\nend_header\n"
    )
    return header.encode("ascii") + vertices.tobytes() + rec.tobytes()


def write_labeled_ply(path: os.PathLike | str, mesh: trimesh.Trimesh, face_labels: np.ndarray) -> None:
    """Write ``mesh`` with per-face ``face_labels`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(labeled_ply_bytes(mesh.vertices, mesh.faces, face_labels))


def read_labeled_ply(path: os.PathLike | str) -> tuple[trimesh.Trimesh, np.ndarray]:
    """Read a mesh written by :func:`write_labeled_ply`: the mesh and its (F,) int64 face labels."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(path, f"cannot read mesh ({e})") from None
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise DataError(path, "not a PLY file")
    counts = {}
    for line in data[:end].decode("ascii", "replace").splitlines():
        parts = line.split()
        if parts[:1] == ["element"]:
            counts[parts[1]] = int(parts[2])
    header = data[:end].decode("ascii", "replace")
    if "property uchar part" not in header or "binary_little_endian" not in header:
        raise DataError(path, "not a part-labelled PLY written by featurenerf_ns (no 'part' face property)")
    body = data[end + len(b"end_header\n") :]
    nv, nf = counts.get("vertex", 0), counts.get("face", 0)
    if len(body) != nv * 24 + nf * _FACE_DTYPE.itemsize:
        raise DataError(path, "truncated or malformed PLY body")
    vertices = np.frombuffer(body[: nv * 24], dtype="<f8").reshape(nv, 3)
    faces = np.frombuffer(body[nv * 24 :], dtype=_FACE_DTYPE)
    mesh = trimesh.Trimesh(vertices.copy(), faces["v"].astype(np.int64), process=False)
    return mesh, faces["part"].astype(np.int64)


def npz_bytes(compressed: bool = False, **arrays) -> bytes:
    """``.npz`` bytes like ``np.savez``, but byte-identical for identical arrays (fixed zip timestamps)."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=True)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_npz_deterministic(path: os.PathLike | str, compressed: bool = False, **arrays) -> int:
    """Atomically write an ``.npz`` readable by ``np.load``; returns the number of bytes written."""
    data = npz_bytes(compressed, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return len(data)
