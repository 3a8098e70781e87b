"""``featurenerf-synth``: generate procedural categories in the authors' processed ShapeNet layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro

from featurenerf_ns.categories import CATEGORIES, resolve_category
from featurenerf_ns.synthetic.generate import GenerationSettings, describe, generate_category
from featurenerf_ns.utils.errors import report_user_errors
from featurenerf_ns.utils.io import UserError


@dataclass
class SynthConfig:
    """Generate procedural categories (meshes, RGBA renders, cameras, keypoint and part annotations,
    a synthetic teacher and splits) under a data root, in the authors' processed ShapeNet layout."""

    root: Path = Path("data/synthetic")
    """Data root to write (``img/``, ``camera/``, ``kp_2d_anno/``, ... ``splits/``); may hold several categories."""
    categories: tuple[str, ...] = ("chair",)
    """Category names or synset ids (chair, table, airplane, car, bottle, motorcycle), or ``all``."""
    num_objects: int = GenerationSettings.num_objects
    """Objects per category (split 70/10/20 into train/val/test)."""
    num_views: int = GenerationSettings.num_views
    """Rendered views per object."""
    image_size: int = GenerationSettings.image_size
    """Image width and height in pixels (a multiple of 4)."""
    seed: int = GenerationSettings.seed
    """Seed: the output bytes are a function of the settings."""
    teacher_dim: int = GenerationSettings.teacher_dim
    """Channels of the synthetic teacher features."""
    num_pairs: int = GenerationSettings.num_pairs
    """Cross-instance and cross-view test pairs (each)."""
    workers: int | None = None
    """Worker processes (default: one per CPU core; 0 or 1: run in this process)."""
    progress: bool = True
    """Show a progress bar."""


def main(config: SynthConfig) -> None:
    names = list(CATEGORIES) if "all" in config.categories else list(config.categories)
    for name in names:
        try:
            resolve_category(name)  # fail on a typo before generating anything
        except UserError as e:
            raise UserError(f"--categories {name}: {e}") from None
    for name in names:
        stats = generate_category(
            config.root, name, num_objects=config.num_objects, num_views=config.num_views,
            image_size=config.image_size, seed=config.seed, teacher_dim=config.teacher_dim,
            num_pairs=config.num_pairs, workers=config.workers, progress=config.progress,
        )  # fmt: skip
        print(f"{describe(config.root, name)} ({stats['objects']} generated, {stats['skipped']} already complete)")


@report_user_errors
def entrypoint(args: list[str] | None = None) -> None:
    """Console script ``featurenerf-synth`` (``args``: the command line, default ``sys.argv``)."""
    main(tyro.cli(SynthConfig, args=args))


if __name__ == "__main__":
    entrypoint()
