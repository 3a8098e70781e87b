import json

import numpy as np
import pytest

from featurenerf_ns.transfer.annotations import (
    load_obj,
    partnet_leaf_labels,
    read_keypointnet,
    read_labels,
    read_partnet_level1,
    read_partnet_level_names,
    read_partnet_merging,
    read_points,
    read_shapenet_part,
)
from featurenerf_ns.utils.io import DataError
from tests.transfer.annotation_readers import (
    read_partnet_sem_seg_h5,
    read_shapenet_part_split,
    read_synsetoffset2category,
)

OBJ = """# a unit square (a quad, fan-triangulated) and a triangle above it
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
v 0 0 1
vt 0 0
f 1/1 2/1 3/1 4/1
f 5 2 -2
"""


@pytest.fixture()
def obj_path(tmp_path):
    p = tmp_path / "model_normalized.obj"
    p.write_text(OBJ)
    return p


def test_load_obj_keeps_file_order_and_fans_polygons(obj_path):
    v, f = load_obj(obj_path)
    assert v.shape == (5, 3)
    assert f.tolist() == [[0, 1, 2], [0, 2, 3], [4, 1, 3]]


def test_load_obj_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0\nf 1 2 3\n")
    with pytest.raises(DataError, match="bad.obj"):
        load_obj(bad)
    bad.write_text("v 0 0 0\nf 1 2 9\n")
    with pytest.raises(DataError, match="outside"):
        load_obj(bad)
    with pytest.raises(DataError, match="not found"):
        load_obj(tmp_path / "missing.obj")


def _kpnet(tmp_path, keypoints):
    p = tmp_path / "chair.json"
    p.write_text(json.dumps([{"class_id": "03001627", "model_id": "m1", "keypoints": keypoints}]))
    return p


def test_keypointnet_barycentric_mesh_points(tmp_path, obj_path):
    kps = [
        {"xyz": [9, 9, 9], "semantic_id": 4, "mesh_info": {"face_index": 1, "face_uv": [0.2, 0.3, 0.5]}},
        {"xyz": [8, 8, 8], "semantic_id": 0, "mesh_info": {"face_index": 2, "face_uv": [1.0, 0.0, 0.0]}},
    ]
    path = _kpnet(tmp_path, kps)
    out = read_keypointnet(path, mesh_for=lambda m: load_obj(obj_path))
    m = out["m1"]
    # face 1 = vertices (0,0,0), (1,1,0), (0,1,0)
    np.testing.assert_allclose(m.points, [[0.3, 0.8, 0.0], [0.0, 0.0, 1.0]])
    assert m.semantic_ids.tolist() == [4, 0]
    np.testing.assert_allclose(m.labels[:, 3], [4, 0])
    # without a mesh the stored xyz is used
    np.testing.assert_allclose(read_keypointnet(path)["m1"].points, [[9, 9, 9], [8, 8, 8]])
    assert read_keypointnet(path, model_ids=["other"]) == {}


@pytest.mark.parametrize(
    "kp, match",
    [
        ({"xyz": [0, 0, 0]}, "semantic_id"),
        ({"semantic_id": 1, "mesh_info": {"face_index": 7, "face_uv": [1, 0, 0]}}, "face_index 7"),
        ({"semantic_id": 1, "mesh_info": {"face_index": 0, "face_uv": [1, 0]}}, "3 weights"),
    ],
)
def test_keypointnet_malformed_raises_naming_the_file(tmp_path, obj_path, kp, match):
    path = _kpnet(tmp_path, [kp])
    with pytest.raises(DataError, match=match) as e:
        read_keypointnet(path, mesh_for=lambda m: load_obj(obj_path))
    assert e.value.path == path
    path.write_text("{}")
    with pytest.raises(DataError, match="list"):
        read_keypointnet(path)


def test_shapenet_part_files(tmp_path):
    root = tmp_path / "shapenetcore_partanno_segmentation_benchmark_v0"
    (root / "03001627" / "points").mkdir(parents=True)
    (root / "03001627" / "points_label").mkdir(parents=True)
    (root / "synsetoffset2category.txt").write_text("Airplane\t02691156\nChair\t03001627\n")
    (root / "03001627" / "points" / "abc.pts").write_text("0 0 0\n0.5 0.1 -0.2\n1 1 1\n")
    (root / "03001627" / "points_label" / "abc.seg").write_text("1\n2\n2\n")
    (root / "train_test_split").mkdir()
    split = root / "train_test_split" / "shuffled_test_file_list.json"
    split.write_text(json.dumps(["shape_data/03001627/abc", "shape_data/02691156/xyz"]))
    assert read_synsetoffset2category(root / "synsetoffset2category.txt") == {
        "Airplane": "02691156",
        "Chair": "03001627",
    }
    assert read_shapenet_part_split(split) == [("03001627", "abc"), ("02691156", "xyz")]
    pts, labels = read_shapenet_part(root, "03001627", "abc")
    np.testing.assert_allclose(pts[1], [0.5, 0.1, -0.2])
    assert labels.tolist() == [1, 2, 2]
    (root / "03001627" / "points_label" / "abc.seg").write_text("1\n2\n")
    with pytest.raises(DataError, match="abc.seg"):
        read_shapenet_part(root, "03001627", "abc")
    (root / "03001627" / "points_label" / "abc.seg").write_text("1\n2.5\n3\n")
    with pytest.raises(DataError, match="integer"):
        read_shapenet_part(root, "03001627", "abc")
    (root / "03001627" / "points" / "abc.pts").write_text("0 0\n")
    with pytest.raises(DataError, match="abc.pts"):
        read_points(root / "03001627" / "points" / "abc.pts")
    (root / "synsetoffset2category.txt").write_text("Chair\n")
    with pytest.raises(DataError, match="synsetoffset2category"):
        read_synsetoffset2category(root / "synsetoffset2category.txt")
    split.write_text(json.dumps(["03001627/abc"]))
    with pytest.raises(DataError, match="shape_data"):
        read_shapenet_part_split(split)


TREE = [
    {
        "name": "chair",
        "id": 0,
        "children": [
            {"name": "chair_back", "id": 1, "children": [{"name": "back_surface", "id": 4, "objs": ["a"]}]},
            {"name": "chair_seat", "id": 2, "objs": ["b"]},
            {"name": "chair_base", "id": 3, "children": [{"name": "leg", "id": 5, "objs": ["c"]},
                                                          {"name": "leg", "id": 6, "objs": ["d"]}]},
            {"name": "footrest", "id": 7, "objs": ["e"]},
        ],
    }
]  # fmt: skip


def _partnet(tmp_path):
    anno = tmp_path / "data" / "1234"
    (anno / "point_sample").mkdir(parents=True)
    (anno / "result.json").write_text(json.dumps(TREE))
    (anno / "meta.json").write_text(json.dumps({"model_id": "abc", "model_cat": "Chair"}))
    (anno / "point_sample" / "pts-10000.txt").write_text("0 0 0\n1 0 0\n2 0 0\n3 0 0\n4 0 0\n")
    (anno / "point_sample" / "label-10000.txt").write_text("4\n2\n5\n6\n7\n")
    names = tmp_path / "Chair-level-1.txt"
    names.write_text("1 chair/chair_head\n2 chair/chair_back\n3 chair/chair_seat\n4 chair/chair_base\n")
    return anno, names


def test_partnet_level1_labels(tmp_path):
    anno, names = _partnet(tmp_path)
    level = read_partnet_level_names(names)
    assert level["chair/chair_base"] == 4
    pts, labels = read_partnet_level1(anno, level)
    assert pts.shape == (5, 3)
    assert labels.tolist() == [2, 3, 4, 4, 0]  # the footrest is no level-1 part
    merging = tmp_path / "merge.txt"
    merging.write_text("chair/footrest chair/chair_base\n")
    _, labels = read_partnet_level1(anno, level, read_partnet_merging(merging))
    assert labels.tolist() == [2, 3, 4, 4, 4]
    assert partnet_leaf_labels(TREE, level)[5] == 4
    (anno / "point_sample" / "label-10000.txt").write_text("4\n2\n5\n6\n99\n")
    with pytest.raises(DataError, match="label-10000.txt"):
        read_partnet_level1(anno, level)
    (anno / "result.json").write_text(json.dumps([{"id": 0}]))
    with pytest.raises(DataError, match="result.json"):
        read_partnet_level1(anno, level)
    names.write_text("chair/chair_back 1\n")
    with pytest.raises(DataError, match="Chair-level-1.txt"):
        read_partnet_level_names(names)


def test_partnet_sem_seg_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "test-00.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3))
        f.create_dataset("label_seg", data=np.array([[0, 1, 2, 2], [1, 1, 3, 0]]))
    path.with_suffix(".json").write_text(json.dumps([{"anno_id": "1"}, {"anno_id": "2"}]))
    pts, labels, records = read_partnet_sem_seg_h5(path)
    assert pts.shape == (2, 4, 3) and labels.tolist() == [[0, 1, 2, 2], [1, 1, 3, 0]]
    assert records[1]["anno_id"] == "2"
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("pts", data=np.zeros((1, 2, 3)))
    with pytest.raises(DataError, match="label_seg"):
        read_partnet_sem_seg_h5(bad)
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="junk.h5"):
        read_partnet_sem_seg_h5(tmp_path / "junk.h5")


def test_read_labels_rejects_several_columns(tmp_path):
    p = tmp_path / "x.seg"
    p.write_text("1 2\n")
    with pytest.raises(DataError, match="x.seg"):
        read_labels(p)
