"""Reading CO3D v2 annotations: frame and sequence annotations, set lists, PyTorch3D cameras.

Facts of the format (facebookresearch/co3d, v2):

- ``<category>/frame_annotations.jgz`` is a gzipped JSON list of frame annotations with
  ``sequence_name``, ``frame_number``, ``image{path, size=[H, W]}``, ``mask{path, mass}`` and
  ``viewpoint{R, T, focal_length, principal_point, intrinsics_format}``; paths are relative to the
  dataset root (the folder that holds the category folders).
- ``<category>/sequence_annotations.jgz`` lists ``sequence_name``, ``category`` and
  ``viewpoint_quality_score`` per sequence.
- ``<category>/set_lists/set_lists_<subset>.json`` is ``{"train"|"val"|"test": [[seq, frame_number, path], ...]}``.

Cameras are PyTorch3D's: row vectors, ``X_cam = X_world @ R + T``, camera +X left, +Y up, +Z into
the scene, intrinsics in NDC. :func:`pytorch3d_to_opencv` converts one to an OpenCV camera-to-world
matrix and pixel intrinsics (see its docstring for the math).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featurenerf_ns.layout import SPLITS
from featurenerf_ns.utils.io import DataError

INTRINSICS_FORMATS = ("ndc_norm_image_bounds", "ndc_isotropic")
"""The two NDC conventions of CO3D v2's ``viewpoint.intrinsics_format``."""


@dataclass(frozen=True)
class Co3dFrame:
    """One frame annotation, validated."""

    sequence_name: str
    frame_number: int
    image_path: str
    """Relative to the dataset root."""
    image_hw: tuple[int, int]
    """``image.size`` as annotated, ``(H, W)``."""
    mask_path: str | None
    R: np.ndarray
    """``(3, 3)`` PyTorch3D rotation (row-vector convention)."""
    T: np.ndarray
    """``(3,)`` PyTorch3D translation."""
    focal_length: tuple[float, float]
    """NDC focal length ``(fx, fy)``."""
    principal_point: tuple[float, float]
    """NDC principal point ``(px, py)``."""
    intrinsics_format: str


@dataclass(frozen=True)
class Co3dSequence:
    """One sequence annotation."""

    sequence_name: str
    category: str
    viewpoint_quality_score: float | None


def read_jgz(path: os.PathLike | str) -> list:
    """A gzipped JSON list (``*.jgz``); DataError naming the file when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "annotation file not found")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, EOFError, zlib.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not a gzipped JSON file ({type(e).__name__}: {e})") from None
    if not isinstance(data, list):
        raise DataError(path, f"expected a JSON list of annotations, got {type(data).__name__}")
    return data


def _pair(value, what: str) -> tuple[float, float]:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (2,) or not np.isfinite(arr).all():
        raise ValueError(f"{what} must be 2 finite numbers, got {value!r}")
    return float(arr[0]), float(arr[1])


def parse_frame(entry: dict) -> Co3dFrame:
    """Validate one frame annotation (raises ValueError/KeyError/TypeError describing the problem)."""
    vp = entry["viewpoint"]
    R = np.asarray(vp["R"], dtype=np.float64)
    T = np.asarray(vp["T"], dtype=np.float64).reshape(-1)
    if R.shape != (3, 3) or T.shape != (3,):
        raise ValueError(f"viewpoint R must be 3x3 and T 3 numbers, got shapes {R.shape} and {T.shape}")
    if not (np.isfinite(R).all() and np.isfinite(T).all()):
        raise ValueError("viewpoint R/T are not finite")
    fmt = vp.get("intrinsics_format", "ndc_norm_image_bounds")
    if fmt not in INTRINSICS_FORMATS:
        raise ValueError(f"unknown intrinsics_format {fmt!r}; expected one of {INTRINSICS_FORMATS}")
    size = entry["image"]["size"]
    if not (isinstance(size, list | tuple) and len(size) == 2 and all(int(s) > 0 for s in size)):
        raise ValueError(f"image.size must be [H, W], got {size!r}")
    mask = entry.get("mask") or {}
    return Co3dFrame(
        sequence_name=str(entry["sequence_name"]),
        frame_number=int(entry["frame_number"]),
        image_path=str(entry["image"]["path"]),
        image_hw=(int(size[0]), int(size[1])),
        mask_path=str(mask["path"]) if mask.get("path") else None,
        R=R,
        T=T,
        focal_length=_pair(vp["focal_length"], "focal_length"),
        principal_point=_pair(vp["principal_point"], "principal_point"),
        intrinsics_format=fmt,
    )


def read_frame_annotations(path: os.PathLike | str) -> dict[str, list[Co3dFrame]]:
    """Frames of each sequence, sorted by frame number; DataError naming the file and frame when malformed."""
    out: dict[str, list[Co3dFrame]] = {}
    for i, entry in enumerate(read_jgz(path)):
        try:
            if not isinstance(entry, dict):
                raise TypeError(f"expected an object, got {type(entry).__name__}")
            frame = parse_frame(entry)
        except KeyError as e:
            raise DataError(path, f"frame annotation {i} lacks the key {e}") from None
        except (TypeError, ValueError) as e:
            raise DataError(path, f"frame annotation {i} is malformed ({e})") from None
        out.setdefault(frame.sequence_name, []).append(frame)
    for frames in out.values():
        frames.sort(key=lambda f: f.frame_number)
    return out


def read_sequence_annotations(path: os.PathLike | str) -> dict[str, Co3dSequence]:
    """Sequence annotations by name; DataError naming the file when malformed."""
    out: dict[str, Co3dSequence] = {}
    for i, entry in enumerate(read_jgz(path)):
        try:
            name = str(entry["sequence_name"])
            score = entry.get("viewpoint_quality_score")
            score = None if score is None else float(score)
            if score is not None and math.isnan(score):
                score = None
            out[name] = Co3dSequence(name, str(entry.get("category", "")), score)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(path, f"sequence annotation {i} is malformed ({type(e).__name__}: {e})") from None
    return out


def read_set_list(path: os.PathLike | str) -> dict[str, list[str]]:
    """Sequence names of each split of a set list, in first-appearance order.

    A sequence listed in several splits goes to the most held-out one (test, then val, then train),
    so no test object is ever trained on.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "set list not found (--subset names set_lists/set_lists_<subset>.json)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None
    if not isinstance(data, dict) or not any(k in data for k in SPLITS):
        raise DataError(path, "expected a JSON object with 'train', 'val' and/or 'test' lists")
    seen: dict[str, list[str]] = {}
    for split in SPLITS:
        entries = data.get(split, [])
        if not isinstance(entries, list):
            raise DataError(path, f"{split!r} must be a list of [sequence, frame_number, image_path]")
        names: dict[str, None] = {}
        for j, e in enumerate(entries):
            if not (isinstance(e, list | tuple) and len(e) >= 1 and isinstance(e[0], str)):
                raise DataError(path, f"{split!r} entry {j} must be [sequence, frame_number, image_path], got {e!r}")
            names[e[0]] = None
        seen[split] = list(names)
    held_out = set(seen["test"])
    val = [s for s in seen["val"] if s not in held_out]
    held_out |= set(val)
    return {"train": [s for s in seen["train"] if s not in held_out], "val": val, "test": seen["test"]}


def pytorch3d_to_opencv(
    R: np.ndarray,
    T: np.ndarray,
    focal_length: tuple[float, float],
    principal_point: tuple[float, float],
    intrinsics_format: str,
    image_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """A CO3D (PyTorch3D NDC) camera as an OpenCV camera-to-world matrix and pixel intrinsics.

    PyTorch3D: ``X_cam = X_world @ R + T`` (row vectors), i.e. ``X_cam = R^T X_world + T`` for columns,
    with camera axes +X left, +Y up, +Z forward; projection ``x_ndc = f X/Z + p``. OpenCV's camera
    (x right, y down, z forward) is ``diag(-1, -1, 1)`` of it, so its world-to-camera rotation is
    ``diag(-1, -1, 1) R^T`` and translation ``(-T0, -T1, T2)``. NDC to pixels: ``half = (W/2, H/2)``,
    ``scale = half`` (``ndc_norm_image_bounds``) or ``min(half)`` (``ndc_isotropic``),
    ``f_px = f * scale``, ``c_px = half - p * scale`` (the sign flips because NDC +X is left).

    Returns:
        ``(c2w (4, 4), [fx, fy, cx, cy])``. The principal point is a continuous image coordinate
        with the image's top-left corner at (0, 0), so pixel ``(row j, col i)`` is centred at ``(i + 0.5, j + 0.5)``.
    """
    if intrinsics_format not in INTRINSICS_FORMATS:
        raise ValueError(f"unknown intrinsics_format {intrinsics_format!r}")
    h, w = image_hw
    half = np.array([w / 2.0, h / 2.0])
    scale = half if intrinsics_format == "ndc_norm_image_bounds" else np.full(2, half.min())
    f_px = np.asarray(focal_length, dtype=np.float64) * scale
    c_px = half - np.asarray(principal_point, dtype=np.float64) * scale
    flip = np.array([-1.0, -1.0, 1.0])
    w2c_R = flip[:, None] * np.asarray(R, dtype=np.float64).T
    w2c_t = flip * np.asarray(T, dtype=np.float64)
    c2w = np.eye(4)
    c2w[:3, :3] = w2c_R.T
    c2w[:3, 3] = -w2c_R.T @ w2c_t
    return c2w, np.array([f_px[0], f_px[1], c_px[0], c_px[1]])
