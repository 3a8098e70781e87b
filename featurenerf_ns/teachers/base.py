"""What every 2D teacher shares: the config/module pair, RGBA preprocessing, the weights error.

A teacher maps a batch of RGBA views in [0, 1], ``(B, 4, H, W)``, to feature maps ``(B, D, h, w)``
with background cells zeroed (the authors zero them using the alpha mask resized to the map).
Teachers are built once per category (the diffusion teacher's prompt is the class name) and are
only ever run under ``torch.no_grad``: they are frozen targets, never part of the model.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

FINGERPRINT_VERSION = 1
"""Bumped whenever extraction changes in a way that changes stored values."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TeacherUnavailableError(RuntimeError):
    """Pretrained weights of a teacher cannot be found; the message (one line) names the file to get."""


@dataclass
class TeacherConfig(InstantiateConfig):
    """Settings shared by all teachers; ``setup(category=...)`` builds the teacher."""

    _target: type = field(default_factory=lambda: Teacher)
    folder: str = "teacher_feat"
    """Default cache folder under the data root: ``<root>/<folder>/<synset>/<obj_id>.npy``."""
    background: Literal["black", "white", "as-stored"] = "black"
    """How the RGB of an RGBA view is composited before the network sees it; 'as-stored' ignores alpha
    (what PIL's ``convert("RGB")`` in the authors' scripts does)."""
    batch_size: int = 32
    """Views per forward pass (memory bound, not a setting that changes values)."""
    zero_background: bool = True
    """Zero feature cells whose alpha, resized to the map (nearest), is 0 (as the authors)."""

    def fingerprint(self, category: str | None = None) -> dict[str, Any]:
        """Everything that changes the stored values, as JSON-able scalars (no model is loaded)."""
        return {
            "version": FINGERPRINT_VERSION,
            "background": self.background,
            "zero_background": self.zero_background,
        }


class Teacher(nn.Module):
    """A frozen 2D feature extractor. Subclasses implement :meth:`features` on composited RGB."""

    config: TeacherConfig

    def __init__(self, config: TeacherConfig, category: str | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.config = config
        self.category = category

    @property
    def dim(self) -> int:
        """Channels ``D`` of the returned maps."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def fingerprint(self) -> dict[str, Any]:
        """The config's fingerprint plus what only the loaded model knows (output channels)."""
        return {**self.config.fingerprint(self.category), "dim": self.dim}

    def features(self, rgb: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B D h w"]:
        """Feature maps of composited RGB in [0, 1]; background not yet zeroed."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, rgba: Float[Tensor, "B 4 H W"]) -> Float[Tensor, "B D h w"]:
        """Teacher features of RGBA views in [0, 1] (float32, on the teacher's device).

        Views are processed in chunks of ``config.batch_size``; RGB is composited according to
        ``config.background`` and, with ``config.zero_background``, cells outside the mask are zeroed.
        """
        if rgba.ndim != 4 or rgba.shape[1] not in (3, 4):
            raise ValueError(f"expected RGBA views (B, 4, H, W), got shape {tuple(rgba.shape)}")
        rgba = rgba.to(self.device, torch.float32)
        if rgba.shape[1] == 3:
            rgba = torch.cat([rgba, torch.ones_like(rgba[:, :1])], dim=1)
        outs = []
        for chunk in rgba.split(max(1, self.config.batch_size)):
            rgb = composite(chunk, self.config.background)
            feats = self.features(rgb).float()
            if self.config.zero_background:
                feats = feats * downsample_mask(chunk[:, 3:], feats.shape[-2:]).to(feats.dtype)
            outs.append(feats)
        return torch.cat(outs)


def composite(rgba: Float[Tensor, "B 4 H W"], background: str) -> Float[Tensor, "B 3 H W"]:
    """RGB of RGBA views on a black or white background, or as stored (alpha ignored)."""
    rgb, alpha = rgba[:, :3], rgba[:, 3:]
    if background == "as-stored":
        return rgb
    if background == "black":
        return rgb * alpha
    if background == "white":
        return rgb * alpha + (1.0 - alpha)
    raise ValueError(f"unknown background {background!r}; expected black, white or as-stored")


def downsample_mask(alpha: Float[Tensor, "B 1 H W"], size: tuple[int, int] | torch.Size) -> Float[Tensor, "B 1 h w"]:
    """Foreground (alpha > 0) at the feature map's cells: nearest resize, as the authors' script."""
    return F.interpolate(alpha, size=tuple(size), mode="nearest") > 0


def file_sha256(path: os.PathLike | str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (identifies local weights in the cache fingerprint)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_device(device: str | None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
