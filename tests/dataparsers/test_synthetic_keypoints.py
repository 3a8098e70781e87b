"""End to end with the synthetic generator: its 3D keypoints, projected through the nerfstudio
cameras this dataparser builds, land on its 2D keypoints (authors' pixel convention)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featurenerf_ns.dataparsers.featurenerf_dataparser import FeatureNeRFDataParserConfig


def project(cameras, k: int, points: np.ndarray) -> np.ndarray:
    """nerfstudio image coordinates ``(x, y)`` (pixel centres at +0.5) of world points in camera ``k``."""
    c2w = cameras.camera_to_worlds[k].double().numpy()
    p = (points - c2w[:, 3]) @ c2w[:, :3]  # OpenGL camera frame: looks down -z, y up
    x = cameras.cx[k].item() + cameras.fx[k].item() * p[:, 0] / -p[:, 2]
    y = cameras.cy[k].item() + cameras.fy[k].item() * p[:, 1] / p[:, 2]
    return np.stack([x, y], axis=-1)


@pytest.mark.slow
def test_generated_keypoints_project_onto_2d_annotations(tmp_path: Path):
    parser = FeatureNeRFDataParserConfig(data=tmp_path / "synthetic" / "chair", synthetic_objects=4).setup()
    out = parser.get_dataparser_outputs("train")
    assert out.metadata["teacher_folder"] == "synth_feat_32" and out.metadata["teacher_dim"]
    checked = 0
    for rec in out.metadata["objects"]:
        kp3 = np.load(rec.kp_3d_path, allow_pickle=True)["labels"]
        kp2 = np.load(rec.kp_2d_path, allow_pickle=True)["labels"]
        for view in range(rec.num_views):
            xy = project(out.cameras, rec.camera_index(view), kp3[:, :3])
            for col, row, kp_id in np.asarray(kp2[view]):
                (i,) = np.flatnonzero(kp3[:, 3] == kp_id)
                # authors' column/row = nerfstudio coordinate - 0.5
                assert np.hypot(xy[i, 0] - 0.5 - col, xy[i, 1] - 0.5 - row) < 0.75
                checked += 1
    assert checked > 0
    assert parser.get_dataparser_outputs("test").metadata["objects"]
