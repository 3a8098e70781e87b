"""featurenerf-teacher {dino,diffusion}: extract teacher features of a category split into the cache.

Examples::

    featurenerf-teacher dino --data shapenet/chair --split train --teacher.weights dino_deitsmall8_pretrain.pth
    featurenerf-teacher diffusion --data shapenet/car --teacher.model ./stable-diffusion-v1-5 --shard 1/4
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import tyro

from featurenerf_ns.categories import resolve_category
from featurenerf_ns.layout import CategoryLayout
from featurenerf_ns.teachers.base import TeacherConfig, TeacherUnavailableError, resolve_device
from featurenerf_ns.teachers.cache import extract_category, object_ids, parse_shard, shard_ids
from featurenerf_ns.teachers.diffusion import DiffusionTeacherConfig
from featurenerf_ns.teachers.dino import DinoTeacherConfig
from featurenerf_ns.utils.io import DataError


@dataclass
class ExtractConfig:
    """Extract teacher features for one category into ``<root>/<folder>/<synset>/<obj_id>.npy``."""

    data: Path = Path("data/chair")
    """<root>/<category>: the category by name (chair) or synset id (03001627); images are read from
    <root>/img/<synset>/<obj_id>/*.png."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    split: Literal["train", "val", "test", "all"] = "all"
    """Objects to extract ('all' = train, val and test)."""
    splits_file: Path | None = None
    """Split JSON; default <root>/splits/<synset>.json, else <root>/assets/splits/<synset>.json."""
    folder: str | None = None
    """Cache folder under <root>; default the teacher's (dino_feat_256, diffusion_feat_128)."""
    shard: str = "0/1"
    """i/N: this run does every N-th object starting at i (N runs with i = 0..N-1 = one full run)."""
    device: str | None = None
    """Torch device; default cuda when available, else cpu."""
    overwrite: bool = False
    """Recompute cached objects, and replace a cache made with other settings."""
    limit: int | None = None
    """Do at most this many objects of the shard (a quick look)."""
    progress: bool = True
    """Show a progress bar (objects/s)."""
    sparse: bool = True
    """Store only the cells that are not all-zero (the foreground; lossless); --no-sparse = dense float16 arrays."""

    def main(self) -> None:
        category = resolve_category(self.data.name)
        root = self.data.parent
        layout = CategoryLayout(root, category.synset)
        split_file = self.splits_file
        if split_file is None:
            split_file = next(
                (
                    p
                    for p in (layout.split_file(), root / "assets" / "splits" / f"{category.synset}.json")
                    if p.is_file()
                ),
                layout.split_file(),
            )
        ids = shard_ids(object_ids(split_file, self.split), parse_shard(self.shard))
        if self.limit is not None:
            ids = ids[: self.limit]
        device = resolve_device(self.device)
        teacher = self.teacher.setup(category=category.name, device=device)
        folder = self.folder or self.teacher.folder
        report = extract_category(
            teacher, layout, ids, folder, overwrite=self.overwrite, progress=self.progress, sparse=self.sparse
        )
        print(
            f"{len(report.done)} objects extracted, {len(report.skipped)} already cached, "
            f"{report.objects_per_second:.2f} objects/s on {device} -> {root / folder / category.synset}"
        )


@dataclass
class DinoExtract(ExtractConfig):
    """DINO ViT features (the authors' DINO targets by default) into <root>/dino_feat_256/<synset>."""

    teacher: DinoTeacherConfig = field(default_factory=DinoTeacherConfig)


@dataclass
class DiffusionExtract(ExtractConfig):
    """Stable Diffusion U-Net decoder features (960 x 128 x 128 by default) into <root>/diffusion_feat_128/<synset>."""

    teacher: DiffusionTeacherConfig = field(default_factory=DiffusionTeacherConfig)


def entrypoint(args: list[str] | None = None) -> None:
    """Console script: parse, run, and report user errors as one line (exit code 1)."""
    config = tyro.extras.subcommand_cli_from_dict(
        {
            "dino": DinoExtract,
            "diffusion": DiffusionExtract,
        },
        args=args,
        description=__doc__.split("\n")[0],
    )
    try:
        config.main()
    except (DataError, TeacherUnavailableError, ValueError) as e:
        print(f"featurenerf-teacher: {e}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    entrypoint()
