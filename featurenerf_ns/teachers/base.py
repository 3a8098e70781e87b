"""What every 2D teacher shares: the config/module pair, RGBA preprocessing, the weights error.

A teacher maps a batch of RGBA views in [0, 1], ``(B, 4, H, W)``, to feature maps ``(B, D, h, w)``
with background cells zeroed (the authors zero them using the alpha mask resized to the map).
Teachers are built once per category (the diffusion teacher's prompt is the class name) and are
only ever run under ``torch.no_grad``: they are frozen targets, never part of the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

from featurenerf_ns.utils.io import UserError

FINGERPRINT_VERSION = 1
"""Bumped whenever extraction changes in a way that changes stored values."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TeacherUnavailableError(UserError):
    """Pretrained weights of a teacher cannot be found; the message (one line) names the file to get and the option
    that takes it."""


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


class ViTTeacher(Teacher):
    """A ViT teacher: a facet of block ``config.layer`` on a grid of ``config.input_size / patch_size`` cells.

    Subclasses set ``self.vit``, give :attr:`patch_size` and call :meth:`check_geometry` once the network is built.
    """

    @property
    def patch_size(self) -> int:
        raise NotImplementedError

    @property
    def map_size(self) -> int:
        return self.config.input_size // self.patch_size  # type: ignore[attr-defined]

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "map_size": self.map_size}

    def check_geometry(self, depth: int) -> None:
        """One-line :class:`UserError` for a block index beyond the network's ``depth`` or an input size that is not
        a whole number of patches."""
        layer, size = self.config.layer, self.config.input_size  # type: ignore[attr-defined]
        if not 0 <= layer < depth:
            raise UserError(f"--teacher.layer {layer} out of range: the network has {depth} blocks (0-based)")
        if size % self.patch_size:
            raise UserError(f"--teacher.input-size {size} is not a multiple of the patch size {self.patch_size}")


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


def imagenet_input(rgb: Float[Tensor, "B 3 H W"], size: int) -> Float[Tensor, "B 3 size size"]:
    """ViT input: ImageNet-normalised, then resized (bilinear) to ``size`` x ``size``.

    Normalised before resizing: the order of the authors' DINO script (the two commute up to rounding).
    """
    mean = torch.tensor(IMAGENET_MEAN, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    x = (rgb - mean) / std
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


class _StopForward(Exception):
    """Raised by a hook once every module asked for has run: the rest of the network is skipped."""


def run_until(forward: Callable[[], object], modules: Sequence[nn.Module]) -> list[Tensor]:
    """Outputs of ``modules`` (the first element of a tuple output) during ``forward()``, which stops as soon as
    all of them have run: a teacher needs intermediate activations, never the network's own output."""
    captured: dict[int, Tensor] = {}

    def hook(index: int):
        def fn(module, inputs, output):
            captured[index] = output[0] if isinstance(output, tuple) else output
            if len(captured) == len(modules):
                raise _StopForward

        return fn

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        forward()
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    if len(captured) != len(modules):
        raise RuntimeError(f"{len(modules) - len(captured)} of the requested modules did not run in the forward pass")
    return [captured[i] for i in range(len(modules))]


@contextlib.contextmanager
def hugging_face_hub(allow_download: bool) -> Iterator[None]:
    """Load transformers/diffusers models quietly; without ``allow_download``, with the Hugging Face hub offline.

    ``local_files_only=True`` alone is not enough: huggingface_hub still contacts the hub while it builds request
    headers (it fetches a registry of "agent harnesses"), so the hub's own offline switch is turned on for the
    duration. Log messages, progress bars and warnings of transformers and huggingface_hub are silenced (the caller
    reports errors in one line; diffusers passes huggingface_hub a deprecated argument that warns on every load).
    """
    import huggingface_hub.constants as hub_constants
    from huggingface_hub.utils import logging as hlogging
    from transformers.utils import logging as tlogging

    offline, bars = hub_constants.HF_HUB_OFFLINE, tlogging.is_progress_bar_enabled()
    levels = tlogging.get_verbosity(), hlogging.get_verbosity()
    hub_constants.HF_HUB_OFFLINE = offline or not allow_download
    tlogging.set_verbosity_error()
    hlogging.set_verbosity_error()
    tlogging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            yield
    finally:
        hub_constants.HF_HUB_OFFLINE = offline
        tlogging.set_verbosity(levels[0])
        hlogging.set_verbosity(levels[1])
        if bars:
            tlogging.enable_progress_bar()


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
