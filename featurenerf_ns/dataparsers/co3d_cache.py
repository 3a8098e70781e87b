"""CO3D v2 preprocessing: segment, crop, resize and normalise each sequence, once, into the authors' layout.

For every frame kept (the set list's sequences that pass the quality filter, ``frames_per_sequence``
of their frames evenly spaced, frames whose mask is not empty):

1. **Segment and crop.** The mask (``>= mask_threshold``) gives the object's box; a square of side
   ``(1 + 2 margin) * max(box w, h)`` centred on the box is cut out (pixels outside the image are
   black and transparent) and resized to ``resolution`` with antialiasing. The PNG is RGBA with the
   binary mask as (resized, so soft-edged) alpha; loaders composite it on black.
2. **Intrinsics.** In continuous pixel coordinates (top-left image corner at 0, pixel ``i`` centred
   at ``i + 0.5``) a crop starting at ``(left, top)`` shifts the principal point by ``-(left, top)``
   and the resize by ``k = resolution / side`` scales focal length and principal point by ``k``:
   ``f' = k f``, ``c' = k (c - left)``. The cache stores ``c' - 0.5``: the authors' convention, where
   pixel ``i`` is the image point ``i`` (the parser's default ``pixel_convention="authors"`` adds
   the 0.5 back, so rays are exact).
3. **Normalise the sequence** (cameras only, no point cloud needed). The centre ``p`` is the point
   closest to every optical axis in the least-squares sense,
   ``p = (sum_i (I - d_i d_i^T))^-1 sum_i (I - d_i d_i^T) o_i`` (camera centres ``o_i``, axes ``d_i``);
   the scale ``s = camera_distance / mean_i |o_i - p|`` puts the cameras at the ShapeNet renders'
   mean distance (1.3); the rotation ``R_a`` takes the mean camera up vector to +Y. A world point
   ``X`` becomes ``s R_a (X - p)``; OpenCV camera-to-world matrices become ``[R_a R | s R_a (o - p)]``.
4. **Near/far.** A silhouette ray of camera ``i`` passes the origin at ``d_i sin(atan(delta / f))``
   (``d_i`` the camera's distance, ``delta`` the pixel distance from the origin's projection): the
   largest such value over the mask boxes' corners and frames bounds the object's radius ``r`` about
   the origin. The sequence's rays need ``[min_i d_i - r, max_i d_i + r]``; the category uses the
   union over its sequences.

Output, under ``<cache>/<fingerprint>/`` (a data root of the authors' layout, category = "synset"):
``img/<category>/<sequence>/<frame_number:06d>.png``, ``camera/<category>/<sequence>.json`` (per frame
``transform_matrix`` and ``intrinsics``; written after the sequence's images, so it marks the sequence
done), ``splits/<category>.json`` and ``co3d_cache.json`` (settings, fingerprint, near/far; written
last: the cache's completion marker).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from featurenerf_ns.dataparsers.co3d_format import (
    Co3dFrame,
    pytorch3d_to_opencv,
    read_frame_annotations,
    read_sequence_annotations,
    read_set_list,
)
from featurenerf_ns.layout import CategoryLayout
from featurenerf_ns.utils.io import (
    DataError,
    UserError,
    atomic_path,
    exclusive_lock,
    make_dirs,
    read_json,
    remove_temporaries,
    write_json,
)

CACHE_VERSION = 1
"""Bumped whenever preprocessing changes what it writes."""
CACHE_INFO = "co3d_cache.json"
"""Completion marker of a cache root (settings, fingerprint, near/far)."""


@dataclass(frozen=True)
class Co3dCacheSettings:
    """Everything that changes the cache's contents (its fingerprint). Defaults and meanings: the
    fields of the same names in :class:`~featurenerf_ns.dataparsers.co3d.CO3DDataParserConfig`."""

    subset: str
    min_viewpoint_quality: float | None
    frames_per_sequence: int | None
    resolution: int
    crop_margin: float
    mask_threshold: float
    min_mask_fraction: float
    camera_distance: float
    skip_bad_sequences: bool


@dataclass(frozen=True)
class Co3dCache:
    """A finished cache: a data root in the authors' layout plus what the dataparser needs."""

    root: Path
    category: str
    near: float
    far: float
    info: dict


def default_cache_dir(data: Path) -> Path:
    """``$FEATURENERF_CACHE/co3d/<category>`` when that variable is set, else ``<data>/featurenerf_cache``."""
    env = os.environ.get("FEATURENERF_CACHE")
    if env:
        return Path(env).expanduser() / "co3d" / data.name
    return data / "featurenerf_cache"


def fingerprint(settings: Co3dCacheSettings, data: Path) -> dict:
    """Settings, version and the annotation files' sizes: a changed input or setting means a new cache."""
    files = {}
    for name in ("frame_annotations.jgz", "sequence_annotations.jgz", f"set_lists/set_lists_{settings.subset}.json"):
        p = data / name
        files[name] = p.stat().st_size if p.is_file() else None
    return {"version": CACHE_VERSION, "category": data.name, "settings": dataclasses.asdict(settings), "files": files}


def fingerprint_hash(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------- geometry
def square_crop_box(box: tuple[int, int, int, int], margin: float) -> tuple[int, int, int]:
    """``(left, top, side)`` of the square crop around an inclusive pixel box ``(x0, y0, x1, y1)``.

    The square is centred on the box (continuous coordinates) with side ``(1 + 2 margin) max(w, h)``,
    rounded to whole pixels; it may extend past the image.
    """
    x0, y0, x1, y1 = box
    w, h = x1 + 1 - x0, y1 + 1 - y0
    side = max(1, int(math.ceil(max(w, h) * (1.0 + 2.0 * margin))))
    cx, cy = (x0 + x1 + 1) / 2.0, (y0 + y1 + 1) / 2.0
    return int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), side


def crop_intrinsics(K: np.ndarray, left: float, top: float, side: float, resolution: int) -> np.ndarray:
    """``[fx, fy, cx, cy]`` (continuous pixels) after a crop at ``(left, top)`` and a resize ``side -> resolution``."""
    k = resolution / side
    fx, fy, cx, cy = np.asarray(K, dtype=np.float64)
    return np.array([fx * k, fy * k, (cx - left) * k, (cy - top) * k])


def crop_resize(image: Image.Image, left: int, top: int, side: int, resolution: int, resample) -> Image.Image:
    """The square ``[left, left + side) x [top, top + side)`` (zero outside the image), resized to ``resolution``."""
    return image.crop((left, top, left + side, top + side)).resize((resolution, resolution), resample)


def axes_center(c2w: np.ndarray) -> np.ndarray:
    """The point closest (least squares) to every camera's optical axis (OpenCV +z)."""
    o = c2w[:, :3, 3]
    d = c2w[:, :3, 2] / np.linalg.norm(c2w[:, :3, 2], axis=1, keepdims=True)
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    A = proj.sum(0)
    b = np.einsum("nij,nj->i", proj, o)
    if np.linalg.cond(A) > 1e8:
        # Parallel axes (a degenerate trajectory): fall back to the point the cameras look at on average.
        return o.mean(0) + d.mean(0) * np.linalg.norm(o - o.mean(0), axis=1).mean()
    return np.linalg.solve(A, b)


def rotation_to_y(u: np.ndarray) -> np.ndarray:
    """Rotation taking the unit vector ``u`` to +Y (Rodrigues)."""
    u = u / np.linalg.norm(u)
    y = np.array([0.0, 1.0, 0.0])
    v = np.cross(u, y)
    c = float(u @ y)
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def normalise_cameras(c2w: np.ndarray, distance: float) -> tuple[np.ndarray, dict]:
    """Recentre, rescale and level a sequence's OpenCV camera-to-world matrices (see the module docstring).

    Returns:
        ``(normalised c2w (N, 4, 4), {"center", "scale", "rotation"})``: world point ``X`` maps to
        ``scale * rotation @ (X - center)``.
    """
    center = axes_center(c2w)
    o = c2w[:, :3, 3]
    mean_dist = float(np.linalg.norm(o - center, axis=1).mean())
    scale = distance / max(mean_dist, 1e-12)
    up = -c2w[:, :3, 1].sum(0)
    R_a = rotation_to_y(up) if np.linalg.norm(up) > 1e-9 else np.eye(3)
    out = np.tile(np.eye(4), (len(c2w), 1, 1))
    out[:, :3, :3] = R_a[None] @ c2w[:, :3, :3]
    out[:, :3, 3] = scale * (o - center) @ R_a.T
    return out, {"center": center.tolist(), "scale": scale, "rotation": R_a.tolist()}


def object_radius(c2w: np.ndarray, K: np.ndarray, boxes: np.ndarray) -> float:
    """Bound on the radius about the origin of an object whose mask boxes are ``boxes`` (see module docstring).

    Args:
        c2w: ``(N, 4, 4)`` normalised OpenCV camera-to-world matrices.
        K: ``(N, 4)`` continuous-pixel intrinsics of the images the boxes refer to.
        boxes: ``(N, 4)`` continuous box corners ``(x0, y0, x1, y1)``.
    """
    radii = []
    for T, (fx, fy, cx, cy), (x0, y0, x1, y1) in zip(c2w, K, boxes, strict=True):
        p = T[:3, :3].T @ (-T[:3, 3])  # the origin in camera coordinates
        if p[2] <= 1e-9:
            continue
        u0, v0 = fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy
        dx = max(abs(x0 - u0), abs(x1 - u0)) / fx
        dy = max(abs(y0 - v0), abs(y1 - v0)) / fy
        angle = math.atan(math.hypot(dx, dy))
        radii.append(float(np.linalg.norm(T[:3, 3])) * math.sin(min(angle, math.pi / 2)))
    return max(radii) if radii else 0.5


# ----------------------------------------------------------------------------------------------- frames
def _resolve_file(dataset_root: Path, data: Path, rel: str) -> Path:
    """CO3D paths are relative to the dataset root; accept them relative to the category folder too."""
    first = dataset_root / rel
    if first.is_file():
        return first
    second = data / rel
    return second if second.is_file() else first


def _load_frame(dataset_root: Path, data: Path, frame: Co3dFrame, annotations: Path):
    img_path = _resolve_file(dataset_root, data, frame.image_path)
    if not img_path.is_file():
        raise DataError(img_path, f"image of frame {frame.frame_number} of sequence {frame.sequence_name!r} not found")
    if frame.mask_path is None:
        raise DataError(annotations, f"frame {frame.frame_number} of sequence {frame.sequence_name!r} has no mask path")
    mask_path = _resolve_file(dataset_root, data, frame.mask_path)
    if not mask_path.is_file():
        raise DataError(mask_path, f"mask of frame {frame.frame_number} of sequence {frame.sequence_name!r} not found")
    try:
        with Image.open(img_path) as im:
            image = im.convert("RGB")
    except (OSError, ValueError) as e:
        raise DataError(img_path, f"not a readable image ({e})") from None
    try:
        with Image.open(mask_path) as im:
            mask = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as e:
        raise DataError(mask_path, f"not a readable mask ({e})") from None
    if mask.shape != (image.height, image.width):
        raise DataError(
            mask_path, f"mask is {mask.shape[0]}x{mask.shape[1]} but the image is {image.height}x{image.width}"
        )
    return img_path, image, mask


def process_sequence(
    data: Path, frames: list[Co3dFrame], settings: Co3dCacheSettings, layout: CategoryLayout, annotations: Path
) -> dict | None:
    """Crop, resize and normalise one sequence into the cache; returns its summary (None: no usable frame)."""
    dataset_root = data.parent
    n = settings.frames_per_sequence
    if n is not None and 0 < n < len(frames):
        frames = [frames[i] for i in sorted(set(np.linspace(0, len(frames) - 1, n).round().astype(int).tolist()))]
    name = frames[0].sequence_name
    out_dir = layout.image_dir(name)
    kept, c2ws, Ks, boxes = [], [], [], []
    res = settings.resolution
    for frame in frames:
        img_path, image, mask = _load_frame(dataset_root, data, frame, annotations)
        if (image.height, image.width) != tuple(frame.image_hw):
            raise DataError(
                img_path,
                f"image is {image.height}x{image.width} but {annotations.name} says "
                f"{frame.image_hw[0]}x{frame.image_hw[1]}",
            )
        fg = mask >= settings.mask_threshold
        if fg.mean() < settings.min_mask_fraction or not fg.any():
            continue
        rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
        left, top, side = square_crop_box((cols[0], rows[0], cols[-1], rows[-1]), settings.crop_margin)
        rgb = crop_resize(image, left, top, side, res, Image.Resampling.LANCZOS)
        alpha = crop_resize(Image.fromarray(fg.astype(np.uint8) * 255), left, top, side, res, Image.Resampling.BILINEAR)
        rgba = np.concatenate([np.asarray(rgb), np.asarray(alpha)[..., None]], axis=-1)
        path = out_dir / f"{frame.frame_number:06d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(rgba, "RGBA").save(tmp)
        c2w, K = pytorch3d_to_opencv(
            frame.R, frame.T, frame.focal_length, frame.principal_point, frame.intrinsics_format, frame.image_hw
        )
        k = res / side
        kept.append(frame)
        c2ws.append(c2w)
        Ks.append(crop_intrinsics(K, left, top, side, res))
        boxes.append([(cols[0] - left) * k, (rows[0] - top) * k, (cols[-1] + 1 - left) * k, (rows[-1] + 1 - top) * k])
    if not kept:
        return None
    c2w_n, norm = normalise_cameras(np.stack(c2ws), settings.camera_distance)
    K = np.stack(Ks)
    radius = object_radius(c2w_n, K, np.asarray(boxes))
    dist = np.linalg.norm(c2w_n[:, :3, 3], axis=1)
    near, far = max(float(dist.min() - radius), 0.05), float(dist.max() + radius)
    # Frames of earlier runs with other settings were dropped with the fingerprint folder; stale files
    # from frames now skipped (or half-written by a killed run) would be picked up by the parser's image
    # listing, so remove them.
    names = {f"{f.frame_number:06d}.png" for f in kept}
    for p in out_dir.iterdir():
        if p.suffix == ".png" and p.name not in names:
            p.unlink()
    camera = {
        "frames": [
            {
                "file_path": f"{f.frame_number:06d}.png",
                "transform_matrix": T.tolist(),
                # authors' convention: pixel i is the image point i (continuous coordinate minus 0.5)
                "intrinsics": [float(K_[0]), float(K_[1]), float(K_[2] - 0.5), float(K_[3] - 0.5)],
            }
            for f, T, K_ in zip(kept, c2w_n, K, strict=True)
        ],
        "co3d": {
            "sequence_name": name,
            "frame_numbers": [f.frame_number for f in kept],
            "normalisation": norm,
            "radius": radius,
            "near": near,
            "far": far,
        },
    }
    remove_temporaries([layout.camera_json(name)])
    write_json(layout.camera_json(name), camera)
    return {"frames": len(kept), "near": near, "far": far, "radius": radius}


# ----------------------------------------------------------------------------------------------- cache
def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), disable=not enabled,
    )  # fmt: skip


def ensure_co3d_cache(
    data: os.PathLike | str,
    settings: Co3dCacheSettings,
    cache_dir: os.PathLike | str | None = None,
    progress: bool = True,
) -> Co3dCache:
    """Preprocess the CO3D category folder ``data`` once (resuming a partial run) and return the cache.

    Args:
        data: ``<co3d_root>/<category>``.
        settings: preprocessing settings (their fingerprint names the cache folder).
        cache_dir: folder holding one cache root per fingerprint (default :func:`default_cache_dir`).
        progress: show a progress bar while sequences are processed.
    """
    data = Path(data)
    if not data.is_dir():
        raise DataError(data, "CO3D category folder not found (--data <co3d_root>/<category>)")
    category = data.name
    fp = fingerprint(settings, data)
    # absolute: image paths of the parsed outputs are opened lazily, possibly after a change of directory
    base = (Path(cache_dir) if cache_dir is not None else default_cache_dir(data)).absolute()
    root = base / fingerprint_hash(fp)
    info_path = root / CACHE_INFO
    if info_path.is_file():
        info = read_json(info_path)
        if info.get("fingerprint") == fp:
            return Co3dCache(root, category, float(info["near"]), float(info["far"]), info)
    make_dirs(root)
    # ns-train and a concurrent featurenerf-eval must not preprocess the same category twice.
    with exclusive_lock(root / ".lock"):
        if info_path.is_file() and read_json(info_path).get("fingerprint") == fp:
            info = read_json(info_path)
        else:
            info = _build(data, settings, fp, root, progress)
    return Co3dCache(root, category, float(info["near"]), float(info["far"]), info)


def _build(data: Path, settings: Co3dCacheSettings, fp: dict, root: Path, progress: bool) -> dict:
    from rich.console import Console

    if settings.resolution <= 0:
        raise UserError(f"--resolution {settings.resolution}: must be positive")
    frames_path = data / "frame_annotations.jgz"
    seq_path = data / "sequence_annotations.jgz"
    set_list_path = data / "set_lists" / f"set_lists_{settings.subset}.json"
    splits = read_set_list(set_list_path)
    sequences = read_sequence_annotations(seq_path)
    frames = read_frame_annotations(frames_path)
    layout = CategoryLayout(root, data.name)
    console = Console(stderr=True)
    remove_temporaries([layout.split_file(), root / CACHE_INFO])  # the lock makes this run the only writer

    dropped_quality: list[str] = []
    todo: dict[str, str] = {}
    for split in ("train", "val", "test"):
        for name in splits[split]:
            if name not in frames:
                raise DataError(frames_path, f"sequence {name!r} of {set_list_path.name} has no frame annotations")
            score = sequences[name].viewpoint_quality_score if name in sequences else None
            if settings.min_viewpoint_quality is not None and (
                score is None or score <= settings.min_viewpoint_quality
            ):
                dropped_quality.append(name)
                continue
            todo[name] = split

    if splits["train"] == [] and (splits["val"] or splits["test"]):
        raise DataError(
            set_list_path,
            "lists no sequence in 'train' alone (objects are whole sequences, and a sequence also listed in val/test "
            "is held out); use a fewview_* subset (--subset)",
        )
    summaries: dict[str, dict] = {}
    bad: list[str] = []
    console.print(f"featurenerf_ns: preprocessing CO3D '{data.name}' ({len(todo)} sequences, once) into {root}")
    with _progress(progress) as bar:
        task = bar.add_task(f"co3d {data.name}", total=len(todo))
        for name in todo:
            cam = layout.camera_json(name)
            if cam.is_file():
                done = read_json(cam).get("co3d", {})
                summaries[name] = {
                    "frames": len(done.get("frame_numbers", [])),
                    **{k: done[k] for k in ("near", "far", "radius")},
                }
            else:
                summary = process_sequence(data, frames[name], settings, layout, frames_path)
                if summary is None:
                    problem = (
                        f"sequence {name!r} has no usable frames (every mask covers less than "
                        f"{settings.min_mask_fraction:.2%} of its image at threshold {settings.mask_threshold})"
                    )
                    if not settings.skip_bad_sequences:
                        raise DataError(frames_path, problem + "; pass --skip-bad-sequences to drop it")
                    console.print(f"[yellow]skipping: {problem}")
                    bad.append(name)
                else:
                    summaries[name] = summary
            bar.advance(task)

    split_ids = {s: [n for n, sp in todo.items() if sp == s and n in summaries] for s in ("train", "val", "test")}
    if not summaries:
        raise DataError(
            set_list_path,
            f"no sequence left after the quality filter (min_viewpoint_quality={settings.min_viewpoint_quality})",
        )
    near = min(s["near"] for s in summaries.values())
    far = max(s["far"] for s in summaries.values())
    write_json(
        layout.split_file(),
        {
            **split_ids,
            "valid_flags_for_test": [True] * len(split_ids["test"]),
            "cross_inst_pairs": [],
            "cross_view_pairs": [],
        },
    )
    info = {
        "fingerprint": fp,
        "near": near,
        "far": far,
        "sequences": {s: len(v) for s, v in split_ids.items()},
        "frames": sum(s["frames"] for s in summaries.values()),
        "dropped_low_quality": dropped_quality,
        "dropped_no_usable_frames": bad,
    }
    write_json(root / CACHE_INFO, info)
    return info
