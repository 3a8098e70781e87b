"""Trivial predictors of held-out novel views: the PSNR a model must beat before its PSNR means anything.

On object-centric data most pixels are background, so rendering nothing already scores ~17 dB at 32 px; a model's
``ns-eval`` PSNR is read against these, computed on the same eval triples.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def psnr(pred: Float[Tensor, "*shape"], gt: Float[Tensor, "*shape"]) -> float:
    """PSNR in dB for images in [0, 1] (what ``ns-eval`` reports per image)."""
    return float(-10 * torch.log10(((pred - gt) ** 2).mean()))


def trivial_psnrs(datamanager) -> dict[str, float]:
    """Mean PSNR over the datamanager's eval triples of ``background`` (predict the background everywhere) and
    ``mean colour`` (predict each target image's own mean colour: it knows the answer's average)."""
    background, mean_colour = [], []
    for i in range(len(datamanager.eval_triples)):
        gt = datamanager.eval_example(i)[1]["image"]
        bg = torch.ones_like(gt) if datamanager.white_background else torch.zeros_like(gt)
        background.append(psnr(bg, gt))
        mean_colour.append(psnr(gt.mean((0, 1), keepdim=True).expand_as(gt), gt))
    n = len(background)
    return {"background": sum(background) / n, "mean colour": sum(mean_colour) / n}
