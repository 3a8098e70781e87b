"""A toy box-chair category in the authors' layout, built once per test session (6 objects x 4 views x 48 px)."""

from __future__ import annotations

import pytest

from featurenerf_ns.transfer.data import CategoryData
from tests.transfer.toy import build_toy_category


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    build_toy_category(root / "data", num_objects=6, num_views=4, image_size=48, num_pairs=12, mesh_dir=root / "meshes")
    return root


@pytest.fixture()
def toy_data(toy_root) -> CategoryData:
    return CategoryData(toy_root / "data", "chair")
