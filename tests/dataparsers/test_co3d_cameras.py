"""PyTorch3D NDC cameras (both intrinsics formats) become OpenCV poses and pixel intrinsics that
project a world point where PyTorch3D's own forward model puts it."""

from __future__ import annotations

import numpy as np
import pytest

from featurenerf_ns.dataparsers.co3d_format import pytorch3d_to_opencv
from featurenerf_ns.geometry import look_at_opencv
from tests.dataparsers.co3d_fixtures import pytorch3d_pixel, to_pytorch3d


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("fmt", ["ndc_norm_image_bounds", "ndc_isotropic"])
@pytest.mark.parametrize("hw", [(60, 80), (90, 50), (64, 64)])
def test_known_point_projects_to_pytorch3d_pixel(fmt, hw):
    rng = np.random.default_rng(3)
    # A PyTorch3D camera given directly by R, T, focal and principal point (not made by the fixture helper).
    R = _random_rotation(rng)
    X = np.array([0.3, -0.2, 0.5])
    T = np.array([0.1, -0.05, 3.0]) - X @ R  # puts X in front of the camera, at camera (0.1, -0.05, 3)
    viewpoint = {
        "R": R.tolist(),
        "T": T.tolist(),
        "focal_length": [1.7, 2.1],
        "principal_point": [0.05, -0.08],
        "intrinsics_format": fmt,
    }
    expected = pytorch3d_pixel(viewpoint, hw, X)
    c2w, (fx, fy, cx, cy) = pytorch3d_to_opencv(R, T, (1.7, 2.1), (0.05, -0.08), fmt, hw)
    p = np.linalg.inv(c2w) @ np.append(X, 1.0)
    assert p[2] > 0
    got = np.array([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])
    np.testing.assert_allclose(got, expected, atol=1e-9)
    np.testing.assert_allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-12)


def test_pixel_numbers_by_hand():
    # Identity PyTorch3D camera: +X left, +Y up. A point up-left of the axis lands up-left in the image.
    c2w, K = pytorch3d_to_opencv(np.eye(3), np.zeros(3), (2.0, 2.0), (0.0, 0.0), "ndc_isotropic", (100, 200))
    # isotropic: scale = min(W/2, H/2) = 50, so f = 100 px, principal point at the centre (100, 50)
    np.testing.assert_allclose(K, [100.0, 100.0, 100.0, 50.0])
    p = np.linalg.inv(c2w) @ np.array([0.1, 0.1, 1.0, 1.0])  # +X left, +Y up in PyTorch3D
    u, v = K[0] * p[0] / p[2] + K[2], K[1] * p[1] / p[2] + K[3]
    assert (u, v) == pytest.approx((90.0, 40.0))
    _, K2 = pytorch3d_to_opencv(np.eye(3), np.zeros(3), (2.0, 2.0), (0.5, -0.5), "ndc_norm_image_bounds", (100, 200))
    # norm bounds: scale = (100, 50); c = half - p * scale = (100 - 50, 50 + 25)
    np.testing.assert_allclose(K2, [200.0, 100.0, 50.0, 75.0])


def test_fixture_writer_round_trips():
    c2w = look_at_opencv([1.0, 2.0, 3.0], [0.0, 0.1, 0.0])
    K = np.array([70.0, 72.0, 33.0, 29.0])
    for fmt in ("ndc_norm_image_bounds", "ndc_isotropic"):
        vp = to_pytorch3d(c2w, K, (60, 64), fmt)
        c2w2, K2 = pytorch3d_to_opencv(vp["R"], vp["T"], vp["focal_length"], vp["principal_point"], fmt, (60, 64))
        np.testing.assert_allclose(c2w2, c2w, atol=1e-12)
        np.testing.assert_allclose(K2, K, atol=1e-12)


def test_entry_point_registered():
    from importlib.metadata import entry_points

    from nerfstudio.plugins.registry_dataparser import DataParserSpecification

    from featurenerf_ns.dataparsers.co3d import CO3DDataParserConfig

    spec = entry_points(group="nerfstudio.dataparser_configs")["featurenerf-co3d"].load()
    assert isinstance(spec, DataParserSpecification) and isinstance(spec.config, CO3DDataParserConfig)
    assert spec.config.pixel_convention == "authors"  # the cache stores authors'-convention principal points
