"""Part labels to transfer: an annotated dataset object's parts as labelled v_NeRF vectors.

The reference object is encoded from one of its views; its labelled 3D part points (``part_3d_anno``) are queried
for v_NeRF at those points (preferred: they cover the whole object, also what the view does not see), else the
labels of its 2D part map (``part_2d_anno``) of that view are paired with the v_NeRF rendered at the same pixels
(what the viewer does). An exported point then takes the label of its nearest reference vector in L2-normalised
v_NeRF space (:func:`~featurenerf_ns.transfer.matching.transfer_part_labels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from featurenerf_ns.categories import resolve_category
from featurenerf_ns.layout import read_part_2d, read_part_3d
from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.transfer.matching import transfer_part_labels
from featurenerf_ns.utils.io import DataError, UserError


@dataclass(frozen=True)
class PartReference:
    """Labelled v_NeRF vectors of an annotated object (labels ``1..len(part_names)``, background dropped)."""

    obj_id: str
    features: Float[Tensor, "N C"]
    labels: Int[Tensor, " N"]
    part_names: tuple[str, ...]
    """Name of label ``i + 1`` (the category's part vocabulary)."""
    source: str
    """Which annotation gave the labels: ``part_3d_anno`` or ``part_2d_anno``."""

    def label(self, features: Float[Tensor, "M C"], foreground: Tensor | None = None) -> Int[Tensor, " M"]:
        """Label of each vector: its nearest reference vector's (0 where ``foreground`` is False)."""
        return transfer_part_labels(features, self.features.to(features.device), self.labels, foreground).cpu()


def check_view(tf: TrainedFeatureNeRF, split: str, obj_id: str, view: int) -> None:
    """A one-line :class:`UserError` for an unknown object or a view it does not have."""
    rec = tf.record(split, obj_id)
    if not 0 <= view < rec.num_views:
        raise UserError(f"object {obj_id!r} has views 0..{rec.num_views - 1}, asked for view {view}")


@torch.no_grad()
def load_reference(tf: TrainedFeatureNeRF, split: str, obj_id: str, view: int = 0) -> PartReference:
    """The part reference of a dataset object, encoded from its view ``view``.

    Raises:
        UserError: the object is not in the split, has no such view, or has no part annotation.
        DataError: its annotation file is unreadable or holds no labelled point.
    """
    check_view(tf, split, obj_id, view)
    rec = tf.record(split, obj_id)
    if rec.part_3d_path is None and rec.part_2d_path is None:
        raise UserError(f"reference object {obj_id!r} ({split}) has no part annotations (part_3d_anno, part_2d_anno)")
    cond = tf.encode(split, obj_id, [view])
    if rec.part_3d_path is not None:
        path, source = Path(rec.part_3d_path), "part_3d_anno"
        points, labels_np = read_part_3d(path)
        labels = torch.from_numpy(labels_np)
        keep = labels > 0
        features = tf.query(cond, torch.from_numpy(points[keep.numpy()]).float(), outputs=("v_nerf",))["v_nerf"]
        labels = labels[keep]
    else:
        path, source = Path(rec.part_2d_path), "part_2d_anno"  # type: ignore[arg-type]
        maps = read_part_2d(path)
        if view >= len(maps):
            raise DataError(path, f"has part maps of {len(maps)} views, the reference view is {view}")
        v_nerf = tf.render_view(cond, tf.camera(split, obj_id, view), ("v_nerf",))["v_nerf"]
        labels = torch.from_numpy(maps[view])
        if tuple(labels.shape) != tuple(v_nerf.shape[:2]):
            labels = F.interpolate(labels[None, None].float(), size=v_nerf.shape[:2], mode="nearest")[0, 0].long()
        keep = labels > 0
        features, labels = v_nerf[keep.to(v_nerf.device)], labels[keep]
    if labels.numel() == 0:
        raise DataError(path, f"no labelled part in the reference's {source} (all labels are 0)")
    parts = resolve_category(tf.category).parts
    if int(labels.max()) > len(parts):
        raise DataError(path, f"part label {int(labels.max())} is beyond the {len(parts)} parts of {tf.category}")
    return PartReference(obj_id, features.float().cpu(), labels.long(), parts, source)
