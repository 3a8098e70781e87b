"""The benchmarks on the project's procedural categories (featurenerf_ns.synthetic)."""

import numpy as np
import pytest

from featurenerf_ns.synthetic import generate
from featurenerf_ns.transfer.data import CategoryData, split_pairs
from featurenerf_ns.transfer.evaluate import TaskSpec, evaluate_method
from featurenerf_ns.transfer.sources import ChanceSource, OracleSource, TeacherSource


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


def _score(result, task: str) -> float:
    return result.mean_miou if task == "parts" else result.mean_pck[-1]


@pytest.mark.parametrize("task", ["keypoints", "parts"])
@pytest.mark.parametrize("setting", ["cross-instance", "novel-view"])
def test_synthetic_teacher_between_chance_and_oracle(synth, task, setting):
    """The synthetic teacher's 2D maps carry part and keypoint identity: well above chance, below the oracle."""
    pairs = split_pairs(synth, setting)
    spec = TaskSpec(task, "2d", setting)
    sources = (TeacherSource(synth), ChanceSource(synth), OracleSource(synth))
    teacher, chance, oracle = (evaluate_method(src, synth, pairs, spec) for src in sources)
    assert len(teacher.scored) == len(pairs)
    scores = [_score(r, task) for r in (teacher, chance, oracle)]
    print(task, setting, "teacher, chance, oracle:", scores)
    assert scores[1] + 0.2 < scores[0] <= scores[2]
