import json

import numpy as np
import pytest

from featurenerf_ns.transfer.data import CategoryData, random_pairs, resolve_data_path, split_pairs
from featurenerf_ns.utils.io import DataError


def test_resolve_data_path(toy_root):
    root = toy_root / "data"
    assert resolve_data_path(root / "chair")[0] == root
    assert resolve_data_path(root / "03001627")[1].name == "chair"
    assert resolve_data_path(root)[1].name == "chair"  # one category under img/
    assert resolve_data_path(root, "chair")[0] == root
    with pytest.raises(DataError, match="nowhere"):
        resolve_data_path(root.parent / "nowhere" / "chair")
    with pytest.raises(DataError, match="unknown category"):
        resolve_data_path(root / "sofa")


def test_annotation_errors_name_the_file(toy_root, tmp_path):
    data = CategoryData(toy_root / "data", "chair")
    obj = data.objects()[0]
    bad = CategoryData(tmp_path, "chair", split_file=data.split_path)
    path = bad.layout.kp_3d(obj)
    path.parent.mkdir(parents=True)
    np.savez(path, labels=np.zeros((3, 2)), pts=np.zeros((5, 3)))
    with pytest.raises(DataError, match="x, y, z, id") as e:
        bad.kp_3d(obj)
    assert e.value.path == path
    path = bad.layout.part_2d(obj)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="readable"):
        bad.part_2d(obj)
    with pytest.raises(DataError, match="not found"):
        bad.part_3d(obj)
    path = bad.layout.kp_2d(obj)
    path.parent.mkdir(parents=True)
    np.savez(path, other=np.zeros(3))
    with pytest.raises(DataError, match="missing array"):
        bad.kp_2d(obj)


def test_split_errors(toy_root, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"test": ["a"], "cross_inst_pairs": [{"src": "a"}]}))
    data = CategoryData(toy_root / "data", "chair", split_file=split)
    with pytest.raises(DataError, match="malformed cross_inst_pairs"):
        split_pairs(data, "cross-instance")
    with pytest.raises(DataError, match="cross_view_pairs"):
        split_pairs(data, "novel-view")
    with pytest.raises(DataError, match="two objects"):
        random_pairs(data, "cross-instance", 3)
