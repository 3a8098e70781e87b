"""Pipeline that hands each batch's source-view conditioning to the model.

nerfstudio's ``VanillaPipeline`` calls ``model(ray_bundle)``; a generalizable NeRF also needs the
source images and cameras of the batch's objects, which are per object rather than per ray.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from time import time

import torch
import torchvision.utils as vutils
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import profiler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from featurenerf_ns.data.datamanager import FeatureNeRFDataManagerConfig
from featurenerf_ns.model.authors_checkpoint import (
    architecture_of_config,
    architecture_of_model_state,
    mismatch_message,
)
from featurenerf_ns.model.featurenerf import FeatureNeRFModel, FeatureNeRFModelConfig
from featurenerf_ns.utils.io import UserError


@dataclass
class FeatureNeRFPipelineConfig(VanillaPipelineConfig):
    """Pipeline of FeatureNeRF: category datamanager + FeatureNeRF model."""

    _target: type = field(default_factory=lambda: FeatureNeRFPipeline)
    datamanager: FeatureNeRFDataManagerConfig = field(default_factory=FeatureNeRFDataManagerConfig)
    """Category datamanager."""
    model: FeatureNeRFModelConfig = field(default_factory=FeatureNeRFModelConfig)
    """FeatureNeRF model."""


def require_device(device: str | torch.device) -> None:
    """Raise a one-line :class:`UserError` when ``device`` is CUDA or MPS and this machine has none (without this, a
    CPU-only machine fails deep inside torch's CUDA initialisation)."""
    kind = torch.device(device).type
    if (kind == "cuda" and not torch.cuda.is_available()) or (kind == "mps" and not torch.backends.mps.is_available()):
        raise UserError(
            f"{kind} is not available on this machine: train on the CPU with --machine.device-type cpu "
            "(the featurenerf-cpu preset does)"
        )


class FeatureNeRFPipeline(VanillaPipeline):
    """Encodes each batch's source views, then renders its rays."""

    config: FeatureNeRFPipelineConfig

    def __init__(self, config: FeatureNeRFPipelineConfig, device: str | torch.device, *args, **kwargs):
        require_device(device)
        super().__init__(config, device, *args, **kwargs)
        self._check_teacher_fits()
        from featurenerf_ns.viewer.panel import make_panel

        # The viewer lists the elements of this module under "Custom Elements/FeatureNeRF" (the folder
        # takes the attribute's name); it has no parameters, so checkpoints are unchanged.
        self.FeatureNeRF = make_panel(self)

    def _check_teacher_fits(self) -> None:
        """Training distils the teacher into the feature head: their channels must agree (one line if not)."""
        model = self.featurenerf
        meta = self.datamanager.train_dataparser_outputs.metadata
        teacher_dim = meta.get("teacher_dim")
        if self.test_mode != "val" or model.config.lambda_distill <= 0 or teacher_dim is None:
            return
        if teacher_dim != model.feature_dim:
            raise UserError(
                f"the feature head has {model.feature_dim} channels but the teacher features "
                f"({meta.get('teacher_folder')}) have {teacher_dim}: pass --pipeline.model.feature-dim {teacher_dim} "
                "to train a new head, or --pipeline.model.lambda-distill 0 to train without distillation"
            )

    def load_pipeline(self, loaded_state: dict, step: int) -> None:
        """Load a checkpoint; one of a differently shaped network is one line naming the options that fit it."""
        own = self.state_dict()
        loaded = {key.removeprefix("module."): value for key, value in loaded_state.items()}
        network = ("_model.field.", "_model.encoder.")
        problems = [
            f"{k} is {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} here"
            for k, v in loaded.items()
            if k in own and own[k].shape != v.shape
        ]
        problems += [
            f"the checkpoint has {k}, which this model lacks" for k in loaded if k.startswith(network) and k not in own
        ]
        problems += [f"the checkpoint lacks {k}" for k in own if k.startswith(network) and k not in loaded]
        if problems:
            model = self.featurenerf
            theirs = architecture_of_model_state(loaded, model.config.regress_coord)
            current = architecture_of_config(dataclasses.replace(model.config, feature_dim=model.feature_dim))
            hint = mismatch_message(theirs, current) if theirs is not None else ""
            raise UserError(f"checkpoint does not fit this model: {hint or problems[0]}")
        super().load_pipeline(loaded_state, step)

    @property
    def featurenerf(self) -> FeatureNeRFModel:
        return self.model  # type: ignore[return-value]

    def _encode(self, batch: dict):
        c = batch["conditioning"]
        # Under DDP the encoder's parameters are reached through the rendered outputs' graph, so their
        # gradients are synchronised like the field's.
        return self.featurenerf.encode(c["images"], c["c2w"], c["intrinsics"])

    @profiler.time_function
    def get_train_loss_dict(self, step: int):
        ray_bundle, batch = self.datamanager.next_train(step)
        cond = self._encode(batch)
        model_outputs = self._model(ray_bundle, cond)
        metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
        loss_dict = self.model.get_loss_dict(model_outputs, batch, metrics_dict)
        return model_outputs, loss_dict, metrics_dict

    @profiler.time_function
    def get_eval_loss_dict(self, step: int):
        self.eval()
        ray_bundle, batch = self.datamanager.next_eval(step)
        with torch.no_grad():
            model_outputs = self.model(ray_bundle, self._encode(batch))
        metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
        loss_dict = self.model.get_loss_dict(model_outputs, batch, metrics_dict)
        self.train()
        return model_outputs, loss_dict, metrics_dict

    def _render_example(self, camera, batch) -> tuple[dict, dict]:
        with torch.no_grad():
            cond = self._encode(batch)
            outputs = self.featurenerf.render_camera(cond, camera, frozenset({"rgb"}))
        return self.model.get_image_metrics_and_images(outputs, batch)

    @profiler.time_function
    def get_eval_image_metrics_and_images(self, step: int):
        self.eval()
        camera, batch = self.datamanager.next_eval_image(step)
        metrics_dict, images_dict = self._render_example(camera, batch)
        metrics_dict["num_rays"] = int(camera.height.item() * camera.width.item())
        self.train()
        return metrics_dict, images_dict

    @profiler.time_function
    def get_average_eval_image_metrics(
        self, step: int | None = None, output_path: Path | None = None, get_std: bool = False
    ):
        """Mean PSNR/SSIM(/LPIPS) over the datamanager's fixed (object, source view, target view) triples."""
        self.eval()
        dm = self.datamanager
        if output_path is not None:
            output_path.mkdir(exist_ok=True, parents=True)
        per_image = []
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            MofNCompleteColumn(),
            transient=True,
        ) as progress:
            task = progress.add_task("[green]Evaluating novel views of held-out objects...", total=len(dm.eval_triples))
            for i in range(len(dm.eval_triples)):
                camera, batch = dm.eval_example(i)
                start = time()
                metrics, images = self._render_example(camera, batch)
                metrics["num_rays_per_sec"] = float(camera.height.item() * camera.width.item() / (time() - start))
                if output_path is not None:
                    for key, image in images.items():
                        vutils.save_image(image.permute(2, 0, 1).cpu(), output_path / f"eval_{key}_{i:04d}.png")
                per_image.append(metrics)
                progress.advance(task)
        result = {}
        for key in per_image[0]:
            values = torch.tensor([m[key] for m in per_image])
            result[key] = float(values.mean())
            if get_std:
                result[f"{key}_std"] = float(values.std())
        self.train()
        return result
