import math

import numpy as np
import pytest
import torch

from featurenerf_ns.transfer.data import Pair, random_pairs, split_pairs
from featurenerf_ns.transfer.evaluate import TaskSpec, eval_2d_pair, evaluate_method
from featurenerf_ns.transfer.sources import FeatureSource, OracleSource, TeacherSource


def test_stored_3d_keypoints_project_onto_the_2d_keypoints(toy_data):
    # the pixel convention of layout.py: u = f X/Z + W/2 is a column index
    obj = toy_data.objects()[0]
    kps3d, _ = toy_data.kp_3d(obj)
    for view in range(toy_data.num_views(obj)):
        kp2d = toy_data.kp_2d(obj)[view]
        uv, z = toy_data.project(obj, view, kps3d[:, :3])
        assert (z > 0).all()
        for x, y, kp_id in kp2d:
            np.testing.assert_allclose(np.round(uv[int(kp_id)]), [x, y])
            assert toy_data.foreground(obj, view)[int(y), int(x)]


def test_pairs_from_split_and_random(toy_data):
    ci = split_pairs(toy_data, "cross-instance")
    assert len(ci) == 12 and all(p.src != p.trg and p.src_view == p.trg_view for p in ci)
    nv = split_pairs(toy_data, "novel-view")
    assert all(p.src == p.trg and p.src_view != p.trg_view for p in nv)
    r1 = random_pairs(toy_data, "cross-instance", 20, seed=3)
    assert r1 == random_pairs(toy_data, "cross-instance", 20, seed=3)
    assert r1 != random_pairs(toy_data, "cross-instance", 20, seed=4)
    assert r1[0].to_json().keys() == {"src", "trg", "view"}


@pytest.mark.parametrize("setting", ["cross-instance", "novel-view"])
def test_oracle_2d_scores_near_one(toy_data, setting):
    pairs = split_pairs(toy_data, setting)
    oracle = OracleSource(toy_data)
    kp = evaluate_method(oracle, toy_data, pairs, TaskSpec("keypoints", "2d", setting))
    assert len(kp.scored) == len(pairs)
    assert kp.mean_pck[-1] == 1.0
    assert kp.mean_pck[0] >= 0.95
    parts = evaluate_method(oracle, toy_data, pairs, TaskSpec("parts", "2d", setting))
    assert parts.mean_miou >= 0.97


def _expected_chance_miou(src_labels, trg_labels):
    """mIoU when each target pixel takes the label of a uniformly random source foreground pixel."""
    src, trg = src_labels[src_labels > 0], trg_labels[trg_labels > 0]
    common = sorted(set(src.tolist()) & set(trg.tolist()))
    ious = []
    for label in common:
        ps, n = np.mean(src == label), np.sum(trg == label)
        inter = ps * n
        union = n + ps * len(trg) - inter
        ious.append(inter / union)
    return float(np.mean(ious))


def test_shuffled_oracle_features_score_at_chance_level(toy_data):
    oracle = OracleSource(toy_data)
    gen = torch.Generator().manual_seed(0)

    def shuffled(obj, view):
        feat = oracle.feature_map(obj, view).clone()
        fg = torch.from_numpy(toy_data.foreground(obj, view))
        vals = feat[fg]
        feat[fg] = vals[torch.randperm(len(vals), generator=gen)]
        # break ties between equal features so each pixel picks a uniformly random source pixel
        return feat + 0.01 * torch.randn(feat.shape, generator=gen)

    source = OracleSource(toy_data, map_fn=shuffled, point_fn=lambda o, p: p, name="shuffled")
    pairs = random_pairs(toy_data, "cross-instance", 24, seed=1)
    spec = TaskSpec("parts", "2d", "cross-instance")
    res = evaluate_method(source, toy_data, pairs, spec)
    chance = np.mean(
        [_expected_chance_miou(toy_data.part_2d(p.src)[p.src_view], toy_data.part_2d(p.trg)[p.trg_view]) for p in pairs]
    )
    assert res.mean_miou == pytest.approx(chance, abs=0.05)
    assert res.mean_miou < 0.5
    kp = evaluate_method(source, toy_data, pairs, TaskSpec("keypoints", "2d", "cross-instance"))
    # chance: a random foreground pixel within 3.75 px (10 px at 128) of the keypoint
    fg_area = np.mean([toy_data.foreground(p.trg, p.trg_view).sum() for p in pairs])
    assert kp.mean_pck[-1] < 4 * math.pi * 3.75**2 / fg_area
    assert kp.mean_pck[-1] < 0.4


def test_oracle_3d_scores_near_one(toy_data):
    pairs = split_pairs(toy_data, "cross-instance")
    oracle = OracleSource(toy_data)
    kp = evaluate_method(oracle, toy_data, pairs, TaskSpec("keypoints", "3d", "cross-instance"))
    assert kp.thresholds == (0.025, 0.05, 0.075, 0.1)
    assert kp.mean_pck[-1] == 1.0 and kp.mean_pck[1] >= 0.95
    parts = evaluate_method(oracle, toy_data, pairs, TaskSpec("parts", "3d", "cross-instance"))
    assert parts.mean_miou >= 0.99


def test_random_3d_features_score_low(toy_data):
    gen = torch.Generator().manual_seed(0)
    source = OracleSource(
        toy_data, map_fn=lambda o, v: None, point_fn=lambda o, p: torch.randn(len(p), 16, generator=gen)
    )
    pairs = split_pairs(toy_data, "cross-instance")
    kp = evaluate_method(source, toy_data, pairs, TaskSpec("keypoints", "3d", "cross-instance"))
    assert kp.mean_pck[1] < 0.2


def test_teacher_baseline_2d_between_chance_and_oracle(toy_data):
    teacher = TeacherSource(toy_data)
    assert teacher.folder == "dino_feat_256"
    fmap = teacher.feature_map(toy_data.objects()[0], 0)
    assert fmap.shape == (48, 48, 8)
    pairs = split_pairs(toy_data, "cross-instance")
    res = evaluate_method(teacher, toy_data, pairs, TaskSpec("parts", "2d", "cross-instance"))
    assert 0.5 < res.mean_miou < 1.0
    # novel view: the teacher can only use the target view's own map
    a = teacher.novel_view_map(toy_data.objects()[0], 0, 1)
    assert torch.equal(a, teacher.feature_map(toy_data.objects()[0], 1))
    with pytest.raises(NotImplementedError, match="not applicable"):
        teacher.point_features(toy_data.objects()[0], 0, torch.zeros(3, 3))


def test_feature_maps_are_computed_once_per_run(toy_data):
    calls = []

    class Counting(FeatureSource):
        name = "counting"

        def _compute_feature_map(self, obj_id, view):
            calls.append((obj_id, view))
            return OracleSource(toy_data).feature_map(obj_id, view)

    pairs = split_pairs(toy_data, "cross-instance") * 3
    evaluate_method(Counting(), toy_data, pairs, TaskSpec("keypoints", "2d", "cross-instance"))
    assert len(calls) == len(set(calls))
    assert len(calls) == len({(p.src, p.src_view) for p in pairs} | {(p.trg, p.trg_view) for p in pairs})


def test_lower_resolution_maps_are_resized(toy_data):
    obj_a, obj_b = toy_data.objects()[:2]
    oracle = OracleSource(toy_data)
    small = [oracle.feature_map(o, 0).permute(2, 0, 1)[None] for o in (obj_a, obj_b)]
    small = [torch.nn.functional.interpolate(s, size=(24, 24), mode="nearest")[0].permute(1, 2, 0) for s in small]
    res = eval_2d_pair(
        small[0], small[1], toy_data.foreground(obj_a, 0), toy_data.foreground(obj_b, 0), "parts",
        src_part=toy_data.part_2d(obj_a)[0], trg_part=toy_data.part_2d(obj_b)[0], pair=Pair(obj_a, obj_b, 0, 0),
    )  # fmt: skip
    assert res.pred_parts.shape == (48, 48) and res.miou > 0.8


def test_empty_target_foreground_is_not_scored(toy_data):
    obj = toy_data.objects()[0]
    fmap = OracleSource(toy_data).feature_map(obj, 0)
    res = eval_2d_pair(
        fmap, fmap, toy_data.foreground(obj, 0), np.zeros((48, 48), bool), "keypoints", (1.0,),
        src_kp=toy_data.kp_2d(obj)[0], trg_kp=toy_data.kp_2d(obj)[0],
    )  # fmt: skip
    assert res.pck == [] and res.num_keypoints == 0
