"""Category datamanager: B objects per step, source view(s) + target rays per object, lazy loading.

nerfstudio's ``VanillaDataManager`` caches every image of a split in memory (ShapeNet chairs: ~230k
images); here each step loads only the views it uses, in a small thread pool, one step ahead.
Objects are sharded by rank under nerfstudio's DDP (``--machine.num-devices``).
"""

from __future__ import annotations

import functools
import random
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.configs.dataparser_configs import AnnotatedDataParserUnion
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.model_components.ray_generators import RayGenerator
from torch import Tensor

from featurenerf_ns.data.images import foreground_bbox, read_image, stored_rgba, view_from_pixels
from featurenerf_ns.dataparsers.featurenerf_dataparser import FeatureNeRFDataParserConfig
from featurenerf_ns.dataparsers.records import ObjectRecord
from featurenerf_ns.teachers.diffusion import DiffusionTeacherConfig
from featurenerf_ns.teachers.dino import DinoTeacherConfig
from featurenerf_ns.teachers.dinov2 import Dinov2TeacherConfig
from featurenerf_ns.teachers.online import OnlineTeacher
from featurenerf_ns.teachers.store import open_teacher_features


@dataclass
class FeatureNeRFDataManagerConfig(DataManagerConfig):
    """Samples objects, source views and target rays for a category-level generalizable NeRF."""

    _target: type = field(default_factory=lambda: FeatureNeRFDataManager)
    dataparser: AnnotatedDataParserUnion = field(default_factory=FeatureNeRFDataParserConfig)
    """Which dataparser reads the category."""
    objects_per_batch: int = 4
    """Objects per training step (the paper: 4)."""
    rays_per_object: int = 128
    """Target rays per object per step (the authors' code: 128; the paper's text says 1024)."""
    num_source_views: int = 1
    """Source views per object, averaged inside the MLP (the paper trains with 1)."""
    target_views: Literal["all", "other"] = "all"
    """Draw target rays from all of the object's views, the source view included (the authors' train.py), or
    only from the views other than the source."""
    target_views_per_object: int | None = None
    """Load only this many random target views per object per step (None = every candidate view, as the
    authors); fewer views mean less image decoding per step."""
    bbox_sampling_steps: int = 100_000
    """For this many steps, sample target pixels inside the object's 2D bounding box (the authors: 100k)."""
    num_workers: int = 2
    """Threads that decode images and teacher features, one step ahead of training."""
    eval_num_triples: int = 50
    """Fixed (object, source view, target view) triples from the eval split used by ns-eval."""
    eval_seed: int = 0
    """Seed that draws the eval triples."""
    seed: int = 42
    """Seed of the training sampler (offset by rank)."""
    online_teacher: DinoTeacherConfig | Dinov2TeacherConfig | DiffusionTeacherConfig | None = None
    """Compute teacher features on the fly for the loaded target views (for users with a GPU and little disk)
    instead of reading the cached teacher folder; None reads the cache."""


@dataclass
class ViewBatch:
    """Decoded views of one object: RGB + alpha and, when a teacher is used, its feature maps."""

    record: ObjectRecord
    views: list[int]
    rgba: Float[Tensor, "V H W 4"]
    teacher: Float[Tensor, "V D h w"] | None
    stored: Float[Tensor, "V H W 4"] | None = None
    """The views as stored (colour under transparent pixels kept, native size): what an online teacher reads,
    exactly as ``featurenerf-teacher`` reads the files for the cache."""


class FeatureNeRFDataManager(DataManager):
    """Datamanager over a category: see :class:`FeatureNeRFDataManagerConfig`."""

    config: FeatureNeRFDataManagerConfig

    def __init__(
        self,
        config: FeatureNeRFDataManagerConfig,
        device: torch.device | str = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ):
        self.config = config
        self.device = device
        self.world_size = world_size
        self.local_rank = local_rank
        self.test_mode = test_mode
        if config.data is not None:
            config.dataparser.data = Path(config.data)
        self.dataparser = config.dataparser.setup()
        self.train_dataparser_outputs: DataparserOutputs = self.dataparser.get_dataparser_outputs(split="train")
        self.online_teacher: OnlineTeacher | None = None
        if config.online_teacher is not None:
            meta = self.train_dataparser_outputs.metadata
            self.online_teacher = OnlineTeacher(config.online_teacher, category=meta.get("category"), device=device)
            # The model sizes its feature head from this, so it must be set before the datasets copy the metadata.
            meta["teacher_dim"] = self.online_teacher.dim
        eval_split = "val" if test_mode == "val" else "test"
        self.eval_dataparser_outputs: DataparserOutputs = self.dataparser.get_dataparser_outputs(split=eval_split)
        self.train_dataset = InputDataset(self.train_dataparser_outputs)
        self.eval_dataset = InputDataset(self.eval_dataparser_outputs)
        meta = self.train_dataparser_outputs.metadata
        self.image_hw: tuple[int, int] = tuple(meta["image_size"])  # type: ignore[assignment]
        self.white_background = bool(meta.get("white_background", False))
        self.native_hw: tuple[int, int] = tuple(meta["native_image_size"])  # type: ignore[assignment]
        # Reopening the authors' .npz unpacks it; keep recently used objects' feature files open.
        self._open_teacher = functools.lru_cache(maxsize=64)(open_teacher_features)
        self._pool = ThreadPoolExecutor(max_workers=max(1, config.num_workers))
        # A separate thread assembles the next step's batch; it waits on the loader pool, so it must
        # not occupy one of the pool's workers.
        self._prefetch = ThreadPoolExecutor(max_workers=1)
        self._rng = random.Random(config.seed + local_rank)
        # The sampler's state before the prefetched plan was drawn: what a resumed run must start from.
        self._rng_before_pending = self._rng.getstate()
        self._pending: tuple[int, Future] | None = None
        super().__init__()

    # ------------------------------------------------------------------------------------- setup
    def setup_train(self) -> None:
        objects = self.train_dataparser_outputs.metadata["objects"]
        # DDP: each rank trains on its own shard of the objects.
        self.train_objects: list[ObjectRecord] = objects[self.local_rank :: self.world_size] or objects
        self.train_ray_generator = RayGenerator(self.train_dataparser_outputs.cameras.to(self.device))

    def setup_eval(self) -> None:
        self.eval_objects: list[ObjectRecord] = self.eval_dataparser_outputs.metadata["objects"]
        self.eval_ray_generator = RayGenerator(self.eval_dataparser_outputs.cameras.to(self.device))

    @cached_property
    def eval_triples(self) -> list[tuple[int, int, int]]:
        """Fixed, seeded ``(object index, source view, target view)`` triples of the eval split."""
        rng = np.random.default_rng(self.config.eval_seed)
        triples = []
        for _ in range(self.config.eval_num_triples):
            obj = int(rng.integers(len(self.eval_objects)))
            n = self.eval_objects[obj].num_views
            src, trg = (int(v) for v in rng.choice(n, size=2, replace=n < 2))
            triples.append((obj, src, trg))
        return triples

    # ------------------------------------------------------------------------------------- loading
    def load_views(self, record: ObjectRecord, views: list[int], with_teacher: bool = True) -> ViewBatch:
        """Decode ``views`` of ``record`` (RGB composited on the background, alpha, teacher maps; for an online
        teacher, the stored pixels it reads)."""
        pixels = [read_image(record.image_paths[v], expected_size=self.native_hw) for v in views]
        rgba = np.stack(
            [
                view_from_pixels(px, record.image_paths[v], self.image_hw, self.white_background)
                for px, v in zip(pixels, views, strict=True)
            ]
        )
        teacher, stored = None, None
        if with_teacher and self.online_teacher is not None:
            stored = torch.from_numpy(np.stack([stored_rgba(px) for px in pixels]))
        elif with_teacher and record.teacher_path is not None:
            teacher = torch.from_numpy(self._open_teacher(record.teacher_path).read(views))
        return ViewBatch(record, list(views), torch.from_numpy(rgba), teacher, stored)

    def compute_online_teacher(self, views: ViewBatch) -> None:
        """Fill ``views.teacher`` with the online teacher's maps of views loaded with their stored pixels (cached
        teacher maps are read by :meth:`load_views` itself)."""
        if self.online_teacher is not None and views.stored is not None:
            views.teacher = self.online_teacher(views.stored.to(self.device)).cpu()

    def source_conditioning_inputs(
        self, cameras: Cameras, records: list[ObjectRecord], source_views: list[list[int]], images: Tensor
    ) -> dict[str, Tensor]:
        """Source images and cameras in the layout :meth:`FeatureNeRFModel.encode` takes."""
        idx = torch.tensor([[r.camera_index(v) for v in vs] for r, vs in zip(records, source_views, strict=False)])
        cams = cameras[idx.view(-1)]
        intr = torch.cat((cams.fx, cams.fy, cams.cx, cams.cy), dim=-1).view(*idx.shape, 4)
        return {
            "images": images.to(self.device),
            "c2w": cams.camera_to_worlds.view(*idx.shape, 3, 4).to(self.device),
            "intrinsics": intr.to(self.device),
        }

    # ------------------------------------------------------------------------------------- training
    def _plan_train(self) -> list[tuple[ObjectRecord, list[int], list[int]]]:
        plan = []
        objs = self._rng.sample(self.train_objects, min(self.config.objects_per_batch, len(self.train_objects)))
        while len(objs) < self.config.objects_per_batch:
            objs.append(self._rng.choice(self.train_objects))
        for rec in objs:
            n = rec.num_views
            src = self._rng.sample(range(n), min(self.config.num_source_views, n))
            candidates = [v for v in range(n) if self.config.target_views == "all" or v not in src] or src
            k = self.config.target_views_per_object
            trg = self._rng.sample(candidates, k) if k is not None and k < len(candidates) else candidates
            plan.append((rec, src, trg))
        return plan

    def _load_plan(self, plan) -> list[tuple[ViewBatch, ViewBatch]]:
        futures = [
            (self._pool.submit(self.load_views, rec, src, False), self._pool.submit(self.load_views, rec, trg))
            for rec, src, trg in plan
        ]
        return [(a.result(), b.result()) for a, b in futures]

    def _next_loaded(self, step: int) -> list[tuple[ViewBatch, ViewBatch]]:
        if self._pending is not None and self._pending[0] == step:
            loaded = self._pending[1].result()
        else:
            loaded = self._load_plan(self._plan_train())
        self._rng_before_pending = self._rng.getstate()
        next_plan = self._plan_train()
        self._pending = (step + 1, self._prefetch.submit(self._load_plan, next_plan))
        return loaded

    def next_train(self, step: int) -> tuple[RayBundle, dict]:
        self.train_count += 1
        loaded = self._next_loaded(step)
        use_bbox = step < self.config.bbox_sampling_steps
        ray_indices, rgb, teacher = [], [], []
        for trg in (t for _, t in loaded):
            self.compute_online_teacher(trg)
            idx, pix_view, ys, xs = self._sample_pixels(trg, self.config.rays_per_object, use_bbox)
            ray_indices.append(idx)
            rgb.append(trg.rgba[pix_view, ys, xs, :3])
            if trg.teacher is not None:
                teacher.append(sample_teacher(trg.teacher, pix_view, xs, ys, self.image_hw))
        ray_indices = torch.cat(ray_indices).to(self.device)
        bundle = self.train_ray_generator(ray_indices)
        slots = torch.arange(len(loaded)).repeat_interleave(self.config.rays_per_object)
        bundle.metadata["object_slot"] = slots.view(-1, 1).to(self.device)
        batch = {"image": torch.cat(rgb).to(self.device), "indices": ray_indices}
        if len(teacher) == len(loaded):
            batch["teacher"] = torch.cat(teacher).to(self.device)
        records = [src.record for src, _ in loaded]
        images = torch.stack([src.rgba[..., :3].permute(0, 3, 1, 2) for src, _ in loaded])
        batch["conditioning"] = self.source_conditioning_inputs(
            self.train_dataparser_outputs.cameras, records, [src.views for src, _ in loaded], images
        )
        return bundle, batch

    def _sample_pixels(self, views: ViewBatch, n: int, use_bbox: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Random target pixels (optionally inside each view's foreground box); returns ray indices too."""
        H, W = self.image_hw
        pix_view = torch.randint(0, len(views.views), (n,))
        if use_bbox:
            boxes = torch.tensor([foreground_bbox(a.numpy()) for a in views.rgba[..., 3]], dtype=torch.float32)
            b = boxes[pix_view]
            xs = (torch.rand(n) * (b[:, 2] + 1 - b[:, 0]) + b[:, 0]).long()
            ys = (torch.rand(n) * (b[:, 3] + 1 - b[:, 1]) + b[:, 1]).long()
        else:
            xs = torch.randint(0, W, (n,))
            ys = torch.randint(0, H, (n,))
        cams = torch.tensor([views.record.camera_index(v) for v in views.views])[pix_view]
        return torch.stack((cams, ys, xs), dim=-1), pix_view, ys, xs

    # ------------------------------------------------------------------------------------- resume
    def sampler_state(self) -> dict[str, Tensor | int]:
        """Where the object/view sampler and the eval counter stand, as tensors and ints (checkpoint-safe).

        The plan prefetched for the next step is drawn but not yet trained on: the state is taken before it, so a
        run resumed from a checkpoint draws the plan an uninterrupted run would have used.
        """
        version, internal, gauss = self._rng_before_pending
        assert gauss is None, "the sampler never draws Gaussian numbers"
        return {
            "plan_rng": torch.tensor(internal, dtype=torch.int64),
            "plan_rng_version": version,
            "train_count": self.train_count,
            "eval_count": self.eval_count,
        }

    def load_sampler_state(self, state: dict[str, Tensor | int]) -> None:
        """Continue sampling from :meth:`sampler_state` (drops a plan prefetched from the fresh state).

        Under DDP only rank 0's state is in the checkpoint (nerfstudio saves on rank 0): every rank then reseeds from
        the configured seed, its rank and the number of steps done, so the ranks keep drawing different streams.
        """
        self.train_count = int(state["train_count"])
        self.eval_count = int(state["eval_count"])
        if self.world_size > 1:
            self._rng.seed(self.config.seed + self.local_rank + 1_000_003 * self.train_count)
        else:
            internal = tuple(int(x) for x in state["plan_rng"].tolist())  # type: ignore[union-attr]
            self._rng.setstate((int(state["plan_rng_version"]), internal, None))
        self._rng_before_pending = self._rng.getstate()
        self._pending = None

    # ------------------------------------------------------------------------------------- evaluation
    def eval_example(self, triple_index: int) -> tuple[Cameras, dict]:
        """Target camera and batch of a fixed eval triple: GT ``image`` ``(H, W, 3)``, source ``conditioning``
        inputs, the ``triple``, and, when there is a teacher, ``teacher`` ``(H, W, D)``: its feature at every pixel of
        the target view, sampled as the training rays' targets are (:func:`sample_teacher`)."""
        obj, src, trg = self.eval_triples[triple_index % len(self.eval_triples)]
        rec = self.eval_objects[obj]
        source = self.load_views(rec, [src], with_teacher=False)
        target = self.load_views(rec, [trg])
        cameras = self.eval_dataparser_outputs.cameras
        batch = {
            "image": target.rgba[0, ..., :3].to(self.device),
            "conditioning": self.source_conditioning_inputs(
                cameras, [rec], [[src]], source.rgba[..., :3].permute(0, 3, 1, 2)[None]
            ),
            "triple": (rec.obj_id, src, trg),
        }
        self.compute_online_teacher(target)
        if target.teacher is not None:
            H, W = self.image_hw
            ys, xs = (g.reshape(-1) for g in torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij"))
            pixels = sample_teacher(target.teacher, torch.zeros_like(xs), xs, ys, self.image_hw)
            batch["teacher"] = pixels.view(H, W, -1).to(self.device)
        return cameras[rec.camera_index(trg) : rec.camera_index(trg) + 1].to(self.device), batch

    def next_eval_image(self, step: int) -> tuple[Cameras, dict]:
        self.eval_count += 1
        return self.eval_example(self.eval_count - 1)

    def next_eval(self, step: int) -> tuple[RayBundle, dict]:
        self.eval_count += 1
        obj, src, trg = self.eval_triples[(self.eval_count - 1) % len(self.eval_triples)]
        rec = self.eval_objects[obj]
        views = self.load_views(rec, [src, trg], with_teacher=False)
        target = ViewBatch(rec, [trg], views.rgba[1:], None)
        n = self.config.rays_per_object * self.config.objects_per_batch
        idx, pix_view, ys, xs = self._sample_pixels(target, n, use_bbox=False)
        bundle = self.eval_ray_generator(idx.to(self.device))
        bundle.metadata["object_slot"] = torch.zeros(n, 1, dtype=torch.long, device=self.device)
        batch = {
            "image": target.rgba[pix_view, ys, xs, :3].to(self.device),
            "conditioning": self.source_conditioning_inputs(
                self.eval_dataparser_outputs.cameras, [rec], [[src]], views.rgba[:1, ..., :3].permute(0, 3, 1, 2)[None]
            ),
        }
        return bundle, batch

    def get_train_rays_per_batch(self) -> int:
        return self.config.objects_per_batch * self.config.rays_per_object

    def get_eval_rays_per_batch(self) -> int:
        return self.config.objects_per_batch * self.config.rays_per_object

    def get_datapath(self) -> Path:
        return Path(self.config.dataparser.data)

    def get_param_groups(self) -> dict:
        return {}


def sample_teacher(
    feats: Float[Tensor, "V D h w"], view: Tensor, xs: Tensor, ys: Tensor, image_hw: tuple[int, int]
) -> Float[Tensor, "N D"]:
    """Teacher feature at each ray's pixel, exactly as the authors sample it.

    Their grid is ``pixel / size * 2 - 1`` (integer pixel coordinates, ``align_corners=False``).
    """
    H, W = image_hw
    grid = torch.stack((xs.float() / W, ys.float() / H), dim=-1) * 2.0 - 1.0  # (N, 2) as (x, y)
    out = F.grid_sample(feats[view], grid[:, None, None, :], align_corners=False)  # (N, D, 1, 1)
    return out[:, :, 0, 0]
