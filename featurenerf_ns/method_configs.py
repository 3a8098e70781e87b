"""Method configurations registered with nerfstudio (entry points ``nerfstudio.method_configs``).

``featurenerf`` is the paper's configuration (DINO teacher); ``featurenerf-dinov2`` and
``featurenerf-diffusion`` distil DINOv2 or Latent Diffusion features instead; ``featurenerf-nerf-feature`` is
its "NeRF feature" baseline (the same network trained without distillation or coordinate loss, i.e. pixelNeRF);
``featurenerf-cpu`` trains usefully on a 2-core CPU in about 20 minutes; ``featurenerf-tiny`` is a
seconds-long smoke test. Method names are stable API: ``ns-eval`` finds a run's method by name.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.plugins.types import MethodSpecification
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE

from featurenerf_ns.data.datamanager import FeatureNeRFDataManagerConfig
from featurenerf_ns.dataparsers.featurenerf_dataparser import FeatureNeRFDataParserConfig
from featurenerf_ns.layout import DINOV2_TEACHER_FOLDER
from featurenerf_ns.model.encoder import SpatialEncoderConfig
from featurenerf_ns.model.featurenerf import FeatureNeRFModelConfig
from featurenerf_ns.model.field import FeatureNeRFFieldConfig
from featurenerf_ns.model.pipeline import FeatureNeRFPipelineConfig, require_device
from featurenerf_ns.utils.io import UserError, check_writable


class FeatureNeRFTrainer(Trainer):
    """nerfstudio's trainer; with several devices (``--machine.num-devices``) only the main process evaluates."""

    @check_main_thread
    def eval_iteration(self, step: int) -> None:
        # Every rank holds the same model and the same fixed eval triples, and only the main process writes what
        # evaluation measures; the other ranks go on to the next step and wait there for this one's gradients.
        super().eval_iteration(step)


@dataclass
class FeatureNeRFTrainerConfig(TrainerConfig):
    """nerfstudio's trainer configuration, naming runs after the category (outputs/<category>/<method>/...)."""

    _target: type = field(default_factory=lambda: FeatureNeRFTrainer)

    def check_devices(self) -> None:
        """The device type exists here and, with ``--machine.num-devices`` above 1, there are that many GPUs (nerfstudio
        runs one process per CUDA device); one-line :class:`UserError` otherwise."""
        machine = self.machine
        require_device(machine.device_type)
        if machine.num_devices > 1 and machine.device_type != "cuda":
            raise UserError(
                f"--machine.num-devices {machine.num_devices} needs GPUs (--machine.device-type cuda): nerfstudio "
                f"trains on several devices with one process per GPU; on {machine.device_type} train with one device"
            )
        if machine.device_type == "cuda" and machine.num_devices > torch.cuda.device_count():
            raise UserError(
                f"--machine.num-devices {machine.num_devices}, but this machine has {torch.cuda.device_count()} GPU(s)"
            )

    def check_encoder_weights(self) -> None:
        """A run that starts from scratch must have the encoder weights it asks for (one-line :class:`UserError`)."""
        if self.load_dir is None and self.load_checkpoint is None:
            problem = self.pipeline.model.encoder.missing_weights()
            if problem is not None:
                raise UserError(problem)

    def preflight(self) -> None:
        """What a run needs before anything is written: the device, the encoder weights, data that parse and a
        writable output folder. Each failure is one line (a :class:`UserError`)."""
        self.check_devices()
        self.check_encoder_weights()
        check_writable(self.get_base_dir())
        parser = copy.deepcopy(self.pipeline.datamanager.dataparser)
        if self.pipeline.datamanager.data is not None:
            parser.data = Path(self.pipeline.datamanager.data)
        parser.setup().get_dataparser_outputs(split="train")

    def save_config(self) -> None:
        """``ns-train`` writes the run folder here, before training starts: check first, so that a start that
        fails leaves no empty run behind."""
        self.preflight()
        super().save_config()

    def setup(self, **kwargs):
        """The trainer (``ns-train`` ran :meth:`preflight` before writing the run; the device and the data are
        checked again where they are used)."""
        self.check_encoder_weights()
        encoder = self.pipeline.model.encoder
        if self.load_dir is None and self.load_checkpoint is None and encoder.weights == "imagenet-if-available":
            if not encoder.weights_file().is_file():
                CONSOLE.print(
                    f"[yellow]Encoder: ImageNet weights not found at {encoder.weights_file()}; training it from random "
                    "initialisation (pass --pipeline.model.encoder.weights PATH to start from them)."
                )
        return super().setup(**kwargs)

    def set_experiment_name(self) -> None:
        # nerfstudio names runs after --data; a category is often chosen through the dataparser's own
        # --data (or its default, the embedded chairs) instead.
        if self.experiment_name is None and self.pipeline.datamanager.data is None:
            self.experiment_name = Path(self.pipeline.datamanager.dataparser.data).name
        super().set_experiment_name()


def _optimizers(lr: float) -> dict:
    # No scheduler: nerfstudio's schedulers leave numpy scalars in checkpoints that torch>=2.6 refuses to load.
    return {
        "encoder": {"optimizer": AdamOptimizerConfig(lr=lr), "scheduler": None},
        "field": {"optimizer": AdamOptimizerConfig(lr=lr), "scheduler": None},
    }


def _paper() -> TrainerConfig:
    return FeatureNeRFTrainerConfig(
        method_name="featurenerf",
        steps_per_eval_batch=500,
        steps_per_eval_image=2000,
        steps_per_eval_all_images=50_000,
        steps_per_save=2000,
        max_num_iterations=600_000,
        mixed_precision=False,
        pipeline=FeatureNeRFPipelineConfig(
            datamanager=FeatureNeRFDataManagerConfig(dataparser=FeatureNeRFDataParserConfig()),
            model=FeatureNeRFModelConfig(),
        ),
        optimizers=_optimizers(1e-4),
        viewer=ViewerConfig(num_rays_per_chunk=1024),
        vis="viewer",
    )


def _nerf_feature() -> TrainerConfig:
    config = _paper()
    config.method_name = "featurenerf-nerf-feature"
    config.pipeline.model = dataclasses.replace(config.pipeline.model, lambda_distill=0.0, lambda_coord=0.0)
    return config


def _dinov2() -> TrainerConfig:
    config = _paper()
    config.method_name = "featurenerf-dinov2"
    # Features cached by `featurenerf-teacher dinov2`; the feature head takes their channels (384 for ViT-S/14).
    config.pipeline.datamanager.dataparser = FeatureNeRFDataParserConfig(teacher=DINOV2_TEACHER_FOLDER)
    return config


def _diffusion() -> TrainerConfig:
    config = _paper()
    config.method_name = "featurenerf-diffusion"
    # Features cached by `featurenerf-teacher diffusion` (960 channels at 128x128, the paper's shape).
    config.pipeline.datamanager.dataparser = FeatureNeRFDataParserConfig(teacher="diffusion_feat_128")
    config.pipeline.model = dataclasses.replace(config.pipeline.model, feature_dim=960)
    return config


def _cpu() -> TrainerConfig:
    return FeatureNeRFTrainerConfig(
        method_name="featurenerf-cpu",
        steps_per_eval_batch=250,
        steps_per_eval_image=1000,
        steps_per_eval_all_images=100_000,
        steps_per_save=500,
        max_num_iterations=4000,
        mixed_precision=False,
        pipeline=FeatureNeRFPipelineConfig(
            datamanager=FeatureNeRFDataManagerConfig(
                dataparser=FeatureNeRFDataParserConfig(image_size=64),
                objects_per_batch=4,
                rays_per_object=128,
                target_views_per_object=8,
                bbox_sampling_steps=1000,
                eval_num_triples=50,
            ),
            model=FeatureNeRFModelConfig(
                encoder=SpatialEncoderConfig(backbone="resnet18", num_layers=3, weights="imagenet-if-available"),
                field=FeatureNeRFFieldConfig(hidden_dim=128),
                num_coarse_samples=32,
                num_fine_samples=16,
                num_fine_depth_samples=8,
                eval_num_rays_per_chunk=4096,
            ),
        ),
        optimizers=_optimizers(5e-4),
        machine=MachineConfig(device_type="cpu"),
        viewer=ViewerConfig(num_rays_per_chunk=4096, quit_on_train_completion=True),
        vis="tensorboard",
    )


def _tiny() -> TrainerConfig:
    config = _cpu()
    config.method_name = "featurenerf-tiny"
    config.steps_per_eval_batch, config.steps_per_eval_image, config.steps_per_save = 5, 10, 10
    config.max_num_iterations = 20
    dm = config.pipeline.datamanager
    dm.dataparser.image_size = 32
    dm.objects_per_batch, dm.rays_per_object, dm.target_views_per_object = 2, 32, 2
    dm.bbox_sampling_steps, dm.num_workers, dm.eval_num_triples = 5, 1, 2
    config.pipeline.model = FeatureNeRFModelConfig(
        encoder=SpatialEncoderConfig(backbone="resnet18", num_layers=2, weights="random"),
        field=FeatureNeRFFieldConfig(hidden_dim=32, num_blocks=3, combine_layer=2),
        num_coarse_samples=8,
        num_fine_samples=4,
        num_fine_depth_samples=2,
    )
    config.optimizers = _optimizers(1e-3)
    return config


featurenerf = MethodSpecification(
    config=_paper(),
    description="FeatureNeRF (ICCV 2023): generalizable NeRF with distilled foundation-model features (paper config)",
)
featurenerf_nerf_feature = MethodSpecification(
    config=_nerf_feature(),
    description="FeatureNeRF's 'NeRF feature' baseline: the same network without distillation (pixelNeRF)",
)
featurenerf_dinov2 = MethodSpecification(
    config=_dinov2(),
    description="FeatureNeRF distilled from DINOv2 ViT features (key facet; see featurenerf-teacher dinov2)",
)
featurenerf_diffusion = MethodSpecification(
    config=_diffusion(),
    description="FeatureNeRF distilled from Latent Diffusion U-Net features (d_embed 960; see featurenerf-teacher)",
)
featurenerf_cpu = MethodSpecification(
    config=_cpu(),
    description="FeatureNeRF CPU preset: 64 px, small MLP; trains usefully in ~20 min on 2 cores",
)
featurenerf_tiny = MethodSpecification(
    config=_tiny(),
    description="FeatureNeRF smoke-test preset: 32 px, tiny network, 20 steps",
)
