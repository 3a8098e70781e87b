"""The export's file writers, all atomic (``featurenerf_ns.utils.io.atomic_path``): a kill or an error never leaves
a half-written PLY, GLB, NPZ, video or frame folder under its final name.

PLY (binary): ``x y z``, optional ``nx ny nz``, ``red green blue alpha`` (uchar), then one scalar property per
custom vertex attribute (e.g. ``label``; ``pca_red``...). Point clouds are PLY files with vertices and no faces.
GLB (glTF) keeps geometry and vertex colours only: glTF has no place for custom vertex attributes, so labels and
the other colours are in the PLY.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import trimesh
from jaxtyping import Float, Int, UInt8
from PIL import Image

from featurenerf_ns.utils.io import atomic_path, make_dirs, naming_write_errors


def _trimesh(
    vertices: Float[np.ndarray, "V 3"],
    faces: Int[np.ndarray, "F 3"] | None,
    colors: UInt8[np.ndarray, "V 3"],
    normals: Float[np.ndarray, "V 3"] | None = None,
) -> trimesh.Trimesh:
    alpha = np.full((len(colors), 1), 255, dtype=np.uint8)
    return trimesh.Trimesh(
        vertices=np.asarray(vertices, dtype=np.float64),
        faces=np.zeros((0, 3), dtype=np.int64) if faces is None else faces,
        vertex_normals=normals,
        vertex_colors=np.concatenate([np.asarray(colors, dtype=np.uint8), alpha], axis=1),
        process=False,
    )


def write_ply(
    path: Path,
    vertices: Float[np.ndarray, "V 3"],
    colors: UInt8[np.ndarray, "V 3"],
    faces: Int[np.ndarray, "F 3"] | None = None,
    normals: Float[np.ndarray, "V 3"] | None = None,
    attributes: dict[str, np.ndarray] | None = None,
) -> None:
    """A binary PLY mesh (``faces``) or point cloud (no faces) with vertex colours, normals and scalar attributes."""
    mesh = _trimesh(vertices, faces, colors, normals)
    for name, values in (attributes or {}).items():
        mesh.vertex_attributes[name] = np.asarray(values)
    data = trimesh.exchange.ply.export_ply(mesh, encoding="binary", vertex_normal=normals is not None)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_glb(
    path: Path, vertices: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"], colors: UInt8[np.ndarray, "V 3"]
) -> None:
    """A binary glTF mesh with vertex colours (custom attributes are not kept: glTF has none)."""
    data = trimesh.exchange.gltf.export_glb(trimesh.Scene(_trimesh(vertices, faces, colors)))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_png(path: Path, image: UInt8[np.ndarray, "H W C"]) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad a frame with black to even height and width (H.264 in yuv420p needs them)."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))


def write_video(path: Path, frames: Sequence[UInt8[np.ndarray, "H W 3"]], fps: float) -> None:
    """An MP4 (H.264 through PyAV, nerfstudio's video library) or, for a ``.gif`` path, an animated GIF that loops."""
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".gif":
            images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
            duration = round(1000 / fps)
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
            return
        import imageio.v3 as iio

        iio.imwrite(tmp, np.stack([_even(f) for f in frames]), plugin="pyav", codec="libx264", fps=fps)


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; it replaces ``path`` (and what was there) when the block succeeds,
    and is removed when it fails."""
    path = Path(path)
    make_dirs(path.parent)
    with naming_write_errors(path):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's folder is private; the result is an ordinary folder
    try:
        yield tmp
        with naming_write_errors(path):
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / path.name)
                os.replace(tmp, path)
                shutil.rmtree(old)
            else:
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
