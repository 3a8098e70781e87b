"""The authors' layout: object records, view indexing, categories, splits, teachers, bad input."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from featurenerf_ns.categories import resolve_category
from featurenerf_ns.dataparsers.featurenerf_dataparser import FeatureNeRFDataParserConfig
from featurenerf_ns.dataparsers.records import ObjectRecord
from featurenerf_ns.geometry import focal_from_fov
from featurenerf_ns.utils.io import DataError
from tests.dataparsers.dataparser_fixtures import SYNSET, make_authors_layout, write_rgba


def parse(data: Path, split: str = "train", **kw):
    return FeatureNeRFDataParserConfig(data=data, **kw).setup().get_dataparser_outputs(split)


def test_records_and_view_indexing(authors_root: Path):
    out = parse(authors_root / "chair")
    objects = out.metadata["objects"]
    assert [o.obj_id for o in objects] == ["obj_a", "obj_b", "obj_c"]
    assert all(isinstance(o, ObjectRecord) for o in objects)
    assert [(o.first_view, o.num_views) for o in objects] == [(0, 3), (3, 3), (6, 3)]
    assert len(out.image_filenames) == 9 and out.cameras.shape == (9,)
    assert out.metadata["objects"][1].camera_index(2) == 5
    assert torch.equal(out.cameras.metadata["object_index"].view(-1), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]))
    assert torch.equal(out.cameras.metadata["view_index"].view(-1), torch.tensor([0, 1, 2] * 3))
    assert out.cameras.metadata["object_index"].dtype == torch.long
    for o in objects:
        assert [str(p) for p in out.image_filenames[o.camera_slice]] == list(o.image_paths)
        assert o.image_paths[0].endswith(f"img/{SYNSET}/{o.obj_id}/000.png")
        assert o.kp_2d_path.endswith(f"kp_2d_anno/{SYNSET}/{o.obj_id}.npz")
        assert o.part_3d_path is not None and o.teacher_path is None and o.mesh_path is None
    md = out.metadata
    assert md["category"] == "chair" and md["synset"] == SYNSET
    assert (md["near"], md["far"]) == (0.8, 1.8)
    assert md["image_size"] == (32, 32) and md["white_background"] is False
    assert md["native_image_size"] == (32, 32)
    assert md["teacher_folder"] is None and md["teacher_dim"] is None
    assert md["data_root"] == str(authors_root)
    assert md["split_file"] == str(authors_root / "splits" / f"{SYNSET}.json")
    assert torch.equal(out.alpha_color, torch.zeros(3))


def test_all_splits_and_max_objects(authors_root: Path):
    parser = FeatureNeRFDataParserConfig(data=authors_root / "chair", max_objects=1).setup()
    assert [o.obj_id for o in parser.get_dataparser_outputs("train").metadata["objects"]] == ["obj_a"]
    assert [o.obj_id for o in parser.get_dataparser_outputs("val").metadata["objects"]] == ["obj_d"]
    assert [o.obj_id for o in parser.get_dataparser_outputs("test").metadata["objects"]] == ["obj_e"]


def test_category_by_synset_and_name(authors_root: Path):
    by_name = parse(authors_root / "chair")
    by_synset = parse(authors_root / SYNSET)
    assert by_synset.metadata["category"] == "chair"
    assert torch.equal(by_name.cameras.camera_to_worlds, by_synset.cameras.camera_to_worlds)


def test_metadata_is_plain_data_and_deep_copyable(authors_root: Path):
    import copy

    out = parse(authors_root / "chair")
    assert copy.deepcopy(out.metadata)["objects"] == out.metadata["objects"]


def test_splits_file_fallback_to_assets(tmp_path: Path):
    root = make_authors_layout(tmp_path / "d", splits_dir="assets/splits")
    out = parse(root / "chair")
    assert out.metadata["split_file"] == str(root / "assets" / "splits" / f"{SYNSET}.json")


def test_explicit_splits_file(authors_root: Path, tmp_path: Path):
    split = tmp_path / "mine.json"
    split.write_text(json.dumps({"train": ["obj_c"], "val": ["obj_d"], "test": ["obj_e"]}))
    out = parse(authors_root / "chair", splits_file=split)
    assert [o.obj_id for o in out.metadata["objects"]] == ["obj_c"]


def test_teacher_auto_prefers_synthetic_and_reads_dim(tmp_path: Path):
    root = make_authors_layout(tmp_path / "d", teachers={"synth_feat_32": 8, "dino_feat_256": 12})
    out = parse(root / "chair")
    assert out.metadata["teacher_folder"] == "synth_feat_32" and out.metadata["teacher_dim"] == 8
    assert out.metadata["objects"][0].teacher_path.endswith(f"synth_feat_32/{SYNSET}/obj_a.npz")
    out = parse(root / "chair", teacher="dino_feat_256")
    assert out.metadata["teacher_folder"] == "dino_feat_256" and out.metadata["teacher_dim"] == 12
    out = parse(root / "chair", teacher="none")
    assert out.metadata["teacher_folder"] is None and out.metadata["objects"][0].teacher_path is None
    with pytest.raises(DataError, match="dino_feat_999"):
        parse(root / "chair", teacher="dino_feat_999")


def test_missing_annotation_gives_none(authors_root: Path):
    (authors_root / "kp_3d_anno" / SYNSET / "obj_b.npz").unlink()
    objs = parse(authors_root / "chair").metadata["objects"]
    assert objs[0].kp_3d_path is not None and objs[1].kp_3d_path is None


def test_frame_intrinsics_override(authors_root: Path):
    cam = authors_root / "camera" / SYNSET / "obj_a.json"
    data = json.loads(cam.read_text())
    data["frames"][1]["intrinsics"] = [30.0, 31.0, 15.0, 17.0]
    cam.write_text(json.dumps(data))
    cams = parse(authors_root / "chair").cameras
    assert cams.fx[1].item() == 30.0 and cams.fy[1].item() == 31.0
    assert cams.cx[1].item() == 15.5 and cams.cy[1].item() == 17.5
    focal = focal_from_fov(0.6911112070083618, 32)
    assert cams.fx[0].item() == pytest.approx(focal) and cams.cx[0].item() == 16.5


def test_synthetic_default_is_generated_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []

    def ensure_default_category(category: str = "chair", num_objects: int = 100, cache_dir=None) -> Path:
        calls.append((category, num_objects, cache_dir))
        root = tmp_path / "generated" if cache_dir is None else Path(cache_dir) / "synthetic"
        return make_authors_layout(root, synset=resolve_category(category).synset)

    fake = types.ModuleType("featurenerf_ns.synthetic.generate")
    fake.ensure_default_category = ensure_default_category
    monkeypatch.setitem(sys.modules, "featurenerf_ns.synthetic.generate", fake)
    monkeypatch.chdir(tmp_path)
    out = FeatureNeRFDataParserConfig(synthetic_objects=7).setup().get_dataparser_outputs("train")
    assert calls == [("chair", 7, None)]
    assert out.metadata["data_root"] == str(tmp_path / "generated")
    # '<dir>/synthetic/<category>' is generated in <dir>/synthetic.
    out = FeatureNeRFDataParserConfig(data=tmp_path / "mine" / "synthetic" / "car").setup()
    assert out.get_dataparser_outputs("test").metadata["data_root"] == str(tmp_path / "mine" / "synthetic")
    assert calls[-1] == ("car", 100, tmp_path / "mine")
    calls.clear()
    # An existing synthetic root with a split file is used as it is.
    make_authors_layout(tmp_path / "synthetic")
    out = FeatureNeRFDataParserConfig().setup().get_dataparser_outputs("train")
    assert calls == [] and out.metadata["data_root"] == "synthetic"


# ------------------------------------------------------------------------------------------ bad input
def expect_error(path: Path, data: Path, split: str = "train", **kw) -> DataError:
    with pytest.raises(DataError) as info:
        parse(data, split, **kw)
    assert str(path) in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    return info.value


def test_missing_data_root_says_what_it_must_hold(tmp_path: Path):
    """The first thing a new user meets (ns-train featurenerf --data shapenet/chair without that folder)."""
    err = expect_error(tmp_path / "shapenet", tmp_path / "shapenet" / "chair")
    for hint in (f"img/{SYNSET}/", f"camera/{SYNSET}/", f"splits/{SYNSET}.json", "--data synthetic/chair"):
        assert hint in str(err), hint


def test_missing_camera_json(authors_root: Path):
    cam = authors_root / "camera" / SYNSET / "obj_b.json"
    cam.unlink()
    expect_error(cam, authors_root / "chair")


def test_malformed_camera_json(authors_root: Path):
    cam = authors_root / "camera" / SYNSET / "obj_b.json"
    cam.write_text("{not json")
    assert "JSON" in str(expect_error(cam, authors_root / "chair"))
    cam.write_text(json.dumps({"camera_angle_x": 0.6, "frames": [{"file_path": "000.png"}] * 3}))
    assert "transform_matrix" in str(expect_error(cam, authors_root / "chair"))


def test_frame_count_differs_from_image_count(authors_root: Path):
    write_rgba(authors_root / "img" / SYNSET / "obj_c" / "003.png")
    err = expect_error(authors_root / "camera" / SYNSET / "obj_c.json", authors_root / "chair")
    assert "3 frames" in str(err) and "4 images" in str(err)


def test_frame_naming_missing_image(authors_root: Path):
    img = authors_root / "img" / SYNSET / "obj_c" / "001.png"
    img.rename(img.with_name("x.png"))
    expect_error(authors_root / "camera" / SYNSET / "obj_c.json", authors_root / "chair")


def test_split_naming_missing_object(authors_root: Path):
    split = authors_root / "splits" / f"{SYNSET}.json"
    split.write_text(json.dumps({"train": ["obj_a", "ghost"], "val": [], "test": []}))
    assert "ghost" in str(expect_error(split, authors_root / "chair"))


def test_unknown_category(authors_root: Path):
    assert "unknown category" in str(expect_error(authors_root / "sofa", authors_root / "sofa"))


def test_missing_data_root(tmp_path: Path):
    expect_error(tmp_path / "nowhere", tmp_path / "nowhere" / "chair")


def test_missing_split_file(authors_root: Path):
    (authors_root / "splits" / f"{SYNSET}.json").unlink()
    expect_error(authors_root / "splits" / f"{SYNSET}.json", authors_root / "chair")
    expect_error(authors_root / "x.json", authors_root / "chair", splits_file=authors_root / "x.json")


def test_malformed_split_file(authors_root: Path):
    split = authors_root / "splits" / f"{SYNSET}.json"
    split.write_text('{"train": "obj_a"}')
    expect_error(split, authors_root / "chair")
    split.write_text("[1, 2")
    expect_error(split, authors_root / "chair")


def test_unreadable_first_image(authors_root: Path):
    img = authors_root / "img" / SYNSET / "obj_a" / "000.png"
    img.write_bytes(b"not a png")
    expect_error(img, authors_root / "chair")


def test_teacher_dim_known_for_split_without_teacher_files(tmp_path: Path):
    root = make_authors_layout(tmp_path / "d", teachers={"dino_feat_256": 6})
    (root / "dino_feat_256" / SYNSET / "obj_d.npz").unlink()
    out = parse(root / "chair", "val")
    assert out.metadata["teacher_folder"] == "dino_feat_256" and out.metadata["teacher_dim"] == 6
    assert out.metadata["objects"][0].teacher_path is None


def test_corrupt_teacher_file(tmp_path: Path):
    root = make_authors_layout(tmp_path / "d", teachers={"dino_feat_256": 6})
    bad = root / "dino_feat_256" / SYNSET / "obj_a.npz"
    bad.write_bytes(b"junk")
    expect_error(bad, root / "chair")


def test_empty_val_falls_back_to_test_but_empty_train_is_an_error(tmp_path: Path):
    root = make_authors_layout(tmp_path / "d", ids={"train": ["a"], "val": [], "test": ["b"]})
    assert [o.obj_id for o in parse(root / "chair", "val").metadata["objects"]] == ["b"]
    root = make_authors_layout(tmp_path / "e", ids={"train": [], "val": ["a"], "test": ["b"]})
    assert "'train' lists no objects" in str(expect_error(root / "splits" / f"{SYNSET}.json", root / "chair"))
