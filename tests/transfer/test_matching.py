import pytest
import torch

from featurenerf_ns.transfer.matching import l2_normalize, nearest_neighbors, transfer_labels, transfer_points


def test_known_nearest_neighbours_by_cosine_not_distance():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [10.0, 10.0]])
    queries = torch.tensor([[0.1, 0.0], [0.0, 5.0], [1.0, 1.2], [3.0, 2.9]])
    idx, sim = nearest_neighbors(queries, keys)
    assert idx.tolist() == [0, 1, 2, 2]
    assert sim[0].item() == pytest.approx(1.0)


def test_chunked_equals_unchunked():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(300, 32, generator=g)
    k = torch.randn(777, 32, generator=g)
    full_idx, full_sim = nearest_neighbors(q, k, chunk=300)
    for chunk in (1, 7, 128, 299, None):
        idx, sim = nearest_neighbors(q, k, chunk=chunk)
        assert torch.equal(idx, full_idx)
        torch.testing.assert_close(sim, full_sim)
    ref = (l2_normalize(q) @ l2_normalize(k).T).argmax(dim=1)
    assert torch.equal(full_idx, ref)


def test_zero_vectors_stay_zero_and_ties_take_the_lowest_index():
    assert torch.equal(l2_normalize(torch.zeros(2, 3)), torch.zeros(2, 3))
    idx, _ = nearest_neighbors(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0]]))
    assert idx.tolist() == [1]


def test_transfer_labels_and_points():
    src = torch.eye(3)
    labels = torch.tensor([5, 6, 7])
    trg = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.1, 0.0]])
    assert transfer_labels(trg, src, labels, chunk=1).tolist() == [7, 5]
    coords = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    assert transfer_points(torch.tensor([[0.0, 1.0, 0.0]]), src, coords).tolist() == [[1.0, 1.0]]


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        nearest_neighbors(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        nearest_neighbors(torch.zeros(2, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError):
        transfer_labels(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
