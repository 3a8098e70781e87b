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

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from featurenerf_ns.transfer.data import CategoryData, random_pairs, resolve_data_path, split_pairs
from featurenerf_ns.transfer.evaluate import MethodResult, TaskSpec, evaluate_method
from featurenerf_ns.transfer.report import write_report
from featurenerf_ns.transfer.sources import ChanceSource, FeatureSource, NeRFSource, OracleSource, TeacherSource
from featurenerf_ns.transfer.spair import SpairConfig, run_spair
from featurenerf_ns.utils.errors import install_data_error_hook


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
    """Split JSON with the pair lists (default <root>/splits/<synset>.json)."""
    teacher_folder: str | None = None
    """Teacher feature folder under the root (default: dino_feat_256, else synth_feat_32)."""
    pairs: Literal["split", "random"] = "split"
    """split: the split file's cross_inst_pairs / cross_view_pairs; random: drawn with --seed."""
    num_pairs: int | None = None
    """Use the first N split pairs / draw N random pairs (random default: 1000)."""
    seed: int = 0
    """Seed of --pairs random."""
    split: str = "test"
    """Split whose objects random pairs use and models are conditioned on."""
    output_dir: Path = Path("outputs/transfer")
    """Results go to <output-dir>/<category>/."""
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


def build_sources(cfg: EvalConfig, console: Console) -> tuple[CategoryData, list[FeatureSource]]:
    """The data and every method the config names (model first, then comparisons, then baselines)."""
    sources: list[FeatureSource] = []
    configs = ([cfg.load_config] if cfg.load_config is not None else []) + list(cfg.compare_configs)
    names = list(cfg.method_names)
    data: CategoryData | None = None
    if cfg.data is not None:
        root, category = resolve_data_path(cfg.data, cfg.category)
        data = CategoryData(root, category.name, split_file=cfg.split_file)
    for i, config in enumerate(configs):
        src = NeRFSource.from_config(config, feature=cfg.feature, split=cfg.split)
        src.name = names[i] if i < len(names) else _model_name(config, cfg.feature)
        if data is None:
            data = CategoryData(src.model.data_root, src.model.synset, split_file=cfg.split_file)
        elif src.model.synset != data.synset:
            raise ValueError(f"{config}: model category {src.model.synset} differs from the data's {data.synset}")
        sources.append(src)
    if data is None:
        raise ValueError("nothing to evaluate: give --load-config, --compare-configs or --data")
    baselines = list(cfg.baselines) or (["teacher"] if not configs else [])
    for b in baselines:
        if b == "teacher":
            sources.append(TeacherSource(data, folder=cfg.teacher_folder, device=cfg.device))
        elif b == "chance":
            sources.append(ChanceSource(data))
        else:
            sources.append(OracleSource(data))
    return data, sources


def run(cfg: EvalConfig, console: Console | None = None) -> dict[str, Path]:
    """Run one benchmark for every method and write the report; returns the written paths."""
    console = console or Console()
    spec = TaskSpec(cfg.task, cfg.space, cfg.setting)
    data, sources = build_sources(cfg, console)
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
        raise ValueError(f"no method can run {spec.space} {spec.task} (skipped: {skipped})")
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
        "split_file": str(data.split_path) if cfg.pairs == "split" else None,
        "num_pairs": len(pairs),
        "skipped_methods": skipped,
    }
    paths = write_report(cfg.output_dir, data, spec, results, meta=meta, num_vis=cfg.num_vis, console=console)
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


def entrypoint() -> None:
    """``featurenerf-eval`` console script."""
    install_data_error_hook()
    tyro.extras.set_accent_color("bright_yellow")
    cfg = tyro.cli(Commands)
    if isinstance(cfg, SpairConfig):
        run_spair(cfg)
    else:
        run(cfg)


if __name__ == "__main__":
    entrypoint()
