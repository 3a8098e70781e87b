"""Load a trained FeatureNeRF run and use it outside nerfstudio's training loop.

Everything downstream (transfer benchmarks, viewer panel, part editing) goes through
:class:`TrainedFeatureNeRF`: encode an object's source view(s) once, then render any of its views
or query the field at 3D points in the object's canonical frame.

```python
tf = TrainedFeatureNeRF.load(Path("outputs/chair/featurenerf/.../config.yml"))
cond = tf.encode("test", obj_id, views=[0])
maps = tf.render(cond, "test", obj_id, view=7, outputs=("v_nerf", "rgb"))   # (H, W, C) each
q = tf.query(cond, points)                                                # density, v_nerf, feature
cond = tf.encode_image(rgba, transform_matrix, camera_angle_x)            # an image from outside the data
```
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils.eval_utils import eval_setup
from torch import Tensor

from featurenerf_ns.data.datamanager import FeatureNeRFDataManager
from featurenerf_ns.data.images import composite_rgba
from featurenerf_ns.dataparsers.records import ObjectRecord
from featurenerf_ns.geometry import cameras_from_fov, intrinsics_of
from featurenerf_ns.model.featurenerf import FeatureNeRFModel
from featurenerf_ns.model.field import Conditioning
from featurenerf_ns.model.rendering import SampleDepths
from featurenerf_ns.utils.io import DataError, UserError


class TrainedFeatureNeRF:
    """A trained model plus the category data it was trained on (any split can be used)."""

    def __init__(
        self,
        model: FeatureNeRFModel,
        datamanager: FeatureNeRFDataManager,
        config_path: Path | None = None,
        checkpoint_step: int | None = None,
    ):
        self.model = model.eval()
        self.datamanager = datamanager
        self.config_path = config_path
        """The run's ``config.yml`` (None for a model built in memory)."""
        self.checkpoint_step = checkpoint_step
        """Training step of the loaded checkpoint (None for a model built in memory)."""
        meta = datamanager.train_dataparser_outputs.metadata
        self.data_root = Path(meta["data_root"])
        self.synset: str = meta["synset"]
        self.category: str = meta["category"]
        self.split_file = Path(meta["split_file"]) if meta.get("split_file") else None
        """The split file the run was trained with (its objects and pair lists are the ones to evaluate on)."""
        self.teacher_folder: str | None = meta.get("teacher_folder")
        """The teacher feature folder (under :attr:`data_root`) the run distilled, if any."""
        self.image_size: tuple[int, int] = tuple(meta["image_size"])  # type: ignore[assignment]
        self._splits: dict = {}

    @classmethod
    def load(
        cls,
        config_path: Path,
        device: str | torch.device | None = None,
        inference_dtype: Literal["float32", "bfloat16"] | None = None,
    ) -> TrainedFeatureNeRF:
        """Load the latest checkpoint of an ``ns-train`` run from its ``config.yml``.

        Args:
            inference_dtype: overrides the run's ``inference_dtype`` (precision of the MLP in renders and queries).
        """

        def update(config):
            if device is not None:
                config.machine.device_type = torch.device(device).type
            if inference_dtype is not None:
                config.pipeline.model.inference_dtype = inference_dtype
            return config

        config_path = Path(config_path)
        if not config_path.is_file():
            problem = "is a directory" if config_path.is_dir() else "not found"
            raise DataError(
                config_path, f"{problem}: give the config.yml of an ns-train run (outputs/<category>/<method>/<time>/)"
            )
        _, pipeline, _, step = eval_setup(config_path, test_mode="test", update_config_callback=update)
        return cls(pipeline.model, pipeline.datamanager, config_path, step)  # type: ignore[arg-type]

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point type of the model's parameters (inputs are cast to it; float64 for reference runs)."""
        return next(self.model.parameters()).dtype

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
            raise UserError(f"object {obj_id!r} is not in the {split} split")
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

    def source_images(self, rgba: np.ndarray | Tensor) -> Float[Tensor, "V 3 H W"]:
        """RGB in [0, 1] that the model encodes for RGBA pixels: composited on the data's background and
        truncated to 8 bits, exactly as the authors' loader (and this plugin's datamanager) prepares views.

        Args:
            rgba: ``(H, W, 4)`` or ``(V, H, W, 4)`` uint8 pixels (alpha = mask), or the same with 3 channels
                for images already on their background.
        """
        arr = rgba.detach().cpu().numpy() if isinstance(rgba, Tensor) else np.asarray(rgba)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] not in (3, 4) or arr.dtype != np.uint8:
            raise ValueError(f"expected uint8 RGBA pixels (H, W, 4) or (V, H, W, 4), got {arr.dtype} {arr.shape}")
        rgb = composite_rgba(arr, self.datamanager.white_background) if arr.shape[-1] == 4 else arr
        return torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()

    def encoder_input(self, rgba: np.ndarray | Tensor) -> Float[Tensor, "V 3 H W"]:
        """What the encoder's ResNet sees for RGBA pixels: :meth:`source_images` mapped to [-1, 1]."""
        return self.model.encoder.network_input(self.source_images(rgba))

    @torch.no_grad()
    def encode_image(
        self,
        rgba: np.ndarray | Tensor,
        transform_matrix: np.ndarray | Sequence,
        camera_angle_x: float,
    ) -> Conditioning:
        """Conditioning from images that are not part of the data (one object, ``V`` views).

        The cameras are given as in the authors' camera JSON: an OpenCV camera-to-world
        ``transform_matrix`` per view and the horizontal field of view; the principal point is the
        image centre and pixels follow the run's ``pixel_convention`` (the authors' by default).

        Args:
            rgba: see :meth:`source_images`; any size (the intrinsics follow it).
            transform_matrix: ``(4, 4)`` or ``(V, 4, 4)``.
            camera_angle_x: horizontal field of view in radians.
        """
        images = self.source_images(rgba)
        V, _, H, W = images.shape
        c2w = np.asarray(transform_matrix, dtype=np.float64).reshape(-1, 4, 4)
        if c2w.shape[0] != V:
            raise ValueError(f"{V} image(s) but {c2w.shape[0]} transform_matrix")
        cams = cameras_from_fov(c2w, camera_angle_x, (H, W), self.datamanager.dataparser.config.pixel_convention)
        dev, dtype = self.device, self.dtype
        return self.model.encode(
            images[None].to(dev, dtype),
            cams.camera_to_worlds[None].to(dev, dtype),
            intrinsics_of(cams)[None].to(dev, dtype),
        )

    def render_rays(
        self,
        cond: Conditioning,
        origins: Float[Tensor, "R 3"],
        directions: Float[Tensor, "R 3"],
        outputs: Sequence[str] = ("rgb",),
        depths: SampleDepths | None = None,
        skip_empty: bool = False,
    ) -> dict[str, Float[Tensor, "R C"]]:
        """Render rays of the (single) conditioned object; coarse results come as ``{name}_coarse``.

        Args:
            origins: ray origins in the object's frame.
            directions: unit directions (near/far are the data's distances along them).
            outputs: any of ``rgb``, ``feature``, ``v_nerf``, ``coord``; ``depth`` and ``accumulation`` always.
            depths: fixed sample depths ``(1, R, K)`` instead of drawn ones.
            skip_empty: evaluate the MLP only in the conditioning's occupied space (the same samples, empty ones
                skipped; ``FeatureNeRFModel.occupancy``). False: the exact render, as the authors'.
        """
        dev, dtype = self.device, self.dtype
        generator = torch.Generator(device=dev).manual_seed(self.model.eval_seed)
        if depths is not None:
            depths = SampleDepths(
                *(None if t is None else t.to(dev, dtype) for t in (depths.coarse, depths.fine, depths.around_depth))
            )
        with torch.no_grad():
            out = self.model.render_rays(
                cond,
                origins[None].to(dev, dtype),
                directions[None].to(dev, dtype),
                frozenset(outputs),
                generator,
                depths,
                skip_empty,
            )
        return {k: v[0] for k, v in out.items()}

    def render(
        self,
        cond: Conditioning,
        split: str,
        obj_id: str,
        view: int,
        outputs: Sequence[str] = ("rgb",),
        skip_empty: bool = False,
    ) -> dict[str, Float[Tensor, "H W C"]]:
        """Render one view of the conditioned object (``rgb``, ``v_nerf``, ``feature``; depth and accumulation);
        ``skip_empty``: see :meth:`render_rays`."""
        camera = self.camera(split, obj_id, view)
        return self.model.render_camera(cond, camera, frozenset(outputs), skip_empty=skip_empty)

    def query(
        self,
        cond: Conditioning,
        points: Float[Tensor, "N 3"],
        viewdirs: Float[Tensor, "N 3"] | None = None,
        outputs: Sequence[str] = ("density", "v_nerf", "feature"),
    ) -> dict[str, Tensor]:
        """Field outputs at points of the object's canonical frame, without volume rendering.

        Args:
            viewdirs: unit view directions; default from the first source camera to each point.
            outputs: any of ``rgb``, ``density`` (N,1), ``feature`` (N,D), ``coord`` (the predicted canonical
                point minus the query point), ``v_nerf`` (N,W).
        """
        dev, dtype = self.device, self.dtype
        dirs = None if viewdirs is None else viewdirs.to(dev, dtype)
        return self.model.query_points(cond, points.to(dev, dtype), dirs, frozenset(outputs))
