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
file is given, from the torch hub cache (``<torch hub dir>/checkpoints/<file of timm's weights URL>``, where
timm and ``torch.hub`` keep downloads). Nothing is downloaded unless ``allow_download`` asks for it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from featurenerf_ns.teachers.base import (
    TeacherConfig,
    TeacherUnavailableError,
    ViTTeacher,
    file_sha256,
    imagenet_input,
)
from featurenerf_ns.utils.io import DataError, UserError

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

# timm is imported where a ViT is built, not here: importing it takes seconds (it pulls in wandb), and every
# nerfstudio command loads this module through the method configs.

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
    or a timm state dict. None = the file of timm's weights URL for ``model_name`` in the torch hub cache
    (``$TORCH_HOME/hub/checkpoints/``)."""
    allow_download: bool = False
    """With no ``weights`` and nothing in the torch hub cache, download timm's weights for ``model_name`` into
    that cache. Off by default: without it nothing reaches for the network, and missing weights stop the run
    with one line naming the file to get."""
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


class DinoTeacher(ViTTeacher):
    """A timm ViT run up to ``config.layer``; returns that block's facet as ``(B, D, h, w)``."""

    config: DinoTeacherConfig

    def __init__(self, config: DinoTeacherConfig, category: str | None = None, device: str | torch.device = "cpu"):
        super().__init__(config, category)
        self.vit = load_vit(config).eval().requires_grad_(False)
        self.check_geometry(len(self.vit.blocks))
        self.to(device)

    @property
    def patch_size(self) -> int:
        return int(self.vit.patch_embed.proj.kernel_size[0])

    @property
    def dim(self) -> int:
        return int(self.vit.embed_dim)

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
        t, h, w = self.tokens(imagenet_input(rgb, self.config.input_size))
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
        TeacherUnavailableError: no weights file given, none in the torch hub cache, and no download asked for
            (or the download failed): one line naming the file to get and the options that take it.
        DataError: the weights file is missing or does not fit the architecture.
    """
    import timm

    if config.model_name not in timm.list_models():
        raise UserError(f"--teacher.model-name: unknown timm model {config.model_name!r} (timm {timm.__version__})")
    model = _build(config)
    if not config.random_init:
        path = config.weights if config.weights is not None else _hub_weights(config)
        model.load_state_dict(_read_state_dict(path, model))
    return model


def _hub_weights(config: DinoTeacherConfig) -> Path:
    """The torch hub cache's file of timm's weights for ``config.model_name``, downloaded first if asked."""
    import timm

    url = (timm.models.get_pretrained_cfg(config.model_name) or {}).get("url", "") or ""
    if not url:
        raise TeacherUnavailableError(
            f"timm has no pretrained weights for {config.model_name}: pass a weights file with --teacher.weights PATH "
            "(DinoTeacherConfig.weights)"
        )
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if path.is_file():
        return path
    get = f"get {path.name} from the DINO release ({url}) and pass it with --teacher.weights PATH"
    if not config.allow_download:
        raise TeacherUnavailableError(
            f"DINO weights for {config.model_name} not found: {get}, or put it in the torch hub cache "
            f"({path.parent}), or let the teacher download it with --teacher.allow-download (DinoTeacherConfig)"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except OSError as e:  # URLError and HTTPError are OSErrors
        raise TeacherUnavailableError(
            f"DINO weights for {config.model_name} could not be downloaded ({type(e).__name__}): {get} "
            "(DinoTeacherConfig.weights)"
        ) from None
    return path


def _build(config: DinoTeacherConfig) -> VisionTransformer:
    import timm
    from timm.models.vision_transformer import VisionTransformer

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
