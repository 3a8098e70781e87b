import math

import numpy as np
import pytest

from featurenerf_ns.transfer.metrics import (
    PCK_THRESHOLDS_3D,
    keypoint_pck,
    match_keypoints_by_id,
    mean_iou,
    nanmean,
    part_ious,
    pck,
    pck_thresholds_2d,
)


def test_thresholds_scale_linearly_with_image_size():
    assert pck_thresholds_2d(128) == (2.5, 5.0, 7.5, 10.0)
    assert pck_thresholds_2d(64) == (1.25, 2.5, 3.75, 5.0)
    assert pck_thresholds_2d((256, 256)) == (5.0, 10.0, 15.0, 20.0)
    assert PCK_THRESHOLDS_3D == (0.025, 0.05, 0.075, 0.1)
    with pytest.raises(ValueError):
        pck_thresholds_2d(0)


def test_pck_is_strictly_below_threshold():
    d = np.array([0.0, 2.5, 4.9, 5.0, 12.0])
    # 2.5 is not < 2.5; 5.0 is not < 5
    assert pck(d, (2.5, 5.0, 7.5, 10.0)) == [0.2, 0.6, 0.8, 0.8]
    assert all(math.isnan(v) for v in pck(np.zeros(0), (1.0, 2.0)))


def test_keypoints_matched_by_id_and_only_shared_ids_count():
    pred = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    pred_ids = np.array([0, 1, 5])  # id 5 absent from the target: ignored
    gt = np.array([[23.0, 24.0], [10.0, 13.0], [0.0, 0.0]])
    gt_ids = np.array([1, 0, 7])  # order differs from the source; id 7 absent from the source
    p, g, ids = match_keypoints_by_id(pred, pred_ids, gt, gt_ids)
    assert ids.tolist() == [0, 1]
    np.testing.assert_array_equal(p, [[10, 10], [20, 20]])
    np.testing.assert_array_equal(g, [[10, 13], [23, 24]])
    scores, dist, _ = keypoint_pck(pred, pred_ids, gt, gt_ids, (2.5, 5.0, 7.5, 10.0))
    np.testing.assert_allclose(dist, [3.0, 5.0])
    assert scores == [0.0, 0.5, 1.0, 1.0]


def test_keypoints_without_shared_ids_give_nan():
    scores, dist, ids = keypoint_pck(np.zeros((1, 2)), np.array([1]), np.zeros((1, 2)), np.array([2]), (1.0,))
    assert math.isnan(scores[0]) and len(dist) == 0 and len(ids) == 0


def test_repeated_ids_with_unequal_counts_use_nearest_ground_truth():
    p, g, ids = match_keypoints_by_id(
        np.array([[0.0, 0.0], [9.0, 9.0]]), np.array([3, 3]), np.array([[10.0, 10.0]]), np.array([3])
    )
    np.testing.assert_array_equal(g, [[10, 10], [10, 10]])
    assert ids.tolist() == [3, 3]


def test_miou_over_labels_present_in_both_images():
    gt = np.array([1, 1, 1, 2, 2, 3])
    pred = np.array([1, 1, 2, 2, 2, 2])
    # source has labels {1, 2, 4}; target has {1, 2, 3}: only 1 and 2 are scored
    ious = part_ious(pred, gt, [0, 1, 2, 4], [0, 1, 2, 3])
    assert ious == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 4)}
    m, _ = mean_iou(pred, gt, [0, 1, 2, 4], [0, 1, 2, 3])
    assert m == pytest.approx((2 / 3 + 1 / 2) / 2)
    # label 3 exists only in the target: it is not an IoU of 0
    m_all, _ = mean_iou(pred, gt, [1, 2, 3], [1, 2, 3])
    assert m_all == pytest.approx((2 / 3 + 1 / 2 + 0.0) / 3)
    assert math.isnan(mean_iou(pred, gt, [4], [1, 2])[0])
    with pytest.raises(ValueError):
        part_ious(pred[:2], gt, [1], [1])


def test_background_label_is_never_scored():
    ious = part_ious(np.array([0, 1]), np.array([0, 1]), [0, 1], [0, 1])
    assert list(ious) == [1]


def test_nanmean():
    assert nanmean([1.0, float("nan"), 3.0]) == 2.0
    assert math.isnan(nanmean([float("nan")]))
