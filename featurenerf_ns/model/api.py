"""Load a trained FeatureNeRF run and use it outside nerfstudio's training loop.

Everything downstream (transfer benchmarks, viewer panel, part editing) goes through
:class:`TrainedFeatureNeRF`: encode an object's source view(s) once, then render any of its views
or query the field at 3D points in the object's canonical frame.

```python
tf = TrainedFeatureNeRF.load(Path("outputs/chair/featurenerf/.../config.yml"))
cond = tf.encode("test", obj_id, views=[0])
maps = tf.render(cond, "test", obj_id, view=7, outputs=("v_nerf", "rgb"))   # (H, W, C) each
q = tf.query(cond, points)                                                # density, v_nerf, feature
cond = tf.encode_image(read_photo(Path("chair.png")))                       # a photo: canonical camera, cropped
rgb = tf.render_view(cond, orbit_cameras(tf.photo_cameras(tf.canonical_camera()), 8)[3:4])["rgb"]
```
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, UInt8
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils.eval_utils import eval_setup
from torch import Tensor

from featurenerf_ns.data.datamanager import FeatureNeRFDataManager
from featurenerf_ns.data.images import composite_rgba
from featurenerf_ns.dataparsers.records import ObjectRecord
from featurenerf_ns.geometry import (
    cameras_from_fov,
    elevation_of,
    fov_from_focal,
    intrinsics_of,
    look_at_opencv,
    sphere_direction,
)
from featurenerf_ns.model.featurenerf import FeatureNeRFModel
from featurenerf_ns.model.field import RENDER_OUTPUTS, Conditioning, check_outputs
from featurenerf_ns.model.photo import (
    CropTransform,
    PhotoCamera,
    crop_photo,
    margin_for_fill,
    object_fill,
    resize_rgba,
)
from featurenerf_ns.model.rendering import SampleDepths
from featurenerf_ns.model.views import render_camera_anywhere
from featurenerf_ns.utils.io import DataError, UserError


@dataclass(frozen=True)
class PreparedImage:
    """Photo(s) at the model's image size with their cameras (:meth:`TrainedFeatureNeRF.prepare_image`)."""

    rgba: UInt8[np.ndarray, "V H W 4"]
    camera: PhotoCamera
    crop: CropTransform | None
    """Where the crop lies in the original photo (None when the photo came with a camera and was only resized)."""


class TrainedFeatureNeRF:
    """A trained model plus the category data it was trained on (any split can be used)."""

    def __init__(
        self,
        model: FeatureNeRFModel,
        datamanager: FeatureNeRFDataManager,
        config_path: Path | None = None,
        checkpoint_step: int | None = None,
        *,
        set_eval: bool = True,
    ):
        """
        Args:
            set_eval: put the model in eval mode. False for a model that is still training (the viewer panel's):
                its mode belongs to the trainer.
        """
        self.model = model.eval() if set_eval else model
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
        self._fill: float | None = None

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

    def canonical_camera(
        self,
        elevation_deg: float | None = None,
        azimuth_deg: float = 0.0,
        distance: float | None = None,
        camera_angle_x: float | None = None,
    ) -> PhotoCamera:
        """The category's typical camera (see :mod:`featurenerf_ns.model.photo`), looking at the origin with +Y up.

        Args:
            elevation_deg: height above the horizontal plane; default the training cameras' median.
            azimuth_deg: angle about +Y, 0 on +Z, positive towards +X.
            distance: from the origin; default the training cameras' median.
            camera_angle_x: horizontal field of view (radians); default the training cameras' median.
        """
        cams = self.datamanager.train_dataparser_outputs.cameras
        centers = cams.camera_to_worlds[:, :3, 3].double().numpy()
        if distance is None:
            distance = float(np.median(np.linalg.norm(centers, axis=-1)))
        if elevation_deg is None:
            elevation_deg = math.degrees(float(np.median(elevation_of(centers))))
        if camera_angle_x is None:
            camera_angle_x = float(np.median(fov_from_focal(cams.fx[:, 0].double().numpy(), cams.width[:, 0].numpy())))
        if not distance > 0:
            raise UserError(f"the camera distance must be positive, got {distance}")
        eye = distance * sphere_direction(math.radians(azimuth_deg), math.radians(elevation_deg))
        return PhotoCamera(look_at_opencv(eye)[None], camera_angle_x)

    def typical_object_fill(self, max_views: int = 16) -> float:
        """How much of a training view the object fills (longer mask-box side over image side; median over the first
        view of up to ``max_views`` training objects): photos are cropped to the same fill."""
        if self._fill is None:
            fills = []
            for rec in self.objects("train")[:max_views]:
                alpha = self.datamanager.load_views(rec, [0], with_teacher=False).rgba[0, ..., 3]
                fill = object_fill((alpha.numpy() * 255).astype(np.uint8))
                if fill is not None:
                    fills.append(fill)
            self._fill = float(np.median(fills)) if fills else 0.8
        return self._fill

    def prepare_image(
        self,
        rgba: np.ndarray,
        camera: PhotoCamera | None = None,
        margin: float | None = None,
        elevation_deg: float | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> PreparedImage:
        """Bring photo(s) to the model's image size and camera (see :mod:`featurenerf_ns.model.photo`).

        Args:
            rgba: ``(H, W, 4)`` or ``(V, H, W, 4)`` uint8 (alpha = mask); e.g. from
                :func:`~featurenerf_ns.model.photo.read_photo`.
            camera: the photos' cameras; None: one photo, cropped around its object and seen by
                :meth:`canonical_camera`.
            margin: crop margin (fraction of the object's longer side on each side) without a camera; default
                the one that makes the object fill the crop as it fills training views (:meth:`typical_object_fill`).
            elevation_deg: of the canonical camera (default: the training cameras' median).
            image_size: ``(H, W)`` to bring the photos to; default the model's (what it was trained on). The
                encoder takes any size (the intrinsics follow it), e.g. the authors' parity fixture's.
        """
        arr = np.asarray(rgba)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 4 or arr.dtype != np.uint8:
            raise UserError(f"expected uint8 RGBA pixels (H, W, 4) or (V, H, W, 4), got {arr.dtype} {arr.shape}")
        H, W = self.image_size if image_size is None else image_size
        if camera is None:
            if arr.shape[0] != 1:
                raise UserError(f"{arr.shape[0]} photos without cameras: the canonical camera takes one photo")
            if H != W:
                raise UserError(f"the canonical camera needs a model trained on square images, this one is {H}x{W}")
            if margin is None:
                margin = margin_for_fill(self.typical_object_fill())
            crop, transform = crop_photo(arr[0], H, margin)
            return PreparedImage(crop[None], self.canonical_camera(elevation_deg), transform)
        if camera.num_views != arr.shape[0]:
            raise UserError(f"{arr.shape[0]} photo(s) but {camera.num_views} camera(s)")
        h, w = arr.shape[1:3]
        if abs(w / h - W / H) > 0.01 * (W / H):
            raise UserError(
                f"the photo is {h}x{w} (HxW) but the model's images are {H}x{W}: with a camera the aspect ratio must "
                "be the model's (crop the photo, or leave the camera out to use the canonical one)"
            )
        return PreparedImage(np.stack([resize_rgba(a, (H, W)) for a in arr]), camera, None)

    def photo_cameras(self, camera: PhotoCamera, image_size: tuple[int, int] | None = None) -> Cameras:
        """nerfstudio cameras of a :class:`PhotoCamera` in the run's pixel convention, at ``image_size`` ``(H, W)``
        (default the model's)."""
        hw = self.image_size if image_size is None else image_size
        convention = self.datamanager.dataparser.config.pixel_convention
        return cameras_from_fov(camera.transform_matrix, camera.camera_angle_x, hw, convention).to(self.device)

    @torch.no_grad()
    def encode_image(self, rgba: np.ndarray | PreparedImage, camera: PhotoCamera | None = None) -> Conditioning:
        """Conditioning from photo(s) that are not part of the data (one object, ``V`` views).

        Args:
            rgba: photo pixels (prepared with :meth:`prepare_image` and ``camera``), or a :class:`PreparedImage`.
            camera: the photos' cameras in the authors' convention; None: the canonical camera (one photo, cropped).
        """
        prepared = rgba if isinstance(rgba, PreparedImage) else self.prepare_image(rgba, camera)
        cameras = self.photo_cameras(prepared.camera, prepared.rgba.shape[1:3])
        return self.encode_with_cameras(self.source_images(prepared.rgba), cameras)

    @torch.no_grad()
    def encode_with_cameras(self, images: Float[Tensor, "V 3 H W"], cameras: Cameras) -> Conditioning:
        """Conditioning from RGB in [0, 1] (on the background the model expects) seen by nerfstudio cameras."""
        dev, dtype = self.device, self.dtype
        return self.model.encode(
            images[None].to(dev, dtype),
            cameras.camera_to_worlds[None].to(dev, dtype),
            intrinsics_of(cameras)[None].to(dev, dtype),
        )

    def render_view(
        self,
        cond: Conditioning,
        camera: Cameras,
        outputs: Sequence[str] = ("rgb",),
        skip_empty: bool = True,
    ) -> dict[str, Float[Tensor, "H W C"]]:
        """Render the conditioned object from any camera (one, any pose and size; e.g. :meth:`photo_cameras` or
        :func:`~featurenerf_ns.model.views.orbit_cameras`): rays are sampled around the object, ``depth`` is the
        surface's (see :func:`~featurenerf_ns.model.views.render_camera_anywhere`)."""
        return render_camera_anywhere(self.model, cond, camera, outputs, skip_empty)

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
        names = check_outputs(outputs, RENDER_OUTPUTS, "render")
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
                names,
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
        return self.model.render_camera(cond, camera, outputs, skip_empty=skip_empty)

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
        return self.model.query_points(cond, points.to(dev, dtype), dirs, outputs)
