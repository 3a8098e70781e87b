import numpy as np

from featurenerf_ns.layout import SYNTHETIC_TEACHER_FOLDER, CategoryLayout
from featurenerf_ns.synthetic.render import ObjectRenderer, sample_poses
from featurenerf_ns.synthetic.shapes import make_object
from featurenerf_ns.synthetic.teacher import PATCH, SyntheticTeacher

SYN = "03001627"


def _cells(view, feats, majority=None):
    """Cells fully covered by one label (or, with ``majority``, where one label covers that fraction of the
    pixels): features (n, D), labels (n,), mean canonical points (n, 3)."""
    h, w = feats.shape[1:]
    lab = view.labels[: h * PATCH, : w * PATCH].reshape(h, PATCH, w, PATCH).transpose(0, 2, 1, 3).reshape(h, w, -1)
    cov = view.coverage[: h * PATCH, : w * PATCH].reshape(h, PATCH, w, PATCH).min(axis=(1, 3))
    if majority is None:
        keep, top = (cov == 1) & (lab.min(-1) == lab.max(-1)), lab[..., 0]
    else:
        counts = np.stack([(lab == k).sum(-1) for k in range(1, int(lab.max()) + 1)], -1)
        top = counts.argmax(-1) + 1
        keep = counts.max(-1) >= majority * lab.shape[-1]
    pts = view.points[: h * PATCH, : w * PATCH].reshape(h, PATCH, w, PATCH, 3).mean(axis=(1, 3))
    return feats.transpose(1, 2, 0)[keep], top[keep], pts[keep]


def test_teacher_files_shape_dtype_background(tiny_root, tiny):
    lay = CategoryLayout(tiny_root, SYN)
    oid = sorted(p.stem for p in (tiny_root / "camera" / SYN).glob("*.json"))[0]
    feats = np.load(lay.teacher(SYNTHETIC_TEACHER_FOLDER, oid))["feats"]
    s = tiny["image_size"]
    assert feats.shape == (tiny["num_views"], tiny["teacher_dim"], s // 4, s // 4) and feats.dtype == np.float16
    from PIL import Image

    for v in range(tiny["num_views"]):
        alpha = np.asarray(Image.open(lay.image_dir(oid) / f"{v:03d}.png"))[..., 3]
        mask = alpha[::4, ::4] > 0  # nearest downsampling, as the authors mask DINO features
        assert np.all(feats[v][:, ~mask] == 0)
        assert np.all(np.abs(feats[v][:, mask]).sum(0) > 0)


def test_teacher_is_semantic_across_instances():
    teacher = SyntheticTeacher("chair", dim=32)
    rng = np.random.default_rng(0)
    centroids, cells = [], []
    for seed in (0, 1):
        obj = make_object("chair", np.random.default_rng(seed))
        r = ObjectRenderer(obj)
        fs, ls = [], []
        for c2w in sample_poses(np.random.default_rng(10 + seed), 3):
            view = r.render(c2w, 128, 128)
            f, lab, _ = _cells(view, teacher.features(view, c2w, rng), majority=0.4)
            fs.append(f)
            ls.append(lab)
        f, lab = np.concatenate(fs), np.concatenate(ls)
        cells.append((f, lab))
        centroids.append({k: f[lab == k].mean(0) for k in np.unique(lab)})
    common = sorted(set(centroids[0]) & set(centroids[1]))
    assert len(common) >= 3  # back, seat, leg at least
    same = np.mean([np.linalg.norm(centroids[0][k] - centroids[1][k]) for k in common])
    cross = np.mean([np.linalg.norm(centroids[0][a] - centroids[1][b]) for a in common for b in common if a != b])
    assert same < 0.7 * cross
    # nearest-centroid part classification of object 1's cells with object 0's centroids
    f, lab = cells[1]
    keep = np.isin(lab, common)
    d = np.stack([np.linalg.norm(f[keep] - centroids[0][k], axis=1) for k in common], 1)
    assert (np.asarray(common)[d.argmin(1)] == lab[keep]).mean() > 0.75


def test_teacher_is_not_3d_consistent():
    obj = make_object("chair", np.random.default_rng(3))
    r = ObjectRenderer(obj)
    noisy = SyntheticTeacher("chair", dim=32)
    clean = SyntheticTeacher("chair", dim=32, noise_std=0.0, field_std=0.0, normal_std=0.0)
    poses = sample_poses(np.random.default_rng(5), 2)
    views = [r.render(c2w, 128, 128) for c2w in poses]
    rng = np.random.default_rng(0)
    out = {}
    for name, t in (("noisy", noisy), ("clean", clean)):
        out[name] = [_cells(v, t.features(v, c2w, rng)) for v, c2w in zip(views, poses, strict=True)]
    (fa, la, pa), (fb, lb, pb) = out["noisy"]
    (ca, _, _), (cb, _, _) = out["clean"]
    # cells of the two views that see (nearly) the same 3D surface patch with the same part
    d = np.linalg.norm(pa[:, None] - pb[None], axis=-1)
    ia, ib = np.nonzero((d < 0.01) & (la[:, None] == lb[None]))
    assert len(ia) >= 10
    scale = np.linalg.norm(fa, axis=1).mean()
    view_gap = np.linalg.norm(fa[ia] - fb[ib], axis=1).mean() / scale
    clean_gap = np.linalg.norm(ca[ia] - cb[ib], axis=1).mean() / scale
    assert view_gap > 0.25  # the same 3D point gets clearly different features in two views
    assert clean_gap < 0.5 * view_gap  # and that comes from the view-dependent terms, not the sampling
    # features also change when only the per-view randomness changes (same camera)
    f1 = noisy.features(views[0], poses[0], np.random.default_rng(1))
    f2 = noisy.features(views[0], poses[0], np.random.default_rng(2))
    assert not np.allclose(f1, f2)
