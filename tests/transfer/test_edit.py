"""Part texture swapping on hand-made features."""

import pytest
import torch

from featurenerf_ns.transfer.edit import swap_part_colors
from featurenerf_ns.utils.io import UserError


def test_swap_takes_colours_from_the_nearest_source_pixel_of_the_part():
    # Source: part 1 along +x (red and dark red), part 2 along +y (green).
    src_feat = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    src_labels = torch.tensor([1, 1, 2])
    src_rgb = torch.tensor([[1.0, 0, 0], [0.5, 0, 0], [0, 1.0, 0]])
    trg_feat = torch.tensor([[2.0, 0.21], [0.1, 3.0], [3.0, 0.0]])
    labels, colours, on_part = swap_part_colors(src_feat, src_labels, src_rgb, trg_feat, part=1)
    assert labels.tolist() == [1, 2, 1]
    assert on_part.tolist() == [True, False, True]
    torch.testing.assert_close(colours[on_part], torch.tensor([[0.5, 0, 0], [1.0, 0, 0]]))


def test_missing_part_is_a_clear_error():
    with pytest.raises(UserError, match="part label 3"):
        swap_part_colors(torch.eye(2), torch.tensor([1, 2]), torch.zeros(2, 3), torch.eye(2), part=3)
