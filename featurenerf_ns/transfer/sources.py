"""What the transfer protocol needs from a method: per-pixel and per-point features.

A :class:`FeatureSource` answers three questions, each cached for the run (LRU under a byte budget,
so a 1000-pair benchmark computes every (object, view) map once while it is being reused):

- ``feature_map(obj_id, view)``: ``(H, W, C)`` features of a view, conditioned on that view
  (2D cross-instance; also the source side of novel view);
- ``novel_view_map(obj_id, src_view, trg_view)``: ``(H, W, C)`` features at ``trg_view`` conditioned
  on ``src_view`` only (2D novel view);
- ``point_features(obj_id, src_view, points)``: ``(N, C)`` features of 3D points in the object's
  canonical frame, conditioned on ``src_view`` (3D tasks).

Implementations: :class:`OracleSource` (features built from the annotations, or from functions
given to it: tests and sanity checks), :class:`ChanceSource` (random features: the chance level),
:class:`TeacherSource` (the teacher's 2D maps, the paper's
2D baseline) and :class:`NeRFSource` (a trained FeatureNeRF through
``featurenerf_ns.model.api.TrainedFeatureNeRF``). Features need not be normalised: the matching
L2-normalises them.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from featurenerf_ns.layout import DINO_TEACHER_FOLDER, DINOV2_TEACHER_FOLDER, SYNTHETIC_TEACHER_FOLDER
from featurenerf_ns.teachers.store import TeacherFeatures, open_teacher_features
from featurenerf_ns.transfer.data import CategoryData
from featurenerf_ns.utils.io import DataError

if TYPE_CHECKING:
    from featurenerf_ns.model.api import TrainedFeatureNeRF

DEFAULT_CACHE_BYTES = 2 << 30
"""Feature cache budget per source (2 GiB: ~64 maps of 128x128x512 float32)."""


class TensorLRU:
    """Least-recently-used cache of tensors bounded by their total size in bytes."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: Hashable, fn: Callable[[], Tensor]) -> Tensor:
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        value = fn()
        size = value.element_size() * value.nelement()
        if size <= self.max_bytes:
            self._items[key] = value
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.bytes -= old.element_size() * old.nelement()
        return value

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)


def _points_key(points: Tensor) -> str:
    arr = np.ascontiguousarray(points.detach().cpu().numpy())
    return hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest() + str(arr.shape)


class FeatureSource:
    """Base class: caching around the ``_compute_*`` methods that implementations override."""

    name: str = "source"
    supports_3d: bool = False
    """Whether :meth:`point_features` is available (3D tasks)."""
    supports_novel_view: bool = True

    def __init__(self, cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.cache = TensorLRU(cache_bytes)

    def feature_map(self, obj_id: str, view: int) -> Float[Tensor, "H W C"]:
        return self.cache.get_or_compute(("map", obj_id, view), lambda: self._compute_feature_map(obj_id, view))

    def novel_view_map(self, obj_id: str, src_view: int, trg_view: int) -> Float[Tensor, "H W C"]:
        if src_view == trg_view:
            return self.feature_map(obj_id, trg_view)
        return self.cache.get_or_compute(
            ("nv", obj_id, src_view, trg_view), lambda: self._compute_novel_view_map(obj_id, src_view, trg_view)
        )

    def point_features(self, obj_id: str, src_view: int, points: Float[Tensor, "N 3"]) -> Float[Tensor, "N C"]:
        if not self.supports_3d:
            raise NotImplementedError(f"{self.name}: 3D transfer is not applicable (no 3D features)")
        key = ("pts", obj_id, src_view, _points_key(points))
        return self.cache.get_or_compute(key, lambda: self._compute_point_features(obj_id, src_view, points))

    def clear_cache(self) -> None:
        self.cache.clear()

    # Implementations override these.
    def _compute_feature_map(self, obj_id: str, view: int) -> Tensor:
        raise NotImplementedError

    def _compute_novel_view_map(self, obj_id: str, src_view: int, trg_view: int) -> Tensor:
        raise NotImplementedError(f"{self.name}: novel-view features are not available")

    def _compute_point_features(self, obj_id: str, src_view: int, points: Tensor) -> Tensor:
        raise NotImplementedError


# ---------------------------------------------------------------------- oracle
class OracleSource(FeatureSource):
    """Features that know the answer: for tests and for checking the protocol end to end.

    By default a pixel's (point's) feature is ``[part one-hot | keypoint channels]``: the one-hot of
    its part label (background is its own channel), and per keypoint id a Gaussian of the distance
    to that object's keypoint of that id in this view (in 3D: to the 3D keypoint). Matching such
    features transfers every keypoint to its ground truth and every part label to itself, so PCK and
    mIoU should be ~1. ``map_fn`` / ``point_fn`` replace the defaults (e.g. canonical coordinates
    from a generator, or shuffled features for a chance-level check).
    """

    name = "oracle"
    supports_3d = True

    def __init__(
        self,
        data: CategoryData | None = None,
        map_fn: Callable[[str, int], Tensor] | None = None,
        point_fn: Callable[[str, Tensor], Tensor] | None = None,
        max_parts: int = 16,
        max_keypoint_ids: int = 64,
        part_weight: float = 1.0,
        keypoint_weight: float = 2.0,
        sigma_px: float | None = None,
        sigma_3d: float = 0.02,
        name: str = "oracle",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        super().__init__(cache_bytes)
        if data is None and (map_fn is None or point_fn is None):
            raise ValueError("OracleSource needs CategoryData unless both map_fn and point_fn are given")
        self.data = data
        self.map_fn = map_fn
        self.point_fn = point_fn
        self.max_parts = max_parts
        self.max_keypoint_ids = max_keypoint_ids
        self.part_weight = part_weight
        self.keypoint_weight = keypoint_weight
        self.sigma_px = sigma_px
        self.sigma_3d = sigma_3d
        self.name = name

    def _one_hot(self, labels: np.ndarray, where: str) -> Tensor:
        if labels.size and (labels.min() < 0 or labels.max() >= self.max_parts):
            raise DataError(where, f"part labels must be in [0, {self.max_parts}), got {labels.min()}..{labels.max()}")
        return F.one_hot(torch.from_numpy(labels.astype(np.int64)), self.max_parts).float() * self.part_weight

    def _kp_channels(self, coords: Tensor, kps: np.ndarray, dim: int, sigma: float, where: str) -> Tensor:
        out = torch.zeros(coords.shape[0], self.max_keypoint_ids)
        if len(kps) == 0:
            return out
        ids = torch.as_tensor(kps[:, dim].astype(np.int64))
        if ids.min() < 0 or ids.max() >= self.max_keypoint_ids:
            raise DataError(where, f"keypoint ids must be in [0, {self.max_keypoint_ids}), got {ids.tolist()}")
        d2 = torch.cdist(coords, torch.as_tensor(kps[:, :dim], dtype=torch.float32)) ** 2
        # clamped so far-away values stay normal floats (denormal exp results are ~1000x slower)
        val = torch.exp(-torch.clamp(d2 / (2 * sigma**2), max=30.0))
        out.scatter_reduce_(1, ids.expand_as(val), val, reduce="amax")
        return out * self.keypoint_weight

    def _compute_feature_map(self, obj_id: str, view: int) -> Tensor:
        if self.map_fn is not None:
            return self.map_fn(obj_id, view)
        assert self.data is not None
        h, w = self.data.image_size
        if self.data.has_part_2d(obj_id):
            labels = self.data.part_2d(obj_id)[view]
        else:
            labels = self.data.foreground(obj_id, view).astype(np.int64)
        parts = self._one_hot(labels, str(self.data.layout.part_2d(obj_id)))
        sigma = self.sigma_px if self.sigma_px is not None else 1.5 * max(h, w) / 128
        kps = self.data.kp_2d(obj_id)[view] if self.data.layout.kp_2d(obj_id).is_file() else np.zeros((0, 3))
        kp = torch.zeros(h, w, self.max_keypoint_ids)
        r = int(math.ceil(6 * sigma))  # beyond 6 sigma the Gaussian is < 1e-7: only a window is computed
        for x, y, kp_id in kps:
            if not 0 <= int(kp_id) < self.max_keypoint_ids:
                raise DataError(
                    self.data.layout.kp_2d(obj_id), f"keypoint id {int(kp_id)} outside [0, {self.max_keypoint_ids})"
                )
            r0, r1 = max(0, int(y) - r), min(h, int(y) + r + 1)
            c0, c1 = max(0, int(x) - r), min(w, int(x) + r + 1)
            if r0 >= r1 or c0 >= c1:
                continue
            rows = torch.arange(r0, r1, dtype=torch.float32)[:, None]
            cols = torch.arange(c0, c1, dtype=torch.float32)[None, :]
            g = torch.exp(-((cols - float(x)) ** 2 + (rows - float(y)) ** 2) / (2 * sigma**2))
            patch = kp[r0:r1, c0:c1, int(kp_id)]
            kp[r0:r1, c0:c1, int(kp_id)] = torch.maximum(patch, g)
        return torch.cat([parts, kp * self.keypoint_weight], dim=-1)

    def _compute_novel_view_map(self, obj_id: str, src_view: int, trg_view: int) -> Tensor:
        return self._compute_feature_map(obj_id, trg_view)

    def _compute_point_features(self, obj_id: str, src_view: int, points: Tensor) -> Tensor:
        if self.point_fn is not None:
            return self.point_fn(obj_id, points)
        assert self.data is not None
        pts = points.detach().cpu().float()
        feats = []
        if self.data.layout.part_3d(obj_id).is_file():
            part_pts, part_labels = self.data.part_3d(obj_id)
            nearest = torch.cdist(pts, torch.from_numpy(part_pts).float()).argmin(dim=1).numpy()
            feats.append(self._one_hot(part_labels[nearest], str(self.data.layout.part_3d(obj_id))))
        if self.data.layout.kp_3d(obj_id).is_file():
            kps, _ = self.data.kp_3d(obj_id)
            feats.append(self._kp_channels(pts, kps, 3, self.sigma_3d, str(self.data.layout.kp_3d(obj_id))))
        if not feats:
            raise DataError(self.data.layout.part_3d(obj_id), "oracle 3D features need part_3d or kp_3d annotations")
        return torch.cat(feats, dim=1)


# ---------------------------------------------------------------------- chance
class ChanceSource(FeatureSource):
    """Random features (a fixed seed per view and per point set): nearest-neighbour matching on them picks a
    uniformly random candidate, so every task scores what chance scores. The floor a method must clear."""

    name = "chance"
    supports_3d = True

    def __init__(self, data: CategoryData, dim: int = 64, seed: int = 0, cache_bytes: int = DEFAULT_CACHE_BYTES):
        super().__init__(cache_bytes)
        self.data = data
        self.dim = dim
        self.seed = seed

    def _random(self, rows: int, *key) -> Tensor:
        digest = hashlib.blake2b(repr((self.seed, *key)).encode(), digest_size=8).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
        return torch.randn(rows, self.dim, generator=g)

    def _compute_feature_map(self, obj_id: str, view: int) -> Tensor:
        h, w = self.data.image_size
        return self._random(h * w, "map", obj_id, view).view(h, w, self.dim)

    def _compute_novel_view_map(self, obj_id: str, src_view: int, trg_view: int) -> Tensor:
        h, w = self.data.image_size
        return self._random(h * w, "nv", obj_id, src_view, trg_view).view(h, w, self.dim)

    def _compute_point_features(self, obj_id: str, src_view: int, points: Tensor) -> Tensor:
        return self._random(points.shape[0], "pts", obj_id, src_view, _points_key(points))


# ---------------------------------------------------------------------- teacher
def find_teacher_folder(data: CategoryData) -> str:
    """The teacher folder present for this category: the authors' DINO one, else DINOv2's, else the synthetic
    teacher's."""
    folders = (DINO_TEACHER_FOLDER, DINOV2_TEACHER_FOLDER, SYNTHETIC_TEACHER_FOLDER)
    for folder in folders:
        if (data.root / folder / data.synset).is_dir():
            return folder
    raise DataError(
        data.root / DINO_TEACHER_FOLDER / data.synset,
        f"no teacher features (looked for {', '.join(f + '/' for f in folders)}); pass --teacher-folder",
    )


class TeacherSource(FeatureSource):
    """The teacher's 2D features upsampled (bilinear) to the image size: the paper's 2D baseline.

    For novel view the baseline can only use the target view's own teacher map (a 2D model has no
    way to see an unseen view), which the paper's comparison makes explicit. 3D is not applicable.
    """

    supports_3d = False

    def __init__(
        self,
        data: CategoryData,
        folder: str | None = None,
        name: str = "teacher",
        device: torch.device | str | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        file_cache_bytes: int = 1 << 30,
    ):
        super().__init__(cache_bytes)
        self.data = data
        self.folder = folder or find_teacher_folder(data)
        self.name = name
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.file_cache_bytes = file_cache_bytes
        self._open: OrderedDict[str, TeacherFeatures] = OrderedDict()

    def _features(self, obj_id: str) -> TeacherFeatures:
        if obj_id in self._open:
            self._open.move_to_end(obj_id)
            return self._open[obj_id]
        path = self.data.layout.teacher(self.folder, obj_id)
        if not path.is_file() and path.with_suffix(".npy").is_file():
            path = path.with_suffix(".npy")  # this project's float16 cache (featurenerf_ns.teachers.cache)
        tf = open_teacher_features(path)
        self._open[obj_id] = tf

        # An authors' .npz is decompressed whole on first read (78 MB for 50 DINO views): keep the
        # most recently used objects' arrays up to a byte budget (memory-mapped .npy cost nothing).
        def size(t: TeacherFeatures) -> int:
            return 0 if t.path.suffix == ".npy" else int(np.prod(t.shape)) * 4

        while len(self._open) > 1 and sum(size(t) for t in self._open.values()) > self.file_cache_bytes:
            self._open.popitem(last=False)
        return tf

    def _compute_feature_map(self, obj_id: str, view: int) -> Tensor:
        tf = self._features(obj_id)
        if not 0 <= view < tf.num_views:
            raise DataError(tf.path, f"has {tf.num_views} views, asked for view {view}")
        feat = torch.from_numpy(tf.read([view])).to(self.device)
        h, w = self.data.image_size
        feat = F.interpolate(feat, size=(h, w), mode="bilinear", align_corners=False)
        return feat[0].permute(1, 2, 0).contiguous()

    def _compute_novel_view_map(self, obj_id: str, src_view: int, trg_view: int) -> Tensor:
        return self.feature_map(obj_id, trg_view)


# ---------------------------------------------------------------------- trained model
class NeRFSource(FeatureSource):
    """A trained FeatureNeRF (``TrainedFeatureNeRF``): rendered maps and queried point features.

    ``feature="v_nerf"`` (default) is the 512-d internal feature the authors evaluate (the matching
    L2-normalises it); ``"feature"`` is the distilled head's output (the paper's ablation). ``skip_empty``
    renders with empty-space skipping (``TrainedFeatureNeRF.render``).
    """

    supports_3d = True

    def __init__(
        self,
        model: TrainedFeatureNeRF,
        feature: Literal["v_nerf", "feature"] = "v_nerf",
        split: str = "test",
        name: str | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        skip_empty: bool = False,
    ):
        super().__init__(cache_bytes)
        if feature not in ("v_nerf", "feature"):
            raise ValueError(f"feature must be 'v_nerf' or 'feature', got {feature!r}")
        self.model = model
        self.feature = feature
        self.split = split
        self.skip_empty = skip_empty
        self.name = name or f"featurenerf ({feature})"
        self._cond: OrderedDict[tuple[str, int], object] = OrderedDict()

    @classmethod
    def from_config(
        cls,
        config_path: Path,
        feature: Literal["v_nerf", "feature"] = "v_nerf",
        inference_dtype: Literal["float32", "bfloat16"] | None = None,
        **kwargs,
    ) -> NeRFSource:
        from featurenerf_ns.model.api import TrainedFeatureNeRF

        model = TrainedFeatureNeRF.load(Path(config_path), inference_dtype=inference_dtype)
        return cls(model, feature=feature, **kwargs)

    def _condition(self, obj_id: str, view: int):
        key = (obj_id, view)
        if key in self._cond:
            self._cond.move_to_end(key)
            return self._cond[key]
        cond = self.model.encode(self.split, obj_id, [view])
        self._cond[key] = cond
        if len(self._cond) > 4:
            self._cond.popitem(last=False)
        return cond

    @torch.no_grad()
    def _render(self, obj_id: str, src_view: int, trg_view: int) -> Tensor:
        cond = self._condition(obj_id, src_view)
        out = self.model.render(cond, self.split, obj_id, trg_view, (self.feature,), self.skip_empty)
        return out[self.feature]

    def _compute_feature_map(self, obj_id: str, view: int) -> Tensor:
        return self._render(obj_id, view, view)

    def _compute_novel_view_map(self, obj_id: str, src_view: int, trg_view: int) -> Tensor:
        return self._render(obj_id, src_view, trg_view)

    @torch.no_grad()
    def _compute_point_features(self, obj_id: str, src_view: int, points: Tensor) -> Tensor:
        cond = self._condition(obj_id, src_view)
        device = getattr(self.model, "device", None)
        if device is not None:
            points = points.to(device)
        return self.model.query(cond, points)[self.feature]

    def clear_cache(self) -> None:
        super().clear_cache()
        self._cond.clear()
