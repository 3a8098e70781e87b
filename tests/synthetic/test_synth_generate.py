import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from trimesh.ray.ray_pyembree import RayMeshIntersector

import featurenerf_ns.synthetic.generate as gen
from featurenerf_ns.categories import resolve_category
from featurenerf_ns.geometry import focal_from_fov
from featurenerf_ns.layout import SYNTHETIC_TEACHER_FOLDER, CategoryLayout
from featurenerf_ns.synthetic.meshio import read_labeled_ply
from featurenerf_ns.utils.io import DataError

SYN = "03001627"


def _split(root):
    return json.loads((Path(root) / "splits" / f"{SYN}.json").read_text())


def _all_ids(root):
    s = _split(root)
    return s["train"] + s["val"] + s["test"]


def _cam(root, oid):
    return json.loads((Path(root) / "camera" / SYN / f"{oid}.json").read_text())


def _project_authors(points, frame_matrix, camera_angle_x, W, H):
    """Independent projection in the authors' (pixelNeRF) convention: pose = T @ diag(1,-1,-1,1) (OpenGL)."""
    pose = np.asarray(frame_matrix, dtype=np.float64) @ np.diag([1.0, -1.0, -1.0, 1.0])
    w2c = np.linalg.inv(pose)
    cam = (w2c[:3, :3] @ np.asarray(points, dtype=np.float64).T).T + w2c[:3, 3]
    f = focal_from_fov(camera_angle_x, W)
    # pixelNeRF rays: dir = ((x - W/2) / f, -(y - H/2) / f, -1)
    x = W / 2 + f * cam[:, 0] / -cam[:, 2]
    y = H / 2 - f * cam[:, 1] / -cam[:, 2]
    return np.stack([x, y], 1), -cam[:, 2]


def _file_hashes(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_layout_and_formats(tiny_root, tiny):
    lay = CategoryLayout(tiny_root, SYN)
    ids = _all_ids(tiny_root)
    assert len(ids) == 10 and len(set(ids)) == 10
    assert all(len(o) == 32 and int(o, 16) >= 0 for o in ids)
    nv, s = tiny["num_views"], tiny["image_size"]
    for oid in ids:
        imgs = sorted(lay.image_dir(oid).glob("*.png"))
        assert [p.name for p in imgs] == [f"{k:03d}.png" for k in range(nv)]
        im = Image.open(imgs[0])
        assert im.mode == "RGBA" and im.size == (s, s)
        cam = _cam(tiny_root, oid)
        assert cam["camera_angle_x"] == pytest.approx(0.6911)
        assert [f["file_path"] for f in cam["frames"]] == [p.name for p in imgs]
        assert np.asarray(cam["frames"][0]["transform_matrix"]).shape == (4, 4)
        kp2 = np.load(lay.kp_2d(oid), allow_pickle=True)["labels"]
        assert kp2.dtype == object and len(kp2) == nv and all(a.ndim == 2 and a.shape[1] == 3 for a in kp2)
        kp3 = np.load(lay.kp_3d(oid))
        assert kp3["labels"].shape[1] == 4 and kp3["pts"].shape == (2048, 3)
        p2 = np.load(lay.part_2d(oid))["labels"]
        assert p2.shape == (nv, s, s) and p2.dtype == np.uint8
        p3 = np.load(lay.part_3d(oid))
        assert p3["pts"].shape == (2048, 3) and p3["labels"].min() >= 1 and p3["labels"].max() <= 4
        feats = np.load(lay.teacher(SYNTHETIC_TEACHER_FOLDER, oid))["feats"]
        assert feats.shape == (nv, tiny["teacher_dim"], s // 4, s // 4) and feats.dtype == np.float16
        mesh, labels = read_labeled_ply(lay.mesh(oid))
        assert len(labels) == len(mesh.faces)


def test_keypoints_project_with_authors_convention(tiny_root, tiny):
    assert _max_keypoint_error(tiny_root, SYN, _all_ids(tiny_root), tiny["image_size"]) < 0.5


def test_keypoint_visibility_is_occlusion_aware(tiny_root):
    lay = CategoryLayout(tiny_root, SYN)
    visible = total = 0
    for oid in _all_ids(tiny_root):
        kp3 = np.load(lay.kp_3d(oid))["labels"]
        kp2 = np.load(lay.kp_2d(oid), allow_pickle=True)["labels"]
        total += len(kp3) * len(kp2)
        visible += sum(len(a) for a in kp2)
    assert 0.3 < visible / total < 0.95  # some keypoints are hidden (e.g. behind the back or under the seat)


def _part_agreement(root, synset, obj_ids, size):
    """Fraction of visible 3D part points whose nearest pixel has their label (visibility: ray cast on the PLY)."""
    lay = CategoryLayout(root, synset)
    agree = total = 0
    for oid in obj_ids:
        p2 = np.load(lay.part_2d(oid))["labels"]
        mesh, _ = read_labeled_ply(lay.mesh(oid))
        ray = RayMeshIntersector(mesh)
        p3 = np.load(lay.part_3d(oid))
        cam = json.loads(lay.camera_json(oid).read_text())
        for v, frame in enumerate(cam["frames"]):
            T = np.asarray(frame["transform_matrix"])
            uv, _ = _project_authors(p3["pts"], T, cam["camera_angle_x"], size, size)
            d = p3["pts"] - T[:3, 3]
            dist = np.linalg.norm(d, axis=1)
            locs, idx, _ = ray.intersects_location(np.repeat(T[None, :3, 3], len(d), 0), d / dist[:, None], False)
            first = np.full(len(d), np.inf)
            first[idx] = np.linalg.norm(locs - T[:3, 3], axis=1)
            vis = first >= dist - 1e-4
            px = np.round(uv[vis]).astype(int)
            ok = (px >= 0).all(1) & (px < size).all(1)
            lab = p2[v][px[ok, 1], px[ok, 0]]
            agree += int((lab == p3["labels"][vis][ok]).sum())
            total += int(ok.sum())
    assert total > 1000
    return agree / total


def _max_keypoint_error(root, synset, obj_ids, size):
    lay = CategoryLayout(root, synset)
    errors = []
    for oid in obj_ids:
        cam = json.loads(lay.camera_json(oid).read_text())
        kp3 = np.load(lay.kp_3d(oid))["labels"]
        kp2 = np.load(lay.kp_2d(oid), allow_pickle=True)["labels"]
        for v, frame in enumerate(cam["frames"]):
            uv, depth = _project_authors(kp3[:, :3], frame["transform_matrix"], cam["camera_angle_x"], size, size)
            assert np.all(depth > 0.8) and np.all(depth < 1.8)
            for x, y, k in kp2[v]:
                i = np.flatnonzero(kp3[:, 3] == k)
                assert len(i) == 1
                errors.append(np.hypot(*(uv[i[0]] - (x, y))))
    assert len(errors) > 20
    return max(errors)


def test_part_maps_match_alpha_and_3d_parts(tiny_root, tiny):
    lay = CategoryLayout(tiny_root, SYN)
    for oid in _all_ids(tiny_root):
        p2 = np.load(lay.part_2d(oid))["labels"]
        for v in range(tiny["num_views"]):
            alpha = np.asarray(Image.open(lay.image_dir(oid) / f"{v:03d}.png"))[..., 3]
            assert np.array_equal(p2[v] > 0, alpha > 0)
    assert _part_agreement(tiny_root, SYN, _all_ids(tiny_root), tiny["image_size"]) >= 0.95


@pytest.mark.parametrize("category", ["chair", "table", "airplane", "car", "bottle", "motorcycle"])
def test_every_category_end_to_end(tmp_path, category):
    # 128 px: thin parts (airplane tails, motorcycle forks) need the authors' resolution for clean part maps
    gen.generate_category(tmp_path, category, num_objects=3, num_views=2, num_pairs=5, workers=0, progress=False)
    synset = resolve_category(category).synset
    split = json.loads((tmp_path / "splits" / f"{synset}.json").read_text())
    ids = split["train"] + split["val"] + split["test"]
    assert _max_keypoint_error(tmp_path, synset, ids, 128) < 0.5
    assert _part_agreement(tmp_path, synset, ids, 128) >= 0.93


def test_splits_and_poses(tiny_root):
    split = _split(tiny_root)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (7, 1, 2)
    assert split["valid_flags_for_test"] == [True, True]
    fixed = [
        np.asarray([f["transform_matrix"] for f in _cam(tiny_root, o)["frames"]]) for o in split["val"] + split["test"]
    ]
    for poses in fixed[1:]:
        assert np.array_equal(poses, fixed[0])
    train = [np.asarray([f["transform_matrix"] for f in _cam(tiny_root, o)["frames"]]) for o in split["train"]]
    assert not np.allclose(train[0], train[1]) and not np.allclose(train[0], fixed[0])
    for poses in train + fixed:
        assert np.all(poses[:, 1, 3] > 0.05)  # upper hemisphere


def test_pairs_share_a_keypoint_and_a_part(tiny_root, tiny):
    lay = CategoryLayout(tiny_root, SYN)
    split = _split(tiny_root)
    test = set(split["test"])

    def sets(oid, v):
        kp = np.load(lay.kp_2d(oid), allow_pickle=True)["labels"][v]
        parts = np.load(lay.part_2d(oid))["labels"][v]
        return set(kp[:, 2].astype(int).tolist()), set(np.unique(parts).tolist()) - {0}

    inst, view = split["cross_inst_pairs"], split["cross_view_pairs"]
    nv, ids = tiny["num_views"], split["test"]
    s = {(o, v): sets(o, v) for o in ids for v in range(nv)}

    def ok(a, b):
        return bool(s[a][0] & s[b][0]) and bool(s[a][1] & s[b][1])

    n_inst = sum(ok((a, v), (b, v)) for a in ids for b in ids for v in range(nv) if a != b)
    n_view = sum(ok((a, v), (a, u)) for a in ids for v in range(nv) for u in range(nv) if u != v)
    assert len(inst) == min(tiny["num_pairs"], n_inst) > 0 and len(view) == min(tiny["num_pairs"], n_view) > 0
    assert len({(p["model_id"], p["src_view"], p["trg_view"]) for p in view}) == len(view)
    assert len({(p["src"], p["trg"], p["view"]) for p in inst}) == len(inst)
    for p in inst:
        assert p["src"] != p["trg"] and {p["src"], p["trg"]} <= test
        (ka, pa), (kb, pb) = sets(p["src"], p["view"]), sets(p["trg"], p["view"])
        assert ka & kb and pa & pb
    for p in view:
        assert p["model_id"] in test and p["src_view"] != p["trg_view"]
        (ka, pa), (kb, pb) = sets(p["model_id"], p["src_view"]), sets(p["model_id"], p["trg_view"])
        assert ka & kb and pa & pb


def test_deterministic_bytes_and_workers(tiny_root, tmp_path, tiny):
    # same settings, other process layout (2 worker processes): identical bytes
    gen.generate_category(tmp_path / "a", "chair", **{**tiny, "workers": 2})
    ref = _file_hashes(tiny_root)
    assert _file_hashes(tmp_path / "a") == ref
    gen.generate_category(tmp_path / "b", "chair", **{**tiny, "seed": 1})
    other = _file_hashes(tmp_path / "b")
    assert set(other.values()).isdisjoint({h for k, h in ref.items() if k.startswith("img/")})


def test_interrupted_run_resumes(tiny_root, tmp_path, monkeypatch, tiny):
    root = tmp_path / "r"
    real = gen.generate_object
    calls = []

    def flaky(*args):
        calls.append(args[3])
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed in the middle of the 4th object
        return real(*args)

    monkeypatch.setattr(gen, "generate_object", flaky)
    with pytest.raises(KeyboardInterrupt):
        gen.generate_category(root, "chair", **tiny)
    lay = CategoryLayout(root, SYN)
    assert not lay.split_file().exists()
    done = [o for o in gen.object_ids("chair", 0, 10) if gen.object_complete(lay, o, tiny["num_views"])]
    assert len(done) == 3
    # a half-written object: every file but the camera (the last one written), here with stale content
    # (written as another object index) that the rerun must replace
    real(str(root), gen.dataclasses.asdict(gen.GenerationSettings("chair", **{k: v for k, v in tiny.items()
         if k not in ("workers", "progress")})), 4, calls[-1], False)  # fmt: skip
    lay.camera_json(calls[-1]).unlink()
    # and the temporary file of a write killed half-way
    (lay.image_dir(calls[-1]) / ".001.png.abc123.tmp.png").write_bytes(b"partial")
    (lay.kp_2d(calls[-1]).parent / f".{calls[-1]}.npz.xyz.tmp.npz").write_bytes(b"partial")
    monkeypatch.setattr(gen, "generate_object", real)
    stats = gen.generate_category(root, "chair", **tiny)
    assert stats["objects"] == 7 and stats["skipped"] == 3
    assert _file_hashes(root) == _file_hashes(tiny_root)  # as if never interrupted
    assert not [p for p in root.rglob(".*") if ".tmp" in p.name]
    # a lost split file: nothing regenerated, the split is rewritten identically
    split_bytes = lay.split_file().read_bytes()
    lay.split_file().unlink()
    stats = gen.generate_category(root, "chair", **tiny)
    assert stats["objects"] == 0 and lay.split_file().read_bytes() == split_bytes
    # a finished category is not touched
    assert gen.generate_category(root, "chair", **tiny)["objects"] == 0
    # other settings regenerate everything
    assert gen.generate_category(root, "chair", **{**tiny, "image_size": 32})["objects"] == 10


def test_ensure_default_category_generates_once(tmp_path, monkeypatch, capsys, tiny):
    calls = []
    real = gen.generate_category

    def small(root, category, num_objects=100):
        calls.append(category)
        return real(root, category, **{**tiny, "num_objects": num_objects})

    monkeypatch.setattr(gen, "generate_category", small)
    out = []
    threads = [threading.Thread(target=lambda: out.append(gen.ensure_default_category("chair", 5, tmp_path)))
               for _ in range(2)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["chair"]
    assert out == [tmp_path / "synthetic"] * 2
    assert (tmp_path / "synthetic" / "splits" / f"{SYN}.json").is_file()
    printed = capsys.readouterr().out
    assert printed.count("generating") == 1 and str(tmp_path / "synthetic") in printed
    monkeypatch.setenv("FEATURENERF_CACHE", str(tmp_path))
    assert gen.ensure_default_category("chair", 5) == tmp_path / "synthetic" and calls == ["chair"]


def test_refuses_to_overwrite_foreign_data(tmp_path, tiny):
    (tmp_path / "camera" / SYN).mkdir(parents=True)
    (tmp_path / "camera" / SYN / "real.json").write_text("{}")
    with pytest.raises(DataError, match="did not make"):
        gen.generate_category(tmp_path, "chair", **tiny)
    assert (tmp_path / "camera" / SYN / "real.json").is_file()


def test_cli(tmp_path, monkeypatch, capsys):
    from featurenerf_ns.synthetic import cli

    args = ["--root", str(tmp_path), "--categories", "bottle", "motorcycle", "--num-objects", "4", "--num-views", "2"]
    args += ["--image-size", "32", "--num-pairs", "5", "--workers", "0", "--no-progress"]
    monkeypatch.setattr("sys.argv", ["featurenerf-synth", *args])
    cli.entrypoint()
    out = capsys.readouterr().out
    assert "bottle (02876657)" in out and "motorcycle (03790512)" in out
    assert (tmp_path / "splits" / "02876657.json").is_file() and (tmp_path / "splits" / "03790512.json").is_file()
    monkeypatch.setattr("sys.argv", ["featurenerf-synth", "--root", str(tmp_path), "--categories", "sofa"])
    with pytest.raises(SystemExit) as e:
        cli.entrypoint()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: --categories sofa: unknown category 'sofa'; known categories: chair (03001627)")
