"""Pixel-aligned image encoder: multi-scale ResNet features, as in pixelNeRF / FeatureNeRF.

The parameter names (``model.conv1``, ``model.layer1``...) are torchvision's, under the same
``model`` attribute as the authors' ``SpatialEncoder``, so their checkpoints map onto ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision
from jaxtyping import Float
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

from featurenerf_ns.utils.io import UserError

LATENT_SIZES = {"resnet18": (64, 64, 128, 256, 512), "resnet34": (64, 64, 128, 256, 512)}
"""Channels of conv1, layer1, layer2, layer3, layer4 for the supported backbones."""


@dataclass
class SpatialEncoderConfig(InstantiateConfig):
    """Configuration of the pixel-aligned ResNet encoder."""

    _target: type = field(default_factory=lambda: SpatialEncoder)
    backbone: Literal["resnet18", "resnet34"] = "resnet34"
    """torchvision backbone (the paper uses resnet34)."""
    num_layers: int = 4
    """How many feature levels to concatenate: conv1, layer1, layer2, layer3 (4 = 512 channels, the paper)."""
    weights: str | None = "imagenet"
    """Initial encoder weights (irrelevant when a checkpoint is loaded; nothing is downloaded): 'imagenet' =
    torchvision's ImageNet file (resnet34-b627a593.pth, resnet18-f37072fd.pth) from the torch hub cache, required:
    training stops with one line naming the file when it is missing; a path = that state-dict file, required;
    'imagenet-if-available' = ImageNet when the file is in the hub cache, else random initialisation (the small
    presets); 'random' (or None) = random initialisation, i.e. train the encoder from scratch."""
    use_first_pool: bool = True
    """Apply the ResNet max-pool before layer1 (pixelNeRF default)."""

    @property
    def latent_size(self) -> int:
        return sum(LATENT_SIZES[self.backbone][: self.num_layers])

    def weights_file(self) -> Path | None:
        """The state-dict file the weights setting names (None: random initialisation)."""
        if self.weights in (None, "random"):
            return None
        if self.weights in ("imagenet", "imagenet-if-available"):
            enum = getattr(torchvision.models, f"ResNet{self.backbone[6:]}_Weights").IMAGENET1K_V1
            return Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        return Path(self.weights)

    def missing_weights(self) -> str | None:
        """One line saying which required weights file is missing and the option that takes it (None if fine)."""
        path = self.weights_file()
        if path is None or path.is_file() or self.weights == "imagenet-if-available":
            return None
        return (
            f"encoder weights not found: {path} (nothing is downloaded). Get torchvision's ImageNet {self.backbone} "
            f"weights ({path.name}) and pass --pipeline.model.encoder.weights /path/to/{path.name}, or train the "
            "encoder from scratch with --pipeline.model.encoder.weights random"
        )


class SpatialEncoder(nn.Module):
    """ResNet feature pyramid upsampled to the conv1 resolution (half the image) and concatenated."""

    def __init__(self, config: SpatialEncoderConfig):
        super().__init__()
        if not 1 <= config.num_layers <= 5:
            raise UserError(f"--pipeline.model.encoder.num-layers {config.num_layers}: must be in 1..5")
        self.config = config
        self.model = getattr(torchvision.models, config.backbone)(weights=None)
        # Stages past num_layers and the classifier are never used; dropping them keeps checkpoints
        # small and every parameter trained (the authors keep them, so their import ignores those keys).
        self.model.fc = nn.Identity()
        for name in ("layer1", "layer2", "layer3", "layer4")[max(config.num_layers - 1, 0) :]:
            setattr(self.model, name, nn.Identity())
        self.latent_size = config.latent_size
        path = config.weights_file()
        if path is not None and path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=True)
            own = self.model.state_dict()
            self.model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)

    @staticmethod
    def network_input(images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 3 H W"]:
        """What the ResNet sees for RGB in [0, 1]: [-1, 1], as the authors' ``Normalize((0.5,) * 3, (0.5,) * 3)``
        (bit for bit: ``(x - 0.5) / 0.5`` and ``2x - 1`` round identically)."""
        return images * 2.0 - 1.0

    def forward(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B C h w"]:
        """Encode images in [0, 1] into a latent map at half resolution.

        Args:
            images: RGB images in [0, 1] (the network sees :meth:`network_input` of them).
        """
        x = self.network_input(images)
        m = self.model
        x = m.relu(m.bn1(m.conv1(x)))
        latents = [x]
        stages = (m.layer1, m.layer2, m.layer3, m.layer4)[: self.config.num_layers - 1]
        for i, stage in enumerate(stages):
            if i == 0 and self.config.use_first_pool:
                x = m.maxpool(x)
            x = stage(x)
            latents.append(x)
        size = latents[0].shape[-2:]
        latents = [latents[0]] + [F.interpolate(t, size, mode="bilinear", align_corners=True) for t in latents[1:]]
        return torch.cat(latents, dim=1)
