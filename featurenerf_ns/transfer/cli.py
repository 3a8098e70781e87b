"""``featurenerf-eval``: the keypoint and part transfer benchmarks of the paper.

```
featurenerf-eval keypoints --load-config outputs/chair/featurenerf/.../config.yml --baselines teacher
featurenerf-eval parts --space 3d --load-config a.yml --compare-configs b.yml c.yml
featurenerf-eval keypoints --setting novel-view --load-config a.yml --feature feature
featurenerf-eval parts --data data/chair --pairs random --num-pairs 200     # teacher baseline alone
featurenerf-eval spair --data SPair-71k --categories chair --load-config a.yml  # real photos (transfer/spair.py)
```
Every method (the trained model, ``--compare-configs`` checkpoints, ``--baselines``) is scored on the
same pairs in the same way; results go to ``<output-dir>/<category>/`` (see
:mod:`featurenerf_ns.transfer.report`).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from featurenerf_ns.categories import resolve_category
from featurenerf_ns.transfer.data import CategoryData, random_pairs, resolve_data_path, split_pairs
from featurenerf_ns.transfer.evaluate import MethodResult, TaskSpec, evaluate_method
from featurenerf_ns.transfer.report import write_report
from featurenerf_ns.transfer.sources import ChanceSource, FeatureSource, NeRFSource, OracleSource, TeacherSource
from featurenerf_ns.transfer.spair import SpairConfig, run_spair
from featurenerf_ns.utils.errors import report_user_errors
from featurenerf_ns.utils.io import UserError


class PairsPerSecondColumn(ProgressColumn):
    """Throughput of the progress bar in pairs per second."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- pairs/s" if speed is None else f"{speed:.2f} pairs/s", style="cyan")


@dataclass
class EvalConfig:
    """Options of ``featurenerf-eval keypoints|parts``."""

    task: tyro.conf.Suppress[Literal["keypoints", "parts"]] = "keypoints"
    space: Literal["2d", "3d"] = "2d"
    """2d: transfer between rendered feature maps; 3d: between features queried at 3D points."""
    setting: Literal["cross-instance", "novel-view"] = "cross-instance"
    """cross-instance: two objects seen from the same view; novel-view: one object, features at the
    target view inferred from the source view only."""
    load_config: Path | None = None
    """ns-train config.yml of the FeatureNeRF to evaluate."""
    feature: Literal["v_nerf", "feature"] = "v_nerf"
    """v_nerf: the L2-normalised 512-d internal feature (the authors' protocol); feature: the
    distilled head's output (the paper's ablation)."""
    skip_empty: bool = False
    """Render 2D feature maps evaluating the MLP only in each source's occupied space (faster, within the tolerance
    of benchmarks/README.md); off: the exact render, as the authors'."""
    inference_dtype: Literal["float32", "bfloat16"] | None = None
    """Override the run's MLP precision for rendering and queries (bfloat16 only where the hardware has it natively;
    see the model's inference_dtype); None: the run's own (float32 unless trained otherwise)."""
    compare_configs: tuple[Path, ...] = ()
    """More checkpoints (config.yml) scored identically, e.g. the no-distillation NeRF baseline."""
    baselines: tuple[Literal["teacher", "oracle", "chance"], ...] = ()
    """Data-side baselines: chance = random features (what matching by chance scores); teacher = the teacher's
    upsampled 2D features (2D only); oracle = features
    built from the annotations (upper bound, protocol check). Defaults to teacher when no model is given."""
    data: Path | None = None
    """<root>/<category> (or <root> with --category) in the authors' layout; defaults to the model's data."""
    category: str | None = None
    """Category name or synset when --data is the layout root."""
    split_file: Path | None = None
    """Split JSON with the pair lists (default: the evaluated run's split file, else <root>/splits/<synset>.json)."""
    teacher_folder: str | None = None
    """Teacher feature folder under the root (default: the evaluated run's teacher, else dino_feat_256, else
    dinov2_feat_448, else synth_feat_32)."""
    pairs: Literal["split", "random"] = "split"
    """split: the split file's cross_inst_pairs / cross_view_pairs; random: drawn with --seed."""
    num_pairs: int | None = None
    """Use the first N split pairs / draw N random pairs (random default: 1000)."""
    seed: int = 0
    """Seed of --pairs random."""
    split: str = "test"
    """Split whose objects random pairs use and models are conditioned on."""
    output_dir: Path | None = None
    """Results go to <output-dir>/<category>/; default: the evaluated run's folder (<run>/transfer/, next to its
    config.yml), or outputs/transfer/<category>/ without a model."""
    overwrite: bool = False
    """Replace an earlier result of the same benchmark in that folder; by default a new one is written beside it
    (<name>-2.json, ...)."""
    num_vis: int = 4
    """Pairs shown in the qualitative grid (0: none)."""
    chunk: int | None = None
    """Query rows per similarity block (default: blocks of at most 16M entries)."""
    device: str | None = None
    """Device for the teacher/oracle matching (default cpu; models use their own)."""
    method_names: tuple[str, ...] = ()
    """Names for --load-config then --compare-configs in tables and JSON (default: folder names)."""


def _model_name(config: Path, feature: str) -> str:
    # ns-train writes <output-dir>/<experiment>/<method>/<timestamp>/config.yml: name it method/timestamp
    parts = [p for p in Path(config).parent.parts[-2:] if p]
    return f"{'/'.join(parts) or config.stem} ({feature})"


def _same_root(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def build_sources(cfg: EvalConfig, console: Console) -> tuple[CategoryData, list[FeatureSource], dict]:
    """The data and every method the config names (model first, then comparisons, then baselines), and where the
    data root, split file and teacher folder came from.

    Without data options the evaluated run's own data root, split file and teacher folder are used (so a model
    trained on a custom split is scored on its own test objects); an explicit option overrides them.
    """
    configs = ([cfg.load_config] if cfg.load_config is not None else []) + list(cfg.compare_configs)
    names = list(cfg.method_names)
    models: list[NeRFSource] = []
    for i, config in enumerate(configs):
        src = NeRFSource.from_config(
            config, cfg.feature, cfg.inference_dtype, split=cfg.split, skip_empty=cfg.skip_empty
        )
        src.name = names[i] if i < len(names) else _model_name(config, cfg.feature)
        models.append(src)
    run_model = models[0].model if models else None
    if cfg.data is not None:
        root, category = resolve_data_path(cfg.data, cfg.category)
        provenance = {"data_root": {"path": str(root), "from": "--data"}}
    elif run_model is not None:
        root, category = run_model.data_root, resolve_category(run_model.synset)
        provenance = {"data_root": {"path": str(root), "from": "run"}}
    else:
        raise UserError("nothing to evaluate: give --load-config, --compare-configs or --data")
    same_data = run_model is not None and _same_root(root, run_model.data_root)
    split_file, split_from = cfg.split_file, "--split-file"
    if split_file is None:
        use_run = same_data and run_model.split_file is not None  # type: ignore[union-attr]
        split_file, split_from = (run_model.split_file, "run") if use_run else (None, "default")  # type: ignore[union-attr]
    data = CategoryData(root, category.name, split_file=split_file)
    provenance["split_file"] = {"path": str(data.split_path), "from": split_from}
    for src, config in zip(models, configs, strict=True):
        if src.model.synset != data.synset:
            raise UserError(f"{config}: model category {src.model.synset} differs from the data's {data.synset}")
    sources: list[FeatureSource] = list(models)
    baselines = list(cfg.baselines) or (["teacher"] if not configs else [])
    for b in baselines:
        if b == "teacher":
            folder, folder_from = cfg.teacher_folder, "--teacher-folder"
            if folder is None and same_data and run_model.teacher_folder is not None:  # type: ignore[union-attr]
                folder, folder_from = run_model.teacher_folder, "run"  # type: ignore[union-attr]
            teacher = TeacherSource(data, folder=folder, device=cfg.device)
            provenance["teacher_folder"] = {"folder": teacher.folder, "from": folder_from if folder else "default"}
            sources.append(teacher)
        elif b == "chance":
            sources.append(ChanceSource(data))
        else:
            sources.append(OracleSource(data))
    provenance["models"] = [
        {"name": m.name, "config": str(m.model.config_path), "checkpoint_step": m.model.checkpoint_step} for m in models
    ]
    return data, sources, provenance


def report_folder(cfg: EvalConfig, data: CategoryData) -> Path:
    """``<output-dir>/<category>`` when given, else the evaluated run's ``transfer/`` folder (next to its
    ``config.yml``), else ``outputs/transfer/<category>``."""
    if cfg.output_dir is not None:
        return cfg.output_dir / data.category.name
    if cfg.load_config is not None:
        return Path(cfg.load_config).parent / "transfer"
    return Path("outputs/transfer") / data.category.name


def run(cfg: EvalConfig, console: Console | None = None) -> dict[str, Path]:
    """Run one benchmark for every method and write the report; returns the written paths."""
    console = console or Console()
    for option, value, least in (
        ("--chunk", cfg.chunk, 1),
        ("--num-pairs", cfg.num_pairs, 1),
        ("--num-vis", cfg.num_vis, 0),
    ):
        if value is not None and value < least:
            raise UserError(f"{option} {value}: must be at least {least}")
    spec = TaskSpec(cfg.task, cfg.space, cfg.setting)
    data, sources, provenance = build_sources(cfg, console)
    if cfg.pairs == "split":
        pairs = split_pairs(data, cfg.setting)
        if cfg.num_pairs is not None:
            pairs = pairs[: cfg.num_pairs]
    else:
        pairs = random_pairs(data, cfg.setting, cfg.num_pairs or 1000, seed=cfg.seed, split=cfg.split)
    skipped = {}
    if cfg.space == "3d":
        for s in [s for s in sources if not s.supports_3d]:
            skipped[s.name] = "3D transfer not applicable (2D features only)"
            console.print(f"[yellow]skipping {escape(s.name)}: {skipped[s.name]}[/yellow]")
        sources = [s for s in sources if s.supports_3d]
    if not sources:
        raise UserError(f"no method can run {spec.space} {spec.task} (skipped: {skipped})")
    results: list[MethodResult] = []
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        PairsPerSecondColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        for source in sources:
            tid = progress.add_task(f"{escape(source.name)}: {spec.task} {spec.space} {spec.setting}", total=len(pairs))
            results.append(
                evaluate_method(
                    source, data, pairs, spec, on_pair=lambda _i, tid=tid: progress.advance(tid), chunk=cfg.chunk
                )
            )
    meta = {
        "pairs": cfg.pairs,
        "seed": cfg.seed if cfg.pairs == "random" else None,
        "split": cfg.split,
        "num_pairs": len(pairs),
        "skipped_methods": skipped,
        "provenance": {**provenance, "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])},
    }
    folder = report_folder(cfg, data)
    paths = write_report(folder, data, spec, results, meta, cfg.num_vis, console, overwrite=cfg.overwrite)
    for kind, path in paths.items():
        console.print(f"{kind}: {path}")
    return paths


Commands = tyro.extras.subcommand_type_from_defaults(
    {
        "keypoints": EvalConfig(task="keypoints"),
        "parts": EvalConfig(task="parts"),
        "spair": SpairConfig(),
    },
    descriptions={
        "keypoints": "Keypoint transfer (PCK at 2.5/5/7.5/10 px at 128 px; 0.025..0.1 in 3D).",
        "parts": "Part label transfer / co-segmentation (mIoU over labels present in both).",
        "spair": "SPair-71k keypoint transfer on real photos (PCK@0.05/0.1/0.15 x max target bbox side).",
    },
)


@report_user_errors
def entrypoint(args: list[str] | None = None) -> None:
    """``featurenerf-eval`` console script (``args``: the command line, default ``sys.argv``)."""
    tyro.extras.set_accent_color("bright_yellow")
    cfg = tyro.cli(Commands, args=args)
    if isinstance(cfg, SpairConfig):
        run_spair(cfg)
    else:
        run(cfg)


if __name__ == "__main__":
    entrypoint()
