"""Feature vectors, wherever they are compared or shown: L2 normalisation and a fixed-basis PCA colouring.

Shared by the model (its eval images put the rendered feature next to the teacher's map), the transfer
benchmarks (cosine matching) and the viewer (the ``feature_pca`` output): they must agree, and the model must
not import the viewer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

NORM_EPS = 1e-6
"""Norms below this are clamped before dividing (the authors' ``torch.maximum(norm, 1e-6)``)."""


def l2_normalize(x: Float[Tensor, "*batch C"], eps: float = NORM_EPS) -> Float[Tensor, "*batch C"]:
    """Divide each feature vector by ``max(||x||, eps)``; zero vectors stay zero."""
    return x / torch.clamp(x.norm(dim=-1, keepdim=True), min=eps)


@dataclass
class PCABasis:
    """Three principal directions of L2-normalised features plus fixed per-channel min/max.

    Fitted once (per source object, or on the viewer's "Refresh PCA"; on the teacher's map for the eval images),
    then applied to every frame: the same feature always gets the same colour, so the picture does not flicker while
    the camera moves, and two maps coloured with one basis can be compared.
    Features are L2-normalised first (the cosine space that labels and similarity use), which also
    makes the colour of a pixel independent of how much of its ray hit the object.
    """

    mean: Float[Tensor, " C"]
    components: Float[Tensor, "C 3"]
    low: Float[Tensor, " 3"]
    high: Float[Tensor, " 3"]

    @classmethod
    def fit(cls, features: Float[Tensor, "N C"], quantile: float = 0.01) -> PCABasis:
        """Fit on ``N`` feature vectors (e.g. the foreground pixels of one render).

        Args:
            features: the vectors to fit on (at least one).
            quantile: the colour range of each channel spans this quantile to ``1 - quantile`` of the
                fitted projections (robust to a few outliers); values beyond it saturate.
        """
        if features.ndim != 2 or features.shape[0] == 0:
            raise ValueError(f"need (N, C) features with N >= 1, got {tuple(features.shape)}")
        x = l2_normalize(features.detach().float())
        mean = x.mean(0)
        centered = x - mean
        # Right singular vectors = principal directions; C is at most a few hundred, so a full SVD is cheap.
        _, _, vh = torch.linalg.svd(centered, full_matrices=False)
        comps = vh[:3].T
        if comps.shape[1] < 3:  # fewer than 3 channels or samples: pad with null directions
            comps = torch.cat((comps, comps.new_zeros(comps.shape[0], 3 - comps.shape[1])), dim=1)
        # SVD signs are arbitrary: make each direction's largest loading positive so a refit on the
        # same data gives the same colours.
        signs = torch.sign(comps.gather(0, comps.abs().argmax(0, keepdim=True)))
        comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
        proj = centered @ comps
        low = torch.quantile(proj, quantile, dim=0)
        high = torch.quantile(proj, 1 - quantile, dim=0)
        return cls(mean, comps, low, high)

    def apply(self, features: Float[Tensor, "*batch C"]) -> Float[Tensor, "*batch 3"]:
        """Colours in ``[0, 1]`` (clamped) of features of any batch shape."""
        x = l2_normalize(features.float())
        proj = (x - self.mean.to(x.device)) @ self.components.to(x.device)
        span = (self.high - self.low).clamp_min(1e-6).to(x.device)
        return ((proj - self.low.to(x.device)) / span).clamp(0.0, 1.0)
