"""FeatureNeRF as a nerfstudio ``Model``: encoder + conditioned field + coarse/fine rendering + losses.

Unlike scene-specific NeRFs, every forward pass needs a *conditioning* (the encoded source views of
the objects the rays belong to). Training and evaluation pass it explicitly
(``model(ray_bundle, conditioning)``, see :mod:`featurenerf_ns.model.pipeline`); rays carry
``metadata["object_slot"]``, the index of their object within that conditioning. nerfstudio's viewer and
``ns-render``, which bring no source image, render cameras through :attr:`FeatureNeRFModel.camera_renderer` (set by
the pipeline).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils.colormaps import apply_depth_colormap
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.nn import Parameter
from torchmetrics.functional import structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio

from featurenerf_ns.model.encoder import SpatialEncoderConfig
from featurenerf_ns.model.field import (
    FIELD_OUTPUTS,
    RENDER_OUTPUTS,
    Conditioning,
    FeatureNeRFField,
    FeatureNeRFFieldConfig,
    check_outputs,
)
from featurenerf_ns.model.gemm import set_onednn_enabled
from featurenerf_ns.model.occupancy import (
    OccupancyConfig,
    OccupancyGrid,
    cell_centers,
    occupancy_from_density,
    refine_occupancy,
)
from featurenerf_ns.model.rendering import SampleDepths, SamplingConfig, object_ray_bounds, render_rays
from featurenerf_ns.utils.allocator import retain_freed_memory
from featurenerf_ns.utils.features import PCABasis
from featurenerf_ns.utils.io import UserError

_ALEXNET_FILE = "alexnet-owt-7be5be79.pth"

RayBounds = Literal["data", "object"]
"""Where rays are sampled: between the data's near/far, or over that length around the object (any camera)."""


@dataclass
class FeatureNeRFModelConfig(ModelConfig):
    """FeatureNeRF model (defaults = the paper's configuration)."""

    _target: type = field(default_factory=lambda: FeatureNeRFModel)
    encoder: SpatialEncoderConfig = field(default_factory=SpatialEncoderConfig)
    """Pixel-aligned image encoder."""
    field: FeatureNeRFFieldConfig = field(default_factory=FeatureNeRFFieldConfig)
    """Conditioned residual MLP."""
    num_coarse_samples: int = 64
    """Stratified samples per ray."""
    num_fine_samples: int = 32
    """Fine samples per ray (evaluated by the same MLP); includes ``num_fine_depth_samples``."""
    num_fine_depth_samples: int = 16
    """Fine samples drawn around the coarse expected depth."""
    depth_std: float = 0.01
    """Standard deviation of the samples around the coarse depth."""
    feature_dim: int | None = None
    """Channels of the distilled feature head; None = the teacher's channels found by the dataparser (384 for DINO).
    0 = no feature head (pixelNeRF's network; needs lambda_distill 0)."""
    regress_coord: bool = True
    """Add the coordinate head (L_coord)."""
    lambda_rgb_coarse: float = 1.0
    """Weight of the coarse photometric loss."""
    lambda_rgb_fine: float = 1.0
    """Weight of the fine photometric loss."""
    lambda_distill: float = 0.25
    """Weight of L_distill (rendered feature vs teacher), coarse + fine. 0 = the 'NeRF feature' baseline."""
    lambda_coord: float = 0.25
    """Weight of L_coord (mean coordinate residual along each ray), coarse + fine."""
    lpips_alexnet_weights: Path | None = None
    """AlexNet weights for LPIPS (torchvision's alexnet-owt-7be5be79.pth); default: torch hub cache. LPIPS is
    skipped with one log line when they are absent (nothing is downloaded)."""
    eval_num_rays_per_chunk: int = 1024
    """Rays rendered at once for full images (bounds memory: ~1 GB at the paper's width)."""
    onednn_gemm: bool = True
    """On CPU, run the MLP's fp32 GEMMs with oneDNN instead of PyTorch's default (MKL), which is ~2x slower on
    AMD processors. Same fp32 arithmetic; no effect on CUDA. Process-wide: the last model set up decides."""
    # A (frozen) instance rather than a factory: configs of runs saved before this option existed still load.
    occupancy: OccupancyConfig = OccupancyConfig()
    """Empty-space skipping of renders without gradients (``skip_empty``; the viewer's default, an option of the
    API and ``featurenerf-eval``): the occupancy grid estimated once per conditioning."""
    inference_dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision of the MLP's GEMMs when no gradient is needed. bfloat16 takes effect only on hardware that
    multiplies it natively (CPUs with AVX512-BF16 or AMX, through oneDNN; CUDA, through autocast) and is ignored
    elsewhere; training and the parity tests are always float32."""
    retain_freed_memory: bool = True
    """Let this process keep freed CPU memory for reuse (glibc) instead of returning it to the kernel and paying
    for fresh zeroed pages every step (~40% of a CPU training step at the paper's size). Process-wide; the process
    then keeps its peak resident size until it exits."""


class FeatureNeRFModel(Model):
    """Generalizable NeRF conditioned on source images, with distilled features and coordinate regression."""

    config: FeatureNeRFModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        set_onednn_enabled(self.config.onednn_gemm)
        if self.config.retain_freed_memory:
            retain_freed_memory()
        metadata = self.kwargs.get("metadata") or {}
        if self.config.feature_dim is not None:
            self.feature_dim = self.config.feature_dim
        else:
            self.feature_dim = metadata.get("teacher_dim") or 384
        if self.feature_dim == 0 and self.config.lambda_distill > 0:
            raise UserError(
                "a model without a feature head (--pipeline.model.feature-dim 0) cannot distil: "
                "pass --pipeline.model.lambda-distill 0"
            )
        self.near = float(metadata.get("near", 0.8))
        self.far = float(metadata.get("far", 1.8))
        # pixelNeRF's white_bkgd: rendered rgb is composited on the data's background colour.
        white = bool(metadata.get("white_background", False))
        self.register_buffer("background", torch.ones(3) if white else torch.zeros(3), persistent=False)
        self.white_background = white
        self.encoder = self.config.encoder.setup()
        self.field = FeatureNeRFField(
            self.config.field, self.encoder.latent_size, self.feature_dim, self.config.regress_coord
        )
        self.sampling = SamplingConfig(
            self.config.num_coarse_samples,
            self.config.num_fine_samples,
            self.config.num_fine_depth_samples,
            self.config.depth_std,
        )
        self.field.inference_dtype = getattr(torch, self.config.inference_dtype)
        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        # Not a submodule: a frozen metric whose weights would otherwise enter checkpoints only on machines that
        # have them, so that a run saved on one machine could not load on another.
        self.__dict__["lpips"] = self._make_lpips()
        self.eval_seed = 0
        # Renders one camera for nerfstudio's viewer and ns-render, which bring no source image: set by the pipeline
        # (FeatureNeRFPipeline.render_viewer_camera: its default source, or the viewer panel while a viewer runs).
        self.camera_renderer: Callable[[Cameras], dict[str, Tensor]] | None = None

    def _make_lpips(self):
        weights = self.config.lpips_alexnet_weights or Path(torch.hub.get_dir()) / "checkpoints" / _ALEXNET_FILE
        if not Path(weights).is_file():
            CONSOLE.print(
                f"LPIPS skipped: AlexNet weights not found at {weights} (set --pipeline.model.lpips-alexnet-weights)."
            )
            return None
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        if Path(weights).parent == Path(torch.hub.get_dir()) / "checkpoints":
            return LearnedPerceptualImagePatchSimilarity(normalize=True)
        # torchvision reads AlexNet from the torch hub cache only: show it a temporary cache holding the given file
        # (the user's own cache is left alone).
        previous = torch.hub.get_dir()
        with tempfile.TemporaryDirectory(prefix="featurenerf-hub-") as hub:
            (Path(hub) / "checkpoints").mkdir()
            (Path(hub) / "checkpoints" / _ALEXNET_FILE).symlink_to(Path(weights).resolve())
            torch.hub.set_dir(hub)
            try:
                return LearnedPerceptualImagePatchSimilarity(normalize=True)
            finally:
                torch.hub.set_dir(previous)

    def get_param_groups(self) -> dict[str, list[Parameter]]:
        return {"encoder": list(self.encoder.parameters()), "field": list(self.field.parameters())}

    # ----------------------------------------------------------------------------------------------
    # Public API: encode once, then render rays / cameras or query points.

    def encode(
        self,
        images: Float[Tensor, "B S 3 H W"],
        c2w: Float[Tensor, "B S 3 4"],
        intrinsics: Float[Tensor, "B S 4"],
    ) -> Conditioning:
        """Encode the source view(s) of ``B`` objects.

        Args:
            images: RGB in [0, 1] (background black, as the authors' renders).
            c2w: nerfstudio (OpenGL) camera-to-world of each source view.
            intrinsics: ``[fx, fy, cx, cy]`` in nerfstudio's pixel convention.
        """
        B, S, _, H, W = images.shape
        latent = self.encoder(images.reshape(B * S, 3, H, W))
        return self.field.condition(latent, c2w.reshape(B * S, 3, 4)[:, :3], intrinsics.reshape(B * S, 4), (W, H), B)

    @torch.no_grad()
    def occupancy(self, cond: Conditioning) -> OccupancyGrid:
        """The occupancy grid of a conditioning (see :mod:`featurenerf_ns.model.occupancy`), estimated from the
        field's density at the cell centres, seen from each object's first source camera, on first use and kept
        on the conditioning."""
        if cond.occupancy is None:
            cfg = self.config.occupancy
            bound = cfg.bound if cfg.bound is not None else self.far - self.near

            def density_of(b: int, points: Tensor) -> Tensor:
                one = cond if cond.num_objects == 1 else cond.select([b])
                pts = points.to(device=self.device, dtype=cond.w2c.dtype)[None]
                viewdirs = F.normalize(pts - one.source_centers[:, None], dim=-1)
                return self.field(one, pts, viewdirs, frozenset({"density"})).density[0, :, 0]

            centers = cell_centers(cfg.first_resolution, bound, self.device)
            density = torch.stack([density_of(b, centers) for b in range(cond.num_objects)])
            grid = occupancy_from_density(density, cfg.first_resolution, cfg, bound)
            for _ in range(cfg.refinements):
                grid = refine_occupancy(grid, density_of, cfg)
            cond.occupancy = grid
        return cond.occupancy

    def render_rays(
        self,
        cond: Conditioning,
        origins: Float[Tensor, "B R 3"],
        directions: Float[Tensor, "B R 3"],
        outputs: frozenset[str] = frozenset({"rgb"}),
        generator: torch.Generator | None = None,
        depths: SampleDepths | None = None,
        skip_empty: bool = False,
        bounds: RayBounds = "data",
        coarse: bool = True,
    ) -> dict[str, Tensor]:
        """Render ``R`` rays for each of the ``B`` conditioned objects (see :func:`render_rays`).

        Args:
            origins: ray origins in world coordinates.
            directions: unit ray directions; near/far are distances along them.
            outputs: any of ``rgb``, ``feature``, ``v_nerf``, ``coord``.
            generator: random source of the sample depths.
            depths: fixed sample depths instead of drawn ones (e.g. another renderer's recorded samples).
            skip_empty: evaluate the MLP only in the conditioning's occupied space (:meth:`occupancy`); inference
                only, the same samples as the exact render.
            bounds: ``"data"``: the data's near/far (e.g. 0.8/1.8), as in training and the authors' renders;
                ``"object"``: the same length centred on each ray's closest approach to the object's centre (the
                origin), for cameras at any distance (:func:`~featurenerf_ns.model.rendering.object_ray_bounds`).
            coarse: also composite the coarse pass's outputs (``{name}_coarse``).
        """
        if bounds == "data":
            near = torch.full_like(origins[..., :1], self.near)
            far = torch.full_like(origins[..., :1], self.far)
        else:
            near, far = object_ray_bounds(origins, directions, 0.5 * (self.far - self.near))
        background = self.background if self.white_background else None
        occupancy = self.occupancy(cond) if skip_empty else None
        return render_rays(
            self.field,
            cond,
            origins,
            directions,
            near,
            far,
            self.sampling,
            outputs,
            generator,
            depths,
            background,
            occupancy,
            coarse,
        )

    @torch.no_grad()
    def render_ray_chunks(
        self,
        cond: Conditioning,
        origins: Float[Tensor, "N 3"],
        directions: Float[Tensor, "N 3"],
        outputs: frozenset[str] = frozenset({"rgb"}),
        chunk: int | None = None,
        skip_empty: bool = False,
        bounds: RayBounds = "data",
    ) -> dict[str, Float[Tensor, "N C"]]:
        """Render any number of rays of the (single) conditioned object in fixed memory (fine results only).

        Returns ``depth``, ``accumulation`` and each requested output. Sampling uses a generator seeded with
        :attr:`eval_seed`, so the same rays give the same result. With ``bounds="object"`` (see
        :meth:`render_rays`) ``depth`` is the expected depth of the surface hit (divided by the accumulation;
        rays that hit nothing sit at their far bound, so they never hide what is behind them).
        """
        outputs = check_outputs(outputs, RENDER_OUTPUTS, "render")
        generator = torch.Generator(device=self.device).manual_seed(self.eval_seed)
        chunk = chunk or self.config.eval_num_rays_per_chunk
        origins = origins.to(self.device).reshape(1, -1, 3)
        directions = directions.to(self.device).reshape(1, -1, 3)
        if bounds == "object":
            directions = F.normalize(directions, dim=-1)
        pieces: dict[str, list[Tensor]] = {}
        for i in range(0, origins.shape[1], chunk):
            o, d = origins[:, i : i + chunk], directions[:, i : i + chunk]
            out = self.render_rays(cond, o, d, outputs, generator, skip_empty=skip_empty, bounds=bounds, coarse=False)
            if bounds == "object":
                acc = out["accumulation"]
                far = object_ray_bounds(o, d, 0.5 * (self.far - self.near))[1]
                out["depth"] = torch.where(acc > 1e-3, out["depth"] / acc.clamp_min(1e-3), far)
            for k, v in out.items():
                if not k.endswith("_coarse"):
                    pieces.setdefault(k, []).append(v[0])
        return {k: torch.cat(v) for k, v in pieces.items()}

    @torch.no_grad()
    def render_camera(
        self,
        cond: Conditioning,
        camera: Cameras,
        outputs: frozenset[str] = frozenset({"rgb"}),
        chunk: int | None = None,
        skip_empty: bool = False,
        bounds: RayBounds = "data",
    ) -> dict[str, Float[Tensor, "H W C"]]:
        """Full image of one camera with :meth:`render_ray_chunks`; each output ``(H, W, C)``."""
        bundle = camera.to(self.device).generate_rays(camera_indices=0, keep_shape=True)
        H, W = bundle.origins.shape[:2]
        out = self.render_ray_chunks(
            cond, bundle.origins.reshape(-1, 3), bundle.directions.reshape(-1, 3), outputs, chunk, skip_empty, bounds
        )
        return {k: v.view(H, W, -1) for k, v in out.items()}

    @torch.no_grad()
    def query_points(
        self,
        cond: Conditioning,
        points: Float[Tensor, "N 3"],
        viewdirs: Float[Tensor, "N 3"] | None = None,
        outputs: frozenset[str] = frozenset({"density", "feature", "v_nerf"}),
        chunk: int = 65536,
    ) -> dict[str, Tensor]:
        """Query the field (no volume rendering) at world points of one conditioned object.

        Args:
            points: points in the object's canonical (world) frame.
            viewdirs: unit view directions; default the direction from the first source camera to each point.
            outputs: any of ``rgb``, ``density``, ``feature``, ``coord`` (predicted canonical point minus the
                query point), ``v_nerf``; heads the model lacks are left out.
        Returns:
            ``(N, C)`` per output, from the coarse MLP.
        """
        outputs = check_outputs(outputs, FIELD_OUTPUTS, "query")
        if viewdirs is None:
            viewdirs = F.normalize(points - cond.source_centers[0], dim=-1)
        parts: dict[str, list[Tensor]] = {}
        for i in range(0, points.shape[0], chunk):
            out = self.field(cond, points[None, i : i + chunk], viewdirs[None, i : i + chunk], outputs)
            for k in outputs:
                value = getattr(out, k)
                if value is not None:
                    parts.setdefault(k, []).append(value[0])
        return {k: torch.cat(v) for k, v in parts.items()}

    # ----------------------------------------------------------------------------------------------
    # nerfstudio Model interface.

    def get_outputs_for_camera(self, camera: Cameras, obb_box: Any = None) -> dict[str, Tensor]:
        """Render one camera for nerfstudio's viewer (and ``ns-render``).

        Delegates to :attr:`camera_renderer` (set by the pipeline: a default source, or the source and outputs chosen
        in the viewer panel while a viewer runs). ``obb_box`` (the viewer's crop box) is ignored.
        """
        if self.camera_renderer is None:
            raise RuntimeError("FeatureNeRF renders need a source view: set camera_renderer (the pipeline does)")
        return self.camera_renderer(camera)

    def forward(self, ray_bundle: RayBundle, conditioning: Conditioning | None = None) -> dict[str, Tensor]:  # type: ignore[override]
        return self.get_outputs(ray_bundle, conditioning)

    def get_outputs(self, ray_bundle: RayBundle, conditioning: Conditioning | None = None) -> dict[str, Tensor]:  # type: ignore[override]
        if conditioning is None:
            raise RuntimeError("FeatureNeRF renders need a source view: pass the conditioning (model(rays, cond))")
        cond = conditioning
        slots = ray_bundle.metadata.get("object_slot") if ray_bundle.metadata else None
        if slots is None:
            if cond.num_objects != 1:
                raise RuntimeError("rays without metadata['object_slot'] can only be rendered for one object")
            slots = torch.zeros(len(ray_bundle), 1, dtype=torch.long, device=ray_bundle.origins.device)
        slots = slots.reshape(-1)
        if self.training:
            outputs = frozenset({"rgb", "feature", "coord"} if self._distill_or_coord() else {"rgb"})
            generator = None
        else:
            outputs = frozenset({"rgb"})
            generator = torch.Generator(device=self.device).manual_seed(self.eval_seed)
        counts = torch.bincount(slots, minlength=cond.num_objects)
        order = torch.argsort(slots, stable=True)
        origins = ray_bundle.origins[order]
        directions = ray_bundle.directions[order]
        if bool((counts == counts[0]).all()) and int(counts[0]) > 0:
            per = int(counts[0])
            out = self.render_rays(cond, origins.view(-1, per, 3), directions.view(-1, per, 3), outputs, generator)
            flat = {k: v.reshape(-1, v.shape[-1]) for k, v in out.items()}
        else:
            flat_parts: dict[str, list[Tensor]] = {}
            start = 0
            for obj, n in enumerate(counts.tolist()):
                if n == 0:
                    continue
                sl = slice(start, start + n)
                out = self.render_rays(cond.select([obj]), origins[None, sl], directions[None, sl], outputs, generator)
                for k, v in out.items():
                    flat_parts.setdefault(k, []).append(v[0])
                start += n
            flat = {k: torch.cat(v) for k, v in flat_parts.items()}
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return {k: v[inverse] for k, v in flat.items()}

    def _distill_or_coord(self) -> bool:
        return self.config.lambda_distill > 0 or (self.config.regress_coord and self.config.lambda_coord > 0)

    def get_metrics_dict(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        gt = batch["image"].to(self.device)[..., :3]
        return {"psnr": self.psnr(outputs["rgb"], gt)}

    def get_loss_dict(self, outputs: dict[str, Tensor], batch: dict[str, Any], metrics_dict=None) -> dict[str, Tensor]:
        gt = batch["image"].to(self.device)[..., :3]
        loss = {
            "rgb_loss": self.config.lambda_rgb_coarse * F.mse_loss(outputs["rgb_coarse"], gt)
            + self.config.lambda_rgb_fine * F.mse_loss(outputs["rgb"], gt)
        }
        if not self.training:
            return loss
        teacher = batch.get("teacher")
        if self.config.lambda_distill > 0 and self.feature_dim > 0 and teacher is not None:
            teacher = teacher.to(self.device)
            loss["distill_loss"] = self.config.lambda_distill * (
                F.mse_loss(outputs["feature_coarse"], teacher) + F.mse_loss(outputs["feature"], teacher)
            )
        if self.config.regress_coord and self.config.lambda_coord > 0:
            # The authors' L_coord: MSE to zero of the per-ray mean residual, coarse and fine.
            loss["coord_loss"] = self.config.lambda_coord * (
                outputs["coord_coarse"].square().mean() + outputs["coord"].square().mean()
            )
        return loss

    def image_outputs(self, batch: dict[str, Any]) -> frozenset[str]:
        """What :meth:`get_image_metrics_and_images` needs rendered for an eval image: the distilled feature too when
        the batch carries the teacher's map of the view."""
        return frozenset({"rgb", "feature"} if self.feature_dim > 0 and "teacher" in batch else {"rgb"})

    def get_image_metrics_and_images(
        self, outputs: dict[str, Tensor], batch: dict[str, Any]
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        """Metrics and pictures of one rendered eval view (``(H, W, C)`` outputs of :meth:`render_camera`).

        Metrics: ``psnr``, ``ssim`` (and ``lpips`` with AlexNet's weights); with the teacher's map of the view
        (``batch["teacher"]``, ``(H, W, D)``) and a rendered ``feature``, the held-out distillation error:
        ``distill_mse``, the mean squared error over all pixels and channels (L_distill's form, unweighted), and
        ``distill_cosine``, the mean cosine similarity over the pixels where the teacher is not zero (its
        foreground; left out for a view without one). Images: ``img`` (GT | render), ``accumulation``, ``depth``
        (near..far of the data, white where nothing is hit) and ``feature_pca`` (teacher | rendered feature, both
        through one PCA basis fitted on the teacher's foreground, background black).
        """
        gt = batch["image"].to(self.device)[..., :3]
        pred = outputs["rgb"].clamp(0, 1)
        gt_chw = gt.permute(2, 0, 1)[None]
        pred_chw = pred.permute(2, 0, 1)[None]
        metrics = {
            "psnr": float(self.psnr(pred_chw, gt_chw).item()),
            "ssim": float(structural_similarity_index_measure(pred_chw, gt_chw, data_range=1.0).item()),
        }
        if self.lpips is not None:
            metrics["lpips"] = float(self.lpips.to(pred_chw.device)(pred_chw, gt_chw).item())
        accumulation = outputs["accumulation"]
        images = {
            "img": torch.cat([gt, pred], dim=1),
            "accumulation": accumulation,
            "depth": apply_depth_colormap(outputs["depth"], accumulation, near_plane=self.near, far_plane=self.far),
        }
        teacher = batch.get("teacher")
        if teacher is not None and "feature" in outputs:
            feature, teacher = outputs["feature"], teacher.to(self.device)
            foreground = teacher.abs().amax(-1) > 0
            metrics["distill_mse"] = float(F.mse_loss(feature, teacher).item())
            if bool(foreground.any()):
                cosine = F.cosine_similarity(feature[foreground], teacher[foreground], dim=-1)
                metrics["distill_cosine"] = float(cosine.mean().item())
            basis = PCABasis.fit(teacher[foreground] if bool(foreground.any()) else teacher.flatten(0, 1))
            images["feature_pca"] = torch.cat(
                [basis.apply(teacher) * foreground[..., None], basis.apply(feature) * accumulation], dim=1
            )
        return metrics, images
