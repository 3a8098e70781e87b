"""The CO3D dataparser on tiny categories in the real format: cameras through crop/resize/normalisation,
the quality filter, the cache, and one-line errors naming the file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from featurenerf_ns.data.images import load_view
from featurenerf_ns.dataparsers import co3d_cache
from featurenerf_ns.dataparsers.co3d import CO3DDataParserConfig
from featurenerf_ns.utils.io import DataError
from tests.dataparsers.co3d_fixtures import (
    MARKER,
    SPHERE_CENTER,
    SPHERE_RADIUS,
    sphere_category,
    sphere_sequence,
    write_category,
)


@pytest.fixture(scope="module")
def sphere_root(tmp_path_factory) -> Path:
    return sphere_category(tmp_path_factory.mktemp("co3d"))


def parser(data: Path, cache: Path, **kw):
    return CO3DDataParserConfig(data=data, cache_dir=cache, progress=False, **kw).setup()


def _normalise(cam_json: dict, X: np.ndarray) -> np.ndarray:
    n = cam_json["co3d"]["normalisation"]
    return n["scale"] * np.asarray(n["rotation"]) @ (X - np.asarray(n["center"]))


def _project_ns(cameras, i: int, X: np.ndarray) -> np.ndarray:
    """Continuous pixel (nerfstudio convention: pixel i centred at i + 0.5) of world point X."""
    c2w = cameras.camera_to_worlds[i].double().numpy()
    p = c2w[:3, :3].T @ (X - c2w[:3, 3])
    x, y, z = p[0], -p[1], -p[2]  # OpenGL -> OpenCV
    return np.array(
        [
            cameras.fx[i, 0].item() * x / z + cameras.cx[i, 0].item(),
            cameras.fy[i, 0].item() * y / z + cameras.cy[i, 0].item(),
        ]
    )


def _marker_centroid(rgba: np.ndarray) -> np.ndarray:
    # the marker blends red 255 into the disc's 20 (see sphere_sequence): weight = (R - 20) / 235
    red = np.clip((rgba[..., 0] * 255 - 20) / 235, 0, None) * (rgba[..., 3] > 0.5)
    assert red.sum() > 0, "marker not visible"
    jj, ii = np.indices(red.shape)
    return np.array([(red * (ii + 0.5)).sum(), (red * (jj + 0.5)).sum()]) / red.sum()


@pytest.mark.parametrize("image_size,tol", [(None, 0.75), (64, 0.5)])
def test_marker_projects_onto_its_pixel_after_crop_resize_and_normalisation(sphere_root, tmp_path, image_size, tol):
    p = parser(sphere_root, tmp_path / "cache", image_size=image_size)
    out = p.get_dataparser_outputs("train")
    h, w = out.metadata["image_size"]
    assert (h, w) == ((128, 128) if image_size is None else (image_size, image_size))
    cache = p.cache
    errs = []
    for rec in out.metadata["objects"]:
        cam = json.loads((cache.root / "camera" / "hydrant" / f"{rec.obj_id}.json").read_text())
        X = _normalise(cam, MARKER)
        for v in range(rec.num_views):
            rgba = load_view(rec.image_paths[v], (h, w))
            got = _project_ns(out.cameras, rec.camera_index(v), X)
            errs.append(np.abs(got - _marker_centroid(rgba)).max())
    # a systematic half-pixel slip (a wrong pixel convention) would push the mean error past 0.5
    assert max(errs) < tol and np.mean(errs) < 0.35
    # the fixture alternates both intrinsics formats within every sequence
    ann = json.loads(gzip.open(sphere_root / "frame_annotations.jgz", "rt").read())
    assert {a["viewpoint"]["intrinsics_format"] for a in ann} == {"ndc_norm_image_bounds", "ndc_isotropic"}


def test_normalisation_centres_scales_and_brackets(sphere_root, tmp_path):
    p = parser(sphere_root, tmp_path / "cache")
    meta = p.get_dataparser_outputs("train").metadata
    near, far = meta["near"], meta["far"]
    for split in ("train", "val", "test"):
        out = p.get_dataparser_outputs(split)
        for rec in out.metadata["objects"]:
            cam = json.loads((p.cache.root / "camera" / "hydrant" / f"{rec.obj_id}.json").read_text())
            scale = cam["co3d"]["normalisation"]["scale"]
            c = _normalise(cam, SPHERE_CENTER)
            assert np.linalg.norm(c) < 0.2  # cameras aim within ~0.15 world units of the centre
            pos = out.cameras.camera_to_worlds[rec.camera_slice, :, 3].double().numpy()
            assert np.mean(np.linalg.norm(pos, axis=1)) == pytest.approx(1.3, abs=1e-6)
            r = SPHERE_RADIUS * scale
            d = np.linalg.norm(pos - c, axis=1)
            assert (d - r >= near - 1e-6).all() and (d + r <= far + 1e-6).all()
    assert 0.05 <= near < 1.3 < far < 3.0


def test_splits_quality_filter_and_images(sphere_root, tmp_path):
    p = parser(sphere_root, tmp_path / "cache")
    ids = {s: [r.obj_id for r in p.get_dataparser_outputs(s).metadata["objects"]] for s in ("train", "val", "test")}
    assert ids == {"train": ["100_seq", "101_seq", "102_seq"], "val": ["103_seq"], "test": ["104_seq"]}
    assert p.cache.info["dropped_low_quality"] == ["999_lowq"]
    meta = p.get_dataparser_outputs("train").metadata
    assert meta["category"] == meta["synset"] == "hydrant" and meta["dataset"] == "co3d"
    rgba = load_view(meta["objects"][0].image_paths[0])
    assert rgba.shape == (128, 128, 4)
    bg = rgba[..., 3] == 0
    assert bg.any() and (rgba[bg, :3] == 0).all()  # composited on black outside the mask
    q = parser(sphere_root, tmp_path / "cache", min_viewpoint_quality=None)
    assert "999_lowq" in [r.obj_id for r in q.get_dataparser_outputs("train").metadata["objects"]]
    assert q.cache.root != p.cache.root  # another fingerprint, another cache


def test_cache_is_built_once(sphere_root, tmp_path, monkeypatch):
    parser(sphere_root, tmp_path / "cache").get_dataparser_outputs("train")

    def boom(*a, **k):
        raise AssertionError("preprocessed twice")

    monkeypatch.setattr(co3d_cache, "process_sequence", boom)
    p = parser(sphere_root, tmp_path / "cache")
    assert len(p.get_dataparser_outputs("train").metadata["objects"]) == 3


def test_cache_default_location(sphere_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATURENERF_CACHE", str(tmp_path / "env"))
    p = CO3DDataParserConfig(data=sphere_root, progress=False, frames_per_sequence=2).setup()
    p.get_dataparser_outputs("train")
    assert p.cache.root.parent == tmp_path / "env" / "co3d" / "hydrant"
    assert all(r.num_views == 2 for r in p.get_dataparser_outputs("train").metadata["objects"])


def test_explicit_near_far_win(sphere_root, tmp_path):
    meta = parser(sphere_root, tmp_path / "cache", near=0.5, far=2.5).get_dataparser_outputs("train").metadata
    assert (meta["near"], meta["far"]) == (0.5, 2.5)


# ------------------------------------------------------------------------------------------------ errors
def _small(tmp_path: Path, **seq_kw) -> Path:
    rng = np.random.default_rng(0)
    seqs = [sphere_sequence("a", rng, num_frames=2), sphere_sequence("b", rng, num_frames=2, **seq_kw)]
    return write_category(tmp_path / "co3d", "bench", seqs, {"fewview_dev": {"train": ["a"], "test": ["b"]}})


def _error(data: Path, tmp_path: Path, **kw) -> DataError:
    with pytest.raises(DataError) as e:
        parser(data, tmp_path / "cache", **kw).get_dataparser_outputs("train")
    assert "\n" not in str(e.value)
    return e.value


def _frames(data: Path) -> list:
    with gzip.open(data / "frame_annotations.jgz", "rt") as f:
        return json.load(f)


def _write_frames(data: Path, frames: list) -> None:
    with gzip.open(data / "frame_annotations.jgz", "wt") as f:
        json.dump(frames, f)


def test_error_malformed_annotation_file(tmp_path):
    data = _small(tmp_path)
    (data / "frame_annotations.jgz").write_bytes(b"not gzip at all")
    err = _error(data, tmp_path)
    assert err.path == data / "frame_annotations.jgz" and "gzipped JSON" in err.problem


def test_error_frame_missing_key(tmp_path):
    data = _small(tmp_path)
    frames = _frames(data)
    del frames[1]["viewpoint"]
    _write_frames(data, frames)
    err = _error(data, tmp_path)
    assert (
        err.path == data / "frame_annotations.jgz"
        and "frame annotation 1" in err.problem
        and "viewpoint" in err.problem
    )


def test_error_bad_intrinsics_format(tmp_path):
    data = _small(tmp_path)
    frames = _frames(data)
    frames[0]["viewpoint"]["intrinsics_format"] = "screen"
    _write_frames(data, frames)
    assert "intrinsics_format" in _error(data, tmp_path).problem


def test_error_missing_image(tmp_path):
    data = _small(tmp_path)
    img = data / "a" / "images" / "frame000002.jpg"
    img.unlink()
    err = _error(data, tmp_path)
    assert err.path == img and "not found" in err.problem


def test_error_missing_mask(tmp_path):
    data = _small(tmp_path)
    mask = data / "b" / "masks" / "frame000001.png"
    mask.unlink()
    assert _error(data, tmp_path).path == mask


def test_error_sequence_without_usable_frames(tmp_path):
    data = _small(tmp_path, empty_masks=True)
    err = _error(data, tmp_path)
    assert err.path == data / "frame_annotations.jgz" and "'b' has no usable frames" in err.problem
    # opting in drops it with a warning; the test split is then empty and the parser says so
    p = parser(data, tmp_path / "cache2", skip_bad_sequences=True)
    assert [r.obj_id for r in p.get_dataparser_outputs("train").metadata["objects"]] == ["a"]
    assert p.cache.info["dropped_no_usable_frames"] == ["b"]


def test_error_set_list_and_folder(tmp_path):
    data = _small(tmp_path)
    err = _error(data, tmp_path, subset="manyview_dev_0")
    assert err.path == data / "set_lists" / "set_lists_manyview_dev_0.json"
    assert _error(tmp_path / "nowhere" / "cat", tmp_path).path == tmp_path / "nowhere" / "cat"


def test_error_sequence_missing_from_annotations(tmp_path):
    data = _small(tmp_path)
    (data / "set_lists" / "set_lists_fewview_dev.json").write_text(json.dumps({"train": [["zzz", 1, "x.jpg"]]}))
    err = _error(data, tmp_path)
    assert err.path == data / "frame_annotations.jgz" and "'zzz'" in err.problem


def test_error_image_size_disagrees_with_annotation(tmp_path):
    data = _small(tmp_path)
    frames = _frames(data)
    frames[0]["image"]["size"] = [10, 10]
    _write_frames(data, frames)
    err = _error(data, tmp_path)
    assert err.path.name == "frame000001.jpg" and "10x10" in err.problem


def test_cameras_are_float_and_metadata_tags(sphere_root, tmp_path):
    out = parser(sphere_root, tmp_path / "cache").get_dataparser_outputs("test")
    assert out.cameras.camera_to_worlds.dtype == torch.float32
    assert out.cameras.metadata["object_index"].shape == (len(out.image_filenames), 1)


def test_error_manyview_style_set_list(tmp_path):
    data = _small(tmp_path)
    rows = [["a", 1, "a.jpg"], ["b", 1, "b.jpg"]]
    (data / "set_lists" / "set_lists_manyview_dev_0.json").write_text(json.dumps({"train": rows, "test": rows}))
    err = _error(data, tmp_path, subset="manyview_dev_0")
    assert err.path.name == "set_lists_manyview_dev_0.json" and "fewview" in err.problem
