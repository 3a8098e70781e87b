"""``featurenerf-import``: an authors' checkpoint as a nerfstudio run folder.

```
featurenerf-import checkpoints/chair_dino/pixel_nerf_latest \
    --config conf/exp/feature_dino_256_0.25_share_coord.conf --data /path/to/featurenerf_data/chair
featurenerf-import srn_car/pixel_nerf_latest --config conf/exp/srn.conf --dataparser featurenerf-srn \
    --data srn_cars/cars
```
writes ``<output-dir>/<experiment>/<method>/<timestamp>/{config.yml, nerfstudio_models/step-000000000.ckpt}``,
which ``ns-eval``, ``ns-viewer``, ``ns-render``, ``featurenerf-eval``, ``featurenerf-edit`` and
:class:`~featurenerf_ns.model.api.TrainedFeatureNeRF` open like any run, and ``ns-train --load-dir``
fine-tunes. Nothing is written when the checkpoint or config is refused.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import torch
import tyro
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import TrainerConfig
from rich.console import Console

from featurenerf_ns.model.authors_checkpoint import (
    AuthorsCheckpoint,
    architecture_of_config,
    differing_options,
    read_authors_checkpoint,
    require_fits,
    to_model_state,
)
from featurenerf_ns.utils.errors import report_user_errors
from featurenerf_ns.utils.io import UserError, check_writable
from featurenerf_ns.utils.run_folder import write_run

Method = Literal["auto", "featurenerf", "featurenerf-diffusion", "featurenerf-nerf-feature"]
DataParserName = Literal["featurenerf-data", "featurenerf-srn", "featurenerf-co3d"]


@dataclass
class ImportConfig:
    """Turn an authors' ``pixel_nerf_latest`` (FeatureNeRF or pixelNeRF) into a nerfstudio run folder."""

    checkpoint: tyro.conf.Positional[Path]
    """The authors' checkpoint file (``torch.save(net.state_dict())``, e.g. checkpoints/<exp>/pixel_nerf_latest)."""
    config: Path | None = None
    """The HOCON .conf the network was built from (e.g. conf/exp/feature_dino_256_0.25_share_coord.conf); checked
    against the weights, and the source of use_first_pool, sample counts, white background and loss weights."""
    data: Path = Path("synthetic/chair")
    """The category the run reads for evaluation and fine-tuning (the dataparser's --data)."""
    dataparser: DataParserName = "featurenerf-data"
    """Layout of --data: the authors' processed ShapeNet, pixelNeRF's SRN, or CO3D v2."""
    method: Method = "auto"
    """Method the run is recorded as; auto = featurenerf for a distilled-feature checkpoint,
    featurenerf-nerf-feature (the 'NeRF feature' baseline) for pixelNeRF's."""
    regress_coord: bool | None = None
    """Whether the last 3 outputs are the coordinate head; default from --config or from the output size."""
    output_dir: Path = Path("outputs")
    """Runs go to <output-dir>/<experiment-name>/<method>/<timestamp>/, as ns-train's."""
    experiment_name: str | None = None
    """Default: the name of --data's last folder (the category)."""
    timestamp: str | None = None
    """Run folder name; default the current time, as ns-train."""
    device_type: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """Device the run's commands use (auto = cuda when available, else cpu); ns-eval and ns-viewer read it."""


def _dataparser_config(name: DataParserName, data: Path):
    from featurenerf_ns.dataparsers import specs

    spec = {"featurenerf-data": specs.featurenerf_data, "featurenerf-srn": specs.featurenerf_srn}.get(
        name, specs.featurenerf_co3d
    )
    config = copy.deepcopy(spec.config)
    config.data = data
    return config


def _method_config(method: str) -> TrainerConfig:
    """The registered method's TrainerConfig (not a copy)."""
    from featurenerf_ns import method_configs

    specs = {
        "featurenerf": method_configs.featurenerf,
        "featurenerf-diffusion": method_configs.featurenerf_diffusion,
        "featurenerf-nerf-feature": method_configs.featurenerf_nerf_feature,
    }
    return specs[method].config


def build_run_config(cfg: ImportConfig, ckpt: AuthorsCheckpoint) -> TrainerConfig:
    """The run's TrainerConfig: the chosen method's, with the checkpoint's network and the config's settings."""
    method = cfg.method
    if method == "auto":
        method = "featurenerf" if ckpt.kind == "featurenerf" else "featurenerf-nerf-feature"
    if method != "featurenerf-nerf-feature":
        require_fits(ckpt, "featurenerf")
    config: TrainerConfig = copy.deepcopy(_method_config(method))
    config.pipeline.datamanager.dataparser = _dataparser_config(cfg.dataparser, cfg.data)
    model = ckpt.architecture.apply(config.pipeline.model)
    settings = dict(ckpt.settings)
    if ckpt.architecture.feature_dim == 0:
        settings["lambda_distill"] = 0.0
    if not ckpt.architecture.regress_coord:
        settings["lambda_coord"] = 0.0
    for key, value in settings.items():
        setattr(model, key, value)
    config.pipeline.model = model
    device = cfg.device_type
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    config.machine.device_type = device
    config.output_dir = cfg.output_dir
    config.experiment_name = cfg.experiment_name or cfg.data.name
    config.timestamp = cfg.timestamp or datetime.now().strftime("%Y-%m-%d_%H%M%S")
    config.load_dir = None
    return config


def import_checkpoint(cfg: ImportConfig, console: Console | None = None) -> Path:
    """Write the run folder; returns its ``config.yml``. Raises :class:`UserError` (nothing written) when refused."""
    console = console or Console()
    ckpt = read_authors_checkpoint(cfg.checkpoint, cfg.config, cfg.regress_coord)
    config = build_run_config(cfg, ckpt)
    base_dir = config.get_base_dir()
    if base_dir.exists():
        raise UserError(f"{base_dir}: already exists; choose another --timestamp or --output-dir")
    check_writable(base_dir.parent)

    model = config.pipeline.model.setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=0
    )
    own = model.state_dict()
    mapped, unused = to_model_state(ckpt, own)
    missing = [
        k for k in model.load_state_dict(mapped, strict=False).missing_keys if k.startswith(("encoder.", "field."))
    ]
    assert not missing, missing  # to_model_state checked every tensor the network needs
    optimizers = Optimizers(config.optimizers, model.get_param_groups())
    checkpoint = {
        "step": 0,
        "pipeline": {f"_model.{k}": v for k, v in model.state_dict().items()},
        "optimizers": {k: v.state_dict() for k, v in optimizers.optimizers.items()},
        "schedulers": {},
        "scalers": {},
    }

    config_path = write_run(config, checkpoint)
    _report(console, cfg, ckpt, config, unused)
    return config_path


def _report(console: Console, cfg: ImportConfig, ckpt: AuthorsCheckpoint, config: TrainerConfig, unused: list[str]):
    arch = ckpt.architecture
    config_path = config.get_base_dir() / "config.yml"
    kind = "FeatureNeRF" if ckpt.kind == "featurenerf" else "pixelNeRF"
    console.print(
        f"Imported the {kind} checkpoint {ckpt.path}: {arch.backbone} encoder ({arch.num_layers} levels), "
        f"MLP width {arch.hidden_dim} x {arch.num_blocks} blocks (views averaged at block {arch.combine_layer}, "
        f"{'shared' if arch.share_mlp else 'separate'} fine MLP), feature head {arch.feature_dim}-d, "
        f"coordinate head {'yes' if arch.regress_coord else 'no'}."
    )
    if unused:
        groups: dict[str, int] = {}
        for key in unused:
            prefix = ".".join(key.split(".")[: 3 if key.startswith("encoder.") else 1])
            groups[prefix] = groups.get(prefix, 0) + 1
        shown = ", ".join(f"{k}.* ({n} tensors)" if n > 1 else k for k, n in groups.items())
        console.print(f"Unused checkpoint tensors (not part of this network): {shown}.")
    if arch.share_mlp and any(k.startswith("mlp_fine.") for k in ckpt.state):
        console.print("mlp_fine holds the same tensors as mlp_coarse (share_mlp): one MLP serves both passes.")
    for note in ckpt.notes:
        console.print(f"Note: {note}.")
    data_white = cfg.dataparser == "featurenerf-srn"
    if ckpt.white_background is not None and ckpt.white_background != data_white:
        console.print(
            f"Note: the network was trained on {'white' if ckpt.white_background else 'black'}; this run's data "
            f"({cfg.dataparser}) is on {'white' if data_white else 'black'}, and renders use the data's background."
        )
    base = _method_config(config.method_name).pipeline.model
    # The methods size the feature head from the data's teacher; an imported head keeps its own size.
    defaults = dataclasses.replace(base, feature_dim=-1 if base.feature_dim is None else base.feature_dim)
    flags = differing_options(arch, architecture_of_config(defaults))
    if config.machine.device_type != "cuda":
        flags.insert(0, f"--machine.device-type {config.machine.device_type}")
    for line in (
        f"Run folder: {config_path.parent}",
        f"  ns-viewer --load-config {config_path}",
        f"  ns-eval --load-config {config_path} --output-path {config_path.parent / 'eval.json'}",
        f"  featurenerf-eval parts --load-config {config_path}",
        f"  fine-tune: ns-train {config.method_name} --data {cfg.data} --load-dir {config.get_checkpoint_dir()} "
        + " ".join(flags),
    ):
        console.print(line, soft_wrap=True, highlight=False)


@report_user_errors
def entrypoint(args: list[str] | None = None) -> None:
    """Console script ``featurenerf-import`` (``args``: the command line, default ``sys.argv``)."""
    import_checkpoint(tyro.cli(ImportConfig, args=args))


if __name__ == "__main__":
    entrypoint()
