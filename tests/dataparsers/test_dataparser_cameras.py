"""Camera conversion: nerfstudio rays hit the 3D points the authors' pixel convention says they hit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from featurenerf_ns.dataparsers.featurenerf_dataparser import FeatureNeRFDataParserConfig
from featurenerf_ns.dataparsers.srn_dataparser import SRNDataParserConfig
from featurenerf_ns.geometry import focal_from_fov
from tests.dataparsers.dataparser_fixtures import SYNSET, make_authors_layout, make_srn_layout

FOV = 0.6911112070083618
PIXELS = [(0, 0), (5, 27), (16, 16), (31, 2), (20, 9)]  # (col i, row j) of the 32-px images


def point_on_pixel(c2w_opencv: np.ndarray, f: float, c: tuple[float, float], u: float, v: float, depth: float):
    """World point at ``depth`` whose pinhole projection ``u = f X/Z + cx`` is ``(u, v)``."""
    cam = np.array([(u - c[0]) / f * depth, (v - c[1]) / f * depth, depth, 1.0])
    return (c2w_opencv @ cam)[:3]


def ray_distance(cameras, index: int, row_col_ns: tuple[float, float], point: np.ndarray) -> float:
    """Distance from ``point`` to the ray nerfstudio casts through image point ``(y, x) = row_col_ns``."""
    coords = torch.tensor([row_col_ns], dtype=torch.float32)
    bundle = cameras.generate_rays(camera_indices=index, coords=coords)
    o = bundle.origins[0].double().numpy()
    d = bundle.directions[0].double().numpy()
    w = point - o
    return float(np.linalg.norm(w - (w @ d) * d))


def object_poses(root: Path, obj_id: str) -> list[np.ndarray]:
    frames = json.loads((root / "camera" / SYNSET / f"{obj_id}.json").read_text())["frames"]
    return [np.asarray(f["transform_matrix"]) for f in frames]


@pytest.mark.parametrize("image_size", [None, 16, 64])
@pytest.mark.parametrize("convention", ["authors", "centers"])
def test_rays_follow_pixel_convention(tmp_path: Path, convention: str, image_size):
    root = make_authors_layout(tmp_path / "d")
    out = (
        FeatureNeRFDataParserConfig(data=root / "chair", pixel_convention=convention, image_size=image_size)
        .setup()
        .get_dataparser_outputs("train")
    )
    cams = out.cameras
    size = image_size or 32
    assert out.metadata["image_size"] == (size, size) and out.metadata["native_image_size"] == (32, 32)
    assert int(cams.width[0]) == size and int(cams.height[0]) == size
    f = focal_from_fov(FOV, size)  # the authors scale focal and centre with the image
    record = out.metadata["objects"][1]
    for view, c2w in enumerate(object_poses(root, record.obj_id)):
        k = record.camera_index(view)
        for i, j in PIXELS:
            i, j = i * size // 32, j * size // 32
            if convention == "authors":
                # pixelNeRF: pixel (row j, col i) is image point (i, j), principal point (W/2, H/2).
                x = point_on_pixel(c2w, f, (size / 2, size / 2), i, j, depth=1.2)
            else:
                # pixel centres: pixel (row j, col i) is image point (i + 0.5, j + 0.5).
                x = point_on_pixel(c2w, f, (size / 2, size / 2), i + 0.5, j + 0.5, depth=1.2)
            # nerfstudio's own pixel (j, i) is cast through its centre (j + 0.5, i + 0.5).
            assert ray_distance(cams, k, (j + 0.5, i + 0.5), x) < 1e-5
            # and not through a neighbouring point half a pixel away
            x_off = point_on_pixel(c2w, f, (size / 2, size / 2), i + 0.5, j + 0.5, depth=1.2)
            if convention == "authors":
                assert ray_distance(cams, k, (j + 0.5, i + 0.5), x_off) > 0.1 / f


def test_camera_looks_down_minus_z_in_opengl(tmp_path: Path):
    root = make_authors_layout(tmp_path / "d")
    cams = FeatureNeRFDataParserConfig(data=root / "chair").setup().get_dataparser_outputs("train").cameras
    c2w = object_poses(root, "obj_a")[0]
    # The OpenCV forward axis (+z) is nerfstudio's -z axis; origins agree.
    assert torch.allclose(cams.camera_to_worlds[0, :, 2], -torch.tensor(c2w[:3, 2], dtype=torch.float32), atol=1e-6)
    assert torch.allclose(cams.camera_to_worlds[0, :, 1], -torch.tensor(c2w[:3, 1], dtype=torch.float32), atol=1e-6)
    assert torch.allclose(cams.camera_to_worlds[0, :, 3], torch.tensor(c2w[:3, 3], dtype=torch.float32), atol=1e-6)
    # The optical axis (through the origin the cameras look at) is the authors' image point (16, 16),
    # i.e. nerfstudio's (16.5, 16.5) with the default 'authors' convention.
    assert ray_distance(cams, 0, (16.5, 16.5), np.zeros(3)) < 1e-5
    assert ray_distance(cams, 0, (16.0, 16.0), np.zeros(3)) > 1e-2


@pytest.mark.parametrize("convention", ["authors", "centers"])
def test_srn_rays_follow_pixel_convention(tmp_path: Path, convention: str):
    root = make_srn_layout(tmp_path / "srn", focal=40.0)
    out = SRNDataParserConfig(data=root / "cars", pixel_convention=convention, image_size=16).setup()
    cams = out.get_dataparser_outputs("train").cameras
    pose = np.loadtxt(root / "cars_train" / "c1" / "pose" / "000001.txt").reshape(4, 4)
    f, c = 40.0 / 2, 16.0 / 2
    for i, j in PIXELS:
        i, j = i // 2, j // 2
        shift = 0.0 if convention == "authors" else 0.5
        x = point_on_pixel(pose, f, (c, c), i + shift, j + shift, depth=1.0)
        assert ray_distance(cams, 1, (j + 0.5, i + 0.5), x) < 1e-5
