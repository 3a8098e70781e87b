"""Part texture swapping (FeatureNeRF, appendix B): ``featurenerf-edit``.

Given a source image with part labels and a target object (conditioned on its own image), render
the target from any camera with the chosen part's colours taken from the source: every target pixel
is labelled by its nearest source pixel in L2-normalised v_NeRF space, and the pixels that land on
the chosen part take the colour of their nearest source pixel *of that part*.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from jaxtyping import Float, Int
from PIL import Image
from torch import Tensor

from featurenerf_ns.categories import resolve_category
from featurenerf_ns.layout import read_part_2d
from featurenerf_ns.transfer.matching import nearest_neighbors
from featurenerf_ns.utils.errors import report_user_errors
from featurenerf_ns.utils.io import UserError, atomic_path


def swap_part_colors(
    src_feat: Float[Tensor, "Ns C"],
    src_labels: Int[Tensor, " Ns"],
    src_rgb: Float[Tensor, "Ns 3"],
    trg_feat: Float[Tensor, "Nt C"],
    part: int,
) -> tuple[Int[Tensor, " Nt"], Float[Tensor, "Nt 3"], Tensor]:
    """Transfer labels to target pixels and pick source colours for those on ``part``.

    Returns:
        ``(labels, colours, on_part)``: each target pixel's transferred label, the colour of its nearest
        source pixel of ``part`` (meaningful where ``on_part``), and the mask of pixels labelled ``part``.
    """
    if not bool((src_labels == part).any()):
        raise UserError(f"part label {part} does not appear in the source image")
    labels = src_labels[nearest_neighbors(trg_feat, src_feat)[0]]
    on_part = labels == part
    colours = torch.zeros(trg_feat.shape[0], 3, dtype=src_rgb.dtype)
    if bool(on_part.any()):
        keep = src_labels == part
        nn = nearest_neighbors(trg_feat[on_part], src_feat[keep])[0]
        colours[on_part] = src_rgb[keep][nn]
    return labels, colours, on_part


@dataclass
class EditConfig:
    """Render a target object with one part's texture taken from a source image (FeatureNeRF appendix B)."""

    load_config: Path
    """ns-train config.yml of a trained FeatureNeRF."""
    part: str = "seat"
    """Part name of the category (e.g. chair: back, seat, leg, arm)."""
    source_object: str | None = None
    """Object whose image (with part labels) provides the texture; default: the split's first object."""
    source_view: int = 0
    """View of the source object used as the source image."""
    target_object: str | None = None
    """Object to edit, conditioned on its own image; default: the split's second object."""
    target_view: int = 0
    """View of the target object that conditions the field."""
    render_views: tuple[int, ...] = (0,)
    """Cameras (view indices of the target object) to render the edited object from."""
    split: str = "test"
    """Split the objects come from."""
    min_accumulation: float = 0.5
    """Rendered opacity above which a pixel belongs to the object."""
    output_dir: Path = field(default_factory=lambda: Path("outputs/edit"))
    """Where the PNGs go (source | target render | edited, one file per render view)."""


def run_edit(config: EditConfig) -> list[Path]:
    """Run one edit; returns the PNG paths."""
    from featurenerf_ns.model.api import TrainedFeatureNeRF

    tf = TrainedFeatureNeRF.load(config.load_config)
    parts = resolve_category(tf.category).parts
    if config.part not in parts:
        raise UserError(f"unknown part {config.part!r} for {tf.category}; parts: {', '.join(parts)}")
    part = parts.index(config.part) + 1
    objects = [r.obj_id for r in tf.objects(config.split)]
    if len(objects) < 2 and (config.source_object is None or config.target_object is None):
        raise UserError(
            f"the {config.split} split has fewer than two objects; name --source-object and --target-object"
        )
    src = config.source_object or objects[0]
    trg = config.target_object or objects[1]
    record = tf.record(config.split, src)
    if record.part_2d_path is None:
        raise UserError(f"object {src} has no part_2d_anno file: it cannot be the source of a part")
    labels = torch.from_numpy(read_part_2d(record.part_2d_path)[config.source_view])
    H, W = tf.image_size
    labels = F.interpolate(labels[None, None].float(), size=(H, W), mode="nearest")[0, 0].long()
    src_rgba = tf.load_rgba(config.split, src, [config.source_view])[0]
    src_maps = tf.render(tf.encode(config.split, src, [config.source_view]), config.split, src, config.source_view,
                         ("v_nerf",))  # fmt: skip
    fg = labels > 0
    src_feat, src_labels, src_rgb = src_maps["v_nerf"].cpu()[fg], labels[fg], src_rgba[..., :3][fg]

    cond = tf.encode(config.split, trg, [config.target_view])
    config.output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for view in config.render_views:
        maps = {k: v.cpu() for k, v in tf.render(cond, config.split, trg, view, ("v_nerf", "rgb")).items()}
        mask = maps["accumulation"][..., 0] > config.min_accumulation
        edited = maps["rgb"].clone()
        if bool(mask.any()):
            _, colours, on_part = swap_part_colors(src_feat, src_labels, src_rgb, maps["v_nerf"][mask], part)
            pixels = edited[mask]
            pixels[on_part] = colours[on_part]
            edited[mask] = pixels
        panel = torch.cat((src_rgba[..., :3], maps["rgb"], edited), dim=1).clamp(0, 1)
        path = config.output_dir / f"edit_{config.part}_{src[:8]}_to_{trg[:8]}_view{view:03d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray((panel.numpy() * 255).round().astype(np.uint8)).save(tmp)
        written.append(path)
    return written


@report_user_errors
def entrypoint(args: list[str] | None = None) -> None:
    """Console script ``featurenerf-edit`` (``args``: the command line, default ``sys.argv``)."""
    for path in run_edit(tyro.cli(EditConfig, args=args)):
        print(f"wrote {path}")
