"""pixelNeRF's SRN layout: splits, chairs' nested train folder, intrinsics, near/far, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from featurenerf_ns.dataparsers.srn_dataparser import SRNDataParserConfig
from featurenerf_ns.utils.io import DataError
from tests.dataparsers.dataparser_fixtures import make_srn_layout


def parse(data: Path, split: str = "train", **kw):
    return SRNDataParserConfig(data=data, **kw).setup().get_dataparser_outputs(split)


def test_cars_records_and_cameras(srn_root: Path):
    out = parse(srn_root / "cars")
    objs = out.metadata["objects"]
    assert [(o.obj_id, o.first_view, o.num_views) for o in objs] == [("c1", 0, 3), ("c2", 3, 3)]
    assert objs[1].image_paths[2] == str(srn_root / "cars_train" / "c2" / "rgb" / "000002.png")
    assert all(o.teacher_path is None and o.kp_2d_path is None and o.mesh_path is None for o in objs)
    md = out.metadata
    assert (md["category"], md["synset"]) == ("car", "02958343")
    assert (md["near"], md["far"]) == (0.8, 1.8)
    assert md["white_background"] is True and md["image_size"] == (32, 32)
    assert md["teacher_folder"] is None and md["split_file"] is None
    assert torch.equal(out.alpha_color, torch.ones(3))
    assert torch.equal(out.cameras.metadata["object_index"].view(-1), torch.tensor([0, 0, 0, 1, 1, 1]))
    assert torch.equal(out.cameras.metadata["view_index"].view(-1), torch.tensor([0, 1, 2, 0, 1, 2]))
    pose = np.loadtxt(srn_root / "cars_train" / "c2" / "pose" / "000001.txt").reshape(4, 4)
    expected = pose @ np.diag([1.0, -1.0, -1.0, 1.0])
    assert np.allclose(out.cameras.camera_to_worlds[4].numpy(), expected[:3], atol=1e-6)
    assert out.cameras.fx[0].item() == 40.0 and out.cameras.cx[0].item() == 16.5


def test_split_named_directly_and_other_splits(srn_root: Path):
    assert [o.obj_id for o in parse(srn_root / "cars_train", "test").metadata["objects"]] == ["c4"]
    assert [o.obj_id for o in parse(srn_root / "cars_val", "val").metadata["objects"]] == ["c3"]
    assert len(parse(srn_root / "cars", max_objects=1).metadata["objects"]) == 1


def test_chairs_nested_train_folder_and_near_far(tmp_path: Path):
    root = make_srn_layout(tmp_path / "srn", name="chairs")
    out = parse(root / "chairs")
    assert out.metadata["objects"][0].image_paths[0].startswith(str(root / "chairs_train" / "chairs_2.0_train"))
    assert (out.metadata["near"], out.metadata["far"]) == (1.25, 2.75)
    assert out.metadata["category"] == "chair"
    assert parse(root / "chairs", "test").metadata["objects"][0].obj_id == "c4"
    assert parse(root / "chairs", near=1.0, far=3.0).metadata["near"] == 1.0


def test_bad_objects_of_pixelnerf_are_skipped(tmp_path: Path):
    bad = "7edb40d76dff7455c2ff7551a4114669"
    root = make_srn_layout(tmp_path / "srn", ids={"train": ["c1", bad], "val": ["c2"], "test": ["c3"]})
    assert [o.obj_id for o in parse(root / "cars").metadata["objects"]] == ["c1"]


def expect_error(path: Path, data: Path, split: str = "train") -> DataError:
    with pytest.raises(DataError) as info:
        parse(data, split)
    assert str(path) in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    return info.value


def test_malformed_pose_file(srn_root: Path):
    pose = srn_root / "cars_train" / "c2" / "pose" / "000001.txt"
    pose.write_text("1 0 0 0\n0 1 0 0\n")
    assert "16 numbers" in str(expect_error(pose, srn_root / "cars"))
    pose.write_text("1 0 0 x " * 4)
    expect_error(pose, srn_root / "cars")


def test_malformed_or_missing_intrinsics(srn_root: Path):
    intr = srn_root / "cars_train" / "c1" / "intrinsics.txt"
    intr.write_text("abc\n")
    expect_error(intr, srn_root / "cars")
    intr.unlink()
    expect_error(intr, srn_root / "cars")


def test_pose_count_differs_from_image_count(srn_root: Path):
    (srn_root / "cars_train" / "c1" / "pose" / "000000.txt").unlink()
    expect_error(srn_root / "cars_train" / "c1" / "pose", srn_root / "cars")


def test_missing_split_folder_and_root(srn_root: Path, tmp_path: Path):
    expect_error(srn_root / "planes_train", srn_root / "planes")
    expect_error(tmp_path / "nowhere", tmp_path / "nowhere" / "cars")


def test_srn_runs_render_and_train_on_white(srn_root: Path):
    """pixelNeRF composites SRN renders on white (white_bkgd): so do our renders, in training and evaluation."""
    from featurenerf_ns.method_configs import _tiny
    from featurenerf_ns.model.rendering import render_rays

    config = _tiny().pipeline
    config.datamanager.dataparser = SRNDataParserConfig(data=srn_root / "cars")
    config.datamanager.bbox_sampling_steps = 0  # rays over whole images, background included
    pipeline = config.setup(device="cpu", test_mode="val")
    model = pipeline.model
    bundle, batch = pipeline.datamanager.next_train(0)
    cond = pipeline._encode(batch)
    origins = bundle.origins.view(len(cond.w2c), -1, 3)
    directions = bundle.directions.view(len(cond.w2c), -1, 3)
    with torch.no_grad():
        ours = model.render_rays(cond, origins, directions, frozenset({"rgb"}), torch.Generator().manual_seed(0))
        near, far = torch.full_like(origins[..., :1], model.near), torch.full_like(origins[..., :1], model.far)
        black = render_rays(
            model.field, cond, origins, directions, near, far, model.sampling, frozenset({"rgb"}),
            torch.Generator().manual_seed(0),
        )  # fmt: skip
    for suffix in ("", "_coarse"):
        acc = black[f"accumulation{suffix}"]
        assert (acc < 0.9).any()
        torch.testing.assert_close(ours[f"rgb{suffix}"], black[f"rgb{suffix}"] + (1 - acc))
    # The ground truth it is trained against is on white too.
    assert (batch["image"] == 1).all(-1).any()
