"""The FeatureNeRF field: image-conditioned residual MLP producing v_NeRF and its four heads.

Parameterisation mirrors the authors' ``PixelNeRFEmbedNet`` + ``ResnetFC`` (same layer shapes, same
output order ``[rgb(3), sigma(1), feature(D), coord(3)]``), so their checkpoints map onto ours by
renaming keys. Two things are computed differently, with identical results:

* ``lin_z`` (the latent injection of the first blocks) is a linear map, and bilinear sampling with
  border padding is an affine combination with weights summing to one, so ``lin_z(sample(F)) ==
  sample(lin_z(F))``. We apply ``lin_z`` once to each source view's feature map (a few thousand
  pixels) instead of to every sampled point (hundreds of thousands per step).
* Only the output rows that a caller asks for are computed (a render never needs the coordinate
  head; a training step never needs v_NeRF composited).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

from featurenerf_ns.model.gemm import linear, linear_nograd, native_bf16
from featurenerf_ns.model.occupancy import OccupancyGrid
from featurenerf_ns.utils.io import UserError


@dataclass
class Conditioning:
    """Source views encoded once, reused for every query of their objects.

    Shapes use ``B`` objects with ``S`` source views each, flattened object-major (``B*S``).
    """

    latent_rows: Float[Tensor, "BShw Z"]
    """Encoder features already projected by every ``lin_z`` layer (stacked along channels), one row per
    feature-map cell, view-major: row ``(v * h + y) * w + x``."""
    latent_hw: tuple[int, int]
    """Height and width of the feature maps."""
    w2c: Float[Tensor, "BS 3 4"]
    """World-to-camera transforms of the source views (OpenGL camera frame, as pixelNeRF)."""
    focal: Float[Tensor, "BS 2"]
    """``[fx, -fy]`` in pixels (the sign flip maps OpenGL y-up to image rows)."""
    center: Float[Tensor, "BS 2"]
    """Principal point in the authors' convention (pixel ``i`` at coordinate ``i``)."""
    image_wh: Float[Tensor, "2"]
    """Source image width and height in pixels."""
    num_objects: int
    num_views: int
    latent_rows_fine: Float[Tensor, "BShw Z"] | None = None
    """The same rows projected by the separate fine MLP's ``lin_z`` layers; None when the MLP is shared."""
    occupancy: OccupancyGrid | None = None
    """Occupied space of these objects for skipping empty samples at inference; estimated on first use
    (:meth:`featurenerf_ns.model.featurenerf.FeatureNeRFModel.occupancy`)."""

    def select(self, objects: list[int]) -> "Conditioning":
        """The conditioning of a subset of objects (in the given order)."""
        idx = torch.tensor(objects, device=self.w2c.device)
        views = (idx[:, None] * self.num_views + torch.arange(self.num_views, device=idx.device)).reshape(-1)
        cells = self.latent_hw[0] * self.latent_hw[1]
        rows = (views[:, None] * cells + torch.arange(cells, device=idx.device)).reshape(-1)
        return Conditioning(
            latent_rows=self.latent_rows[rows],
            latent_rows_fine=None if self.latent_rows_fine is None else self.latent_rows_fine[rows],
            latent_hw=self.latent_hw,
            w2c=self.w2c[views],
            focal=self.focal[views],
            center=self.center[views],
            image_wh=self.image_wh,
            num_objects=len(objects),
            num_views=self.num_views,
            occupancy=None if self.occupancy is None else self.occupancy.select(objects),
        )

    @property
    def source_centers(self) -> Float[Tensor, "B 3"]:
        """World position of each object's first source camera."""
        w2c = self.w2c[:: self.num_views]
        return -(w2c[:, :, :3].transpose(1, 2) @ w2c[:, :, 3:])[..., 0]


class PositionalEncoding(nn.Module):
    """NeRF positional encoding in the authors' layout: ``[x, sin(f0 x), cos(f0 x), sin(f1 x), ...]``."""

    def __init__(self, num_freqs: int = 6, freq_factor: float = 1.5, include_input: bool = True, d_in: int = 3):
        super().__init__()
        self.num_freqs = num_freqs
        self.include_input = include_input
        self.d_out = num_freqs * 2 * d_in + (d_in if include_input else 0)
        freqs = freq_factor * 2.0 ** torch.arange(num_freqs, dtype=torch.float32)
        self.register_buffer("_freqs", torch.repeat_interleave(freqs, 2).view(1, -1, 1), persistent=False)
        phases = torch.zeros(2 * num_freqs)
        phases[1::2] = math.pi * 0.5
        self.register_buffer("_phases", phases.view(1, -1, 1), persistent=False)

    def forward(self, x: Float[Tensor, "N d"]) -> Float[Tensor, "N d_out"]:
        # cos as sin(x + pi/2), exactly as the authors compute it.
        embed = torch.sin(torch.addcmul(self._phases, x.unsqueeze(1), self._freqs)).view(x.shape[0], -1)
        return torch.cat((x, embed), dim=-1) if self.include_input else embed


class ResnetBlockFC(nn.Module):
    """``x + fc_1(relu(fc_0(relu(x))))`` (DVR / pixelNeRF block)."""

    def __init__(self, width: int):
        super().__init__()
        self.fc_0 = nn.Linear(width, width)
        self.fc_1 = nn.Linear(width, width)
        nn.init.constant_(self.fc_0.bias, 0.0)
        nn.init.kaiming_normal_(self.fc_0.weight, a=0, mode="fan_in")
        nn.init.constant_(self.fc_1.bias, 0.0)
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            h = F.relu(linear(F.relu(x), self.fc_0.weight, self.fc_0.bias))
            return x + linear(h, self.fc_1.weight, self.fc_1.bias)
        h = linear_nograd(F.relu(x), self.fc_0.weight, self.fc_0.bias, relu=True)
        return x.add_(linear_nograd(h, self.fc_1.weight, self.fc_1.bias))


class ResnetFC(nn.Module):
    """The authors' residual MLP: ``lin_in``, ``n_blocks`` blocks, ``lin_z`` injection, ``lin_out``."""

    def __init__(self, d_in: int, d_latent: int, d_out: int, width: int, n_blocks: int, combine_layer: int):
        super().__init__()
        self.lin_in = nn.Linear(d_in, width)
        nn.init.constant_(self.lin_in.bias, 0.0)
        nn.init.kaiming_normal_(self.lin_in.weight, a=0, mode="fan_in")
        self.lin_out = nn.Linear(width, d_out)
        nn.init.constant_(self.lin_out.bias, 0.0)
        nn.init.kaiming_normal_(self.lin_out.weight, a=0, mode="fan_in")
        self.blocks = nn.ModuleList([ResnetBlockFC(width) for _ in range(n_blocks)])
        self.lin_z = nn.ModuleList([nn.Linear(d_latent, width) for _ in range(min(combine_layer, n_blocks))])
        for lin in self.lin_z:
            nn.init.constant_(lin.bias, 0.0)
            nn.init.kaiming_normal_(lin.weight, a=0, mode="fan_in")
        self.width = width
        self.combine_layer = combine_layer
        self._cast: tuple[tuple, ResnetFC] | None = None

    def cast(self, dtype: torch.dtype) -> ResnetFC:
        """A copy of this MLP with its parameters in ``dtype``, for inference; made again only after they change."""
        key = (dtype, *((p.data_ptr(), p._version) for p in self.parameters()))
        if self._cast is None or self._cast[0] != key:
            self._cast = None
            self._cast = (key, copy.deepcopy(self).to(dtype))
        return self._cast[1]

    def project_latent(self, latent: Float[Tensor, "BS L h w"]) -> Float[Tensor, "BShw Z"]:
        """Apply every ``lin_z`` to every cell of the latent maps at once; one row per cell, view-major."""
        weight = torch.cat([lin.weight for lin in self.lin_z], dim=0)
        bias = torch.cat([lin.bias for lin in self.lin_z], dim=0)
        # Row-major rows: the gathers then read contiguous rows (a strided view would be several times slower).
        return linear(latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1]), weight, bias)

    def forward(
        self, x_in: Float[Tensor, "R d_in"], z: Float[Tensor, "R Z"], num_objects: int, num_views: int
    ) -> Float[Tensor, "R2 W"]:
        """Run the blocks on rows ordered ``(object, view, point)``; returns v_NeRF per ``(object, point)``.

        Args:
            x_in: encoded position and view direction per row.
            z: the sampled, already projected latent per row (``lin_z`` outputs stacked).
            num_objects: objects in the batch.
            num_views: source views per object, averaged at ``combine_layer``.
        """
        grad = torch.is_grad_enabled()
        # One split (its backward is one concatenation) rather than slices, whose backward would each
        # allocate and zero a gradient as large as z.
        z_parts = z.split(self.width, dim=1)
        x = linear(x_in, self.lin_in.weight, self.lin_in.bias)
        for i, block in enumerate(self.blocks):
            if i == self.combine_layer and num_views > 1:
                x = x.view(num_objects, num_views, -1, self.width).mean(dim=1).view(-1, self.width)
            if i < len(z_parts):
                x = x + z_parts[i] if grad else x.add_(z_parts[i])
            x = block(x)
        if self.combine_layer >= len(self.blocks) and num_views > 1:
            x = x.view(num_objects, num_views, -1, self.width).mean(dim=1).view(-1, self.width)
        return x


INFERENCE_ROWS = 4096
"""Rows (points x source views) that the MLP processes at once when no gradient is needed."""


def sample_latent(
    rows: Float[Tensor, "BShw C"], hw: tuple[int, int], xy: Float[Tensor, "BS N 2"]
) -> Float[Tensor, "BSN C"]:
    """Bilinear samples of channels-last feature maps at pixel coordinates ``xy`` (x = column, y = row).

    Identical to ``grid_sample(align_corners=True, padding_mode="border")`` (pixelNeRF's ``index``), but
    reads each sample's four neighbouring cells as contiguous rows through one fused weighted
    ``embedding_bag`` instead of walking channel planes: several times faster forward and backward on
    CPU for hundreds of channels, and it returns ``(samples, channels)`` directly, the layout the MLP
    needs.
    """
    h, w = hw
    BS, N, _ = xy.shape
    x = xy[..., 0].clamp(0, w - 1)
    y = xy[..., 1].clamp(0, h - 1)
    x0f, y0f = x.detach().floor(), y.detach().floor()
    wx, wy = x - x0f, y - y0f
    x0, y0 = x0f.long(), y0f.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    base = (torch.arange(BS, device=xy.device) * (h * w)).view(BS, 1)
    idx = torch.stack((base + y0 * w + x0, base + y0 * w + x1, base + y1 * w + x0, base + y1 * w + x1), dim=-1)
    weights = torch.stack(((1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy), dim=-1)
    return F.embedding_bag(idx.view(-1, 4), rows, per_sample_weights=weights.view(-1, 4).to(rows.dtype), mode="sum")


FieldOutput = Literal["rgb", "density", "feature", "coord", "v_nerf"]
"""What the field gives at a point: colour, density, distilled feature, canonical-coordinate residual, v_NeRF."""
FIELD_OUTPUTS: frozenset[str] = frozenset(get_args(FieldOutput))
RENDER_OUTPUTS: frozenset[str] = (FIELD_OUTPUTS - {"density"}) | {"depth", "accumulation"}
"""What a render can be asked for (``depth`` and ``accumulation`` come with every render)."""


def check_outputs(outputs: Iterable[str] | str, allowed: frozenset[str], what: str) -> frozenset[str]:
    """The requested output names as a set; a name outside ``allowed`` (a typo such as ``"vnerf"``) is a
    :class:`UserError` instead of an output silently missing."""
    names = frozenset({outputs}) if isinstance(outputs, str) else frozenset(outputs)
    unknown = names - allowed
    if unknown:
        raise UserError(f"unknown {what} output {', '.join(map(repr, sorted(unknown)))}: choose from {sorted(allowed)}")
    return names


@dataclass
class FieldOutputs:
    """Per-sample field outputs (only those that were asked for are set)."""

    rgb: Tensor | None = None
    density: Tensor | None = None
    feature: Tensor | None = None
    coord: Tensor | None = None
    """Predicted canonical coordinate minus the query point (the L_coord residual)."""
    v_nerf: Tensor | None = None


@dataclass
class FeatureNeRFFieldConfig(InstantiateConfig):
    """The conditioned MLP (the authors' ``ResnetFC`` inside ``PixelNeRFEmbedNet``)."""

    _target: type = field(default_factory=lambda: FeatureNeRFField)
    hidden_dim: int = 512
    """Width of every residual block; v_NeRF has this many channels."""
    num_blocks: int = 5
    """Residual blocks."""
    combine_layer: int = 3
    """Block at which multiple source views are averaged; the latent is injected before each earlier block."""
    num_freqs: int = 6
    """Positional-encoding frequencies of the point (in the source camera frame)."""
    freq_factor: float = 1.5
    """Base frequency of the positional encoding."""
    use_viewdirs: bool = True
    """Append the view direction (source camera frame, not encoded) to the MLP input."""
    share_mlp: bool = True
    """One MLP for the coarse and the fine pass (FeatureNeRF). False adds a separate fine MLP (pixelNeRF's
    released checkpoints); the fine pass then evaluates all its samples with it, as pixelNeRF does."""


class FeatureNeRFField(nn.Module):
    """Maps world points + source-view conditioning to rgb, density, distilled feature, coordinate and v_NeRF."""

    def __init__(self, config: FeatureNeRFFieldConfig, latent_size: int, feature_dim: int, regress_coord: bool):
        super().__init__()
        self.config = config
        self.feature_dim = feature_dim
        self.regress_coord = regress_coord
        self.code = PositionalEncoding(config.num_freqs, config.freq_factor, include_input=True)
        d_in = self.code.d_out + (3 if config.use_viewdirs else 0)
        d_out = 4 + feature_dim + (3 if regress_coord else 0)
        self.mlp = ResnetFC(d_in, latent_size, d_out, config.hidden_dim, config.num_blocks, config.combine_layer)
        self.mlp_fine = (
            None
            if config.share_mlp
            else ResnetFC(d_in, latent_size, d_out, config.hidden_dim, config.num_blocks, config.combine_layer)
        )
        self.inference_dtype = torch.float32
        """Precision of the MLP's blocks when no gradient is needed (bf16 only where :func:`native_bf16`)."""

    def condition(
        self,
        latent: Float[Tensor, "BS L h w"],
        c2w: Float[Tensor, "BS 3 4"],
        intrinsics: Float[Tensor, "BS 4"],
        image_wh: tuple[int, int],
        num_objects: int,
    ) -> Conditioning:
        """Build the conditioning from encoder latents and source cameras.

        Args:
            latent: encoder output per source view, object-major.
            c2w: nerfstudio (OpenGL) camera-to-world of each source view.
            intrinsics: ``[fx, fy, cx, cy]`` in nerfstudio's convention (pixel ``i`` centred at ``i + 0.5``).
            image_wh: source image width and height.
            num_objects: number of objects ``B``; ``BS / B`` views each.
        """
        rot = c2w[:, :3, :3].transpose(1, 2)
        trans = -torch.bmm(rot, c2w[:, :3, 3:])
        focal = torch.stack((intrinsics[:, 0], -intrinsics[:, 1]), dim=-1)
        # The authors index pixels at integer coordinates; nerfstudio centres them at +0.5.
        center = intrinsics[:, 2:4] - 0.5
        return Conditioning(
            latent_rows=self.mlp.project_latent(latent),
            latent_rows_fine=None if self.mlp_fine is None else self.mlp_fine.project_latent(latent),
            latent_hw=(latent.shape[2], latent.shape[3]),
            w2c=torch.cat((rot, trans), dim=-1),
            focal=focal,
            center=center,
            image_wh=torch.tensor(image_wh, dtype=latent.dtype, device=latent.device),
            num_objects=num_objects,
            num_views=latent.shape[0] // num_objects,
        )

    def forward(
        self,
        cond: Conditioning,
        points: Float[Tensor, "B N 3"],
        viewdirs: Float[Tensor, "B N 3"] | None,
        outputs: frozenset[str] = frozenset({"rgb", "density", "feature", "coord"}),
        fine: bool = False,
    ) -> FieldOutputs:
        """Evaluate the field at ``N`` world points per object.

        Args:
            cond: conditioning of exactly these ``B`` objects.
            points: query points (world = the object's canonical frame).
            viewdirs: unit ray directions in world coordinates (required when the field uses them).
            outputs: which of ``rgb``, ``density``, ``feature``, ``coord``, ``v_nerf`` to return.
            fine: evaluate the fine MLP (differs from the coarse one only when ``share_mlp`` is off).
        """
        B, N, _ = points.shape
        chunk = max(1, INFERENCE_ROWS // (B * cond.num_views))
        if not torch.is_grad_enabled() and N > chunk:
            # Inference in slices of points: the MLP's activations stay in cache and memory stays bounded.
            parts = [
                self.forward(
                    cond,
                    points[:, i : i + chunk],
                    None if viewdirs is None else viewdirs[:, i : i + chunk],
                    outputs,
                    fine,
                )
                for i in range(0, N, chunk)
            ]
            return FieldOutputs(
                **{
                    k: torch.cat([getattr(p, k) for p in parts], dim=1) if getattr(parts[0], k) is not None else None
                    for k in ("rgb", "density", "feature", "coord", "v_nerf")
                }
            )
        S = cond.num_views
        rot = cond.w2c[:, None, :, :3]  # (BS, 1, 3, 3)
        pts = points.repeat_interleave(S, dim=0)  # (BS, N, 3)
        xyz_rot = (rot @ pts.unsqueeze(-1))[..., 0]
        xyz = xyz_rot + cond.w2c[:, None, :, 3]
        # As the authors (normalize_z): the encoded position is rotated into the source frame, not translated.
        mlp_in = self.code(xyz_rot.reshape(-1, 3))
        if self.config.use_viewdirs:
            dirs = (rot @ viewdirs.repeat_interleave(S, dim=0).unsqueeze(-1))[..., 0]
            mlp_in = torch.cat((mlp_in, dirs.reshape(-1, 3)), dim=-1)

        mlp, rows = self.mlp, cond.latent_rows
        if fine and self.mlp_fine is not None:
            mlp, rows = self.mlp_fine, cond.latent_rows_fine
            assert rows is not None, "conditioning made without the fine MLP's projection"
        uv = -xyz[..., :2] / xyz[..., 2:] * cond.focal[:, None] + cond.center[:, None]
        z = sample_latent(rows, cond.latent_hw, uv * (uv.new_tensor(cond.latent_hw[::-1]) / cond.image_wh))

        v_nerf = self._run_mlp(mlp, mlp_in, z, B, S)  # (B*N, W)
        return self.heads(mlp.lin_out, v_nerf, points.reshape(-1, 3), outputs, B, N)

    def _run_mlp(self, mlp: ResnetFC, mlp_in: Tensor, z: Tensor, B: int, S: int) -> Float[Tensor, "R W"]:
        """The MLP's blocks, in :attr:`inference_dtype` when no gradient is needed and the hardware multiplies it
        natively (the output heads stay in the input's precision)."""
        dtype = self.inference_dtype
        if torch.is_grad_enabled() or dtype != torch.bfloat16 or not native_bf16(mlp_in.device):
            return mlp(mlp_in, z, B, S)
        if mlp_in.device.type == "cuda":
            with torch.autocast("cuda", dtype=dtype):
                return mlp(mlp_in, z, B, S).to(mlp_in.dtype)
        return mlp.cast(dtype)(mlp_in.to(dtype), z.to(dtype), B, S).to(mlp_in.dtype)

    def output_channels(self, name: str) -> int:
        """Channels of one per-sample output (``rgb``, ``density``, ``feature``, ``coord``, ``v_nerf``)."""
        channels = {"rgb": 3, "density": 1, "feature": self.feature_dim, "coord": 3, "v_nerf": self.config.hidden_dim}
        return channels[name]

    def heads(
        self,
        lin: nn.Linear,
        v_nerf: Float[Tensor, "R W"],
        points: Float[Tensor, "R 3"],
        outputs: frozenset[str],
        B: int,
        N: int,
    ) -> FieldOutputs:
        """Apply the one linear output layer ``lin`` to v_NeRF, computing only the rows that are needed."""
        D = self.feature_dim
        # Output order is the authors': rgb(3), sigma(1), feature(D), coord(3).
        spans = {"rgb": (0, 3), "density": (3, 4), "feature": (4, 4 + D), "coord": (4 + D, 7 + D)}
        present = {"rgb": True, "density": True, "feature": D > 0, "coord": self.regress_coord}
        wanted = [k for k in ("rgb", "density", "feature", "coord") if k in outputs and present[k]]
        if not wanted and "v_nerf" not in outputs:
            raise ValueError(f"nothing to compute among {sorted(outputs)}")
        result = FieldOutputs()
        if wanted:
            lo, hi = spans[wanted[0]][0], spans[wanted[-1]][1]
            out = linear(F.relu(v_nerf), lin.weight[lo:hi], lin.bias[lo:hi])
            # One split (its backward is one concatenation) rather than slices, whose backward would
            # allocate and zero a full-size gradient per slice.
            cuts = sorted({0, hi - lo, *(spans[k][0] - lo for k in wanted), *(spans[k][1] - lo for k in wanted)})
            sizes = [b - a for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
            pieces = dict(zip(cuts[:-1], out.split(sizes, dim=-1), strict=True))
            for k in wanted:
                setattr(result, k, pieces[spans[k][0] - lo].reshape(B, N, -1))
            if result.rgb is not None:
                result.rgb = torch.sigmoid(result.rgb)
            if result.density is not None:
                result.density = F.relu(result.density)
            if result.coord is not None:
                result.coord = result.coord - points.view(B, N, 3)
        if "v_nerf" in outputs:
            result.v_nerf = v_nerf.view(B, N, -1)
        return result
