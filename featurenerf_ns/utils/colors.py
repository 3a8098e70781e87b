"""Colour maps of feature fields (viewer panel, exports): part-label palette, cosine similarity (the
fixed-basis feature PCA is :class:`featurenerf_ns.utils.features.PCABasis`).

Everything here is a pure function of tensors, so the panel's pictures can be tested without a
viewer. The viewer shows 3-channel outputs as RGB without clipping (values outside ``[0, 1]`` wrap
around) and gives >3-channel outputs a per-frame PCA that flickers as the camera moves, so every map
here is a 3-channel image in ``[0, 1]`` whose colours depend only on the features, never on the frame.
"""

from __future__ import annotations

import base64
import colorsys
import io
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from PIL import Image
from torch import Tensor

from featurenerf_ns.utils.features import l2_normalize

# ----------------------------------------------------------------------------------------- labels

_PALETTE = (
    (0, 0, 0),  # 0 = background
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
)


def label_palette(num_labels: int) -> Float[Tensor, "L 3"]:
    """Fixed RGB colours in ``[0, 1]`` for labels ``0..num_labels``; label 0 (background) is black.

    The first 12 part colours are a hand-picked set of distinct hues; further ones are spread around
    the hue circle by the golden ratio.
    """
    colors = [tuple(c / 255.0 for c in rgb) for rgb in _PALETTE[: num_labels + 1]]
    for i in range(len(colors), num_labels + 1):
        colors.append(colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95))
    return torch.tensor(colors, dtype=torch.float32)


def colorize_labels(labels: Int[Tensor, "*batch"], palette: Float[Tensor, "L 3"]) -> Float[Tensor, "*batch 3"]:
    """Palette colour of each label (labels beyond the palette wrap around, background stays black)."""
    labels = labels.long()
    idx = torch.where(labels > 0, (labels - 1) % max(palette.shape[0] - 1, 1) + 1, torch.zeros_like(labels))
    return palette.to(labels.device)[idx]


def png_data_url(image: np.ndarray, scale: int = 1) -> str:
    """``data:image/png;base64,...`` of an ``(H, W, 3|4)`` uint8 image, enlarged ``scale`` times (nearest)."""
    pil = Image.fromarray(image)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def legend_image(names: Sequence[str], palette: Float[Tensor, "L 3"], row: int = 14, width: int = 150) -> np.ndarray:
    """``(H, W, 3)`` uint8 legend: one row per label, a colour swatch then ``"<label> <name>"``."""
    from PIL import ImageDraw, ImageFont

    img = Image.new("RGB", (width, row * len(names) + 2), (40, 40, 40))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, name in enumerate(names):
        rgb = tuple(int(v) for v in (palette[i].clamp(0, 1) * 255).round().tolist())
        y = 1 + i * row
        draw.rectangle((2, y + 1, 2 * row, y + row - 2), fill=rgb, outline=(200, 200, 200))
        draw.text((2 * row + 6, y + 1), f"{i} {name}", fill=(235, 235, 235), font=font)
    return np.asarray(img)


def legend_markdown(part_names: Sequence[str], palette: Float[Tensor, "L 3"], present: set[int] | None = None) -> str:
    """Markdown legend of the part labels (``i + 1`` is ``part_names[i]``, 0 is background).

    One picture with a colour swatch per label (the panel's markdown stretches images to its width,
    so separate swatches would each fill a row), then the same labels as text; labels absent from
    the reference (``present`` given and not containing them) are marked.
    """
    names = ["background", *part_names]
    picture = png_data_url(legend_image(names, palette))
    text = [
        f"**{i}** {name}" + (" (not in reference)" if present is not None and i > 0 and i not in present else "")
        for i, name in enumerate(names)
    ]
    return f"![legend]({picture})  \n" + " · ".join(text)


# ----------------------------------------------------------------------------------------- similarity


def _turbo_table() -> Tensor:
    from matplotlib import colormaps

    return torch.tensor(np.asarray(colormaps["turbo"](np.linspace(0.0, 1.0, 256)))[:, :3], dtype=torch.float32)


_TURBO: Tensor | None = None


def turbo(values: Float[Tensor, "*batch"]) -> Float[Tensor, "*batch 3"]:
    """matplotlib's turbo colour map of values in ``[0, 1]`` (clamped), linearly interpolated on 256 entries."""
    global _TURBO
    if _TURBO is None:
        _TURBO = _turbo_table()
    table = _TURBO.to(values.device)
    x = values.float().clamp(0.0, 1.0) * (table.shape[0] - 1)
    lo = x.floor().long().clamp(max=table.shape[0] - 2)
    frac = (x - lo.float()).unsqueeze(-1)
    return table[lo] * (1 - frac) + table[lo + 1] * frac


def cosine_similarity_map(features: Float[Tensor, "*batch C"], query: Float[Tensor, " C"]) -> Float[Tensor, "*batch"]:
    """Cosine similarity of every feature to ``query`` (zero vectors give 0)."""
    return (l2_normalize(features.float()) * l2_normalize(query.float().to(features.device))).sum(-1)


def similarity_colors(similarity: Float[Tensor, "*batch"], floor: float = 0.0) -> Float[Tensor, "*batch 3"]:
    """Turbo colours of cosine similarities with a fixed mapping: ``floor`` (and below) -> blue end, 1 -> red end."""
    floor = min(float(floor), 0.999)
    return turbo((similarity - floor) / (1.0 - floor))
