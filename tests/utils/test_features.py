"""The fixed-basis feature PCA colouring shared by the viewer and the model's eval images."""

from __future__ import annotations

import torch

from featurenerf_ns.utils.features import PCABasis


def _features(n: int = 400, c: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Anisotropic cloud so the principal directions are well defined.
    return torch.randn(n, c, generator=g) * torch.linspace(3.0, 0.1, c) + 0.5


def test_fixed_basis_gives_the_same_colours_in_another_frame():
    feats = _features()
    basis = PCABasis.fit(feats[:200])
    frame_a = basis.apply(feats[150:250])  # overlapping pixels, different "frames"
    frame_b = basis.apply(feats[100:300])
    assert torch.equal(frame_a, frame_b[50:150])
    # A frame's own content does not move the colours (unlike a per-frame PCA).
    assert torch.equal(basis.apply(feats[:10]), basis.apply(feats)[:10])
    image = basis.apply(feats.view(20, 20, 16))
    assert image.shape == (20, 20, 3)


def test_pca_output_is_in_unit_range_and_spreads():
    feats = _features()
    colours = PCABasis.fit(feats).apply(feats * 5 + 100)  # far outside the fitted range: clamped
    assert colours.min() >= 0.0 and colours.max() <= 1.0
    colours = PCABasis.fit(feats).apply(feats)
    assert (colours.amax(0) - colours.amin(0) > 0.9).all()  # each channel uses (nearly) its full range


def test_pca_fit_is_deterministic_and_refit_on_other_data_changes_it():
    feats = _features()
    a, b = PCABasis.fit(feats[:200]), PCABasis.fit(feats[:200].clone())
    assert torch.allclose(a.apply(feats), b.apply(feats))
    other = _features(seed=1)[:, torch.randperm(16, generator=torch.Generator().manual_seed(3))]
    refreshed = PCABasis.fit(other)
    assert not torch.allclose(a.apply(feats), refreshed.apply(feats), atol=1e-3)


def test_pca_handles_fewer_than_three_channels():
    basis = PCABasis.fit(torch.randn(50, 2))
    out = basis.apply(torch.randn(7, 2))
    assert out.shape == (7, 3) and out.min() >= 0 and out.max() <= 1
