"""Teacher features computed on the fly during training (no cache on disk).

The datamanager holds one :class:`OnlineTeacher` and calls it on the views it loads; the values
equal what :mod:`featurenerf_ns.teachers.cache` stores (up to float16 rounding), because both go
through the same :meth:`Teacher.forward`.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from featurenerf_ns.teachers.base import Teacher, TeacherConfig, resolve_device


class OnlineTeacher:
    """A frozen teacher for a training loop: RGBA views in, float32 feature maps out, no gradients."""

    def __init__(self, config: TeacherConfig, category: str | None = None, device: str | torch.device | None = None):
        """Build the teacher (loads its weights once).

        Args:
            config: a :class:`~featurenerf_ns.teachers.dino.DinoTeacherConfig` or
                :class:`~featurenerf_ns.teachers.diffusion.DiffusionTeacherConfig`.
            category: class name (the diffusion teacher's prompt), e.g. ``"chair"``.
            device: where the teacher runs; default CUDA when available, else CPU.
        """
        self.teacher: Teacher = config.setup(
            category=category, device=resolve_device(None if device is None else str(device))
        )

    @property
    def dim(self) -> int:
        return self.teacher.dim

    def fingerprint(self) -> dict[str, Any]:
        return self.teacher.fingerprint()

    @torch.no_grad()
    def __call__(
        self, rgba: Float[Tensor, "B H W 4"] | Float[Tensor, "B 4 H W"], channels_last: bool = True
    ) -> Float[Tensor, "B D h w"]:
        """Teacher features of a batch of views, returned on the input's device.

        Args:
            rgba: views in [0, 1], RGBA (or RGB = fully opaque), ``(B, H, W, 4)`` as nerfstudio stores
                images (``channels_last=True``) or ``(B, 4, H, W)``.
            channels_last: layout of ``rgba``.
        """
        x = rgba.permute(0, 3, 1, 2) if channels_last else rgba
        return self.teacher(x).to(rgba.device)
