"""The transfer benchmarks: one pair at a time, any number of feature sources scored identically.

2D (the authors' ``eval_2d_task.py`` / ``eval_nv_2d_task.py``): the source and target feature maps
are restricted to foreground pixels (non-zero part label). Parts: each target foreground pixel takes
the label of its most cosine-similar source foreground pixel, mIoU over labels present in both.
Keypoints: each source keypoint's feature (at its pixel) goes to the most similar target foreground
pixel; PCK against the target keypoint of the same id.

3D (``eval_3d_task.py``): features are queried at 3D points (no rendering). Parts: each target part
point takes the label of the most similar source part point. Keypoints: each source keypoint goes to
the most similar of the target's candidate points (``kp_3d_anno`` ``pts``).

Cross-instance pairs use the same view for both objects; novel-view pairs condition both sides on
the source view and read the target side at the target view (in 3D: condition on the target view).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from featurenerf_ns.transfer.data import CategoryData, Pair, Setting
from featurenerf_ns.transfer.matching import nearest_neighbors, transfer_labels
from featurenerf_ns.transfer.metrics import (
    PCK_THRESHOLDS_3D,
    keypoint_pck,
    mean_iou,
    nanmean,
    pck_thresholds_2d,
)
from featurenerf_ns.transfer.sources import FeatureSource

Task = Literal["keypoints", "parts"]
Space = Literal["2d", "3d"]


@dataclass(frozen=True)
class TaskSpec:
    """Which benchmark: task, space and setting."""

    task: Task
    space: Space = "2d"
    setting: Setting = "cross-instance"

    @property
    def slug(self) -> str:
        return f"{self.task}_{self.space}_{self.setting}"

    def thresholds(self, image_size: tuple[int, int]) -> tuple[float, ...]:
        return pck_thresholds_2d(image_size) if self.space == "2d" else PCK_THRESHOLDS_3D


@dataclass
class PairResult:
    """Scores of one pair for one method, plus what the qualitative figure draws."""

    pair: Pair
    miou: float = math.nan
    part_ious: dict[int, float] = field(default_factory=dict)
    pck: list[float] = field(default_factory=list)
    num_keypoints: int = 0
    pred_kp: np.ndarray | None = None
    """``(K, D+1)`` predicted locations (pixels [x, y] or points [x, y, z]) with the id last."""
    gt_kp: np.ndarray | None = None
    pred_parts: np.ndarray | None = None
    """Predicted target labels: ``(H, W)`` map (0 off the foreground) in 2D, ``(N,)`` per point in 3D."""

    def to_json(self, task: Task) -> dict:
        out = dict(self.pair.to_json())
        if task == "parts":
            out["miou"] = _json_float(self.miou)
            out["part_ious"] = {str(k): _json_float(v) for k, v in self.part_ious.items()}
        else:
            out["pck"] = [_json_float(v) for v in self.pck]
            out["num_keypoints"] = self.num_keypoints
            if self.pred_kp is not None:
                out["pred_kp"] = np.round(self.pred_kp, 5).tolist()
                out["gt_kp"] = np.round(self.gt_kp, 5).tolist()
        return out


def _json_float(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def _resize_map(feat: Tensor, hw: tuple[int, int]) -> Tensor:
    """Bilinearly resize an ``(h, w, C)`` map to the annotation size when a method renders at another size."""
    if tuple(feat.shape[:2]) == tuple(hw):
        return feat
    x = feat.permute(2, 0, 1)[None].float()
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)[0].permute(1, 2, 0)


# ---------------------------------------------------------------------- one pair
def eval_2d_pair(
    src_map: Tensor,
    trg_map: Tensor,
    src_fg: np.ndarray,
    trg_fg: np.ndarray,
    task: Task,
    thresholds: Sequence[float] = (),
    src_part: np.ndarray | None = None,
    trg_part: np.ndarray | None = None,
    src_kp: np.ndarray | None = None,
    trg_kp: np.ndarray | None = None,
    pair: Pair | None = None,
    chunk: int | None = None,
) -> PairResult:
    """Score one 2D pair from its two ``(H, W, C)`` feature maps (see the module docstring).

    Args:
        src_fg, trg_fg: ``(H, W)`` foreground masks (non-zero part label).
        src_part, trg_part: ``(H, W)`` part labels (parts task).
        src_kp, trg_kp: ``(K, 3)`` keypoints ``[x=col, y=row, id]`` (keypoints task).
    """
    h, w = src_fg.shape
    src_map, trg_map = _resize_map(src_map, (h, w)), _resize_map(trg_map, (h, w))
    device = trg_map.device
    res = PairResult(pair=pair if pair is not None else Pair("", "", 0, 0))
    trg_idx = torch.from_numpy(np.flatnonzero(trg_fg.reshape(-1))).to(device)
    if trg_idx.numel() == 0:
        return res
    trg_feats = trg_map.reshape(h * w, -1)[trg_idx]
    if task == "parts":
        assert src_part is not None and trg_part is not None
        src_idx = torch.from_numpy(np.flatnonzero(src_fg.reshape(-1))).to(src_map.device)
        if src_idx.numel() == 0:
            return res
        src_feats = src_map.reshape(h * w, -1)[src_idx]
        src_labels = torch.from_numpy(src_part.reshape(-1)).to(src_map.device)[src_idx]
        pred = transfer_labels(trg_feats, src_feats, src_labels, chunk=chunk).cpu().numpy()
        gt = trg_part.reshape(-1)[trg_idx.cpu().numpy()]
        res.miou, res.part_ious = mean_iou(pred, gt, np.unique(src_part), np.unique(trg_part))
        pred_map = np.zeros(h * w, dtype=np.int64)
        pred_map[trg_idx.cpu().numpy()] = pred
        res.pred_parts = pred_map.reshape(h, w)
    else:
        assert src_kp is not None and trg_kp is not None
        if len(src_kp) == 0:
            return res
        cols = np.clip(np.round(src_kp[:, 0]).astype(np.int64), 0, w - 1)
        rows = np.clip(np.round(src_kp[:, 1]).astype(np.int64), 0, h - 1)
        queries = src_map[torch.from_numpy(rows).to(src_map.device), torch.from_numpy(cols).to(src_map.device)]
        index, _ = nearest_neighbors(queries.to(device), trg_feats, chunk=chunk)
        flat = trg_idx[index].cpu().numpy()
        pred_xy = np.stack([flat % w, flat // w], axis=1).astype(np.float64)
        res.pck, dist, ids = keypoint_pck(pred_xy, src_kp[:, 2], trg_kp[:, :2], trg_kp[:, 2], thresholds)
        res.num_keypoints = len(ids)
        res.pred_kp = np.concatenate([pred_xy, src_kp[:, 2:3]], axis=1)
        res.gt_kp = trg_kp.copy()
    return res


def eval_3d_pair(
    task: Task,
    thresholds: Sequence[float] = PCK_THRESHOLDS_3D,
    src_part_feats: Tensor | None = None,
    src_part_labels: np.ndarray | None = None,
    trg_part_feats: Tensor | None = None,
    trg_part_labels: np.ndarray | None = None,
    src_kp_feats: Tensor | None = None,
    src_kp: np.ndarray | None = None,
    trg_cand_feats: Tensor | None = None,
    trg_cand_pts: np.ndarray | None = None,
    trg_kp: np.ndarray | None = None,
    pair: Pair | None = None,
    chunk: int | None = None,
) -> PairResult:
    """Score one 3D pair from point features (see the module docstring).

    Args:
        src_kp, trg_kp: ``(K, 4)`` keypoints ``[x, y, z, id]``.
        trg_cand_pts: ``(N, 3)`` the target's candidate points, ``trg_cand_feats`` their features.
    """
    res = PairResult(pair=pair if pair is not None else Pair("", "", 0, 0))
    if task == "parts":
        assert src_part_feats is not None and trg_part_feats is not None
        assert src_part_labels is not None and trg_part_labels is not None
        labels = torch.from_numpy(src_part_labels).to(src_part_feats.device)
        pred = transfer_labels(trg_part_feats, src_part_feats, labels, chunk=chunk).cpu().numpy()
        res.miou, res.part_ious = mean_iou(
            pred, trg_part_labels, np.unique(src_part_labels), np.unique(trg_part_labels)
        )
        res.pred_parts = pred
    else:
        assert src_kp_feats is not None and trg_cand_feats is not None
        assert src_kp is not None and trg_kp is not None and trg_cand_pts is not None
        if len(src_kp) == 0:
            return res
        index, _ = nearest_neighbors(src_kp_feats, trg_cand_feats.to(src_kp_feats.device), chunk=chunk)
        pred = trg_cand_pts[index.cpu().numpy()]
        res.pck, _, ids = keypoint_pck(pred, src_kp[:, 3], trg_kp[:, :3], trg_kp[:, 3], thresholds)
        res.num_keypoints = len(ids)
        res.pred_kp = np.concatenate([pred, src_kp[:, 3:4]], axis=1)
        res.gt_kp = trg_kp.copy()
    return res


def _pts(x: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def evaluate_pair(source: FeatureSource, data: CategoryData, pair: Pair, spec: TaskSpec, chunk=None) -> PairResult:
    """Fetch what ``spec`` needs for ``pair`` from ``source`` and ``data``, then score it."""
    thresholds = spec.thresholds(data.image_size)
    if spec.space == "2d":
        src_map = source.feature_map(pair.src, pair.src_view)
        if spec.setting == "cross-instance":
            trg_map = source.feature_map(pair.trg, pair.trg_view)
        else:
            trg_map = source.novel_view_map(pair.trg, pair.src_view, pair.trg_view)
        kwargs: dict = {}
        if spec.task == "parts":
            kwargs = dict(
                src_part=data.part_2d(pair.src)[pair.src_view], trg_part=data.part_2d(pair.trg)[pair.trg_view]
            )
        else:
            kwargs = dict(src_kp=data.kp_2d(pair.src)[pair.src_view], trg_kp=data.kp_2d(pair.trg)[pair.trg_view])
        return eval_2d_pair(
            src_map,
            trg_map,
            data.foreground(pair.src, pair.src_view),
            data.foreground(pair.trg, pair.trg_view),
            spec.task,
            thresholds,
            pair=pair,
            chunk=chunk,
            **kwargs,
        )
    if not source.supports_3d:
        raise NotImplementedError(f"{source.name}: 3D transfer is not applicable (no 3D features)")
    # Cross-instance: both objects conditioned on the pair's view. Novel view: the same object
    # conditioned on the source view vs on the target view (3D features should not depend on it).
    if spec.task == "parts":
        src_pts, src_labels = data.part_3d(pair.src)
        trg_pts, trg_labels = data.part_3d(pair.trg)
        return eval_3d_pair(
            "parts",
            src_part_feats=source.point_features(pair.src, pair.src_view, _pts(src_pts)),
            src_part_labels=src_labels,
            trg_part_feats=source.point_features(pair.trg, pair.trg_view, _pts(trg_pts)),
            trg_part_labels=trg_labels,
            pair=pair,
            chunk=chunk,
        )
    src_kp, _ = data.kp_3d(pair.src)
    trg_kp, trg_cand = data.kp_3d(pair.trg)
    return eval_3d_pair(
        "keypoints",
        thresholds,
        src_kp_feats=source.point_features(pair.src, pair.src_view, _pts(src_kp[:, :3])),
        src_kp=src_kp,
        trg_cand_feats=source.point_features(pair.trg, pair.trg_view, _pts(trg_cand)),
        trg_cand_pts=trg_cand,
        trg_kp=trg_kp,
        pair=pair,
        chunk=chunk,
    )


# ---------------------------------------------------------------------- one method
@dataclass
class MethodResult:
    """All pairs of one method and their means."""

    name: str
    spec: TaskSpec
    thresholds: tuple[float, ...]
    pairs: list[PairResult]
    seconds: float

    @property
    def scored(self) -> list[PairResult]:
        """Pairs with a defined score (a shared keypoint id / part label, non-empty foreground)."""
        if self.spec.task == "parts":
            return [p for p in self.pairs if not math.isnan(p.miou)]
        return [p for p in self.pairs if p.pck and not math.isnan(p.pck[0])]

    @property
    def mean_pck(self) -> list[float]:
        return [nanmean([p.pck[i] for p in self.scored]) for i in range(len(self.thresholds))]

    @property
    def mean_miou(self) -> float:
        return nanmean([p.miou for p in self.scored])

    @property
    def pairs_per_s(self) -> float:
        return len(self.pairs) / self.seconds if self.seconds > 0 else math.inf

    def summary(self) -> dict:
        out: dict = {"num_pairs": len(self.pairs), "num_scored": len(self.scored)}
        if self.spec.task == "parts":
            out["miou"] = _json_float(self.mean_miou)
        else:
            out["pck"] = {f"{t:g}": _json_float(v) for t, v in zip(self.thresholds, self.mean_pck, strict=True)}
            out["num_keypoints"] = int(sum(p.num_keypoints for p in self.pairs))
        out["seconds"] = round(self.seconds, 3)
        out["pairs_per_s"] = round(self.pairs_per_s, 3) if math.isfinite(self.pairs_per_s) else None
        return out

    def to_json(self) -> dict:
        return {"mean": self.summary(), "per_pair": [p.to_json(self.spec.task) for p in self.pairs]}


def evaluate_method(
    source: FeatureSource,
    data: CategoryData,
    pairs: Sequence[Pair],
    spec: TaskSpec,
    on_pair: Callable[[int], None] | None = None,
    chunk: int | None = None,
) -> MethodResult:
    """Score every pair with one source; ``on_pair(i)`` is called after each (progress bars)."""
    t0 = time.perf_counter()
    results = []
    for i, pair in enumerate(pairs):
        results.append(evaluate_pair(source, data, pair, spec, chunk=chunk))
        if on_pair is not None:
            on_pair(i)
    seconds = time.perf_counter() - t0
    source.clear_cache()
    return MethodResult(source.name, spec, tuple(spec.thresholds(data.image_size)), results, seconds)
