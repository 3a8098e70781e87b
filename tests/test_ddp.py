"""Multi-device training: two real processes of the pipeline under torch.distributed (gloo on CPU), through
nerfstudio's worker, trainer and DDP wrapping (see :mod:`tests.ddp_worker`), compared with one process."""

from __future__ import annotations

import copy
import functools
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from featurenerf_ns.method_configs import featurenerf_tiny
from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.synthetic.generate import generate_category
from featurenerf_ns.utils.io import UserError
from tests.ddp_worker import RECORDED_STEP, WORLD_SIZE, RecordingTrainer, cpu_worker

STEPS = 4
SAVE_EVERY = 2
GRAD_TOLERANCE = 1e-5
"""Largest gradient difference allowed, relative to the largest gradient of the same parameter: fp32 round-off of
averaging the two ranks' gradients in another order (measured: 1.1e-7; a rank's own gradient is off by > 0.1)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(config, record_dir, timeout_s: float = 300.0) -> list[dict]:
    """Train ``config`` on two ranks and return what each recorded (see :class:`RecordingTrainer`)."""
    config = copy.deepcopy(config)
    config._target = functools.partial(RecordingTrainer, record_dir=record_dir)
    context = mp.spawn(cpu_worker, nprocs=WORLD_SIZE, args=(f"tcp://127.0.0.1:{free_port()}", config), join=False)
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=2):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {WORLD_SIZE} ranks did not finish in {timeout_s:.0f} s")
    return [torch.load(record_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]


def union_batch_gradients(pipeline, initial: dict, batches: list[tuple]) -> tuple[dict, dict]:
    """Gradients of the mean loss over the ranks' batches of one step, in one process, from ``initial``.

    Each batch goes through the product's training path (:meth:`FeatureNeRFPipeline.get_train_loss_dict`) with the
    generator state its rank had, so the model samples the same depths. Returns the union's gradients and those of
    the first batch alone.
    """
    pipeline.model.load_state_dict(initial)
    pipeline.train()
    losses = []
    with torch.random.fork_rng():
        for bundle, batch, rng in batches:
            pipeline.datamanager.next_train = lambda step, b=bundle, x=batch: (b, x)
            torch.set_rng_state(rng)
            _, loss_dict, _ = pipeline.get_train_loss_dict(RECORDED_STEP)
            losses.append(functools.reduce(torch.add, loss_dict.values()))
    params = dict(pipeline.model.named_parameters())
    first = torch.autograd.grad(losses[0], list(params.values()), retain_graph=True, allow_unused=True)
    union = torch.autograd.grad(torch.stack(losses).mean(), list(params.values()), allow_unused=True)
    return dict(zip(params, union, strict=True)), dict(zip(params, first, strict=True))


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


@pytest.mark.slow
def test_two_ranks_train_as_one_process_on_the_union_batch(tmp_path):
    generate_category(
        tmp_path / "data", "chair", num_objects=9, num_views=3, image_size=32, num_pairs=4, workers=0, progress=False
    )
    config = copy.deepcopy(featurenerf_tiny.config)
    config.pipeline.datamanager.data = tmp_path / "data" / "chair"
    config.output_dir, config.timestamp = tmp_path / "outputs", "run"
    config.max_num_iterations, config.steps_per_save = STEPS, SAVE_EVERY
    config.steps_per_eval_batch, config.steps_per_eval_image, config.steps_per_eval_all_images = 2, 3, 3
    config.save_config()  # as ns-train does before it launches the ranks
    ranks = run_ranks(config, tmp_path)

    # Each rank trains on its own objects: the shards are disjoint and cover the split, and every ray of every
    # batch belongs to an object of its rank's shard.
    single = config.pipeline.setup(device="cpu", test_mode="val")
    train = single.datamanager.train_dataparser_outputs
    objects = [r.obj_id for r in train.metadata["objects"]]
    shards = [set(rank["shard"]) for rank in ranks]
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(objects)
    assert sorted(len(s) for s in shards) == [len(objects) // 2, len(objects) - len(objects) // 2]
    for rank, shard in zip(ranks, shards, strict=True):
        assert len(rank["batches"]) == STEPS
        for _, batch, _ in rank["batches"]:
            seen = {objects[i] for i in train.cameras.metadata["object_index"][batch["indices"][:, 0], 0].tolist()}
            assert seen <= shard and len(seen) == config.pipeline.datamanager.objects_per_batch

    # The ranks start from different seeds; DDP starts them from rank 0's parameters and keeps parameters and
    # buffers identical, bit for bit, while training moves every one of them.
    assert not torch.equal(ranks[0]["batches"][0][2], ranks[1]["batches"][0][2])
    for stage in ("initial", "before", "final"):
        assert_same_state(ranks[0][stage], ranks[1][stage])
    initial, final = ranks[0]["initial"], ranks[0]["final"]
    assert [k for k, v in final.items() if torch.equal(v, initial[k])] == ["device_indicator_param"]

    # Every parameter but nerfstudio's empty device indicator gets a gradient, the same on both ranks, and it is the
    # gradient of the mean loss over both ranks' batches computed in one process (not either rank's own). The
    # encoder's batch norm normalises each rank's source images apart (DDP without SyncBatchNorm, which has no CPU
    # implementation), as the reference does by passing each rank's batch through the network on its own.
    batches = [rank["batches"][RECORDED_STEP] for rank in ranks]
    union, first = union_batch_gradients(single, ranks[0]["before"], batches)
    unused = {name for name, grad in union.items() if grad is None}
    assert unused == {"device_indicator_param"}
    for name, want in union.items():
        got = [rank["grads"][name] for rank in ranks]
        if name in unused:
            assert got == [None, None]
            continue
        assert torch.equal(got[0], got[1]) and want.abs().max() > 0, name
        assert relative_difference(got[0], want) < GRAD_TOLERANCE, name
    differences = {n: relative_difference(first[n], union[n]) for n in union if n not in unused}
    assert min(differences.values()) > 1000 * GRAD_TOLERANCE

    # Only rank 0 writes checkpoints and evaluates; its last checkpoint is the trained model, and it loads in one
    # process through the public API (what ns-eval, ns-viewer and featurenerf-eval use).
    expected = [f"step-{s:09d}.ckpt" for s in (SAVE_EVERY, STEPS - 1)]
    assert ranks[0]["saved"] == expected and ranks[1]["saved"] == []  # nerfstudio then keeps only the latest
    run_dir = config.get_base_dir()
    assert [p.name for p in (run_dir / "nerfstudio_models").iterdir()] == expected[-1:]
    assert ranks[0]["eval_count"] == 2 and ranks[1]["eval_count"] == 0
    loaded = TrainedFeatureNeRF.load(run_dir / "config.yml", device="cpu")
    assert loaded.checkpoint_step == STEPS - 1
    assert_same_state(loaded.model.state_dict(), final)


def test_single_device_checkpoint_loads_into_a_ddp_wrapped_model(tiny_root):
    """Fine-tuning a single-GPU (or imported) checkpoint with ``--machine.num-devices``: the checkpoint names the
    model's entries ``_model.x``, the DDP-wrapped pipeline ``_model.module.x``."""
    config = copy.deepcopy(featurenerf_tiny.config)
    config.pipeline.datamanager.data = tiny_root / "chair"
    source = config.pipeline.setup(device="cpu")
    target = config.pipeline.setup(device="cpu")
    assert not torch.equal(target.model.field.mlp.lin_in.weight, source.model.field.mlp.lin_in.weight)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        target._model = DistributedDataParallel(target._model, find_unused_parameters=True)  # as VanillaPipeline
        assert "_model.module.field.mlp.lin_in.weight" in target.state_dict()
        target.load_pipeline(source.state_dict(), step=0)
    finally:
        dist.destroy_process_group()
    assert_same_state(target.model.state_dict(), source.model.state_dict())


def test_several_devices_need_as_many_gpus(monkeypatch):
    config = copy.deepcopy(featurenerf_tiny.config)
    config.machine.num_devices = 2
    with pytest.raises(UserError) as info:
        config.check_devices()
    message = str(info.value)
    assert "\n" not in message and "--machine.num-devices 2" in message and "--machine.device-type cuda" in message
    # A machine with one GPU (this one has none: only the count matters here).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    config.machine.device_type = "cuda"
    with pytest.raises(UserError, match=r"^--machine.num-devices 2, but this machine has 1 GPU\(s\)$"):
        config.check_devices()
    config.machine.num_devices = 1
    config.check_devices()
