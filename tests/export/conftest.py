"""The session's trained tiny FeatureNeRF (tests/conftest.py) and "phone-style" photos of one of its test objects."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CANVAS_HW = (90, 140)
"""A non-square photo, larger than the model's 32 px images."""
PASTE_AT = (15, 70)
"""Top-left corner (row, column) of the object in the photo: off-centre."""
PASTE_SCALE = 2
"""The dataset view is enlarged this many times."""


@dataclass(frozen=True)
class ExportData:
    """The trained run, two annotated test objects and photos made from a view of the first."""

    config: Path
    data: Path
    source: str
    """Test object the exports are made of."""
    reference: str
    """Another annotated test object whose parts are transferred."""
    rgba_photo: Path
    rgb_photo: Path
    mask: Path


def _split(data: Path) -> dict:
    return json.loads(next((data / "splits").glob("*.json")).read_text())


@pytest.fixture(scope="session")
def export_data(trained_tiny, tmp_path_factory) -> ExportData:
    """Photos of view 1 of the first test object: its 32 px render enlarged 2x and pasted off-centre into a
    90 x 140 canvas, as RGBA (alpha = mask) and as RGB on a grey background with a separate mask file."""
    data = trained_tiny.root / "data"
    source, reference = _split(data)["test"][:2]
    view = sorted(next((data / "img").iterdir()).joinpath(source).glob("*.png"))[1]
    rgba = np.asarray(Image.open(view).convert("RGBA"))
    big = np.asarray(Image.fromarray(rgba).resize((rgba.shape[1] * PASTE_SCALE,) * 2, Image.Resampling.NEAREST))
    canvas = np.zeros((*CANVAS_HW, 4), dtype=np.uint8)
    top, left = PASTE_AT
    canvas[top : top + big.shape[0], left : left + big.shape[1]] = big
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(canvas).save(folder / "phone_rgba.png")
    alpha = canvas[..., 3:].astype(np.float32) / 255
    rgb = (canvas[..., :3] * alpha + 128 * (1 - alpha)).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "phone_rgb.jpg")
    Image.fromarray(canvas[..., 3]).save(folder / "phone_mask.png")
    return ExportData(
        trained_tiny.config, data, source, reference, folder / "phone_rgba.png", folder / "phone_rgb.jpg",
        folder / "phone_mask.png",
    )  # fmt: skip
