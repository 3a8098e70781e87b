"""Scores of the FeatureNeRF transfer benchmarks: PCK for keypoints, mIoU for part labels.

Protocol facts (the authors' ``eval/eval_2d_task.py``, ``eval_nv_2d_task.py``, ``eval_3d_task.py``):

- Keypoints are compared by semantic id: only ids present in both the source and the target
  annotation count; a predicted keypoint is scored against the target keypoint with the same id.
- PCK at threshold ``t`` is the fraction of those keypoints whose predicted location is *strictly*
  closer than ``t`` to the ground truth (pixels in 2D, object units in 3D), computed per pair and
  then averaged over pairs.
- 2D thresholds are 2.5/5/7.5/10 px for 128-px images; other sizes scale them linearly.
- mIoU is the mean IoU over the part labels (0 = background excluded) present in *both* the source
  and the target annotation; a label present in only one image is ignored, not scored as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

REFERENCE_IMAGE_SIZE = 128
"""Image size the paper's 2D thresholds refer to."""
PCK_THRESHOLDS_2D = (2.5, 5.0, 7.5, 10.0)
"""2D PCK thresholds in pixels at :data:`REFERENCE_IMAGE_SIZE`."""
PCK_THRESHOLDS_3D = (0.025, 0.05, 0.075, 0.1)
"""3D PCK thresholds in object (canonical frame) units."""


def pck_thresholds_2d(image_size: int | Sequence[int]) -> tuple[float, ...]:
    """The paper's pixel thresholds scaled linearly to ``image_size`` (an int or ``(H, W)``; the larger side)."""
    size = image_size if isinstance(image_size, int) else max(int(s) for s in image_size)
    if size <= 0:
        raise ValueError(f"image size must be positive, got {image_size}")
    return tuple(t * size / REFERENCE_IMAGE_SIZE for t in PCK_THRESHOLDS_2D)


def pck(distances: np.ndarray, thresholds: Sequence[float]) -> list[float]:
    """Fraction of ``distances`` strictly below each threshold; NaN for every threshold when empty."""
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    if d.size == 0:
        return [math.nan] * len(thresholds)
    return [float(np.mean(d < t)) for t in thresholds]


def match_keypoints_by_id(
    pred: np.ndarray, pred_ids: np.ndarray, gt: np.ndarray, gt_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair predicted and ground-truth keypoints by semantic id.

    Ids present on both sides are visited in increasing order. When an id occurs equally often on
    both sides the occurrences are paired in order (the authors' concatenation); when the counts
    differ (their code would fail), each prediction is paired with the nearest ground truth of that id.

    Args:
        pred: ``(K, D)`` predicted locations, one per source keypoint.
        pred_ids: ``(K,)`` semantic ids of the source keypoints.
        gt: ``(K', D)`` target ground-truth locations.
        gt_ids: ``(K',)`` their semantic ids.

    Returns:
        ``(pred_matched, gt_matched, ids)`` with equal first dimensions.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(len(pred_ids), -1)
    gt = np.asarray(gt, dtype=np.float64).reshape(len(gt_ids), -1)
    pred_ids = np.asarray(pred_ids).astype(np.int64).reshape(-1)
    gt_ids = np.asarray(gt_ids).astype(np.int64).reshape(-1)
    common = sorted(set(pred_ids.tolist()) & set(gt_ids.tolist()))
    p_out, g_out, i_out = [], [], []
    for kp_id in common:
        p = pred[pred_ids == kp_id]
        g = gt[gt_ids == kp_id]
        if len(p) != len(g):
            nearest = np.linalg.norm(p[:, None, :] - g[None, :, :], axis=-1).argmin(axis=1)
            g = g[nearest]
        p_out.append(p)
        g_out.append(g)
        i_out.append(np.full(len(p), kp_id, dtype=np.int64))
    dim = pred.shape[1] if pred.ndim == 2 else 0
    if not common:
        return np.zeros((0, dim)), np.zeros((0, dim)), np.zeros(0, dtype=np.int64)
    return np.concatenate(p_out), np.concatenate(g_out), np.concatenate(i_out)


def keypoint_pck(
    pred: np.ndarray,
    pred_ids: np.ndarray,
    gt: np.ndarray,
    gt_ids: np.ndarray,
    thresholds: Sequence[float],
) -> tuple[list[float], np.ndarray, np.ndarray]:
    """PCK of one pair: match by id (:func:`match_keypoints_by_id`), then :func:`pck` of the distances.

    Returns:
        ``(pck per threshold, distances, matched ids)``; PCK is NaN when no id is shared.
    """
    p, g, ids = match_keypoints_by_id(pred, pred_ids, gt, gt_ids)
    dist = np.linalg.norm(p - g, axis=1) if len(ids) else np.zeros(0)
    return pck(dist, thresholds), dist, ids


def part_ious(
    pred: np.ndarray, gt: np.ndarray, src_labels: Sequence[int], trg_labels: Sequence[int]
) -> dict[int, float]:
    """IoU of each non-zero label present in both ``src_labels`` and ``trg_labels``.

    Args:
        pred: predicted labels of the target's scored elements (foreground pixels or points).
        gt: ground-truth labels of the same elements.
        src_labels: labels present in the source annotation.
        trg_labels: labels present in the target annotation.
    """
    pred = np.asarray(pred).reshape(-1)
    gt = np.asarray(gt).reshape(-1)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth differ in size: {pred.shape} vs {gt.shape}")
    common = sorted((set(int(x) for x in src_labels) & set(int(x) for x in trg_labels)) - {0})
    out: dict[int, float] = {}
    for label in common:
        union = np.sum((gt == label) | (pred == label))
        inter = np.sum((gt == label) & (pred == label))
        out[label] = float(inter / union) if union > 0 else math.nan
    return out


def mean_iou(
    pred: np.ndarray, gt: np.ndarray, src_labels: Sequence[int], trg_labels: Sequence[int]
) -> tuple[float, dict[int, float]]:
    """mIoU over the labels present in both images (:func:`part_ious`); NaN when none is shared."""
    ious = part_ious(pred, gt, src_labels, trg_labels)
    if not ious:
        return math.nan, ious
    return float(np.mean(list(ious.values()))), ious


def nanmean(values: Sequence[float]) -> float:
    """Mean ignoring NaNs; NaN when nothing is left (no warning)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan
