"""The layout's one reader: values as written, and a one-line DataError naming the file for each bad file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from featurenerf_ns.layout import (
    CategoryLayout,
    find_split_file,
    list_images,
    read_camera_json,
    read_kp_2d,
    read_kp_3d,
    read_part_2d,
    read_part_3d,
    read_split_file,
    require_split_file,
    split_object_ids,
)
from featurenerf_ns.utils.io import DataError

SYNSET = "03001627"


def _error(path: Path, call, match: str) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        call()
    assert info.value.path == Path(path) and "\n" not in str(info.value)
    return info.value


def _pose(t: float) -> list[list[float]]:
    m = np.eye(4)
    m[:3, 3] = (0.0, 0.0, t)
    return m.tolist()


def _camera(tmp_path: Path, cams) -> Path:
    path = tmp_path / "cam.json"
    path.write_text(json.dumps(cams))
    return path


# ------------------------------------------------------------------------------------------------- splits
def test_split_file_resolution(tmp_path: Path):
    layout = CategoryLayout(tmp_path, SYNSET)
    ours, authors = layout.split_file_candidates()
    assert find_split_file(layout) is None
    _error(ours, lambda: require_split_file(layout), r"split file not found \(nor .*assets/splits.*--splits-file")
    authors.parent.mkdir(parents=True)
    authors.write_text("{}")
    assert find_split_file(layout) == require_split_file(layout) == authors
    ours.parent.mkdir(parents=True)
    ours.mkdir()  # a folder where the file belongs is chosen, so reading it says what is wrong
    assert find_split_file(layout) == ours
    _error(ours, lambda: read_split_file(ours), "is a folder")
    explicit = tmp_path / "mine.json"
    _error(explicit, lambda: find_split_file(layout, explicit), "split file not found")
    explicit.write_text("{}")
    assert find_split_file(layout, explicit) == require_split_file(layout, str(explicit)) == explicit


def test_split_file_content(tmp_path: Path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"train": ["a", "b"], "val": "c", "test": [1]}))
    splits = read_split_file(path)
    assert split_object_ids(path, splits, "train") == ["a", "b"]
    _error(path, lambda: split_object_ids(path, splits, "val"), "expected a list of object ids under 'val'")
    _error(path, lambda: split_object_ids(path, splits, "test"), "expected a list of object ids under 'test'")
    _error(path, lambda: split_object_ids(path, {"train": []}, "test"), r"no 'test' list \(keys: \['train'\]\)")
    path.write_text("[]")
    _error(path, lambda: read_split_file(path), "expected a JSON object")
    path.write_text("{")
    _error(path, lambda: read_split_file(path), "not valid JSON")


# ------------------------------------------------------------------------------------------------- images
def test_list_images(tmp_path: Path):
    for name in ("010.png", "002.JPG", "001.jpeg", ".000.png", "notes.txt", "003.png.bak"):
        (tmp_path / name).write_bytes(b"")
    assert list_images(tmp_path) == ["001.jpeg", "002.JPG", "010.png"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert list_images(empty) == []
    _error(empty, lambda: list_images(empty, nonempty=True), "no images")
    _error(tmp_path / "nope", lambda: list_images(tmp_path / "nope"), "image folder not found")
    _error(tmp_path / "010.png", lambda: list_images(tmp_path / "010.png"), "found a file")


# ------------------------------------------------------------------------------------------------- cameras
def test_camera_json_values(tmp_path: Path):
    frames = [{"file_path": "./000", "transform_matrix": _pose(1.5)}, {"transform_matrix": _pose(2.0)}]
    cams = read_camera_json(_camera(tmp_path, {"camera_angle_x": 0.6911, "frames": frames}))
    assert cams.camera_angle_x == pytest.approx(0.6911) and cams.file_paths == ["./000", None]
    assert cams.c2w.dtype == np.float64 and cams.c2w.shape == (2, 4, 4) and cams.c2w[1, 2, 3] == 2.0
    assert np.isnan(cams.intrinsics).all() and cams.intrinsics.shape == (2, 4)
    # a CO3D cache: no shared field of view, intrinsics per frame
    frames = [{"file_path": "000001.png", "transform_matrix": _pose(1.0), "intrinsics": [30.0, 31.0, 15.5, 16.5]}]
    cams = read_camera_json(_camera(tmp_path, {"frames": frames}))
    assert cams.camera_angle_x is None and cams.intrinsics.tolist() == [[30.0, 31.0, 15.5, 16.5]]


@pytest.mark.parametrize(
    ("cams", "match"),
    [
        ({"camera_angle_x": 0.6, "frames": [{"file_path": "000.png"}]}, "expected 'frames' with 'transform_matrix'"),
        ({"camera_angle_x": 0.6, "frames": {}}, "'frames' is not a list"),
        ({"camera_angle_x": 0.6, "frames": []}, "has no frames"),
        ({"camera_angle_x": 0.6, "frames": [{"transform_matrix": np.eye(3).tolist()}]}, "must be 4x4"),
        ({"camera_angle_x": 0.6, "frames": [{"transform_matrix": _pose(math.nan)}]}, "of frame 0 is not finite"),
        ({"camera_angle_x": "wide", "frames": [{"transform_matrix": _pose(1)}]}, "must be a number, got 'wide'"),
        ({"camera_angle_x": 4.0, "frames": [{"transform_matrix": _pose(1)}]}, r"must be in \(0, pi\), got 4.0"),
        ({"frames": [{"transform_matrix": _pose(1)}]}, "frame 0 has no 'intrinsics' and the file has no"),
        ({"frames": [{"transform_matrix": _pose(1), "intrinsics": [1, 2]}]}, r"'intrinsics' must be \[fx, fy, cx"),
        ({"frames": [{"transform_matrix": _pose(1), "intrinsics": [1, 2, 3, "x"]}]}, r"'intrinsics' must be"),
        ({"frames": [{"transform_matrix": _pose(1), "intrinsics": [1, 2, 3, math.inf]}]}, "intrinsics of frame 0"),
    ],
)
def test_camera_json_errors(tmp_path: Path, cams: dict, match: str):
    path = _camera(tmp_path, cams)
    _error(path, lambda: read_camera_json(path), match)


# ------------------------------------------------------------------------------------------------- annotations
def test_annotation_values(tmp_path: Path):
    kp2 = np.empty(3, dtype=object)
    kp2[:] = [np.array([[1, 2, 0], [3, 4, 5]]), np.zeros((0,)), np.array([7.5, 8.5, 2.0])]
    np.savez(tmp_path / "kp2.npz", labels=kp2)
    views = read_kp_2d(tmp_path / "kp2.npz")
    assert [v.shape for v in views] == [(2, 3), (0, 3), (1, 3)] and all(v.dtype == np.float64 for v in views)
    assert views[0][1].tolist() == [3, 4, 5] and views[2].tolist() == [[7.5, 8.5, 2.0]]

    np.savez(tmp_path / "kp3.npz", labels=np.array([[0.1, 0.2, 0.3, 4]], np.float32), pts=np.ones((5, 3), np.int32))
    labels, pts = read_kp_3d(tmp_path / "kp3.npz")
    assert labels.dtype == pts.dtype == np.float64 and labels[0, 3] == 4 and pts.shape == (5, 3)

    np.savez(tmp_path / "p2.npz", labels=np.arange(12, dtype=np.uint8).reshape(1, 3, 4))
    part = read_part_2d(tmp_path / "p2.npz")
    assert part.dtype == np.int64 and part.tolist() == np.arange(12).reshape(1, 3, 4).tolist()

    np.savez(tmp_path / "p3.npz", pts=np.zeros((4, 3), np.float32), labels=np.array([[1], [2], [2], [3]], np.int8))
    pts, labels = read_part_3d(tmp_path / "p3.npz")
    assert pts.dtype == np.float64 and labels.dtype == np.int64 and labels.tolist() == [1, 2, 2, 3]


def _bad_kp_2d(path: Path) -> None:
    labels = np.empty(2, dtype=object)
    labels[:] = [np.zeros((1, 3)), np.zeros((2, 2))]
    np.savez(path, labels=labels)


@pytest.mark.parametrize(
    ("reader", "write", "match"),
    [
        (read_kp_2d, _bad_kp_2d, r"view 1: keypoints must be \(K, 3\) \[x, y, id\], got \(2, 2\)"),
        (read_kp_2d, lambda p: np.savez(p, labels=np.array(3.0)), "one keypoint array per view"),
        (read_kp_3d, lambda p: np.savez(p, labels=np.zeros((3, 2)), pts=np.zeros((5, 3))), r"\[x, y, z, id\]"),
        (read_kp_3d, lambda p: np.savez(p, labels=np.zeros((3, 4)), pts=np.zeros((0, 3))), "candidate points"),
        (read_kp_3d, lambda p: np.savez(p, labels=np.zeros((3, 4))), r"missing array\(s\) \['pts'\]"),
        (read_part_2d, lambda p: np.savez(p, labels=np.zeros((4, 4), int)), r"'labels' must be \(NV, H, W\)"),
        (read_part_2d, lambda p: np.savez(p, labels=np.zeros((1, 4, 4))), "integer part labels, got float64"),
        (read_part_2d, lambda p: p.write_bytes(b"not a zip"), "not a readable .npz file"),
        (read_part_3d, lambda p: np.savez(p, pts=np.zeros((4, 3)), labels=np.zeros(3)), "disagree"),
        (read_part_3d, lambda p: None, "annotation file not found"),
    ],
)
def test_annotation_errors(tmp_path: Path, reader, write, match: str):
    path = tmp_path / "a.npz"
    write(path)
    _error(path, lambda: reader(path), match)
