"""SPair-71k keypoint transfer (``featurenerf-eval spair``): real photos, one image per side.

```
featurenerf-eval spair --data SPair-71k --load-config outputs/chair/featurenerf/.../config.yml --categories chair
featurenerf-eval spair --data SPair-71k --categories chair --teacher.weights dino_deitsmall8_pretrain.pth
```
Protocol, per pair ``PairAnnotation/<split>/<id>-<src>-<trg>:<cat>.json``:

1. **Crop.** Each image is cut to the square around its annotated box (``[x1, y1, x2, y2]``,
   inclusive pixels) with the CO3D preprocessing's margin
   (:func:`~featurenerf_ns.dataparsers.co3d_cache.square_crop_box`),
   resized to the model's resolution ``S`` (pixels outside the image are black); with
   ``--background auto`` the SPair segmentation (``Segmentation/<cat>/<name>.png``, object > 0)
   blacks out the background, as in training. Keypoints map between the original image and the
   crop in pixel-index coordinates: ``x_crop = (x + 0.5 - left) k - 0.5`` with ``k = S / side``, and back.
2. **Features.** FeatureNeRF sees the crop as a view of an object at the origin from a canonical
   camera: OpenCV camera at ``(0, 0, camera_distance)`` looking at the origin with +Y up (the CO3D
   preprocessing's convention: objects centred, cameras at mean distance 1.3), principal point at
   the crop's centre, focal length the median of the training cameras' (scaled to ``S``) unless
   ``--focal`` is given. The crop is encoded with that camera and the same camera's v_NeRF (or
   distilled feature) map is rendered. The teacher baseline runs the 2D teacher on the same crop
   and upsamples its map to ``S`` (bilinear).
3. **Match.** Each source keypoint's feature (at its rounded crop pixel) goes to the most
   cosine-similar target crop pixel that lies inside the target image
   (:func:`~featurenerf_ns.transfer.matching.nearest_neighbors`); the pixel maps back to the target image.
4. **Score.** PCK@alpha: a keypoint is correct when its distance to the target keypoint is below
   ``alpha * max(w, h)`` of the target box (strictly, as :func:`~featurenerf_ns.transfer.metrics.pck`),
   for alpha 0.05 / 0.1 / 0.15. Reported per pair averaged over pairs (per category and overall) and
   over all keypoints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from rich.markup import escape
from torch import Tensor

from featurenerf_ns.geometry import CAMERA_DISTANCE, fov_from_focal
from featurenerf_ns.model.photo import CropTransform, crop_transform
from featurenerf_ns.teachers.dino import DinoTeacherConfig
from featurenerf_ns.transfer.matching import nearest_neighbors
from featurenerf_ns.transfer.metrics import nanmean, pck
from featurenerf_ns.transfer.report import format_score, markdown_table, print_table, report_stem
from featurenerf_ns.utils.io import (
    DataError,
    UserError,
    atomic_path,
    make_dirs,
    read_json,
    remove_temporaries,
    write_json,
)

SPAIR_SPLITS = ("trn", "val", "test")
DEFAULT_ALPHAS = (0.05, 0.1, 0.15)


# ----------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class SpairPair:
    """One annotated pair (coordinates in original image pixels)."""

    pair_id: str
    category: str
    src_name: str
    trg_name: str
    src_bbox: tuple[int, int, int, int]
    trg_bbox: tuple[int, int, int, int]
    src_kps: np.ndarray
    """``(K, 2)`` ``[x, y]``."""
    trg_kps: np.ndarray
    """``(K, 2)``, row ``i`` corresponds to ``src_kps[i]``."""
    kps_ids: tuple[int, ...]
    src_hw: tuple[int, int]
    trg_hw: tuple[int, int]


def _bbox(value, path: Path, key: str) -> tuple[int, int, int, int]:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (4,) or arr[2] < arr[0] or arr[3] < arr[1]:
        raise DataError(path, f"{key} must be [x1, y1, x2, y2], got {value!r}")
    return tuple(int(round(v)) for v in arr)  # type: ignore[return-value]


def _hw(value, path: Path, key: str) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) >= 2):
        raise DataError(path, f"{key} must be [W, H, C], got {value!r}")
    return int(value[1]), int(value[0])


def read_pair(path: Path) -> SpairPair:
    """One ``PairAnnotation`` JSON; DataError naming the file when malformed."""
    ann = read_json(path)
    try:
        src_kps = np.asarray(ann["src_kps"], dtype=np.float64).reshape(-1, 2)
        trg_kps = np.asarray(ann["trg_kps"], dtype=np.float64).reshape(-1, 2)
        ids = tuple(int(i) for i in ann.get("kps_ids", range(len(src_kps))))
        pair = SpairPair(
            pair_id=path.stem,
            category=str(ann["category"]),
            src_name=str(ann["src_imname"]),
            trg_name=str(ann["trg_imname"]),
            src_bbox=_bbox(ann["src_bndbox"], path, "src_bndbox"),
            trg_bbox=_bbox(ann["trg_bndbox"], path, "trg_bndbox"),
            src_kps=src_kps,
            trg_kps=trg_kps,
            kps_ids=ids,
            src_hw=_hw(ann["src_imsize"], path, "src_imsize"),
            trg_hw=_hw(ann["trg_imsize"], path, "trg_imsize"),
        )
    except KeyError as e:
        raise DataError(path, f"pair annotation lacks the key {e}") from None
    except (TypeError, ValueError) as e:
        raise DataError(path, f"malformed pair annotation ({e})") from None
    if len(src_kps) != len(trg_kps) or len(ids) != len(src_kps):
        raise DataError(path, f"{len(src_kps)} src_kps, {len(trg_kps)} trg_kps and {len(ids)} kps_ids differ in number")
    return pair


def read_pairs(
    root: Path, split: str = "test", categories: tuple[str, ...] = (), limit: int | None = None
) -> list[SpairPair]:
    """Pairs of a split, sorted by file name, optionally of some categories only (``<id>-<src>-<trg>:<cat>.json``)."""
    folder = Path(root) / "PairAnnotation" / split
    if not folder.is_dir():
        raise DataError(
            folder, f"SPair pair folder not found (--data is the SPair-71k root, --split one of {SPAIR_SPLITS})"
        )
    wanted = {c.lower() for c in categories}
    files = sorted(p for p in folder.iterdir() if p.suffix == ".json")
    if wanted:
        files = [p for p in files if p.stem.rsplit(":", 1)[-1].lower() in wanted]
    pairs = [read_pair(p) for p in files[: limit if limit is not None else None]]
    if not pairs:
        raise DataError(folder, f"no pair annotations{' for ' + ', '.join(sorted(wanted)) if wanted else ''}")
    return pairs


def load_crop(
    root: Path, category: str, name: str, t: CropTransform, background: Literal["auto", "none"] = "auto"
) -> np.ndarray:
    """``(S, S, 4)`` float32 crop: RGB (background black when a segmentation is used) and alpha."""
    img_path = Path(root) / "JPEGImages" / category / name
    try:
        with Image.open(img_path) as im:
            image = im.convert("RGB")
    except FileNotFoundError:
        raise DataError(img_path, "image not found") from None
    except (OSError, ValueError) as e:
        raise DataError(img_path, f"not a readable image ({e})") from None
    if (image.height, image.width) != tuple(t.image_hw):
        raise DataError(
            img_path, f"image is {image.height}x{image.width}, the pair annotation says {t.image_hw[0]}x{t.image_hw[1]}"
        )
    mask = Image.new("L", image.size, 255)
    if background == "auto":
        seg_path = Path(root) / "Segmentation" / category / (Path(name).stem + ".png")
        if seg_path.is_file():
            with Image.open(seg_path) as seg:
                arr = np.asarray(seg.convert("L"))
            if arr.shape != (image.height, image.width):
                raise DataError(
                    seg_path, f"segmentation is {arr.shape[0]}x{arr.shape[1]}, the image {image.height}x{image.width}"
                )
            mask = Image.fromarray(((arr > 0) * 255).astype(np.uint8))
    rgb = np.asarray(t.apply(image, Image.Resampling.LANCZOS), dtype=np.float32) / 255
    alpha = np.asarray(t.apply(mask, Image.Resampling.BILINEAR), dtype=np.float32) / 255
    return np.concatenate([rgb * alpha[..., None], alpha[..., None]], axis=-1)


# ----------------------------------------------------------------------------------------------- features
CropFeatures = Callable[[Tensor, str], Tensor]
"""``(crop (S, S, 4) float in [0, 1], image key) -> (S, S, C)`` feature map."""


class NeRFCropFeatures:
    """FeatureNeRF features of a crop, seen from the canonical camera (see the module docstring)."""

    def __init__(
        self,
        model,
        feature: Literal["v_nerf", "feature"] = "v_nerf",
        camera_distance: float = CAMERA_DISTANCE,
        focal: float | None = None,
    ):
        self.model = model  # TrainedFeatureNeRF
        self.feature = feature
        h, w = model.image_size
        if h != w:
            raise UserError(f"SPair needs a model trained on square images (a canonical camera), got {h}x{w}")
        self.size = h
        fov = None if focal is None else float(fov_from_focal(focal, w))
        self.camera = model.photo_cameras(model.canonical_camera(0.0, 0.0, camera_distance, fov))
        self.focal = float(self.camera.fx[0, 0])

    @torch.no_grad()
    def __call__(self, crop: Tensor, key: str) -> Tensor:
        cond = self.model.encode_with_cameras(crop[..., :3].permute(2, 0, 1)[None], self.camera)
        return self.model.model.render_camera(cond, self.camera, frozenset({self.feature}))[self.feature]


class TeacherCropFeatures:
    """The 2D teacher's map of a crop, upsampled (bilinear) to the crop size."""

    def __init__(self, config: DinoTeacherConfig, device: str | None = None):
        from featurenerf_ns.teachers.online import OnlineTeacher

        self.teacher = OnlineTeacher(config, device=device)

    @torch.no_grad()
    def __call__(self, crop: Tensor, key: str) -> Tensor:
        feats = self.teacher(crop[None])  # (1, D, h, w)
        s = crop.shape[0]
        return F.interpolate(feats, size=(s, s), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)


# ----------------------------------------------------------------------------------------------- evaluation
@dataclass
class SpairMethodResult:
    name: str
    alphas: tuple[float, ...]
    per_pair: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def _by(self, category: str | None) -> list[dict]:
        return [p for p in self.per_pair if category is None or p["category"] == category]

    def mean_pck(self, category: str | None = None) -> list[float]:
        rows = self._by(category)
        return [nanmean([r["pck"][i] for r in rows]) for i in range(len(self.alphas))]

    def keypoint_pck(self, category: str | None = None) -> list[float]:
        rows = self._by(category)
        correct = np.sum([r["correct"] for r in rows], axis=0) if rows else np.zeros(len(self.alphas))
        n = sum(r["num_kps"] for r in rows)
        return [float(c / n) if n else math.nan for c in np.atleast_1d(correct)]

    def summary(self) -> dict:
        cats = sorted({r["category"] for r in self.per_pair})
        return {
            "name": self.name,
            "alphas": list(self.alphas),
            "pck_per_pair_mean": self.mean_pck(),
            "pck_per_keypoint": self.keypoint_pck(),
            "per_category": {
                c: {
                    "pck_per_pair_mean": self.mean_pck(c),
                    "pck_per_keypoint": self.keypoint_pck(c),
                    "pairs": len(self._by(c)),
                }
                for c in cats
            },  # fmt: skip
            "pairs": len(self.per_pair),
            "seconds": self.seconds,
            "per_pair": self.per_pair,
        }


def transfer_pair(
    pair: SpairPair,
    src_map: Tensor,
    trg_map: Tensor,
    src_t: CropTransform,
    trg_t: CropTransform,
    alphas: tuple[float, ...],
    chunk: int | None = None,
) -> dict:
    """Transfer one pair's source keypoints with the given crop feature maps and score them."""
    s = src_map.shape[0]
    src_xy = src_t.to_crop(pair.src_kps)
    cols = np.clip(np.round(src_xy[:, 0]).astype(np.int64), 0, s - 1)
    rows = np.clip(np.round(src_xy[:, 1]).astype(np.int64), 0, s - 1)
    queries = src_map[torch.from_numpy(rows), torch.from_numpy(cols)].float()
    valid = torch.from_numpy(trg_t.inside_image().reshape(-1))
    keys = trg_map.reshape(-1, trg_map.shape[-1]).float()[valid.to(trg_map.device)]
    idx, _ = nearest_neighbors(queries, keys.to(queries.device), chunk=chunk)
    flat = torch.nonzero(valid).view(-1)[idx.cpu()].numpy()
    pred_crop = np.stack([flat % s, flat // s], axis=1).astype(np.float64)
    pred = trg_t.from_crop(pred_crop)
    dist = np.linalg.norm(pred - pair.trg_kps, axis=1)
    x1, y1, x2, y2 = pair.trg_bbox
    scale = max(x2 - x1, y2 - y1)
    thresholds = [a * scale for a in alphas]
    return {
        "pair": pair.pair_id,
        "category": pair.category,
        "num_kps": len(dist),
        "pck": pck(dist, thresholds),
        "correct": [int(np.sum(dist < t)) for t in thresholds],
        "pred_kps": np.round(pred, 2).tolist(),
        "distances": np.round(dist, 3).tolist(),
    }


def evaluate_spair(
    root: Path,
    pairs: list[SpairPair],
    methods: dict[str, CropFeatures],
    size: int,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    margin: float = 0.1,
    background: Literal["auto", "none"] = "auto",
    chunk: int | None = None,
    on_pair: Callable[[str], None] | None = None,
) -> list[SpairMethodResult]:
    """Score every method on the same pairs and crops (each image's crop and maps computed once per method)."""
    results = []
    crops: dict[tuple, tuple[CropTransform, Tensor]] = {}

    def crop(cat: str, name: str, bbox, hw) -> tuple[CropTransform, Tensor]:
        key = (cat, name, bbox)
        if key not in crops:
            t = crop_transform(bbox, hw, size, margin)
            crops[key] = (t, torch.from_numpy(load_crop(root, cat, name, t, background)))
        return crops[key]

    for name, fn in methods.items():
        res = SpairMethodResult(name, tuple(alphas))
        maps: dict[tuple, Tensor] = {}
        t0 = time.perf_counter()
        for pair in pairs:
            sides = []
            for img, bbox, hw in (
                (pair.src_name, pair.src_bbox, pair.src_hw),
                (pair.trg_name, pair.trg_bbox, pair.trg_hw),
            ):
                t, c = crop(pair.category, img, bbox, hw)
                key = (pair.category, img, bbox)
                if key not in maps:
                    maps[key] = fn(c, f"{pair.category}/{img}")
                sides.append((t, maps[key]))
            (src_t, src_map), (trg_t, trg_map) = sides
            res.per_pair.append(transfer_pair(pair, src_map, trg_map, src_t, trg_t, tuple(alphas), chunk))
            if on_pair is not None:
                on_pair(name)
        res.seconds = time.perf_counter() - t0
        results.append(res)
    return results


def spair_table(results: list[SpairMethodResult]) -> tuple[list[str], list[list[str]]]:
    alphas = results[0].alphas if results else DEFAULT_ALPHAS
    header = ["method"] + [f"PCK@{a:g}" for a in alphas] + [f"PCK@{a:g} (kps)" for a in alphas] + ["pairs"]
    rows = [
        [r.name]
        + [format_score(v) for v in r.mean_pck()]
        + [format_score(v) for v in r.keypoint_pck()]
        + [str(len(r.per_pair))]
        for r in results
    ]
    return header, rows


def write_spair_report(
    output_dir: Path,
    split: str,
    results: list[SpairMethodResult],
    meta: dict,
    console: Console | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """``<output_dir>/spair/keypoints_spair_<split>.{json,md}``, and the table printed (through the benchmarks'
    report writer: an earlier result is kept, the new one numbered, unless ``overwrite``; the JSON is written last)."""
    out = make_dirs(Path(output_dir) / "spair")
    stem = report_stem(out, f"keypoints_spair_{split}", overwrite)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    remove_temporaries([json_path, md_path])
    header, rows = spair_table(results)
    title = f"SPair-71k keypoint transfer ({split}, PCK@alpha x max(bbox w, h); mean over pairs, then over keypoints)"
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown_table(header, rows, title))
    write_json(json_path, {"task": "keypoints", "dataset": "spair-71k", "split": split, **meta,
                           "methods": [r.summary() for r in results]})  # fmt: skip
    print_table(header, rows, title, console)
    return {"json": json_path, "table": md_path}


# ----------------------------------------------------------------------------------------------- CLI
@dataclass
class SpairConfig:
    """Options of ``featurenerf-eval spair``."""

    data: Path = Path("SPair-71k")
    """SPair-71k root (JPEGImages/, PairAnnotation/, Segmentation/)."""
    split: Literal["trn", "val", "test"] = "test"
    """PairAnnotation split."""
    categories: tuple[str, ...] = ()
    """SPair categories to evaluate (e.g. chair); default: all pairs of the split."""
    load_config: Path | None = None
    """ns-train config.yml of the FeatureNeRF to evaluate (e.g. trained on the CO3D category)."""
    feature: Literal["v_nerf", "feature"] = "v_nerf"
    """v_nerf: the internal feature (the authors' protocol); feature: the distilled head's output."""
    baselines: tuple[Literal["teacher"], ...] = ("teacher",)
    """teacher: the 2D teacher (DINO, --teacher.*) on the same crops; skipped with a note if its weights are missing."""
    teacher: DinoTeacherConfig = field(default_factory=DinoTeacherConfig)
    """The teacher of the baseline (the paper's DINO ViT-S/8 by default)."""
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    """PCK thresholds as fractions of max(target bbox width, height)."""
    image_size: int | None = None
    """Crop size in pixels; default the model's resolution (128 without a model)."""
    crop_margin: float = 0.1
    """Margin around the box on each side, as a fraction of its longer side (as the CO3D preprocessing)."""
    camera_distance: float = CAMERA_DISTANCE
    """Distance of the canonical camera from the object centre."""
    focal: float | None = None
    """Focal length (px at the crop size) of the canonical camera; default the training cameras' median."""
    background: Literal["auto", "none"] = "auto"
    """auto: black out the background with Segmentation/<cat>/<name>.png when present; none: keep it."""
    num_pairs: int | None = None
    """Evaluate only the first N pairs (sorted by file name)."""
    output_dir: Path = Path("outputs/transfer")
    """Results go to <output-dir>/spair/."""
    device: str | None = None
    """Device of the teacher baseline (default: CUDA when available)."""
    chunk: int | None = None
    """Query rows per similarity block."""
    overwrite: bool = False
    """Replace an earlier result of the same split instead of writing a new numbered one (``...-2.json``)."""


def run_spair(cfg: SpairConfig, console: Console | None = None) -> dict[str, Path]:
    """Run the SPair-71k benchmark for the model and baselines the config names; returns the written paths."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from featurenerf_ns.teachers.base import TeacherUnavailableError

    console = console or Console()
    pairs = read_pairs(cfg.data, cfg.split, cfg.categories, cfg.num_pairs)
    methods: dict[str, CropFeatures] = {}
    skipped: dict[str, str] = {}
    size = cfg.image_size
    if cfg.load_config is not None:
        from featurenerf_ns.model.api import TrainedFeatureNeRF

        model = TrainedFeatureNeRF.load(Path(cfg.load_config))
        nerf = NeRFCropFeatures(model, cfg.feature, cfg.camera_distance, cfg.focal)
        if size is not None and size != nerf.size:
            raise UserError(f"--image-size {size} differs from the model's resolution {nerf.size}")
        size = nerf.size
        parts = [p for p in Path(cfg.load_config).parent.parts[-2:] if p]
        methods[f"{'/'.join(parts)} ({cfg.feature})"] = nerf
    size = size or 128
    for b in cfg.baselines:
        if b == "teacher":
            try:
                methods["teacher"] = TeacherCropFeatures(cfg.teacher, cfg.device)
            except (TeacherUnavailableError, DataError) as e:
                skipped["teacher"] = str(e)
                console.print(f"[yellow]skipping the teacher baseline: {escape(str(e))}[/yellow]")
    if not methods:
        raise UserError(f"nothing to evaluate: give --load-config or a baseline that can run (skipped: {skipped})")
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console) as progress:
        tasks = {n: progress.add_task(f"{escape(n)}: SPair {cfg.split}", total=len(pairs)) for n in methods}
        results = evaluate_spair(
            cfg.data, pairs, methods, size, tuple(cfg.alphas), cfg.crop_margin, cfg.background, cfg.chunk,
            on_pair=lambda n: progress.advance(tasks[n]),
        )  # fmt: skip
    nerf_src = next((m for m in methods.values() if isinstance(m, NeRFCropFeatures)), None)
    meta = {
        "num_pairs": len(pairs),
        "categories": sorted({p.category for p in pairs}),
        "image_size": size,
        "crop_margin": cfg.crop_margin,
        "background": cfg.background,
        "canonical_camera": None
        if nerf_src is None
        else {"distance": cfg.camera_distance, "focal_px": nerf_src.focal, "size": nerf_src.size},
        "skipped_methods": skipped,
    }
    paths = write_spair_report(cfg.output_dir, cfg.split, results, meta, console, cfg.overwrite)
    for kind, path in paths.items():
        console.print(f"{kind}: {path}")
    return paths
