"""Load a trained FeatureNeRF run and use it outside nerfstudio's training loop.

Everything downstream (transfer benchmarks, viewer panel, part editing) goes through
:class:`TrainedFeatureNeRF`: encode an object's source view(s) once, then render any of its views
or query the field at 3D points in the object's canonical frame.

```python
tf = TrainedFeatureNeRF.load(Path("outputs/chair/featurenerf/.../config.yml"))
cond = tf.encode("test", obj_id, views=[0])
maps = tf.render(cond, "test", obj_id, view=7, outputs=("v_nerf", "rgb"))   # (H, W, C) each
q = tf.query(cond, points)                                                # density, v_nerf, feature
```
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils.eval_utils import eval_setup
from torch import Tensor

from featurenerf_ns.data.datamanager import FeatureNeRFDataManager
from featurenerf_ns.dataparsers.records import ObjectRecord
from featurenerf_ns.model.featurenerf import FeatureNeRFModel
from featurenerf_ns.model.field import Conditioning


class TrainedFeatureNeRF:
    """A trained model plus the category data it was trained on (any split can be used)."""

    def __init__(self, model: FeatureNeRFModel, datamanager: FeatureNeRFDataManager):
        self.model = model.eval()
        self.datamanager = datamanager
        meta = datamanager.train_dataparser_outputs.metadata
        self.data_root = Path(meta["data_root"])
        self.synset: str = meta["synset"]
        self.category: str = meta["category"]
        self.image_size: tuple[int, int] = tuple(meta["image_size"])  # type: ignore[assignment]
        self._splits: dict = {}

    @classmethod
    def load(cls, config_path: Path, device: str | torch.device | None = None) -> TrainedFeatureNeRF:
        """Load the latest checkpoint of an ``ns-train`` run from its ``config.yml``."""

        def update(config):
            if device is not None:
                config.machine.device_type = torch.device(device).type
            return config

        _, pipeline, _, _ = eval_setup(Path(config_path), test_mode="test", update_config_callback=update)
        return cls(pipeline.model, pipeline.datamanager)  # type: ignore[arg-type]

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _split(self, split: str):
        if split not in self._splits:
            dm = self.datamanager
            if split == "train":
                outputs = dm.train_dataparser_outputs
            elif split == ("val" if dm.test_mode == "val" else "test"):
                outputs = dm.eval_dataparser_outputs
            else:
                outputs = dm.dataparser.get_dataparser_outputs(split=split)
            records = {r.obj_id: r for r in outputs.metadata["objects"]}
            self._splits[split] = (outputs.cameras, records)
        return self._splits[split]

    def objects(self, split: str = "test") -> list[ObjectRecord]:
        """The objects of a split, in split-file order."""
        return list(self._split(split)[1].values())

    def record(self, split: str, obj_id: str) -> ObjectRecord:
        records = self._split(split)[1]
        if obj_id not in records:
            raise KeyError(f"object {obj_id!r} is not in the {split} split")
        return records[obj_id]

    def camera(self, split: str, obj_id: str, view: int) -> Cameras:
        """The (single) camera of one view."""
        cameras, _ = self._split(split)
        i = self.record(split, obj_id).camera_index(view)
        return cameras[i : i + 1].to(self.device)

    def load_rgba(self, split: str, obj_id: str, views: Sequence[int]) -> Float[Tensor, "V H W 4"]:
        """RGB (composited on the dataset's background) + alpha of some views, at the model's image size."""
        return self.datamanager.load_views(self.record(split, obj_id), list(views), with_teacher=False).rgba

    @torch.no_grad()
    def encode(self, split: str, obj_id: str, views: Sequence[int]) -> Conditioning:
        """Conditioning from the given source view(s) of one object."""
        rec = self.record(split, obj_id)
        rgba = self.load_rgba(split, obj_id, views)
        cams, _ = self._split(split)
        inputs = self.datamanager.source_conditioning_inputs(
            cams, [rec], [list(views)], rgba[..., :3].permute(0, 3, 1, 2)[None]
        )
        return self.model.encode(inputs["images"], inputs["c2w"], inputs["intrinsics"])

    def render(
        self,
        cond: Conditioning,
        split: str,
        obj_id: str,
        view: int,
        outputs: Sequence[str] = ("rgb",),
    ) -> dict[str, Float[Tensor, "H W C"]]:
        """Render one view of the conditioned object (``rgb``, ``v_nerf``, ``feature``; depth and accumulation)."""
        return self.model.render_camera(cond, self.camera(split, obj_id, view), frozenset(outputs))

    def query(self, cond: Conditioning, points: Float[Tensor, "N 3"]) -> dict[str, Tensor]:
        """``density`` (N,1), ``v_nerf`` (N,W) and ``feature`` (N,D) at points of the object's canonical frame."""
        return self.model.query_points(cond, points.to(self.device))
