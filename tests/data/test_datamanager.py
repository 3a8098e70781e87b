"""Category datamanager: batches, view sampling, sharding, eval triples."""

from __future__ import annotations

import pytest
import torch

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


def test_target_rays_come_from_other_views_and_the_object_box(data_root):
    dm = make(data_root, objects_per_batch=2, rays_per_object=64, bbox_sampling_steps=10)
    plans = []
    original = dm._plan_train
    dm._plan_train = lambda: plans.append(original()) or plans[-1]
    _, batch = dm.next_train(0)
    cams = dm.train_dataparser_outputs.cameras
    views = cams.metadata["view_index"][batch["indices"][:, 0], 0].view(2, 64)
    for (_, src, trg), used in zip(plans[0], views, strict=True):
        assert not set(src) & set(trg)
        assert set(used.tolist()) <= set(trg)
    # In the first steps pixels are drawn inside the foreground bounding box, so rays hit the object far
    # more often than pixels drawn from the whole image would.
    whole = torch.stack([dm.load_views(rec, trg, False).rgba[..., 3].gt(0).float().mean() for rec, _, trg in plans[0]])
    assert (batch["image"].sum(-1) > 0).float().mean() > 1.5 * whole.mean()


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
