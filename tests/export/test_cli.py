"""featurenerf-export end to end on the session's tiny run (the issue's acceptance check).

The three exports run as real console scripts, side by side (each process pays nerfstudio's import once):
a point cloud of an RGB photo + mask, a labelled mesh of a dataset object, and an orbit of an RGBA photo. What they
write is compared with the truth of the generated data (meshes and 3D part labels) and with trivial predictors.
Bad inputs run in-process through the same entry point: exit status 2, one stderr line, no file written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import trimesh
from PIL import Image
from scipy.spatial import cKDTree

from featurenerf_ns.categories import resolve_category
from featurenerf_ns.layout import read_part_3d

EXE = Path(sys.executable).parent / "featurenerf-export"
NUM_VIEWS = 4
TIMEOUT = 900
PARTS = len(resolve_category("chair").parts)


def _ply(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices, the raw vertex properties and the faces (maybe none) of a PLY, read with trimesh."""
    geometry = trimesh.load(path, process=False)
    raw = geometry.metadata["_ply_raw"]["vertex"]["data"]
    faces = np.asarray(getattr(geometry, "faces", np.zeros((0, 3))))
    return np.asarray(geometry.vertices), raw, faces


@pytest.fixture(scope="module")
def exports(export_data, tmp_path_factory) -> dict[str, Path]:
    """Run pointcloud (RGB photo + mask), mesh (dataset object, labelled) and orbit (RGBA photo, default output
    folder) at once; their output folders."""
    if not EXE.exists():
        pytest.fail("featurenerf-export is not installed (pip install -e .)")
    d = export_data
    out = tmp_path_factory.mktemp("exports")
    common = ["--load-config", str(d.config), "--reference", d.reference]
    runs = {
        "pointcloud": ["pointcloud", *common, "--image", str(d.rgb_photo), "--mask", str(d.mask),
                       "--resolution", "32", "--num-points", "3000", "--output-dir", str(out / "pointcloud")],
        "mesh": ["mesh", *common, "--object", d.source, "--resolution", "32", "--colors", "labels",
                 "--output-dir", str(out / "mesh")],
        "orbit": ["orbit", *common, "--image", str(d.rgba_photo), "--num-views", str(NUM_VIEWS), "--scale", "0.5"],
    }  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = {
        name: subprocess.Popen(
            [str(EXE), *args], cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        for name, args in runs.items()
    }
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, f"{name} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    return {
        "pointcloud": out / "pointcloud",
        "mesh": out / "mesh",
        "orbit": d.config.parent / "exports" / d.rgba_photo.stem,
    }


def _distance_to_mesh(mesh_path: Path, points: np.ndarray) -> np.ndarray:
    return trimesh.proximity.closest_point(trimesh.load(mesh_path, process=False), points)[1]


def test_pointcloud_of_a_photo(export_data, exports):
    folder = exports["pointcloud"]
    points, raw, faces = _ply(folder / "pointcloud.ply")
    assert len(points) == 3000 and len(faces) == 0
    for kind in ("rgb", "pca"):
        colors = np.stack([raw[f"{kind}_{c}"] for c in ("red", "green", "blue")], axis=1).astype(float)
        assert colors.std(0).max() > 5, f"{kind} colours are constant"
    assert np.array_equal(np.stack([raw["red"], raw["green"], raw["blue"]], 1), np.stack(
        [raw["rgb_red"], raw["rgb_green"], raw["rgb_blue"]], 1))  # fmt: skip
    labels = raw["label"].astype(int)
    assert len(np.unique(labels)) > 1 and labels.min() >= 1 and labels.max() <= PARTS
    # The photo is in the canonical camera's frame (the object turned about its centre): the points lie within the
    # object's bounding sphere (95%, a margin for the tiny model's soft surface; a few floaters may stray) and all
    # within the cube the renders sample (half side (far - near) / 2 = 0.5), give or take the one grid cell (1/31 at
    # resolution 32) where a surface cut by the cube closes.
    mesh_path = export_data.data / "mesh" / "03001627" / f"{export_data.source}.ply"
    radius = np.linalg.norm(trimesh.load(mesh_path).vertices, axis=1).max()
    norms = np.linalg.norm(points, axis=1)
    assert np.quantile(norms, 0.95) < 1.25 * radius and np.abs(points).max() <= 0.5 + 1 / 31
    with np.load(folder / "pointcloud.npz") as z:
        assert z["v_nerf"].dtype == np.float16 and z["v_nerf"].shape[0] == 3000 and z["v_nerf"].shape[1] > 3
        assert np.allclose(z["points"], points, atol=1e-6) and np.array_equal(z["labels"], labels)
        assert list(z["part_names"]) == list(resolve_category("chair").parts)
    parts = json.loads((folder / "parts.json").read_text())
    assert parts["reference"] == export_data.reference and parts["labels"]["1"] == "back"


def test_labelled_mesh_of_a_dataset_object(export_data, exports):
    folder = exports["mesh"]
    vertices, raw, faces = _ply(folder / "mesh.ply")
    assert len(vertices) > 0 and len(faces) > 0
    labels = raw["label"].astype(int)
    assert len(np.unique(labels)) > 1 and labels.min() >= 1 and labels.max() <= PARTS
    colors = np.stack([raw["red"], raw["green"], raw["blue"]], axis=1)
    assert len(np.unique(colors, axis=0)) > 1
    # The surface is the object's: much nearer to its true mesh than points drawn in the box the export searched
    # (the cube the renders sample, half side (far - near) / 2 = 0.5), and near it in absolute terms (the object
    # is ~0.6 across).
    mesh_path = export_data.data / "mesh" / "03001627" / f"{export_data.source}.ply"
    random = np.random.default_rng(0).uniform(-0.5, 0.5, size=(2000, 3))
    exported, chance = _distance_to_mesh(mesh_path, vertices).mean(), _distance_to_mesh(mesh_path, random).mean()
    assert exported < 0.4 * chance and exported < 0.1, (exported, chance)
    # Labels transferred from the reference agree with the object's own 3D part labels (nearest labelled point)
    # clearly more than the majority label does.
    pts, truth = read_part_3d(export_data.data / "part_3d_anno" / "03001627" / f"{export_data.source}.npz")
    nearest = truth[cKDTree(pts).query(vertices)[1]]
    accuracy, majority = (labels == nearest).mean(), np.bincount(nearest).max() / len(nearest)
    assert accuracy > majority + 0.1, (accuracy, majority)
    glb = trimesh.load(folder / "mesh.glb")
    (geometry,) = glb.geometry.values()
    assert len(geometry.vertices) > 0 and geometry.visual.kind == "vertex"
    assert len(np.unique(geometry.visual.vertex_colors[:, :3], axis=0)) > 1


def test_orbit_of_a_photo(exports):
    folder = exports["orbit"]
    frames = sorted((folder / "orbit").glob("frame_*.png"))
    assert [f.name for f in frames] == [f"frame_{i:04d}.png" for i in range(NUM_VIEWS)]
    images = [np.asarray(Image.open(f)) for f in frames]
    assert all(im.shape == (16, 3 * 16, 3) for im in images)  # rgb | pca | labels, 16 px each
    for a, b in zip(images, images[1:], strict=False):
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 1
    labels_panel = np.stack(images)[:, :, 32:]
    assert len(np.unique(labels_panel.reshape(-1, 3), axis=0)) > 2  # background and at least two parts
    video = iio.imread(folder / "orbit.mp4", plugin="pyav")
    assert video.shape == (NUM_VIEWS, 16, 48, 3)
    assert not list(folder.glob(".*")), "temporary files left"


# ------------------------------------------------------------------------------------------------ bad inputs


def _fails(args: list[str], capsys, out: Path) -> str:
    """Run the entry point in-process: exit status 2, one error line on stderr, nothing written to ``out``."""
    from featurenerf_ns.export.cli import entrypoint

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        entrypoint([*args, "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not out.exists() or not any(out.rglob("*"))
    return lines[0]


def test_bad_sources_are_one_line(export_data, capsys, tmp_path):
    d = export_data
    base = ["pointcloud", "--load-config", str(d.config), "--resolution", "8"]
    assert "exactly one source" in _fails(base, capsys, tmp_path / "a")
    assert "exactly one source" in _fails([*base, "--image", str(d.rgba_photo), "--object", d.source], capsys,
                                          tmp_path / "b")  # fmt: skip
    assert "no alpha channel" in _fails([*base, "--image", str(d.rgb_photo)], capsys, tmp_path / "c")
    empty = tmp_path / "empty_mask.png"
    Image.fromarray(np.zeros(Image.open(d.mask).size[::-1], dtype=np.uint8)).save(empty)
    assert "mask is empty" in _fails([*base, "--image", str(d.rgb_photo), "--mask", str(empty)], capsys,
                                     tmp_path / "d")  # fmt: skip
    assert "--colors labels needs --reference" in _fails([*base, "--object", d.source, "--colors", "labels"], capsys,
                                                          tmp_path / "e")  # fmt: skip


def test_bad_model_inputs_are_one_line(export_data, capsys, tmp_path):
    d = export_data
    base = ["mesh", "--load-config", str(d.config), "--resolution", "8"]
    camera = tmp_path / "camera.json"
    camera.write_text(json.dumps({"camera_angle_x": 0.7, "transform_matrix": np.eye(4).tolist()}))
    line = _fails([*base, "--image", str(d.rgba_photo), "--camera", str(camera)], capsys, tmp_path / "a")
    assert "aspect ratio" in line
    assert "not in the test split" in _fails([*base, "--object", "no_such_object"], capsys, tmp_path / "b")
    line = _fails([*base, "--object", d.source, "--reference", "no_such_object"], capsys, tmp_path / "c")
    assert "no_such_object" in line


def test_reference_without_parts_is_one_line(export_data, capsys, tmp_path, monkeypatch):
    from featurenerf_ns.model.api import TrainedFeatureNeRF

    record = TrainedFeatureNeRF.record

    def without_parts(self, split, obj_id):
        rec = record(self, split, obj_id)
        if obj_id != export_data.reference:
            return rec
        return dataclasses.replace(rec, part_2d_path=None, part_3d_path=None)

    monkeypatch.setattr(TrainedFeatureNeRF, "record", without_parts)
    args = ["mesh", "--load-config", str(export_data.config), "--object", export_data.source, "--resolution", "8",
            "--reference", export_data.reference]  # fmt: skip
    assert "has no part annotations" in _fails(args, capsys, tmp_path / "out")


def test_model_without_feature_head_refuses_semantics(export_data, capsys, tmp_path, monkeypatch):
    from featurenerf_ns.model.api import TrainedFeatureNeRF

    load = TrainedFeatureNeRF.load.__func__

    def headless(cls, *args, **kwargs):
        tf = load(cls, *args, **kwargs)
        tf.model.feature_dim = 0
        return tf

    monkeypatch.setattr(TrainedFeatureNeRF, "load", classmethod(headless))
    base = ["orbit", "--load-config", str(export_data.config), "--object", export_data.source, "--num-views", "2"]
    assert "no distilled feature head" in _fails([*base, "--panels", "rgb", "pca"], capsys, tmp_path / "a")
    assert "no distilled feature head" in _fails([*base, "--reference", export_data.reference], capsys, tmp_path / "b")
