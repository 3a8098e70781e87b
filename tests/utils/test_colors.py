"""Colour maps shared by the viewer panel and exports: part palette and legend, similarity, turbo."""

from __future__ import annotations

import numpy as np
import torch

from featurenerf_ns.categories import CATEGORIES
from featurenerf_ns.transfer.matching import transfer_part_labels
from featurenerf_ns.utils.colors import (
    colorize_labels,
    cosine_similarity_map,
    label_palette,
    legend_image,
    legend_markdown,
    similarity_colors,
    turbo,
)


def test_palette_background_black_and_parts_distinct():
    for n in (2, 4, 6, 12, 20):
        pal = label_palette(n)
        assert pal.shape == (n + 1, 3)
        assert torch.equal(pal[0], torch.zeros(3))
        assert pal.min() >= 0 and pal.max() <= 1
        if n <= 12:  # the hand-picked colours (every category has at most 6 parts)
            d = torch.cdist(pal, pal) + torch.eye(n + 1) * 10
            assert d.min() > 0.2  # every pair of labels (and background) clearly different
        assert (pal[1:].sum(1) > 0.3).all()  # no part is (nearly) background black
    assert torch.equal(label_palette(20)[:7], label_palette(6))  # colours never depend on the count
    labels = torch.tensor([[0, 1], [2, 3]])
    img = colorize_labels(labels, label_palette(3))
    assert img.shape == (2, 2, 3) and torch.equal(img[0, 0], torch.zeros(3))
    assert torch.equal(img[1, 1], label_palette(3)[3])


def test_legend_names_every_part_of_the_category():
    parts = CATEGORIES["chair"].parts
    md = legend_markdown(parts, label_palette(len(parts)), present={1, 2})
    for i, name in enumerate(["background", *parts]):
        assert f"**{i}** {name}" in md
    assert "arm (not in reference)" in md and "back (not" not in md
    assert md.count("data:image/png;base64,") == 1  # one legend picture
    picture = legend_image(["background", *parts], label_palette(len(parts)))
    assert picture.shape[0] == 14 * (len(parts) + 1) + 2 and picture.dtype == np.uint8
    # Each row's swatch has that label's colour.
    for i, colour in enumerate(label_palette(len(parts))):
        assert np.abs(picture[14 * i + 7, 10].astype(int) - (colour.numpy() * 255).round()).max() <= 1


def test_cosine_similarity_point_itself_is_the_maximum():
    feats = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)) + 0.5
    query = feats[17]
    sim = cosine_similarity_map(feats, query)
    assert sim.argmax() == 17 and abs(float(sim[17]) - 1.0) < 1e-5
    assert torch.allclose(sim, torch.nn.functional.cosine_similarity(feats, query[None], dim=-1), atol=1e-5)
    assert float(cosine_similarity_map(-query[None], query)[0]) < -0.999
    assert float(cosine_similarity_map(torch.zeros(1, 8), query)[0]) == 0.0


def test_turbo_endpoints_and_similarity_mapping():
    from matplotlib import colormaps

    cmap = colormaps["turbo"]
    lo, hi = turbo(torch.tensor([0.0, 1.0]))
    assert torch.allclose(lo, torch.tensor(cmap(0.0)[:3], dtype=torch.float32), atol=1e-6)
    assert torch.allclose(hi, torch.tensor(cmap(1.0)[:3], dtype=torch.float32), atol=1e-6)
    assert torch.allclose(turbo(torch.tensor([-3.0, 7.0])), torch.stack((lo, hi)))  # clamped
    # Fixed mapping: similarity 1 (the picked point) is turbo's top, the floor and below its bottom.
    cols = similarity_colors(torch.tensor([1.0, 0.2, -0.5]), floor=0.2)
    assert torch.allclose(cols[0], hi) and torch.allclose(cols[1], lo) and torch.allclose(cols[2], lo)


def test_label_transfer_nearest_neighbour_in_normalised_feature_space():
    # Reference: part 1 points along +x, part 2 along +y (different norms: normalisation matters).
    ref = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 5.0, 0.1]])
    ref_labels = torch.tensor([1, 2, 2])
    query = torch.tensor([[0.1, 0.0, 0.0], [3.0, 4.0, 0.0], [4.0, 3.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    fg = torch.tensor([True, True, True, True, False])
    labels = transfer_part_labels(query, ref, ref_labels, fg)
    assert labels.tolist() == [1, 2, 1, 2, 0]
    # Without unit-normalisation, [0.1,0,0] would be nearest (L2) to [0,0.2,0]: check it is not.
    assert transfer_part_labels(query[:1], ref, ref_labels).tolist() == [1]
