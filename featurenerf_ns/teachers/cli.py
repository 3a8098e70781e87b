"""featurenerf-teacher {dino,dinov2,diffusion}: extract teacher features of a category split into the cache.

Examples::

    featurenerf-teacher dino --data shapenet/chair --split train --teacher.weights dino_deitsmall8_pretrain.pth
    featurenerf-teacher dinov2 --data shapenet/chair --teacher.weights ./dinov2-small
    featurenerf-teacher diffusion --data shapenet/car --teacher.model ./stable-diffusion-v1-5 --shard 1/4
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import tyro

from featurenerf_ns.categories import resolve_category
from featurenerf_ns.layout import CategoryLayout, require_split_file
from featurenerf_ns.teachers.base import TeacherConfig, resolve_device
from featurenerf_ns.teachers.cache import extract_category, object_ids, parse_shard, shard_ids
from featurenerf_ns.teachers.diffusion import DiffusionTeacherConfig
from featurenerf_ns.teachers.dino import DinoTeacherConfig
from featurenerf_ns.teachers.dinov2 import Dinov2TeacherConfig
from featurenerf_ns.utils.errors import report_user_errors
from featurenerf_ns.utils.io import DataError, UserError


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
    """Cache folder under <root>; default the teacher's (dino_feat_256, dinov2_feat_448, diffusion_feat_128)."""
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
        try:
            category = resolve_category(self.data.name)
        except UserError as e:
            raise DataError(self.data, f"{e} (--data is <root>/<category>)") from None
        root = self.data.parent
        layout = CategoryLayout(root, category.synset)
        ids = shard_ids(object_ids(require_split_file(layout, self.splits_file), self.split), parse_shard(self.shard))
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
class Dinov2Extract(ExtractConfig):
    """DINOv2 ViT features (ViT-S/14 key facet of block 9, 384 x 32 x 32 by default) into
    <root>/dinov2_feat_448/<synset>."""

    teacher: Dinov2TeacherConfig = field(default_factory=Dinov2TeacherConfig)


@dataclass
class DiffusionExtract(ExtractConfig):
    """Stable Diffusion U-Net decoder features (960 x 128 x 128 by default) into <root>/diffusion_feat_128/<synset>."""

    teacher: DiffusionTeacherConfig = field(default_factory=DiffusionTeacherConfig)


@report_user_errors
def entrypoint(args: list[str] | None = None) -> None:
    """Console script ``featurenerf-teacher`` (``args``: the command line, default ``sys.argv``)."""
    config = tyro.extras.subcommand_cli_from_dict(
        {
            "dino": DinoExtract,
            "dinov2": Dinov2Extract,
            "diffusion": DiffusionExtract,
        },
        args=args,
        description=__doc__.split("\n")[0],
    )
    config.main()


if __name__ == "__main__":
    entrypoint()
