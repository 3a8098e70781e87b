"""SPair-71k reading, crop coordinates and the transfer protocol, checked with oracle features."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from featurenerf_ns.teachers.dino import DinoTeacherConfig
from featurenerf_ns.transfer.spair import SpairConfig, crop_transform, evaluate_spair, load_crop, read_pairs, run_spair
from featurenerf_ns.utils.io import DataError
from tests.transfer.spair_fixtures import image_keypoints, make_spair


@pytest.fixture(scope="module")
def spair_root(tmp_path_factory) -> Path:
    return make_spair(tmp_path_factory.mktemp("spair") / "SPair-71k")


def test_read_pairs_and_category_filter(spair_root):
    pairs = read_pairs(spair_root, "test")
    assert len(pairs) >= 6
    p = pairs[0]
    assert p.category == "chair" and p.src_kps.shape == p.trg_kps.shape and len(p.kps_ids) == len(p.src_kps)
    assert p.src_hw[0] < p.src_hw[1]  # [W, H, C] read as (H, W): the fixture's images are wider than tall
    assert [q.pair_id for q in read_pairs(spair_root, "test", ("CHAIR",), limit=2)] == [q.pair_id for q in pairs[:2]]
    with pytest.raises(DataError, match="no pair annotations for dog"):
        read_pairs(spair_root, "test", ("dog",))
    with pytest.raises(DataError) as e:
        read_pairs(spair_root, "trn")
    assert e.value.path == spair_root / "PairAnnotation" / "trn"


def test_malformed_pair_names_the_file(spair_root, tmp_path):
    bad = tmp_path / "SPair"
    (bad / "PairAnnotation" / "test").mkdir(parents=True)
    src = sorted((spair_root / "PairAnnotation" / "test").glob("*.json"))[0]
    ann = json.loads(src.read_text())
    del ann["trg_kps"]
    path = bad / "PairAnnotation" / "test" / src.name
    path.write_text(json.dumps(ann))
    with pytest.raises(DataError) as e:
        read_pairs(bad)
    assert e.value.path == path and "trg_kps" in e.value.problem
    ann = json.loads(src.read_text())
    ann["src_bndbox"] = [5, 5, 1, 1]
    path.write_text(json.dumps(ann))
    with pytest.raises(DataError, match="src_bndbox"):
        read_pairs(bad)


def test_crop_coordinates_round_trip_and_follow_the_pixels(tmp_path):
    t = crop_transform((30, 10, 69, 49), (60, 100), size=64, margin=0.1)
    xy = np.array([[30.0, 10.0], [69.0, 49.0], [50.3, 22.7]])
    np.testing.assert_allclose(t.from_crop(t.to_crop(xy)), xy)
    # a 4x4 bright block centred on pixel (52.5, 31.5) lands centred on to_crop of that point
    root = tmp_path / "S"
    (root / "JPEGImages" / "cat").mkdir(parents=True)
    img = np.zeros((60, 100, 3), np.uint8)
    img[30:34, 51:55] = 255
    from PIL import Image

    Image.fromarray(img).save(root / "JPEGImages" / "cat" / "a.png")
    crop = load_crop(root, "cat", "a.png", t, background="none")
    w = crop[..., 0]
    jj, ii = np.indices(w.shape)
    centroid = np.array([(w * ii).sum(), (w * jj).sum()]) / w.sum()
    np.testing.assert_allclose(centroid, t.to_crop(np.array([52.5, 31.5])), atol=0.15)
    inside = t.inside_image()
    assert inside.shape == (64, 64) and inside.all()  # the box is well inside the image
    edge = crop_transform((0, 0, 39, 39), (60, 100), size=64, margin=0.25)
    assert not edge.inside_image()[0, 0] and edge.inside_image()[-1, -1]


def _oracle(root: Path, size: int, margin: float, shuffle: bool = False):
    """Features that know the answer: per keypoint id a Gaussian around the crop position of that keypoint."""
    boxes = {}
    for p in read_pairs(root):
        boxes[(p.category, p.src_name)] = (p.src_bbox, p.src_hw)
        boxes[(p.category, p.trg_name)] = (p.trg_bbox, p.trg_hw)
    rng = np.random.default_rng(0)

    def fn(crop: torch.Tensor, key: str) -> torch.Tensor:
        cat, name = key.split("/")
        bbox, hw = boxes[(cat, name)]
        t = crop_transform(bbox, hw, size, margin)
        jj, ii = np.indices((size, size))
        out = np.zeros((size, size, 32), np.float32)
        out[..., 31] = 1.0  # a constant channel: cosine similarity then peaks at the Gaussian's centre
        for kp_id, xy in image_keypoints(root, cat, name).items():
            cx, cy = t.to_crop(np.array(xy))
            out[..., kp_id] = np.exp(-((ii - cx) ** 2 + (jj - cy) ** 2) / (2 * 1.5**2))
        if shuffle:
            out = out.reshape(-1, 32)[rng.permutation(size * size)].reshape(size, size, 32)
        return torch.from_numpy(out)

    return fn


def test_oracle_features_transfer_every_keypoint(spair_root):
    pairs = read_pairs(spair_root)
    res = evaluate_spair(spair_root, pairs, {"oracle": _oracle(spair_root, 64, 0.1)}, size=64)[0]
    # one crop pixel is ~1.5 original pixels here, well under 0.05 x the box side (>= 2.5 px)
    assert res.mean_pck() == pytest.approx([1.0, 1.0, 1.0])
    assert res.keypoint_pck() == pytest.approx([1.0, 1.0, 1.0])
    for row in res.per_pair:
        assert max(row["distances"]) < 1.5
    chance = evaluate_spair(spair_root, pairs, {"shuffled": _oracle(spair_root, 64, 0.1, shuffle=True)}, size=64)[0]
    assert chance.mean_pck()[1] < 0.5


def test_run_spair_teacher_baseline_and_skip(spair_root, tmp_path):
    teacher = DinoTeacherConfig(
        random_init=True, arch={"embed_dim": 24, "depth": 2, "num_heads": 2, "patch_size": 8}, layer=1, input_size=32
    )
    cfg = SpairConfig(
        data=spair_root, teacher=teacher, output_dir=tmp_path / "out", image_size=32, num_pairs=3, device="cpu"
    )
    paths = run_spair(cfg)
    out = json.loads(paths["json"].read_text())
    (m,) = out["methods"]
    assert m["name"] == "teacher" and m["pairs"] == 3 and len(m["pck_per_pair_mean"]) == 3
    assert all(0.0 <= v <= 1.0 for v in m["pck_per_pair_mean"])
    assert m["per_category"]["chair"]["pairs"] == 3
    assert "PCK@0.1" in paths["table"].read_text()
    # a second run keeps the first result and writes a numbered one; --overwrite replaces it
    first = paths["json"].read_bytes()
    again = run_spair(dataclasses.replace(cfg, num_pairs=2))
    assert again["json"].name == "keypoints_spair_test-2.json" and paths["json"].read_bytes() == first
    assert json.loads(again["json"].read_text())["num_pairs"] == 2
    replaced = run_spair(dataclasses.replace(cfg, num_pairs=1, overwrite=True))
    assert replaced["json"] == paths["json"] and json.loads(paths["json"].read_text())["num_pairs"] == 1
    # unavailable weights: the baseline is skipped with its reason, and nothing else to run is an error
    missing = SpairConfig(
        data=spair_root, teacher=DinoTeacherConfig(weights=tmp_path / "nope.pth"), output_dir=tmp_path / "o2"
    )
    with pytest.raises(ValueError, match="nothing to evaluate.*nope.pth"):
        run_spair(missing)


def test_pck_uses_target_bbox_scale(spair_root):
    pairs = read_pairs(spair_root, limit=1)
    p = pairs[0]
    res = evaluate_spair(spair_root, pairs, {"oracle": _oracle(spair_root, 64, 0.1)}, size=64, alphas=(1e-6, 10.0))[0]
    row = res.per_pair[0]
    scale = max(p.trg_bbox[2] - p.trg_bbox[0], p.trg_bbox[3] - p.trg_bbox[1])
    expected = [float(np.mean(np.array(row["distances"]) < a * scale)) for a in (1e-6, 10.0)]
    assert row["pck"] == pytest.approx(expected) and row["pck"][1] == 1.0
    assert not math.isnan(row["pck"][0])
