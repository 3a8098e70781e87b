"""Loading one view of one object the way the authors' loaders do.

RGBA renders (the authors' layout) are composited on black (or white) and truncated to 8 bits, as
the authors' loader does (:func:`composite_rgba`), and their alpha is the mask. RGB renders without
alpha (SRN) are on white; their mask is the non-white pixels, with pixelNeRF's rule: a pixel is
foreground when none of its channels is 255 (RGBA files whose alpha is fully opaque are treated the
same way when ``white_background`` is set). Resizing uses area interpolation on the composited image
and the mask, as ``F.interpolate(..., mode="area")`` in the authors' datasets.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from PIL import Image

from featurenerf_ns.utils.io import DataError


def read_image(path: os.PathLike | str, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """The pixels of an image file as stored: ``(H, W, 4)`` uint8 when it has alpha, else ``(H, W, 3)``.

    The one decoder of view images: training views, teacher inputs and the viewer's files all come from here.

    Args:
        path: PNG/JPEG file.
        expected_size: ``(H, W)`` the file must have (the size the dataparser read from the category's first
            image); None accepts any size.

    Raises:
        DataError: naming the file, when it cannot be read or has the wrong size.
    """
    try:
        with Image.open(path) as im:
            im.load()
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    except FileNotFoundError:
        raise DataError(path, "image not found") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(path, f"not a readable image ({e})") from None
    if expected_size is not None and tuple(arr.shape[:2]) != tuple(expected_size):
        raise DataError(
            path,
            f"image is {arr.shape[0]}x{arr.shape[1]} (HxW) but the category's images are "
            f"{expected_size[0]}x{expected_size[1]}",
        )
    return arr


def stored_rgba(pixels: np.ndarray) -> Float[np.ndarray, "H W 4"]:
    """RGBA in [0, 1] as stored (colour under transparent pixels kept; alpha 1 for RGB files): a teacher's input."""
    if pixels.shape[-1] == 3:
        pixels = np.concatenate([pixels, np.full_like(pixels[..., :1], 255)], axis=-1)
    return pixels.astype(np.float32) / 255.0


def load_view(
    path: os.PathLike | str,
    size: int | tuple[int, int] | None = None,
    white_background: bool = False,
    expected_size: tuple[int, int] | None = None,
) -> Float[np.ndarray, "H W 4"]:
    """Read an image as composited RGB plus mask (:func:`read_image`, then :func:`view_from_pixels`)."""
    return view_from_pixels(read_image(path, expected_size), path, size, white_background)


def view_from_pixels(
    arr: np.ndarray,
    path: os.PathLike | str,
    size: int | tuple[int, int] | None = None,
    white_background: bool = False,
) -> Float[np.ndarray, "H W 4"]:
    """Composited RGB plus mask from stored pixels.

    Args:
        arr: :func:`read_image`'s pixels: RGBA (alpha = mask) or RGB (mask = non-white pixels).
        path: the file they came from (named in errors).
        size: output size, an int for square images or ``(H, W)``; None keeps the stored size.
        white_background: composite RGBA images on white instead of black.

    Returns:
        ``(H, W, 4)`` float32 in [0, 1]: RGB composited on the background, then the mask.

    Raises:
        DataError: naming the file, when the mask is empty.
    """
    has_alpha = arr.shape[-1] == 4
    if has_alpha and white_background and (arr[..., 3] == 255).all():
        # SRN renders saved as RGBA carry no mask in alpha; treat them like RGB renders.
        has_alpha, arr = False, arr[..., :3]
    if has_alpha:
        rgb = composite_rgba(arr, white_background).astype(np.float32) / 255.0
        alpha = arr[..., 3].astype(np.float32) / 255.0
    else:
        rgb = arr[..., :3].astype(np.float32) / 255.0
        alpha = (arr[..., :3] != 255).all(axis=-1).astype(np.float32)
    if not alpha.any():
        raise DataError(path, "empty mask: no foreground pixel (alpha is 0 everywhere, or the image is all white)")

    out = np.concatenate([rgb, alpha[..., None]], axis=-1)
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if hw != out.shape[:2]:
            t = torch.from_numpy(out).permute(2, 0, 1)[None]
            out = F.interpolate(t, size=hw, mode="area")[0].permute(1, 2, 0).numpy()
    return np.ascontiguousarray(out, dtype=np.float32)


def composite_rgba(rgba: np.ndarray, white_background: bool = False) -> np.ndarray:
    """RGBA pixels (uint8) composited on black or white and truncated back to uint8, as the authors' loader.

    Their ``rgba2rgb`` computes ``r * a + (1 - a) * background`` in float32 with ``a = alpha / 255`` and
    casts the result to uint8 (truncation, not rounding); the same arithmetic here gives the same bytes.

    Args:
        rgba: ``(..., 4)`` uint8 pixels.
        white_background: composite on white (255) instead of black.
    Returns:
        ``(..., 3)`` uint8.
    """
    if rgba.dtype != np.uint8 or rgba.shape[-1] != 4:
        raise ValueError(f"expected (..., 4) uint8 RGBA pixels, got {rgba.dtype} {rgba.shape}")
    alpha = rgba[..., 3:].astype(np.float32) / np.float32(255.0)
    bg = np.float32(255.0 if white_background else 0.0)
    return (rgba[..., :3] * alpha + (np.float32(1.0) - alpha) * bg).astype(np.uint8)


def foreground_bbox(alpha: np.ndarray | torch.Tensor) -> tuple[int, int, int, int]:
    """Bounding box ``(cmin, rmin, cmax, rmax)`` (inclusive) of the pixels where ``alpha > 0``.

    Same order as the authors' ``bbox`` (columns first). ``alpha`` is ``(H, W)`` or ``(H, W, 1)``.

    Raises:
        ValueError: when no pixel is foreground.
    """
    a = alpha.detach().cpu().numpy() if isinstance(alpha, torch.Tensor) else np.asarray(alpha)
    if a.ndim == 3:
        a = a[..., 0]
    mask = a > 0
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("empty mask: no foreground pixel")
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])
