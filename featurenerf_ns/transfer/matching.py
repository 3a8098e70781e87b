"""Cosine nearest-neighbour matching between feature sets, in bounded memory.

Every transfer in the benchmarks (a keypoint to a pixel, a pixel's part label, a 3D point's label)
is "for each query vector, the most cosine-similar key vector". With 128x128 maps that is up to
16k x 16k similarities per pair, so the similarity matrix is only ever formed ``chunk`` query rows
at a time (a matrix product per chunk, then an argmax); results are identical to the unchunked
product because rows are independent.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from featurenerf_ns.utils.features import l2_normalize

DEFAULT_MAX_CHUNK_ELEMENTS = 1 << 24
"""Largest similarity block formed at once (16M floats = 64 MB in float32)."""


def nearest_neighbors(
    queries: Float[Tensor, "M C"],
    keys: Float[Tensor, "N C"],
    chunk: int | None = None,
    normalize: bool = True,
) -> tuple[Int[Tensor, " M"], Float[Tensor, " M"]]:
    """Index and cosine similarity of each query's most similar key.

    Args:
        queries: query features (any norm when ``normalize``).
        keys: key features, same width.
        chunk: query rows per similarity block; None picks the most that keeps a block under
            :data:`DEFAULT_MAX_CHUNK_ELEMENTS` entries.
        normalize: L2-normalise both sides first (cosine similarity); False uses dot products as given.

    Returns:
        ``(index, similarity)``; ties resolve to the lowest key index (``torch.argmax``'s rule).
    """
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"expected (M, C) queries and (N, C) keys, got {tuple(queries.shape)}, {tuple(keys.shape)}")
    if keys.shape[0] == 0:
        raise ValueError("no key vectors to match against")
    keys = keys.to(device=queries.device, dtype=queries.dtype)
    if normalize:
        queries, keys = l2_normalize(queries), l2_normalize(keys)
    m, n = queries.shape[0], keys.shape[0]
    if chunk is None:
        chunk = max(1, DEFAULT_MAX_CHUNK_ELEMENTS // max(n, 1))
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    index = torch.empty(m, dtype=torch.long, device=queries.device)
    sim = torch.empty(m, dtype=queries.dtype, device=queries.device)
    keys_t = keys.t()
    for start in range(0, m, chunk):
        block = queries[start : start + chunk] @ keys_t
        best, arg = block.max(dim=1)
        index[start : start + chunk] = arg
        sim[start : start + chunk] = best
    return index, sim


def transfer_labels(
    trg_feats: Float[Tensor, "M C"],
    src_feats: Float[Tensor, "N C"],
    src_labels: Int[Tensor, " N"],
    chunk: int | None = None,
) -> Int[Tensor, " M"]:
    """Each target vector takes the label of its most cosine-similar source vector."""
    if src_labels.shape[0] != src_feats.shape[0]:
        raise ValueError(f"{src_feats.shape[0]} source features but {src_labels.shape[0]} labels")
    index, _ = nearest_neighbors(trg_feats, src_feats, chunk=chunk)
    return src_labels.to(index.device)[index]


def transfer_points(
    src_feats: Float[Tensor, "K C"],
    trg_feats: Float[Tensor, "N C"],
    trg_coords: Float[Tensor, "N D"],
    chunk: int | None = None,
) -> Float[Tensor, "K D"]:
    """Each source vector (a keypoint) goes to the coordinates of its most similar target vector."""
    if trg_coords.shape[0] != trg_feats.shape[0]:
        raise ValueError(f"{trg_feats.shape[0]} target features but {trg_coords.shape[0]} coordinates")
    index, _ = nearest_neighbors(src_feats, trg_feats, chunk=chunk)
    return trg_coords.to(index.device)[index]


def transfer_part_labels(
    features: Float[Tensor, "M C"],
    ref_features: Float[Tensor, "N C"],
    ref_labels: Int[Tensor, " N"],
    foreground: Tensor | None = None,
) -> Int[Tensor, " M"]:
    """Part label of each feature: its nearest neighbour in L2-normalised feature space among the
    reference's labelled foreground features; 0 where ``foreground`` is False."""
    out = torch.zeros(features.shape[0], dtype=torch.long, device=features.device)
    fg = torch.ones_like(out, dtype=torch.bool) if foreground is None else foreground.reshape(-1).bool()
    if bool(fg.any()) and ref_features.shape[0] > 0:
        out[fg] = transfer_labels(features[fg], ref_features, ref_labels).to(out.device)
    return out
