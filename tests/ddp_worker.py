"""Ranks of a two-process training run on CPU, as ``ns-train --machine.num-devices 2`` runs them on GPUs.

Each process is nerfstudio's own ``_distributed_worker`` (process group, gloo for a CPU device type) running its own
``train_loop`` with our trainer, pipeline and DDP-wrapped model. Two CUDA-specific calls stand in the way on a CPU and
are all that is replaced: the worker asserts that CUDA is available (and that there are as many GPUs as ranks) before
it picks gloo, and ``VanillaPipeline`` passes the rank as a CUDA device index to DDP (``device_ids=[local_rank]``),
which DDP refuses for a CPU module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from nerfstudio.pipelines import base_pipeline
from torch.nn.parallel import DistributedDataParallel

from featurenerf_ns.method_configs import FeatureNeRFTrainer, FeatureNeRFTrainerConfig

WORLD_SIZE = 2
RECORDED_STEP = 1
"""The step whose gradients each rank records, with the model state they were computed at. Not step 0: the residual
blocks' second layers start at zero (the authors' initialisation), so their first layers get no gradient then."""


class CpuDDP(DistributedDataParallel):
    """DDP as ``VanillaPipeline`` builds it, without the CUDA device index that a CPU module cannot take."""

    def __init__(self, module: torch.nn.Module, device_ids: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(module, **kwargs)


def cpu_worker(local_rank: int, dist_url: str, config: FeatureNeRFTrainerConfig) -> None:
    """``torch.multiprocessing.spawn`` target: nerfstudio's distributed worker with a CPU device type."""
    # Imported here: the test process only hands this function to spawn, and nerfstudio's script module takes seconds
    # to import (it loads every registered method).
    from nerfstudio.scripts.train import _distributed_worker, train_loop

    base_pipeline.DDP = CpuDDP
    cuda_checks = torch.cuda.is_available, torch.cuda.device_count
    torch.cuda.is_available, torch.cuda.device_count = (lambda: True), (lambda: WORLD_SIZE)

    def main_func(*args: Any) -> None:
        # The worker's CUDA assertions are behind us: nothing that trains may believe in a GPU.
        torch.cuda.is_available, torch.cuda.device_count = cuda_checks
        train_loop(*args)

    _distributed_worker(local_rank, main_func, WORLD_SIZE, WORLD_SIZE, 0, dist_url, config, device_type="cpu")


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class RecordingTrainer(FeatureNeRFTrainer):
    """The product's trainer, recording what its rank trained on and computed into ``record_dir/rank<r>.pt``.

    Recorded: the rank's shard of training objects, the model state after setup and after training, every step's
    batch with torch's generator state at the time (the model draws its samples along the rays from it right after),
    the model state before :data:`RECORDED_STEP` and that step's gradients as the optimizer saw them, the checkpoint
    files this process wrote and how many evaluations it ran. Every call goes through to the product's code.
    """

    def __init__(self, config: FeatureNeRFTrainerConfig, local_rank: int = 0, world_size: int = 1, *, record_dir: Path):
        super().__init__(config, local_rank, world_size)
        self.record_dir = record_dir
        self.record: dict[str, Any] = {"batches": [], "saved": []}

    def setup(self, test_mode="val") -> None:
        super().setup(test_mode)
        dm = self.pipeline.datamanager
        self.record["shard"] = [r.obj_id for r in dm.train_objects]
        self.record["initial"] = state_of(self.pipeline.model)
        next_train = dm.next_train

        def recording_next_train(step: int):
            bundle, batch = next_train(step)
            self.record["batches"].append((bundle, batch, torch.get_rng_state()))
            return bundle, batch

        dm.next_train = recording_next_train

    def train_iteration(self, step: int):
        if step == RECORDED_STEP:
            self.record["before"] = state_of(self.pipeline.model)
        result = super().train_iteration(step)
        if step == RECORDED_STEP:
            self.record["grads"] = {
                name: None if p.grad is None else p.grad.clone() for name, p in self.pipeline.model.named_parameters()
            }
        return result

    def train(self) -> None:
        save = torch.save

        def recording_save(obj, f, *args, **kwargs):
            self.record["saved"].append(Path(f).name)
            return save(obj, f, *args, **kwargs)

        torch.save = recording_save
        try:
            super().train()
        finally:
            torch.save = save
        self.record["final"] = state_of(self.pipeline.model)
        self.record["eval_count"] = self.pipeline.datamanager.eval_count
        torch.save(self.record, self.record_dir / f"rank{self.local_rank}.pt")
