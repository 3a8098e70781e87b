"""Sampling and volume rendering as in pixelNeRF / FeatureNeRF, without the redundant work.

The authors' renderer evaluates the shared MLP at the 64 coarse depths twice (once for the coarse
pass, again inside the sorted 96 fine samples). Here the fine pass evaluates only the 32 new
samples and reuses the coarse outputs: compositing weights are computed in sorted depth order and
scattered back, so every rendered value equals the authors' up to floating-point summation order
(``tests/model/test_authors_parity.py`` checks this against their renderer's recorded outputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from featurenerf_ns.model.field import Conditioning, FeatureNeRFField, FieldOutputs
from featurenerf_ns.model.occupancy import OccupancyGrid


@dataclass
class SamplingConfig:
    """Samples per ray (the paper: 64 coarse + 32 fine, 16 of them around the coarse depth)."""

    num_coarse: int = 64
    num_fine: int = 32
    num_fine_depth: int = 16
    depth_std: float = 0.01


def sample_coarse(near: Tensor, far: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Stratified depths: one uniform sample in each of ``n`` equal bins of ``[near, far]``.

    Args:
        near: ``(..., 1)`` near distances.
        far: ``(..., 1)`` far distances.
    """
    step = 1.0 / n
    base = torch.linspace(0, 1 - step, n, device=near.device, dtype=near.dtype)
    jitter = torch.rand((*near.shape[:-1], n), device=near.device, dtype=near.dtype, generator=generator)
    t = base + jitter * step
    return near * (1 - t) + far * t


def sample_importance(
    near: Tensor, far: Tensor, weights: Tensor, n: int, generator: torch.Generator | None = None
) -> Tensor:
    """Importance samples from the coarse weights (the authors' piecewise-uniform inverse CDF over bins)."""
    num_bins = weights.shape[-1]
    weights = weights.detach() + 1e-5
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat((torch.zeros_like(cdf[..., :1]), cdf), -1)
    u = torch.rand((*weights.shape[:-1], n), device=weights.device, dtype=weights.dtype, generator=generator)
    inds = (torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True).to(weights.dtype) - 1.0).clamp_min(0.0)
    t = (inds + torch.rand(inds.shape, device=inds.device, dtype=inds.dtype, generator=generator)) / num_bins
    return near * (1 - t) + far * t


def sample_around_depth(
    near: Tensor, far: Tensor, depth: Tensor, n: int, std: float, generator: torch.Generator | None = None
) -> Tensor:
    """``n`` samples from N(depth, std^2) clamped to ``[near, far]`` (not detached, as the authors)."""
    noise = torch.randn((*depth.shape, n), device=depth.device, dtype=depth.dtype, generator=generator)
    z = depth.unsqueeze(-1) + noise * std
    return torch.maximum(torch.minimum(z, far), near)


def compositing_weights(z: Float[Tensor, "*R K"], density: Float[Tensor, "*R K"], far: Tensor) -> Tensor:
    """NeRF weights for sorted depths ``z``; the last interval ends at ``far`` (the authors' choice)."""
    deltas = torch.cat((z[..., 1:] - z[..., :-1], far - z[..., -1:]), -1)
    alphas = 1 - torch.exp(-deltas * density)
    shifted = torch.cat((torch.ones_like(alphas[..., :1]), 1 - alphas + 1e-10), -1)
    return alphas * torch.cumprod(shifted, -1)[..., :-1]


def _weighted_sum(weights: Tensor, values: Tensor) -> Tensor:
    """``sum_k w_k v_k`` for ``weights (B, R, K)`` and ``values (B, R*K, C)`` as one batched GEMV."""
    B, R, K = weights.shape
    return (weights.reshape(B * R, 1, K) @ values.reshape(B * R, K, -1)).reshape(B, R, -1)


@dataclass
class SampleDepths:
    """Depths to use instead of drawing them (e.g. the samples another renderer recorded)."""

    coarse: Float[Tensor, "B R Kc"]
    """Coarse depths, sorted along each ray."""
    fine: Float[Tensor, "B R Kf"]
    """The fine pass's new depths drawn from the coarse weights (in any order); merged with the coarse ones."""
    around_depth: Float[Tensor, "B R Kd"] | None = None
    """Offsets of the samples drawn around the coarse expected depth: they are placed at ``depth + offset``
    (clamped to near/far) so that, as in the authors' renderer, gradients flow through that depth."""


_COMPOSITED = ("rgb", "feature", "v_nerf")


@dataclass
class OccupiedSamples:
    """Field outputs at the samples in occupied cells only: every other sample has density 0, hence compositing
    weight 0, so its other outputs are never needed (nor stored)."""

    density: Float[Tensor, "B N 1"]
    """Every sample's density (0 where skipped)."""
    index: Int[Tensor, " M"]
    """Flat indices (over ``B * N``, object-major) of the evaluated samples."""
    values: FieldOutputs
    """The other outputs of the evaluated samples, ``(M, C)`` each, in the order of :attr:`index`."""


def query_occupied(
    field: FeatureNeRFField,
    cond: Conditioning,
    occupancy: OccupancyGrid,
    points: Float[Tensor, "B N 3"],
    viewdirs: Float[Tensor, "B N 3"],
    outputs: frozenset[str],
    fine: bool,
) -> OccupiedSamples:
    """The field at the points in occupied cells, without evaluating the MLP elsewhere."""
    B, N, _ = points.shape
    keep = occupancy.contains(points)
    names = outputs & {"rgb", "v_nerf", *(["feature"] if field.feature_dim > 0 else [])}
    density = points.new_zeros(B, N, 1)
    parts = []
    for b in range(B):
        idx = keep[b].nonzero()[:, 0]
        if idx.numel() == 0:
            continue
        sub = field(cond if B == 1 else cond.select([b]), points[b, idx][None], viewdirs[b, idx][None], outputs, fine)
        density[b, idx] = sub.density[0]
        parts.append(sub)
    values = FieldOutputs(
        **{
            k: torch.cat([getattr(p, k)[0] for p in parts]) if parts else points.new_zeros(0, field.output_channels(k))
            for k in names
        }
    )
    return OccupiedSamples(density, keep.reshape(-1).nonzero()[:, 0], values)


def _composite(weights: Float[Tensor, "B R K"], part: FieldOutputs | OccupiedSamples, name: str) -> Tensor:
    """``sum_k w_k v_k`` per ray of one output of the samples (only the evaluated ones for occupied samples)."""
    if isinstance(part, FieldOutputs):
        return _weighted_sum(weights, getattr(part, name))
    B, R, K = weights.shape
    values = getattr(part.values, name)
    rows = values * weights.reshape(-1)[part.index, None]
    return values.new_zeros(B * R, values.shape[-1]).index_add_(0, part.index // K, rows).view(B, R, -1)


def _has(part: FieldOutputs | OccupiedSamples, name: str) -> bool:
    return getattr(part if isinstance(part, FieldOutputs) else part.values, name) is not None


def object_ray_bounds(
    origins: Float[Tensor, "*R 3"], directions: Float[Tensor, "*R 3"], half_length: float
) -> tuple[Float[Tensor, "*R 1"], Float[Tensor, "*R 1"]]:
    """``near, far`` of each (unit-direction) ray: ``half_length`` either side of its closest point to the origin.

    Training and the authors' renders sample every ray between the data's fixed near/far (0.8-1.8 for cameras 1.3
    from the object). A camera of the viewer or of an export can be anywhere: sampling the same length centred on
    each ray's closest approach to the object's centre gives the training interval for the data's cameras and keeps
    the object inside the sampled range, with the same sample density, when the camera moves in or out.
    """
    closest = -(origins * directions).sum(-1, keepdim=True)
    near = (closest - half_length).clamp_min(0.0)
    return near, near + 2 * half_length


def render_rays(
    field: FeatureNeRFField,
    cond: Conditioning,
    origins: Float[Tensor, "B R 3"],
    directions: Float[Tensor, "B R 3"],
    near: Float[Tensor, "B R 1"],
    far: Float[Tensor, "B R 1"],
    sampling: SamplingConfig,
    outputs: frozenset[str],
    generator: torch.Generator | None = None,
    depths: SampleDepths | None = None,
    background: Float[Tensor, "3"] | None = None,
    occupancy: OccupancyGrid | None = None,
    coarse: bool = True,
) -> dict[str, Tensor]:
    """Render rays of ``B`` objects (``R`` rays each) with coarse + fine sampling.

    With a shared MLP the fine pass evaluates only its new samples and reuses the coarse ones; with a
    separate fine MLP (pixelNeRF) it evaluates all of them with that MLP, as the authors do.

    Args:
        outputs: any of ``rgb``, ``feature``, ``v_nerf`` (composited), ``coord`` (per-ray mean residual),
            plus always ``depth`` and ``accumulation``.
        generator: random source of the sample depths (None: torch's global one).
        depths: fixed sample depths instead of drawn ones.
        background: colour behind the object, added to rgb with weight ``1 - accumulation`` (pixelNeRF's
            ``white_bkgd``); None adds nothing (black).
        occupancy: evaluate the field only at samples in its occupied cells (the others have density 0); the
            samples drawn stay those of the exact render. Not with ``coord``, a mean over all samples.
        coarse: also composite the coarse pass's outputs (``{name}_coarse``, which training's losses use); renders
            that keep only the fine results skip that work (the fine pass needs only the coarse weights and depth).
    Returns:
        ``{name}_coarse`` (with ``coarse``) and ``{name}`` (fine) for every requested output, ``depth``,
        ``accumulation``, ``depth_coarse``, ``accumulation_coarse``; each ``(B, R, C)``.
    """
    B, R, _ = origins.shape
    per_sample = frozenset(outputs) | {"density"}

    if occupancy is not None and "coord" in outputs:
        raise ValueError("coord is a mean over all samples of a ray: render it without occupancy")

    def query(z: Tensor, fine: bool) -> FieldOutputs | OccupiedSamples:
        pts = origins.unsqueeze(2) + z.unsqueeze(-1) * directions.unsqueeze(2)
        dirs = directions.unsqueeze(2).expand(-1, -1, z.shape[-1], -1)
        if occupancy is None:
            return field(cond, pts.reshape(B, -1, 3), dirs.reshape(B, -1, 3), per_sample, fine)
        return query_occupied(field, cond, occupancy, pts.reshape(B, -1, 3), dirs.reshape(B, -1, 3), per_sample, fine)

    def finish(
        weights: Tensor,
        z: Tensor,
        parts: list[tuple[Tensor, FieldOutputs | OccupiedSamples]],
        suffix: str,
        outputs=outputs,
    ) -> None:
        accumulation = weights.sum(-1, keepdim=True)
        result[f"depth{suffix}"] = (weights * z).sum(-1, keepdim=True)
        result[f"accumulation{suffix}"] = accumulation
        for name in _COMPOSITED:
            if name in outputs and _has(parts[0][1], name):
                result[f"{name}{suffix}"] = sum(_composite(w, o, name) for w, o in parts)
        if background is not None and "rgb" in outputs:
            result[f"rgb{suffix}"] = result[f"rgb{suffix}"] + (1.0 - accumulation) * background.to(accumulation)
        if "coord" in outputs and field.regress_coord:
            total = sum(o.coord.view(B, R, w.shape[-1], 3).sum(2) for w, o in parts)
            result[f"coord{suffix}"] = total / z.shape[-1]

    result: dict[str, Tensor] = {}
    z_coarse = depths.coarse if depths is not None else sample_coarse(near, far, sampling.num_coarse, generator)
    out_coarse = query(z_coarse, fine=False)
    w_coarse = compositing_weights(z_coarse, out_coarse.density.view(B, R, -1), far)
    final = sampling.num_fine <= 0
    finish(w_coarse, z_coarse, [(w_coarse, out_coarse)], "_coarse", outputs if coarse or final else frozenset())
    if final:
        for key in list(result):
            result[key.removesuffix("_coarse")] = result[key]
        return result

    if depths is not None:
        z_new = depths.fine
        if depths.around_depth is not None:
            z_depth = result["depth_coarse"] + depths.around_depth
            z_new = torch.cat((z_new, torch.maximum(torch.minimum(z_depth, far), near)), -1)
    else:
        new = []
        if sampling.num_fine > sampling.num_fine_depth:
            new.append(sample_importance(near, far, w_coarse, sampling.num_fine - sampling.num_fine_depth, generator))
        if sampling.num_fine_depth > 0:
            depth = result["depth_coarse"][..., 0]
            new.append(sample_around_depth(near, far, depth, sampling.num_fine_depth, sampling.depth_std, generator))
        z_new = torch.cat(new, -1)
    z_all = torch.cat((z_coarse, z_new), -1)
    if field.mlp_fine is not None:
        z_sorted = torch.sort(z_all, -1)[0]
        out_all = query(z_sorted, fine=True)
        w_sorted = compositing_weights(z_sorted, out_all.density.view(B, R, -1), far)
        finish(w_sorted, z_sorted, [(w_sorted, out_all)], "")
        return result
    out_new = query(z_new, fine=False)
    density_all = torch.cat((out_coarse.density.view(B, R, -1), out_new.density.view(B, R, -1)), -1)
    z_sorted, order = torch.sort(z_all, -1)
    w_sorted = compositing_weights(z_sorted, torch.gather(density_all, -1, order), far)
    w_all = torch.zeros_like(w_sorted).scatter(-1, order, w_sorted)
    kc = z_coarse.shape[-1]
    finish(w_sorted, z_sorted, [(w_all[..., :kc], out_coarse), (w_all[..., kc:], out_new)], "")
    return result
