"""load_view: compositing, masks, area resizing, errors naming the file; foreground_bbox."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from featurenerf_ns.data.images import foreground_bbox, load_view
from featurenerf_ns.utils.io import DataError


def rgba_image(path: Path, h: int = 32, w: int = 32, empty: bool = False) -> np.ndarray:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8)
    arr[..., 3] = 0
    if not empty:
        arr[8:20, 4:30, 3] = 255
        arr[20, 4:30, 3] = 128  # a half-transparent edge
    Image.fromarray(arr, "RGBA").save(path)
    return arr


def test_rgba_composited_on_black_and_white(tmp_path: Path):
    arr = rgba_image(tmp_path / "a.png")
    a = arr[..., 3:].astype(np.float32) / 255
    rgb = arr[..., :3].astype(np.float32) / 255
    black = load_view(tmp_path / "a.png")
    assert black.shape == (32, 32, 4) and black.dtype == np.float32
    # The authors' rgba2rgb: float32 composite, then truncated (not rounded) to 8 bits.
    assert np.array_equal(black[..., :3] * 255, np.floor(arr[..., :3] * a).astype(np.float32))
    assert np.abs(black[..., :3] - rgb * a).max() < 1 / 255
    assert np.allclose(black[..., 3:], a)
    white = load_view(tmp_path / "a.png", white_background=True)
    assert np.array_equal(white[..., :3] * 255, np.floor(arr[..., :3] * a + (1 - a) * 255).astype(np.float32))
    edge = arr[20, 4:30, :3] * a[20, 4:30]
    assert (np.floor(edge) != np.round(edge)).any()  # the half-transparent edge tells truncation from rounding
    assert black.min() >= 0 and white.max() <= 1


def test_rgb_on_white_mask_is_non_white(tmp_path: Path):
    arr = np.full((16, 16, 3), 255, dtype=np.uint8)
    arr[4:8, 2:10] = (0, 100, 200)
    arr[10, 10] = (255, 255, 0)  # pixelNeRF: foreground only when no channel is 255
    Image.fromarray(arr, "RGB").save(tmp_path / "s.png")
    view = load_view(tmp_path / "s.png", white_background=True)
    expected = np.zeros((16, 16), dtype=np.float32)
    expected[4:8, 2:10] = 1
    assert np.array_equal(view[..., 3], expected)
    assert np.allclose(view[..., :3], arr / 255.0)
    # The same render saved as opaque RGBA is treated the same way.
    Image.fromarray(np.dstack([arr, np.full((16, 16), 255, np.uint8)]), "RGBA").save(tmp_path / "s4.png")
    assert np.array_equal(load_view(tmp_path / "s4.png", white_background=True), view)


def test_resize_uses_area_interpolation(tmp_path: Path):
    rgba_image(tmp_path / "a.png")
    full = load_view(tmp_path / "a.png")
    small = load_view(tmp_path / "a.png", size=16)
    ref = F.interpolate(torch.from_numpy(full).permute(2, 0, 1)[None], size=(16, 16), mode="area")[0]
    assert small.shape == (16, 16, 4)
    assert np.allclose(small, ref.permute(1, 2, 0).numpy(), atol=1e-6)
    assert np.allclose(small[0, 0], full[:2, :2].mean(axis=(0, 1)), atol=1e-6)
    assert load_view(tmp_path / "a.png", size=(8, 16)).shape == (8, 16, 4)
    assert np.array_equal(load_view(tmp_path / "a.png", size=32), full)


def test_errors_name_the_file(tmp_path: Path):
    rgba_image(tmp_path / "empty.png", empty=True)
    with pytest.raises(DataError, match="empty mask") as info:
        load_view(tmp_path / "empty.png")
    assert info.value.path == tmp_path / "empty.png"
    rgba_image(tmp_path / "big.png", h=40, w=32)
    with pytest.raises(DataError, match="40x32") as info:
        load_view(tmp_path / "big.png", expected_size=(32, 32))
    assert str(tmp_path / "big.png") in str(info.value)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="not a readable image") as info:
        load_view(tmp_path / "bad.png")
    assert info.value.path == tmp_path / "bad.png"
    with pytest.raises(DataError, match="not found"):
        load_view(tmp_path / "missing.png")
    white = np.full((8, 8, 3), 255, dtype=np.uint8)
    Image.fromarray(white, "RGB").save(tmp_path / "white.png")
    with pytest.raises(DataError, match="empty mask"):
        load_view(tmp_path / "white.png", white_background=True)


def test_foreground_bbox():
    alpha = np.zeros((10, 12), dtype=np.float32)
    alpha[2:5, 3:9] = 1.0
    assert foreground_bbox(alpha) == (3, 2, 8, 4)
    assert foreground_bbox(torch.from_numpy(alpha)[..., None]) == (3, 2, 8, 4)
    with pytest.raises(ValueError):
        foreground_bbox(np.zeros((4, 4)))
