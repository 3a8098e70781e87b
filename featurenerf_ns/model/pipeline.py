"""Pipeline that hands each batch's source-view conditioning to the model.

nerfstudio's ``VanillaPipeline`` calls ``model(ray_bundle)``; a generalizable NeRF also needs the
source images and cameras of the batch's objects, which are per object rather than per ray.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from time import time

import torch
import torchvision.utils as vutils
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import profiler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor

from featurenerf_ns.data.datamanager import FeatureNeRFDataManagerConfig
from featurenerf_ns.layout import SPLITS
from featurenerf_ns.model.authors_checkpoint import (
    architecture_of_config,
    architecture_of_model_state,
    mismatch_message,
)
from featurenerf_ns.model.featurenerf import FeatureNeRFModel, FeatureNeRFModelConfig
from featurenerf_ns.model.field import Conditioning
from featurenerf_ns.utils.io import UserError

VIEWER_ENTRY_POINTS = "featurenerf_ns.viewer"
r"""Entry-point group of the viewer panel's factory (``pipeline -> panel or None``), registered by the package. The
panel is an ``nn.Module`` holding nerfstudio ``ViewerElement``\ s, with ``render_outputs(camera) -> outputs`` for the
viewer's cameras (:meth:`FeatureNeRFPipeline.render_viewer_camera`): the one place where it plugs in."""
RENDER_SOURCE_ENV = "FEATURENERF_RENDER_SOURCE"
"""Environment variable naming the source of ``ns-render`` (see ``FeatureNeRFPipelineConfig.render_source``)."""


@dataclass
class FeatureNeRFPipelineConfig(VanillaPipelineConfig):
    """Pipeline of FeatureNeRF: category datamanager + FeatureNeRF model."""

    _target: type = field(default_factory=lambda: FeatureNeRFPipeline)
    datamanager: FeatureNeRFDataManagerConfig = field(default_factory=FeatureNeRFDataManagerConfig)
    """Category datamanager."""
    model: FeatureNeRFModelConfig = field(default_factory=FeatureNeRFModelConfig)
    """FeatureNeRF model."""
    render_source: str = ""
    """Source of the renders that bring no source image (ns-render; nerfstudio's viewer without the FeatureNeRF
    panel): <split>/<object id>[:<view>[,<view>...]], e.g. test/chair_0003:0,2. Empty: view 0 of the first eval
    object. ns-render takes no pipeline options: set it in the run's config.yml or in $FEATURENERF_RENDER_SOURCE."""


def require_device(device: str | torch.device) -> None:
    """Raise a one-line :class:`UserError` when ``device`` is CUDA or MPS and this machine has none (without this, a
    CPU-only machine fails deep inside torch's CUDA initialisation)."""
    kind = torch.device(device).type
    if (kind == "cuda" and not torch.cuda.is_available()) or (kind == "mps" and not torch.backends.mps.is_available()):
        raise UserError(
            f"{kind} is not available on this machine: train on the CPU with --machine.device-type cpu "
            "(the featurenerf-cpu preset does)"
        )


def unwrapped_model_keys(state: dict) -> dict:
    """``state`` with the model's entries named as without DDP (``_model.module.x`` -> ``_model.x``)."""
    return {
        "_model." + key.removeprefix("_model.module.") if key.startswith("_model.module.") else key: value
        for key, value in state.items()
    }


class FeatureNeRFPipeline(VanillaPipeline):
    """Encodes each batch's source views, then renders its rays."""

    config: FeatureNeRFPipelineConfig

    def __init__(self, config: FeatureNeRFPipelineConfig, device: str | torch.device, *args, **kwargs):
        require_device(device)
        super().__init__(config, device, *args, **kwargs)
        self._check_teacher_fits()
        self._default_source: Conditioning | None = None
        # A function, not a bound method: copy.deepcopy keeps functions as they are, so copying the model (e.g. to
        # float64) does not copy the pipeline and its datamanager with it. It keeps the pipeline alive as long as the
        # model (the API holds only the model).
        self.featurenerf.camera_renderer = lambda camera: self.render_viewer_camera(camera)

    @property
    def FeatureNeRF(self):  # noqa: N802 (nerfstudio names the panel's folder "Custom Elements/FeatureNeRF" after it)
        """The viewer panel, built on first access by the factory registered under the entry-point group
        ``featurenerf_ns.viewer`` (the viewer package), so the pipeline never imports the viewer.

        nerfstudio's viewer looks for elements among the pipeline's attributes when it starts (a plain property is
        read; a cached one would be skipped), and nothing else reads this: headless commands (``ns-eval``,
        ``ns-render``, ``featurenerf-eval``) neither build nor import the panel. None when no viewer is installed or
        the data cannot feed one.
        """
        if "_panel" not in self.__dict__:
            factories = entry_points(group=VIEWER_ENTRY_POINTS)
            # Kept out of the module tree (object.__setattr__): the panel has no state for checkpoints.
            object.__setattr__(self, "_panel", factories[0].load()(self) if factories else None)
        return self.__dict__["_panel"]

    def render_viewer_camera(self, camera: Cameras) -> dict[str, Tensor]:
        """The model's ``camera_renderer``: the viewer panel's outputs once a viewer has built it (:attr:`FeatureNeRF`),
        else :meth:`render_default_source`."""
        panel = self.__dict__.get("_panel")
        return panel.render_outputs(camera) if panel is not None else self.render_default_source(camera)

    def render_default_source(self, camera: Cameras) -> dict[str, Tensor]:
        """What nerfstudio's viewer and ``ns-render`` (which bring no source image) see without the panel: the field
        conditioned on the configured source (:attr:`FeatureNeRFPipelineConfig.render_source`, encoded once),
        ``rgb``/``depth``/``accumulation`` (v_NeRF is not composited)."""
        if self._default_source is None:
            # Not at the top: the API imports nerfstudio's eval_utils, which imports the method configs, which
            # import this module.
            from featurenerf_ns.model.api import TrainedFeatureNeRF

            split, obj_id, views = self.render_source()
            api = TrainedFeatureNeRF(self.featurenerf, self.datamanager, set_eval=False)
            self._default_source = api.encode(split, obj_id, views)
        return self.featurenerf.render_camera(self._default_source, camera, frozenset({"rgb"}))

    def render_source(self) -> tuple[str, str, list[int]]:
        """``(split, object id, views)`` of :meth:`render_default_source`: ``$FEATURENERF_RENDER_SOURCE``, else the
        config's ``render_source``, else view 0 of the first eval object."""
        text = os.environ.get(RENDER_SOURCE_ENV) or self.config.render_source
        eval_split = "val" if self.datamanager.test_mode == "val" else "test"
        if not text:
            return eval_split, self.datamanager.eval_dataparser_outputs.metadata["objects"][0].obj_id, [0]
        where = f"${RENDER_SOURCE_ENV}" if os.environ.get(RENDER_SOURCE_ENV) else "render_source"
        split, sep, rest = text.partition("/")
        obj_id, _, view_text = rest.partition(":")
        try:
            views = [int(v) for v in view_text.split(",")] if view_text else [0]
        except ValueError:
            views = []
        if not sep or split not in SPLITS or not obj_id or not views:
            raise UserError(
                f"{where} {text!r}: expected <split>/<object id>[:<view>[,<view>...]] with split one of {SPLITS}"
            )
        return split, obj_id, views

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
        """Load a checkpoint; one of a differently shaped network is one line naming the options that fit it.

        Checkpoints of a multi-device run (and this pipeline's own state under DDP) name the model's entries
        ``_model.module.*``: they are compared as the unwrapped model names them, and nerfstudio loads either way.
        """
        own = unwrapped_model_keys(self.state_dict())
        loaded = unwrapped_model_keys({key.removeprefix("module."): value for key, value in loaded_state.items()})
        network = ("_model.field.", "_model.encoder.")
        problems = [
            f"{k} is {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} here"
            for k, v in loaded.items()
            if k in own and isinstance(v, torch.Tensor) and own[k].shape != v.shape
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

    def get_extra_state(self) -> dict:
        """What training draws random numbers from (torch's generator, the datamanager's sampler), saved with every
        checkpoint so that a resumed run continues exactly as an uninterrupted one would (single process)."""
        state = {"torch_rng": torch.get_rng_state(), "sampler": self.datamanager.sampler_state()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def set_extra_state(self, state: dict) -> None:
        # Checkpoints without it (older ones, imported authors' checkpoints) load without calling this: nerfstudio
        # loads the pipeline's own state non-strictly.
        self.datamanager.load_sampler_state(state["sampler"])
        if self.world_size > 1:
            # Only rank 0's generator is in the checkpoint; the ranks must keep drawing different pixels.
            torch.manual_seed(torch.initial_seed() + 1_000_003 * self.datamanager.train_count)
            return
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

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
            outputs = self.featurenerf.render_camera(cond, camera, self.featurenerf.image_outputs(batch))
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
        """Mean PSNR/SSIM(/LPIPS) and distillation error over the datamanager's fixed (object, source view, target
        view) triples; a metric that some views lack (no teacher, no foreground) is averaged over the views that
        have it."""
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
        for key in dict.fromkeys(k for m in per_image for k in m):
            values = torch.tensor([m[key] for m in per_image if key in m])
            result[key] = float(values.mean())
            if get_std:
                result[f"{key}_std"] = float(values.std())
        self.train()
        return result
