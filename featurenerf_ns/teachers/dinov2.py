"""DINOv2 teacher: a facet of one ViT block, heads concatenated, like the DINO teacher, through ``transformers``.

Defaults: DINOv2 ViT-S/14 (``facebook/dinov2-small``), the *key* facet of block 9 (0-based, as the DINO teacher),
views composited on black (what the NeRF's encoder sees), ImageNet normalisation, resized to 448 px (bilinear), so
a 32x32 map of 384 channels (heads concatenated head-major: channel ``head * head_dim + i``, the order of the key
projection's output) like the DINO teacher's. Background cells are zeroed with the alpha mask resized (nearest) to
the map. The positional embeddings are resampled for the input grid by the model's own
``interpolate_pos_encoding``; the network runs only up to the chosen block.

Larger DINOv2 models (``facebook/dinov2-base``/``-large``/``-giant``: 768/1024/1536 channels) work the same way;
the feature head of ``featurenerf-dinov2`` takes its size from the cached features.

Weights: a local folder of a ``transformers`` ``Dinov2Model`` (``save_pretrained``: ``config.json`` +
``model.safetensors``), or a hub name read from the local Hugging Face cache. Nothing is downloaded unless
``allow_download`` asks for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from featurenerf_ns.layout import DINOV2_TEACHER_FOLDER
from featurenerf_ns.teachers.base import (
    TeacherConfig,
    TeacherUnavailableError,
    ViTTeacher,
    file_sha256,
    hugging_face_hub,
    imagenet_input,
    run_until,
)
from featurenerf_ns.utils.io import DataError

if TYPE_CHECKING:
    from transformers import Dinov2Model

Facet = Literal["key", "query", "value", "token"]
# Submodule of a Dinov2Layer holding each projection: transformers >= 5 names, then the 4.x names.
_FACET_MODULES = {
    "query": ("attention.q_proj", "attention.attention.query"),
    "key": ("attention.k_proj", "attention.attention.key"),
    "value": ("attention.v_proj", "attention.attention.value"),
}


@dataclass
class Dinov2TeacherConfig(TeacherConfig):
    """DINOv2 ViT features (defaults: ViT-S/14, key facet of block 9, 384 x 32 x 32)."""

    _target: type = field(default_factory=lambda: Dinov2Teacher)
    folder: str = DINOV2_TEACHER_FOLDER
    """Default cache folder."""
    background: Literal["black", "white", "as-stored"] = "black"
    """How RGBA views are turned into RGB: 'black' (the default) composites on black, as the NeRF's encoder sees
    the views; 'white', or 'as-stored' (the colour stored under transparent pixels, alpha ignored)."""
    model_name: str = "facebook/dinov2-small"
    """Hugging Face hub name of the model (facebook/dinov2-small/-base/-large/-giant), used when ``weights`` is None:
    read from the local Hugging Face cache ($HF_HOME/hub)."""
    weights: Path | None = None
    """Local folder of a transformers Dinov2Model (made by ``save_pretrained``: config.json + model.safetensors).
    None = ``model_name`` from the local Hugging Face cache."""
    allow_download: bool = False
    """With no ``weights`` and ``model_name`` not in the local Hugging Face cache, download it from the hub. Off by
    default: without it nothing reaches for the network, and missing weights stop the run with one line naming
    what to get."""
    layer: int = 9
    """Block (0-based) whose facet is returned."""
    facet: Facet = "key"
    """'key'/'query'/'value': that projection of the block's attention (heads concatenated);
    'token': the block's output tokens."""
    input_size: int = 448
    """Side (px) the views are resized to (bilinear) before the ViT; map side = input_size / patch size
    (448 / 14 = 32)."""

    def fingerprint(self, category: str | None = None) -> dict[str, Any]:
        if self.weights is not None:
            weights = f"sha256:{_folder_sha256(self.weights)}" if Path(self.weights).is_dir() else str(self.weights)
        else:
            weights = f"hub:{self.model_name}"
        return {
            **super().fingerprint(category),
            "teacher": "dinov2",
            "weights": weights,
            "layer": self.layer,
            "facet": self.facet,
            "input_size": self.input_size,
            "resize": "bilinear",
            "normalize": "imagenet",
        }


class Dinov2Teacher(ViTTeacher):
    """A transformers ``Dinov2Model`` run up to ``config.layer``; returns that block's facet as ``(B, D, h, w)``."""

    config: Dinov2TeacherConfig

    def __init__(self, config: Dinov2TeacherConfig, category: str | None = None, device: str | torch.device = "cpu"):
        super().__init__(config, category)
        self.vit = load_dinov2(config).eval().requires_grad_(False)
        self.check_geometry(len(self.vit.encoder.layer))
        self.to(device)

    @property
    def patch_size(self) -> int:
        return int(self.vit.config.patch_size)

    @property
    def dim(self) -> int:
        return int(self.vit.config.hidden_size)

    def facet_module(self) -> nn.Module:
        """The module whose output is the facet: a projection of the chosen block's attention, or the block."""
        block = self.vit.encoder.layer[self.config.layer]
        if self.config.facet == "token":
            return block
        for name in _FACET_MODULES[self.config.facet]:
            try:
                return block.get_submodule(name)
            except AttributeError:
                continue
        raise RuntimeError(f"no {self.config.facet} projection found in {type(block).__name__}")

    def features(self, rgb: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B D h w"]:
        x = imagenet_input(rgb, self.config.input_size)
        (out,) = run_until(lambda: self.vit(pixel_values=x), [self.facet_module()])
        side = self.map_size
        # Token 0 is the class token; the patch tokens follow in row-major order.
        return out[:, 1:].transpose(1, 2).reshape(out.shape[0], -1, side, side)


def load_dinov2(config: Dinov2TeacherConfig) -> Dinov2Model:
    """The ``Dinov2Model`` of ``config.weights`` (a local folder) or of ``config.model_name`` (Hugging Face cache).

    Raises:
        TeacherUnavailableError: no folder given and the hub name is not in the local cache (and no download was
            asked for, or it failed): one line naming what to get and the options that take it.
        DataError: the folder is missing, is not a DINOv2 model or its weights do not fit.
    """
    from huggingface_hub.constants import HF_HUB_CACHE
    from transformers import Dinov2Model

    if config.weights is not None:
        folder = Path(config.weights).expanduser()
        if not (folder / "config.json").is_file():
            raise DataError(
                folder,
                "not a transformers model folder (no config.json; make one with Dinov2Model.save_pretrained) "
                "(--teacher.weights)",
            )
        try:
            with hugging_face_hub(allow_download=False):
                model, info = Dinov2Model.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise DataError(folder, f"cannot load a DINOv2 model ({type(e).__name__}: {str(e)[:160]})") from None
        _check_loaded(folder, model, info)
        return model.float()
    name = config.model_name
    try:
        with hugging_face_hub(config.allow_download):
            model, info = Dinov2Model.from_pretrained(
                name, local_files_only=not config.allow_download, output_loading_info=True
            )
    except Exception as e:  # hub errors come as OSError, HTTP, connection or value errors
        where = (
            "could not be downloaded from the Hugging Face hub"
            if config.allow_download
            else f"not found in the local Hugging Face cache ({HF_HUB_CACHE})"
        )
        raise TeacherUnavailableError(
            f"DINOv2 weights {name!r} {where} ({type(e).__name__}): on a machine with network, save them with "
            f"transformers' Dinov2Model.from_pretrained({name!r}).save_pretrained(DIR) and pass the folder with "
            "--teacher.weights DIR (Dinov2TeacherConfig.weights)"
            + ("" if config.allow_download else ", or let the teacher download them with --teacher.allow-download")
        ) from None
    _check_loaded(Path(name), model, info)
    return model.float()


def _check_loaded(source: Path, model: Dinov2Model, info: dict[str, Any]) -> None:
    """transformers initialises the parameters a checkpoint lacks at random with a warning: refuse that instead."""
    if model.config.model_type != "dinov2":
        raise DataError(source, f"a {model.config.model_type!r} model, not DINOv2 (--teacher.weights)")
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        more = " ..." if len(missing) > 3 else ""
        raise DataError(source, f"weights do not fit the DINOv2 model (missing: {', '.join(missing[:3])}{more})")


def _folder_sha256(folder: Path) -> str:
    """Hex SHA-256 over the names and contents of a model folder's files (identifies it in the fingerprint)."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(folder).as_posix()}:{file_sha256(path)}".encode())
    return h.hexdigest()
