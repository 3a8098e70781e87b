import json
import shutil

import numpy as np
import pytest
import trimesh

from featurenerf_ns.geometry import CAMERA_ANGLE_X, MeshRayCaster, focal_from_fov, look_at_opencv, project
from featurenerf_ns.transfer.annotate import AnnotateConfig, bbox_align, part_labels_2d, run, visible_keypoints_2d
from featurenerf_ns.transfer.annotations import load_obj
from featurenerf_ns.transfer.data import CategoryData


def _cube():
    return MeshRayCaster(trimesh.creation.box(extents=(0.4, 0.4, 0.4)))


def test_ray_cast_part_labels_known_answer():
    c2w = look_at_opencv(np.array([0.0, 0.0, 1.3]))
    size = 16
    focal = focal_from_fov(CAMERA_ANGLE_X, size)
    pts = np.array([[0.0, 0.1, 0.2], [0.0, -0.1, 0.2]])  # upper half of the front face: 1, lower: 2
    labels = part_labels_2d(_cube(), c2w, focal, (size, size), pts, np.array([1, 2]))
    half = focal * 0.2 / 1.1  # the front face's half-width in pixels
    cols = np.arange(size)
    inside = np.abs(cols - size / 2) < half  # pixel (row j, col i) is the image point (i, j)
    np.testing.assert_array_equal(labels != 0, inside[:, None] & inside[None, :])
    rows = np.arange(size)
    assert (labels[(rows < size / 2) & inside][:, inside] == 1).all()  # image rows go down, world y up
    assert (labels[(rows > size / 2) & inside][:, inside] == 2).all()


def test_keypoint_visibility_and_projection():
    c2w = look_at_opencv(np.array([0.0, 0.0, 1.3]))
    focal = focal_from_fov(CAMERA_ANGLE_X, 48)
    kps = np.array([[0.0, 0.0, 0.2, 3], [0.0, 0.0, -0.2, 4], [0.1, -0.1, 0.2, 5], [5.0, 0.0, 0.2, 6]])
    vis = visible_keypoints_2d(_cube(), c2w, focal, (48, 48), kps)
    # the back face is hidden, the far-off point projects outside the image
    assert vis[:, 2].tolist() == [3, 5]
    np.testing.assert_array_equal(vis[0, :2], [24, 24])
    uv, z = project(kps[2:3, :3], c2w, focal, (48, 48))
    np.testing.assert_allclose(uv[0], [24 + focal * 0.1 / 1.1, 24 + focal * 0.1 / 1.1])
    assert vis[1, :2].tolist() == np.round(uv[0]).astype(int).tolist()


def test_bbox_align():
    pts = np.random.default_rng(0).uniform(-1, 1, (100, 3))
    target = pts * [0.5, 0.2, 0.3] + [0.1, 0.0, -0.4]
    np.testing.assert_allclose(bbox_align(pts, target), target, atol=1e-12)


def _keypointnet_json(toy_root, data, path):
    entries = []
    for obj in data.objects():
        v, f = load_obj(toy_root / "meshes" / f"{obj}.obj")
        tm = trimesh.Trimesh(v, f, process=False)
        kps, _ = data.kp_3d(obj)
        _, _, tri = trimesh.proximity.closest_point(tm, kps[:, :3])
        bary = trimesh.triangles.points_to_barycentric(tm.triangles[tri], kps[:, :3])
        entries.append({
            "class_id": data.synset, "model_id": obj,
            "keypoints": [{"semantic_id": int(k[3]), "xyz": k[:3].tolist(),
                           "mesh_info": {"face_index": int(t), "face_uv": b.tolist()}}
                          for k, t, b in zip(kps, tri, bary, strict=True)],
        })  # fmt: skip
    path.write_text(json.dumps(entries))


def _shapenet_part(data, root, transform=lambda p: p):
    for obj in data.objects():
        pts, labels = data.part_3d(obj)
        (root / data.synset / "points").mkdir(parents=True, exist_ok=True)
        (root / data.synset / "points_label").mkdir(parents=True, exist_ok=True)
        np.savetxt(root / data.synset / "points" / f"{obj}.pts", transform(pts))
        np.savetxt(root / data.synset / "points_label" / f"{obj}.seg", labels, fmt="%d")


@pytest.mark.parametrize("align", ["none", "bbox"])
def test_annotate_cli_rebuilds_the_processed_annotations(toy_root, toy_data, tmp_path, align):
    root = tmp_path / "data"
    for sub in ("img", "camera"):
        shutil.copytree(toy_root / "data" / sub, root / sub)
    _keypointnet_json(toy_root, toy_data, tmp_path / "chair.json")
    transform = (lambda p: 2.0 * p + 1.0) if align == "bbox" else (lambda p: p)
    _shapenet_part(toy_data, tmp_path / "partseg", transform)
    written = run(
        AnnotateConfig(
            data=root / "chair",
            meshes=toy_root / "meshes",
            keypointnet=tmp_path / "chair.json",
            shapenet_part=tmp_path / "partseg",
            align=align,
        )
    )
    assert len(written) == 6 and all(len(w) == 4 for w in written.values())
    new = CategoryData(root, "chair", split_file=toy_root / "data" / "splits" / "03001627.json")
    for obj in toy_data.objects():
        np.testing.assert_allclose(new.kp_3d(obj)[0], toy_data.kp_3d(obj)[0], atol=1e-5)
        assert new.kp_3d(obj)[1].shape == (2048, 3)
        for v in range(4):
            np.testing.assert_array_equal(new.kp_2d(obj)[v], toy_data.kp_2d(obj)[v])
        agree = np.mean(new.part_2d(obj) == toy_data.part_2d(obj))
        assert agree == 1.0 if align == "none" else agree > 0.99
    assert not list(root.rglob("*.tmp*"))  # atomic writes leave no temporaries


def test_annotate_needs_an_input(toy_root, tmp_path):
    with pytest.raises(ValueError, match="nothing to do"):
        run(AnnotateConfig(data=toy_root / "data" / "chair", meshes=toy_root / "meshes"))


def test_annotate_with_partnet_level1(toy_root, toy_data, tmp_path):
    root = tmp_path / "data"
    for sub in ("img", "camera"):
        shutil.copytree(toy_root / "data" / sub, root / sub)
    names = {1: "chair_back", 2: "chair_seat", 3: "chair_base"}
    level = tmp_path / "Chair-level-1.txt"
    level.write_text("".join(f"{i} chair/{n}\n" for i, n in names.items()))
    for k, obj in enumerate(toy_data.objects()):
        pts, labels = toy_data.part_3d(obj)
        anno = tmp_path / "partnet" / str(1000 + k)
        (anno / "point_sample").mkdir(parents=True)
        tree = [{"name": "chair", "id": 0, "children": [
            {"name": n, "id": 10 * i, "children": [{"name": "piece", "id": 10 * i + 1, "objs": ["x"]}]}
            for i, n in names.items()]}]  # fmt: skip
        (anno / "result.json").write_text(json.dumps(tree))
        (anno / "meta.json").write_text(json.dumps({"model_id": obj, "model_cat": "Chair"}))
        np.savetxt(anno / "point_sample" / "pts-10000.txt", pts)
        np.savetxt(anno / "point_sample" / "label-10000.txt", 10 * labels + 1, fmt="%d")
    written = run(
        AnnotateConfig(
            data=root, category="03001627", meshes=toy_root / "meshes", partnet=tmp_path / "partnet",
            partnet_level_names=level,
        )
    )  # fmt: skip
    assert all(len(w) == 2 for w in written.values())  # parts only
    new = CategoryData(root, "chair", split_file=toy_root / "data" / "splits" / "03001627.json")
    for obj in toy_data.objects():
        np.testing.assert_array_equal(new.part_2d(obj), toy_data.part_2d(obj))
        np.testing.assert_array_equal(new.part_3d(obj)[1], toy_data.part_3d(obj)[1])
    with pytest.raises(ValueError, match="level-names"):
        run(AnnotateConfig(data=root / "chair", meshes=toy_root / "meshes", partnet=tmp_path / "partnet"))
