"""DINO teacher: a facet of one ViT block, heads concatenated, as FeatureNeRF's DINO targets.

Defaults reproduce the authors' ``process_data/generate_dino_feat.py`` (``tests/teachers/test_dino_parity.py``
checks against their stored output): DINO ViT-S/8, the *key* facet of block 9 (0-based), the stored
RGB (alpha ignored, as PIL's ``convert("RGB")``) with ImageNet normalisation, resized to 256 px (bilinear), so a
32x32 map of 384 channels (6 heads x 64, head-major: channel ``head * 64 + i``, the order of the
``qkv`` projection's output); background cells zeroed with the alpha mask resized (nearest) to the
map. The positional embeddings, trained at 224 px (28x28 patches), are resampled for the input grid
exactly as DINO's ``interpolate_pos_encoding`` does (bicubic with scale factor ``(n + 0.1) / 28``),
which differs slightly from timm's own checkpoint resampling.

Weights come from a local file (DINO's official state dict, e.g. ``dino_deitsmall8_pretrain.pth``,
a full DINO training checkpoint's ``teacher``/``student`` backbone, or a timm state dict) or, when no
file is given, from timm's pretrained mechanism (torch hub cache, downloads when online).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import timm
import torch
import torch.nn.functional as F
from jaxtyping import Float
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from featurenerf_ns.teachers.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Teacher,
    TeacherConfig,
    TeacherUnavailableError,
    file_sha256,
)
from featurenerf_ns.utils.io import DataError

Facet = Literal["key", "query", "value", "token"]
_QKV_INDEX = {"query": 0, "key": 1, "value": 2}


@dataclass
class DinoTeacherConfig(TeacherConfig):
    """DINO ViT features (defaults: the authors' DINO targets, 384 x 32 x 32)."""

    _target: type = field(default_factory=lambda: DinoTeacher)
    background: Literal["black", "white", "as-stored"] = "as-stored"
    """How RGBA views are turned into RGB: 'as-stored' (the default) keeps the colour stored under transparent
    pixels, as the authors' PIL ``convert("RGB")`` does; 'black'/'white' composite with alpha."""
    folder: str = "dino_feat_256"
    """Default cache folder (the authors' folder name for the same settings)."""
    model_name: str = "vit_small_patch8_224_dino"
    """timm model name: the architecture, and the hub weights used when ``weights`` is None."""
    weights: Path | None = None
    """Local weights file: DINO's release (``dino_deitsmall8_pretrain.pth``), a DINO training checkpoint
    or a timm state dict. None = timm's pretrained weights for ``model_name`` (torch hub cache)."""
    random_init: bool = False
    """Use randomly initialised weights (benchmarks and tests only: the features mean nothing)."""
    arch: dict[str, int] = field(default_factory=dict)
    """Architecture fields replacing ``model_name``'s (embed_dim, depth, num_heads, patch_size, img_size),
    for small models in tests and other DINO variants."""
    layer: int = 9
    """Block (0-based) whose facet is returned."""
    facet: Facet = "key"
    """'key'/'query'/'value': that projection of the block's attention (heads concatenated);
    'token': the block's output tokens."""
    input_size: int = 256
    """Side (px) the views are resized to (bilinear) before the ViT; map side = input_size / patch."""

    def fingerprint(self, category: str | None = None) -> dict[str, Any]:
        if self.random_init:
            weights = "random-init"
        elif self.weights is not None:
            weights = f"sha256:{file_sha256(self.weights)}" if Path(self.weights).is_file() else str(self.weights)
        else:
            weights = f"timm:{self.model_name}"
        return {
            **super().fingerprint(category),
            "teacher": "dino",
            "model_name": self.model_name,
            "arch": dict(sorted(self.arch.items())),
            "weights": weights,
            "layer": self.layer,
            "facet": self.facet,
            "input_size": self.input_size,
            "resize": "bilinear",
            "normalize": "imagenet",
        }


class DinoTeacher(Teacher):
    """A timm ViT run up to ``config.layer``; returns that block's facet as ``(B, D, h, w)``."""

    config: DinoTeacherConfig

    def __init__(self, config: DinoTeacherConfig, category: str | None = None, device: str | torch.device = "cpu"):
        super().__init__(config, category)
        self.vit = load_vit(config).eval().requires_grad_(False)
        depth = len(self.vit.blocks)
        if not 0 <= config.layer < depth:
            raise ValueError(f"layer {config.layer} out of range: {config.model_name} has {depth} blocks (0-based)")
        if config.input_size % self.patch_size:
            raise ValueError(f"input_size {config.input_size} is not a multiple of the patch size {self.patch_size}")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.to(device)

    @property
    def patch_size(self) -> int:
        return int(self.vit.patch_embed.proj.kernel_size[0])

    @property
    def dim(self) -> int:
        return int(self.vit.embed_dim)

    @property
    def map_size(self) -> int:
        return self.config.input_size // self.patch_size

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "map_size": self.map_size}

    def pos_embed(self, h: int, w: int) -> Float[Tensor, "1 N C"]:
        """Positional embeddings for an ``h x w`` patch grid, resampled as DINO does."""
        pos = self.vit.pos_embed
        n = pos.shape[1] - 1
        if n == h * w and h == w:
            return pos
        side = math.sqrt(n)
        grid = pos[:, 1:].reshape(1, int(side), int(side), -1).permute(0, 3, 1, 2)
        # DINO's "+ 0.1" keeps floor(side * scale) from landing one short through rounding.
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / side, (w + 0.1) / side), mode="bicubic")
        if grid.shape[-2:] != (h, w):
            raise RuntimeError(f"positional embedding resampled to {tuple(grid.shape[-2:])}, expected {(h, w)}")
        return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)

    def tokens(self, x: Float[Tensor, "B 3 H W"]) -> tuple[Float[Tensor, "B N C"], int, int]:
        """Patch + class tokens with positional embeddings (any multiple of the patch size)."""
        grid = self.vit.patch_embed.proj(x)
        h, w = grid.shape[-2:]
        t = self.vit.patch_embed.norm(grid.flatten(2).transpose(1, 2))
        t = torch.cat([self.vit.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        return self.vit.pos_drop(t + self.pos_embed(h, w)), h, w

    def features(self, rgb: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B D h w"]:
        size = self.config.input_size
        # Normalised, then resized: the authors' order (the two commute up to rounding).
        x = (rgb - self.mean) / self.std
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        t, h, w = self.tokens(x)
        for blk in self.vit.blocks[: self.config.layer]:
            t = blk(t)
        blk = self.vit.blocks[self.config.layer]
        if self.config.facet == "token":
            out = blk(t)
        else:
            c = t.shape[-1]
            i = _QKV_INDEX[self.config.facet]
            # qkv's output is laid out (3, heads, head_dim): one slice is the facet with heads concatenated.
            out = blk.attn.qkv(blk.norm1(t))[..., i * c : (i + 1) * c]
        return out[:, 1:].transpose(1, 2).reshape(out.shape[0], -1, h, w)


def load_vit(config: DinoTeacherConfig) -> VisionTransformer:
    """Build ``config.model_name`` (with ``config.arch``) and load its weights.

    Raises:
        TeacherUnavailableError: no local file and timm's hub weights cannot be had (one line naming the
            file to get and the option that takes it).
        DataError: the local file is missing or does not fit the architecture.
    """
    if config.model_name not in timm.list_models():
        raise ValueError(f"unknown timm model {config.model_name!r} (timm {timm.__version__})")
    if config.arch or config.random_init or config.weights is not None:
        model = _build(config)
        if config.weights is not None:
            model.load_state_dict(_read_state_dict(config.weights, model))
        return model
    url = (timm.models.get_pretrained_cfg(config.model_name) or {}).get("url", "") or ""
    name = os.path.basename(url) or f"{config.model_name} weights"
    if not url:
        # timm would silently fall back to random weights for a model without a weights URL.
        raise TeacherUnavailableError(
            f"timm has no pretrained weights for {config.model_name}: pass a weights file with --teacher.weights PATH "
            "(DinoTeacherConfig.weights)"
        )
    try:
        # torch.hub prints "Downloading: ..." before failing; the error below says it all in one line.
        with contextlib.redirect_stderr(io.StringIO()):
            return timm.create_model(config.model_name, pretrained=True)
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as e:
        raise TeacherUnavailableError(
            f"DINO weights for {config.model_name} unavailable offline ({type(e).__name__}): get {name} from the "
            f"DINO release ({url or 'github.com/facebookresearch/dino'}) and pass it with --teacher.weights PATH "
            "(DinoTeacherConfig.weights)"
        ) from None


def _build(config: DinoTeacherConfig) -> VisionTransformer:
    if not config.arch:
        return timm.create_model(config.model_name, pretrained=False)
    ref = timm.create_model(config.model_name, pretrained=False)  # ~0.1 s for ViT-S; timm cannot build on meta
    base = dict(
        img_size=ref.patch_embed.img_size[0],
        patch_size=ref.patch_embed.patch_size[0],
        embed_dim=ref.embed_dim,
        depth=len(ref.blocks),
        num_heads=ref.blocks[0].attn.num_heads,
        mlp_ratio=ref.blocks[0].mlp.fc1.out_features / ref.embed_dim,
        qkv_bias=ref.blocks[0].attn.qkv.bias is not None,
        num_classes=ref.num_classes,
    )
    unknown = set(config.arch) - set(base)
    if unknown:
        raise ValueError(f"unknown arch fields {sorted(unknown)}; known: {sorted(base)}")
    return VisionTransformer(**{**base, **config.arch})


def _read_state_dict(path: os.PathLike | str, model: VisionTransformer) -> dict[str, Tensor]:
    """A ViT state dict from DINO's or timm's formats, renamed to ``model``'s keys."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "DINO weights file not found (--teacher.weights)")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or non-tensor pickles
        raise DataError(path, f"not a readable PyTorch state dict ({type(e).__name__}: {str(e)[:120]})") from None
    # DINO training checkpoints nest the backbone under teacher/student; timm/DeiT files under model.
    for key in ("teacher", "model", "state_dict", "student"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict):
        raise DataError(path, "expected a state dict (mapping of parameter names to tensors)")
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "backbone."):
            k = k.removeprefix(prefix)
        out[k] = v
    want = model.state_dict()
    if isinstance(model.head, torch.nn.Identity):
        out = {k: v for k, v in out.items() if not k.startswith("head.")}  # DINO projection head, unused
    w = out.get("patch_embed.proj.weight")
    if w is not None and w.ndim == 2:
        out["patch_embed.proj.weight"] = w.reshape(want["patch_embed.proj.weight"].shape)
    missing = sorted(set(want) - set(out))
    unexpected = sorted(set(out) - set(want))
    mismatched = sorted(k for k in set(want) & set(out) if tuple(want[k].shape) != tuple(out[k].shape))
    if missing or unexpected or mismatched:
        parts = [
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
            if keys
        ]
        raise DataError(path, f"weights do not fit {type(model).__name__} ({'; '.join(parts)})")
    return out
