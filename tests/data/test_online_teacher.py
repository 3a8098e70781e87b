"""The datamanager's online teacher sees the same input as the cache extraction: its targets equal the cached ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from featurenerf_ns.layout import CategoryLayout
from featurenerf_ns.method_configs import _tiny
from featurenerf_ns.synthetic.generate import generate_category
from featurenerf_ns.teachers.cache import extract_category, object_ids
from featurenerf_ns.teachers.dino import DinoTeacherConfig
from tests.teachers.teacher_helpers import TINY_ARCH, tiny_vit_file  # noqa: F401 (fixture)

SYNSET = "03001627"


@pytest.fixture(scope="module")
def coloured_root(tmp_path_factory):
    """A tiny category whose renders keep colour under transparent pixels and have half-transparent edges, as
    anti-aliased renders do: compositing the colour away (or twice) changes the teacher's input."""
    root = tmp_path_factory.mktemp("online")
    generate_category(root, "chair", num_objects=6, num_views=3, image_size=32, num_pairs=2, workers=0, progress=False)
    rng = np.random.default_rng(0)
    for path in sorted((root / "img" / SYNSET).glob("*/*.png")):
        arr = np.asarray(Image.open(path).convert("RGBA")).copy()
        hidden = arr[..., 3] == 0
        arr[hidden, :3] = rng.integers(0, 256, (int(hidden.sum()), 3))
        edge = (arr[..., 3] == 255) & ~np.pad(arr[1:, :, 3] == 255, ((0, 1), (0, 0)), constant_values=False)
        arr[edge, 3] = 128
        Image.fromarray(arr, "RGBA").save(path)
    return root


def _datamanager(root, **overrides):
    cfg = _tiny().pipeline.datamanager
    cfg.dataparser.data = root / "chair"
    cfg.objects_per_batch, cfg.rays_per_object, cfg.target_views_per_object = 2, 64, None
    for k, v in overrides.items():
        setattr(cfg.dataparser if k == "teacher" else cfg, k, v)
    return cfg.setup(device="cpu", test_mode="val")


def test_online_targets_equal_the_cached_ones(coloured_root, tiny_vit_file):  # noqa: F811
    config = DinoTeacherConfig(weights=tiny_vit_file, arch=dict(TINY_ARCH), input_size=32)
    layout = CategoryLayout(coloured_root, SYNSET)
    ids = object_ids(coloured_root / "splits" / f"{SYNSET}.json", "train")
    extract_category(config.setup(category="chair"), layout, ids, "dino_tiny", progress=False)

    cached = _datamanager(coloured_root, teacher="dino_tiny")
    online = _datamanager(coloured_root, teacher="none", online_teacher=config)
    for step in range(3):
        torch.manual_seed(step)
        bundle_c, batch_c = cached.next_train(step)
        torch.manual_seed(step)
        bundle_o, batch_o = online.next_train(step)
        assert torch.equal(batch_c["indices"], batch_o["indices"])  # the same rays
        # The cache stores float16: equal up to its rounding.
        torch.testing.assert_close(batch_o["teacher"], batch_c["teacher"], rtol=2e-3, atol=2e-3)
    # Not vacuous: composited on black (what the online path fed the teacher before), targets differ.
    wrong = _datamanager(coloured_root, teacher="none", online_teacher=DinoTeacherConfig(
        weights=tiny_vit_file, arch=dict(TINY_ARCH), input_size=32, background="black"))  # fmt: skip
    torch.manual_seed(0)
    _, batch_w = wrong.next_train(0)
    torch.manual_seed(0)
    _, batch_c = _datamanager(coloured_root, teacher="dino_tiny").next_train(0)
    assert (batch_w["teacher"] - batch_c["teacher"]).abs().max() > 0.05
