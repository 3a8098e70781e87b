"""Category datamanager: batches, view sampling, sharding, eval triples."""

from __future__ import annotations

import pytest
import torch

from featurenerf_ns.data.images import foreground_bbox
from featurenerf_ns.method_configs import _tiny
from featurenerf_ns.synthetic.generate import generate_category


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dm")
    generate_category(root, "chair", num_objects=10, num_views=5, image_size=32, num_pairs=2, workers=0, progress=False)
    return root


def make(data_root, world_size=1, local_rank=0, **overrides):
    cfg = _tiny().pipeline.datamanager
    cfg.dataparser.data = data_root / "chair"
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg.setup(device="cpu", test_mode="test", world_size=world_size, local_rank=local_rank)


def test_train_batch_layout(data_root):
    dm = make(data_root, objects_per_batch=3, rays_per_object=16)
    bundle, batch = dm.next_train(0)
    assert len(bundle) == 48 and batch["image"].shape == (48, 3)
    slots = bundle.metadata["object_slot"][:, 0]
    assert torch.equal(slots, torch.arange(3).repeat_interleave(16))
    assert batch["teacher"].shape == (48, dm.train_dataparser_outputs.metadata["teacher_dim"])
    cond = batch["conditioning"]
    assert cond["images"].shape == (3, 1, 3, 32, 32)
    assert cond["c2w"].shape == (3, 1, 3, 4) and cond["intrinsics"].shape == (3, 1, 4)
    # Unit ray directions, starting at the camera of the ray's object.
    torch.testing.assert_close(bundle.directions.norm(dim=-1), torch.ones(48))


def _plans(dm):
    """Record the datamanager's (record, source views, target views) plans as it makes them."""
    plans = []
    original = dm._plan_train
    dm._plan_train = lambda: plans.append(original()) or plans[-1]
    return plans


@pytest.mark.parametrize("target_views", ["all", "other"])
def test_target_views_setting(data_root, target_views):
    dm = make(
        data_root, objects_per_batch=3, rays_per_object=8, target_views=target_views, target_views_per_object=None
    )
    plans = _plans(dm)
    for step in range(4):
        dm.next_train(step)
    for _, src, trg in (p for plan in plans for p in plan):
        if target_views == "all":  # the authors' train.py: every view, the source included
            assert sorted(trg) == list(range(5))
        else:
            assert not set(src) & set(trg) and len(trg) == 4


def test_bbox_sampling_stops_after_its_steps(data_root):
    dm = make(data_root, objects_per_batch=2, rays_per_object=256, bbox_sampling_steps=2, target_views_per_object=1)
    plans = _plans(dm)
    cams = dm.train_dataparser_outputs.cameras
    inside = []
    for step in range(4):
        _, batch = dm.next_train(step)
        idx = batch["indices"]
        ok = []
        for (rec, _, trg), rows in zip(plans[step], idx.view(2, 256, 3), strict=True):
            alpha = dm.load_views(rec, trg, False).rgba[0, ..., 3]
            c0, r0, c1, r1 = foreground_bbox(alpha.numpy())
            assert (cams.metadata["view_index"][rows[:, 0], 0] == trg[0]).all()
            ys, xs = rows[:, 1], rows[:, 2]
            ok.append(((xs >= c0) & (xs <= c1) & (ys >= r0) & (ys <= r1)).float().mean())
        inside.append(float(torch.stack(ok).mean()))
    assert inside[0] == inside[1] == 1.0  # inside the object's box while bbox sampling lasts
    assert inside[2] < 0.9 and inside[3] < 0.9  # the whole image afterwards


CODED_CELLS = 8
"""Side of the coded teacher's maps."""


def _coded_teacher_root(data_root, tmp_path) -> tuple:
    """A copy of the data whose teacher maps encode (cell column, cell row, object * 10 + view) in 3 channels."""
    import shutil

    import numpy as np

    root = tmp_path / "coded"
    shutil.copytree(data_root, root)
    synset = "03001627"
    shutil.rmtree(root / "synth_feat_32")
    objects = sorted(p.name for p in (root / "img" / synset).iterdir())
    h = w = CODED_CELLS
    for i, obj in enumerate(objects):
        views = len(list((root / "img" / synset / obj).glob("*.png")))
        feats = np.zeros((views, 3, h, w), dtype=np.float32)
        feats[:, 0] = np.arange(w)[None, None, :]
        feats[:, 1] = np.arange(h)[None, :, None]
        feats[:, 2] = (i * 10 + np.arange(views))[:, None, None]
        (root / "coded_feat" / synset).mkdir(parents=True, exist_ok=True)
        np.savez(root / "coded_feat" / synset / f"{obj}.npz", feats=feats)
    cfg = _tiny().pipeline.datamanager
    cfg.dataparser.data = root / "chair"
    cfg.dataparser.teacher = "coded_feat"
    return cfg, objects


def _interior(xs, ys, image_hw):
    """Pixels whose teacher sample (the authors' grid, ``pixel / size * 2 - 1``, ``align_corners=False``: cell
    coordinate ``x * w / W - 0.5``) lies between cell centres, where zero padding does not blend in."""
    H, W = image_hw
    h = w = CODED_CELLS
    return (xs * w / W - 0.5 >= 0) & (xs * w / W - 0.5 <= w - 1) & (ys * h / H - 0.5 >= 0) & (ys * h / H - 0.5 <= h - 1)


def test_rays_image_and_teacher_rows_belong_to_their_own_pixel_and_object(data_root, tmp_path):
    """A teacher whose maps encode (object, view, cell column, cell row): every teacher row must be the map of its
    ray's object and view sampled at its ray's pixel, every colour row that pixel, every ray that pixel's ray."""
    cfg, objects = _coded_teacher_root(data_root, tmp_path)
    h = w = CODED_CELLS
    cfg.objects_per_batch, cfg.rays_per_object, cfg.bbox_sampling_steps = 3, 64, 0
    dm = cfg.setup(device="cpu", test_mode="val")
    plans = _plans(dm)
    bundle, batch = dm.next_train(0)
    cams = dm.train_dataparser_outputs.cameras
    H, W = dm.image_hw
    idx = batch["indices"]
    obj_index = cams.metadata["object_index"][idx[:, 0], 0]
    view_index = cams.metadata["view_index"][idx[:, 0], 0]
    slots = bundle.metadata["object_slot"][:, 0]
    records = [rec for rec, _, _ in plans[0]]
    ids = [r.obj_id for r in dm.train_dataparser_outputs.metadata["objects"]]
    for slot, rec in enumerate(records):
        assert (obj_index[slots == slot] == ids.index(rec.obj_id)).all()  # rays of slot k are its object's
    ys, xs = idx[:, 1], idx[:, 2]
    pairs = zip(obj_index.tolist(), view_index.tolist(), strict=True)
    code = torch.tensor([objects.index(ids[o]) * 10 + v for o, v in pairs], dtype=torch.float32)
    teacher = batch["teacher"]
    interior = _interior(xs, ys, (H, W))
    assert interior.sum() > 20
    torch.testing.assert_close(teacher[interior, 2], code[interior])  # (outside, zero padding blends in)
    torch.testing.assert_close(teacher[interior, 0], xs[interior] * w / W - 0.5)
    torch.testing.assert_close(teacher[interior, 1], ys[interior] * h / H - 0.5)
    # Colour rows are their pixel's, rays go through their pixel of their camera.
    for k in range(len(idx)):
        rec = records[int(slots[k])]
        view = dm.load_views(rec, [int(view_index[k])], False).rgba[0]
        torch.testing.assert_close(batch["image"][k], view[ys[k], xs[k], :3])
    want = cams.generate_rays(camera_indices=idx[:, :1], coords=torch.stack((ys, xs), -1).float() + 0.5)
    torch.testing.assert_close(bundle.origins, want.origins)
    torch.testing.assert_close(bundle.directions, want.directions)


def test_ddp_shards_are_disjoint_and_cover_the_split(data_root):
    a = make(data_root, world_size=2, local_rank=0)
    b = make(data_root, world_size=2, local_rank=1)
    ids_a = {r.obj_id for r in a.train_objects}
    ids_b = {r.obj_id for r in b.train_objects}
    everything = {r.obj_id for r in a.train_dataparser_outputs.metadata["objects"]}
    assert ids_a and ids_b and not ids_a & ids_b and ids_a | ids_b == everything


def test_eval_triples_are_fixed_and_use_distinct_views(data_root):
    dm1, dm2 = make(data_root), make(data_root)
    assert dm1.eval_triples == dm2.eval_triples
    assert all(src != trg for _, src, trg in dm1.eval_triples)
    camera, batch = dm1.next_eval_image(0)
    assert batch["image"].shape == (32, 32, 3) and camera.shape == (1,)


def test_eval_example_carries_the_teacher_map_of_its_target_view(data_root, tmp_path):
    """ns-eval's distillation error compares with the teacher at every pixel of the target view, sampled as the
    training targets are: the coded teacher must give the target's (object, view) code and each pixel's cell."""
    cfg, objects = _coded_teacher_root(data_root, tmp_path)
    dm = cfg.setup(device="cpu", test_mode="test")
    H, W = dm.image_hw
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    interior = _interior(xs, ys, (H, W))
    for i, (obj, src, trg) in enumerate(dm.eval_triples):
        _, batch = dm.eval_example(i)
        teacher = batch["teacher"]
        assert teacher.shape == (H, W, 3)
        code = objects.index(dm.eval_objects[obj].obj_id) * 10 + trg
        assert code != objects.index(dm.eval_objects[obj].obj_id) * 10 + src
        torch.testing.assert_close(teacher[interior][:, 2], torch.full((int(interior.sum()),), float(code)))
        torch.testing.assert_close(teacher[..., 0][interior], (xs * CODED_CELLS / W - 0.5)[interior])
        torch.testing.assert_close(teacher[..., 1][interior], (ys * CODED_CELLS / H - 0.5)[interior])
    cfg.dataparser.teacher = "none"
    assert "teacher" not in cfg.setup(device="cpu", test_mode="test").eval_example(0)[1]
