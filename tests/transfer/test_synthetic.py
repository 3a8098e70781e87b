"""The benchmarks on the project's procedural categories (featurenerf_ns.synthetic), when available."""

import numpy as np
import pytest

from featurenerf_ns.transfer.data import CategoryData, split_pairs
from featurenerf_ns.transfer.evaluate import TaskSpec, evaluate_method
from featurenerf_ns.transfer.sources import OracleSource, TeacherSource

generate = pytest.importorskip("featurenerf_ns.synthetic.generate")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate.generate_category(
        root, "chair", num_objects=10, num_views=4, image_size=48, seed=0, num_pairs=10, workers=0, progress=False
    )
    return CategoryData(root, "chair")


def test_synthetic_keypoints_follow_the_pixel_convention(synth):
    for obj in synth.objects():
        kps3d, _ = synth.kp_3d(obj)
        by_id = {int(k[3]): k[:3] for k in kps3d}
        for view in range(synth.num_views(obj)):
            kp2d = synth.kp_2d(obj)[view]
            if len(kp2d) == 0:
                continue
            uv, _ = synth.project(obj, view, np.stack([by_id[int(i)] for i in kp2d[:, 2]]))
            assert np.abs(uv - kp2d[:, :2]).max() <= 1.0


@pytest.mark.parametrize("space", ["2d", "3d"])
def test_oracle_on_synthetic_data_scores_near_one(synth, space):
    pairs = split_pairs(synth, "cross-instance")
    oracle = OracleSource(synth)
    kp = evaluate_method(oracle, synth, pairs, TaskSpec("keypoints", space))
    assert kp.mean_pck[-1] >= 0.95
    parts = evaluate_method(oracle, synth, pairs, TaskSpec("parts", space))
    assert parts.mean_miou >= 0.95


def test_synthetic_teacher_baseline_runs(synth):
    teacher = TeacherSource(synth)
    pairs = split_pairs(synth, "novel-view")
    res = evaluate_method(teacher, synth, pairs, TaskSpec("parts", "2d", "novel-view"))
    assert len(res.scored) == len(pairs) and 0.0 < res.mean_miou <= 1.0
