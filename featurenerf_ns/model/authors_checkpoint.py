"""The authors' checkpoints (FeatureNeRF's and pixelNeRF's ``pixel_nerf_latest``) as this model.

Their trainers save ``net.state_dict()`` of ``PixelNeRFEmbedNet`` (FeatureNeRF) or ``PixelNeRFNet``
(pixelNeRF): ``encoder.model.*`` (a torchvision ResNet, all stages), ``mlp_coarse.*`` and
``mlp_fine.*`` (the same tensors when ``share_mlp``; pixelNeRF trains two MLPs) and the positional
code's ``code._freqs``/``code._phases``. Everything this model needs is in the tensor shapes, except
``use_first_pool`` and, for some output sizes, whether the last three outputs are the coordinate
head; the HOCON ``.conf`` the network was built from settles those and is checked against the
weights. :func:`read_authors_checkpoint` does the reading and checking;
:func:`to_model_state` renames the tensors to this model's parameters.

The same inference runs on this project's own checkpoints (:func:`architecture_of_model_state`), so
a checkpoint that does not fit a run's model can say which options would make it fit.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from featurenerf_ns.model.encoder import LATENT_SIZES
from featurenerf_ns.utils.hocon import as_bool, hocon_get, read_hocon
from featurenerf_ns.utils.io import DataError, UserError

RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
"""Basic blocks per stage (layer1..layer4) of the supported torchvision backbones."""

KNOWN_TEACHER_DIMS = (384, 768, 960, 1024)
"""Feature head sizes of the teachers in use (DINO ViT-S/B, Latent Diffusion, DINOv2 ViT-L): an output
layer of ``4 + D + 3`` rows with ``D`` among these is read as having a coordinate head without a config."""

_REQUIRED = ("encoder.model.conv1.weight", "mlp_coarse.lin_in.weight", "mlp_coarse.lin_out.weight")


@dataclass(frozen=True)
class Architecture:
    """What a checkpoint's tensors (and its config) say about the network, in this model's terms."""

    backbone: str
    num_layers: int
    use_first_pool: bool
    hidden_dim: int
    num_blocks: int
    combine_layer: int
    num_freqs: int
    freq_factor: float
    use_viewdirs: bool
    feature_dim: int
    regress_coord: bool
    share_mlp: bool

    def options(self) -> dict[str, Any]:
        """``ns-train`` options (``--pipeline.model.…``) that build this network, with their values."""
        m = "--pipeline.model."
        return {
            f"{m}encoder.backbone": self.backbone,
            f"{m}encoder.num-layers": self.num_layers,
            f"{m}encoder.use-first-pool": self.use_first_pool,
            f"{m}field.hidden-dim": self.hidden_dim,
            f"{m}field.num-blocks": self.num_blocks,
            f"{m}field.combine-layer": self.combine_layer,
            f"{m}field.num-freqs": self.num_freqs,
            f"{m}field.freq-factor": self.freq_factor,
            f"{m}field.use-viewdirs": self.use_viewdirs,
            f"{m}field.share-mlp": self.share_mlp,
            f"{m}feature-dim": self.feature_dim,
            f"{m}regress-coord": self.regress_coord,
        }

    def apply(self, model_config: Any) -> Any:
        """A copy of a :class:`~featurenerf_ns.model.featurenerf.FeatureNeRFModelConfig` with this network."""
        encoder = dataclasses.replace(
            model_config.encoder,
            backbone=self.backbone,
            num_layers=self.num_layers,
            use_first_pool=self.use_first_pool,
            weights=None,
        )
        field = dataclasses.replace(
            model_config.field,
            hidden_dim=self.hidden_dim,
            num_blocks=self.num_blocks,
            combine_layer=self.combine_layer,
            num_freqs=self.num_freqs,
            freq_factor=self.freq_factor,
            use_viewdirs=self.use_viewdirs,
            share_mlp=self.share_mlp,
        )
        return dataclasses.replace(
            model_config,
            encoder=encoder,
            field=field,
            feature_dim=self.feature_dim,
            regress_coord=self.regress_coord,
        )


def architecture_of_config(model_config: Any) -> Architecture:
    """The network a model config builds (``feature_dim`` must be resolved, i.e. not None)."""
    enc, fld = model_config.encoder, model_config.field
    return Architecture(
        backbone=enc.backbone,
        num_layers=enc.num_layers,
        use_first_pool=enc.use_first_pool,
        hidden_dim=fld.hidden_dim,
        num_blocks=fld.num_blocks,
        combine_layer=fld.combine_layer,
        num_freqs=fld.num_freqs,
        freq_factor=fld.freq_factor,
        use_viewdirs=fld.use_viewdirs,
        feature_dim=model_config.feature_dim,
        regress_coord=model_config.regress_coord,
        share_mlp=fld.share_mlp,
    )


@dataclass
class AuthorsCheckpoint:
    """An authors' checkpoint, read and checked."""

    path: Path
    state: dict[str, Tensor]
    """The checkpoint's tensors under the authors' names."""
    architecture: Architecture
    kind: str
    """``"featurenerf"`` (a distilled feature head) or ``"pixelnerf"`` (rgb and density only)."""
    settings: dict[str, Any]
    """Renderer and loss settings from the config (``num_coarse_samples``, ``lambda_distill``, ...), as
    :class:`~featurenerf_ns.model.featurenerf.FeatureNeRFModelConfig` fields; empty without a config."""
    white_background: bool | None
    """The config's ``renderer.white_bkgd``; None without a config."""
    notes: list[str]
    """What was assumed or ignored (printed by the importer)."""


# --------------------------------------------------------------------------------------------- reading
def load_state_dict_file(path: Path) -> dict[str, Tensor]:
    """The tensors of a ``torch.save``-d state dict, with one-line errors for anything else."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "checkpoint not found")
    if path.is_dir():
        raise DataError(path, "is a folder; give the checkpoint file (e.g. checkpoints/<exp>/pixel_nerf_latest)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated, corrupt or non-torch files
        detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise DataError(
            path, f"not a readable PyTorch checkpoint (truncated or not a torch.save file: {detail})"
        ) from None
    if isinstance(obj, dict) and "pipeline" in obj and "step" in obj:
        raise DataError(
            path, "is a nerfstudio checkpoint of this plugin, not an authors' one: open its run's config.yml"
        )
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise DataError(path, "expected a state dict (parameter names to tensors), as the authors' trainer saves")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def read_authors_checkpoint(
    path: Path, conf_path: Path | None = None, regress_coord: bool | None = None
) -> AuthorsCheckpoint:
    """Read an authors' checkpoint and infer (and, given its ``.conf``, check) its architecture.

    Args:
        path: ``pixel_nerf_latest`` (FeatureNeRF or pixelNeRF).
        conf_path: the HOCON config the network was built from (optional).
        regress_coord: whether the last three outputs are the coordinate head; None = from the config, or
            from the output size when it is unambiguous.

    Raises:
        DataError: one line naming the file and what does not fit.
    """
    state = load_state_dict_file(path)
    conf = read_hocon(conf_path) if conf_path is not None else None
    notes: list[str] = []
    try:
        arch = _infer(state, conf, regress_coord, notes)
    except _Mismatch as e:
        raise DataError(conf_path if e.in_conf and conf_path is not None else path, str(e)) from None
    settings, white = ({}, None) if conf is None else _settings(conf, conf_path, notes)
    kind = "featurenerf" if arch.feature_dim > 0 or arch.regress_coord else "pixelnerf"
    return AuthorsCheckpoint(Path(path), state, arch, kind, settings, white, notes)


class _Mismatch(ValueError):
    def __init__(self, message: str, in_conf: bool = False):
        super().__init__(message)
        self.in_conf = in_conf


def _conf_value(conf: dict, key: str, default: Any, kind: Callable[[Any], Any]) -> Any:
    """A setting of the authors' .conf as ``kind`` (``bool``: HOCON's spellings); a mismatch naming the setting
    when it is not one."""
    value = hocon_get(conf, key, default)
    try:
        return as_bool(value, key) if kind is bool else kind(value)
    except (TypeError, ValueError):
        raise _Mismatch(f"{key} = {value!r} is not a {kind.__name__}", in_conf=True) from None


def _blocks(state: Mapping[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    if found != set(range(len(found))):
        raise _Mismatch(f"{prefix}* is not numbered 0..{len(found) - 1}")
    return len(found)


def _infer(
    state: Mapping[str, Tensor], conf: dict | None, regress_coord: bool | None, notes: list[str]
) -> Architecture:
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        example = ", ".join(sorted(state)[:3])
        raise _Mismatch(
            f"unknown key layout: no {', '.join(missing)} (expected pixelNeRF/FeatureNeRF's encoder.model.*, "
            f"mlp_coarse.*; found {example}, ...)"
        )
    for prefix, what in (
        ("global_encoder.", "a global image encoder (use_global_encoder)"),
        ("mlp_coarse.scale_z.", "SPADE latent modulation (use_spade)"),
    ):
        if any(k.startswith(prefix) for k in state):
            raise _Mismatch(f"uses {what}, which FeatureNeRF does not and this plugin does not implement")
    if any(".shortcut." in k for k in state if k.startswith("mlp_")):
        raise _Mismatch("its MLP blocks change width (shortcut layers); FeatureNeRF's keep one width")
    if "mlp_coarse.lin_z.0.weight" not in state:
        raise _Mismatch("mlp_coarse has no lin_z: a network without image features (use_encoder = false)")

    # Encoder: stage depths name the backbone; the latent width says how many levels are concatenated.
    if any(re.match(r"encoder\.model\.layer\d\.\d+\.conv3\.", k) for k in state):
        raise _Mismatch("the encoder is a bottleneck ResNet (resnet50 or larger); supported: resnet18, resnet34")
    depths = tuple(_blocks(state, f"encoder.model.layer{i}.") for i in range(1, 5))
    present = tuple(d for d in depths if d)
    backbones = [b for b, n in RESNET_BLOCKS.items() if n[: len(present)] == present]
    if not backbones:
        raise _Mismatch(
            f"encoder stages have {present} blocks, which is no resnet18 {RESNET_BLOCKS['resnet18']} "
            f"or resnet34 {RESNET_BLOCKS['resnet34']}"
        )
    d_latent = int(state["mlp_coarse.lin_z.0.weight"].shape[1])
    cumulative = [sum(LATENT_SIZES["resnet34"][: i + 1]) for i in range(5)]
    if d_latent not in cumulative:
        raise _Mismatch(
            f"mlp_coarse.lin_z takes {d_latent}-d image features; a ResNet encoder gives one of {cumulative}"
        )
    num_layers = cumulative.index(d_latent) + 1
    if num_layers > 1 and len(present) < num_layers - 1:
        raise _Mismatch(f"the MLP reads {num_layers} encoder levels but the encoder has only {len(present) + 1}")
    conf_backbone = hocon_get(conf, "model.encoder.backbone") if conf else None
    backbone = conf_backbone if conf_backbone in backbones else backbones[-1]

    hidden = int(state["mlp_coarse.lin_in.weight"].shape[0])
    num_blocks = _blocks(state, "mlp_coarse.blocks.")
    num_lin_z = _blocks(state, "mlp_coarse.lin_z.")
    if num_lin_z > num_blocks:
        raise _Mismatch(f"mlp_coarse has {num_lin_z} lin_z layers but only {num_blocks} blocks")
    conf_combine = _conf_value(conf, "model.mlp_coarse.combine_layer", num_blocks, int) if conf else num_blocks
    combine_layer = num_lin_z if num_lin_z < num_blocks else max(num_blocks, conf_combine)

    # Input: positional code of the point (input included) plus, optionally, the raw view direction.
    d_in = int(state["mlp_coarse.lin_in.weight"].shape[1])
    freqs = state.get("code._freqs")
    if freqs is not None:
        f = freqs.reshape(-1)[::2].double()
        num_freqs = int(f.numel())
        freq_factor = float(f[0]) if num_freqs else 1.5
        if num_freqs and not torch.allclose(f, freq_factor * 2.0 ** torch.arange(num_freqs, dtype=torch.float64)):
            raise _Mismatch(f"code._freqs {freqs.reshape(-1).tolist()} are not a doubling series")
        use_viewdirs = d_in == 3 + 6 * num_freqs + 3
        if not use_viewdirs and d_in != 3 + 6 * num_freqs:
            raise _Mismatch(
                f"mlp_coarse.lin_in takes {d_in} inputs; {num_freqs} frequencies give "
                f"{3 + 6 * num_freqs} (+3 with view directions)"
            )
    else:
        use_viewdirs = d_in % 6 == 0
        num_freqs = (d_in - (6 if use_viewdirs else 3)) // 6
        freq_factor = _conf_value(conf, "model.code.freq_factor", 1.5, float) if conf else 1.5
        if d_in % 3 or num_freqs < 0:
            raise _Mismatch(f"mlp_coarse.lin_in takes {d_in} inputs, which fits no positional code of xyz")

    # Outputs: rgb (3), sigma (1), the distilled feature (D) and maybe the coordinate (3).
    d_out = int(state["mlp_coarse.lin_out.weight"].shape[0])
    if d_out < 4:
        raise _Mismatch(f"mlp_coarse.lin_out has {d_out} outputs; at least rgb + sigma (4) are needed")
    from_conf = regress_coord is None and conf is not None
    if from_conf:
        regress_coord = _conf_value(conf, "model.regress_coord", False, bool)
    if regress_coord is None:
        if d_out == 4:
            regress_coord = False
        elif d_out - 7 in KNOWN_TEACHER_DIMS:
            regress_coord = True
        elif d_out - 4 in KNOWN_TEACHER_DIMS:
            regress_coord = False
        else:
            raise _Mismatch(
                f"cannot tell whether the last 3 of mlp_coarse.lin_out's {d_out} outputs are the coordinate head: "
                "pass the model's .conf (--config) or --regress-coord true/false"
            )
        notes.append(f"read {'a' if regress_coord else 'no'} coordinate head from the output size ({d_out})")
    feature_dim = d_out - 4 - (3 if regress_coord else 0)
    if feature_dim < 0:
        kind = " (rgb + sigma: a pixelNeRF network)" if d_out == 4 else ""
        raise _Mismatch(
            f"{'model.regress_coord = true but ' if from_conf else ''}mlp_coarse.lin_out has {d_out} outputs{kind}, "
            "too few for rgb, sigma and a coordinate head",
            in_conf=from_conf,
        )

    fine_keys = [k for k in state if k.startswith("mlp_fine.")]
    if not fine_keys:
        share_mlp = True
    else:
        pairs = [(k, "mlp_coarse." + k[len("mlp_fine.") :]) for k in fine_keys]
        unmatched = [k for k, c in pairs if c not in state or state[c].shape != state[k].shape]
        if unmatched or len(fine_keys) != sum(k.startswith("mlp_coarse.") for k in state):
            raise _Mismatch(f"mlp_fine is shaped differently from mlp_coarse ({(unmatched or fine_keys)[0]})")
        share_mlp = all(torch.equal(state[k], state[c]) for k, c in pairs)

    use_first_pool = True
    if conf is not None:
        use_first_pool = _conf_value(conf, "model.encoder.use_first_pool", True, bool)
    else:
        notes.append("no config: assumed the encoder's first max-pool is used (pixelNeRF's sn64 config skips it)")

    arch = Architecture(
        backbone=backbone,
        num_layers=num_layers,
        use_first_pool=use_first_pool,
        hidden_dim=hidden,
        num_blocks=num_blocks,
        combine_layer=combine_layer,
        num_freqs=num_freqs,
        freq_factor=freq_factor,
        use_viewdirs=use_viewdirs,
        feature_dim=feature_dim,
        regress_coord=bool(regress_coord),
        share_mlp=share_mlp,
    )
    if conf is not None:
        try:
            _check_conf(conf, arch, len(present) > 0)
        except _Mismatch:
            raise
        except (TypeError, ValueError) as e:  # a model setting that is not a number where one is needed
            raise _Mismatch(f"a model setting is malformed ({e})", in_conf=True) from None
    return arch


def _check_conf(conf: dict, arch: Architecture, backbone_known: bool) -> None:
    """Every model setting of the config either matches the weights or is one this plugin implements."""

    def get(key: str, default: Any) -> Any:
        return hocon_get(conf, f"model.{key}", default)

    def flag(key: str, default: bool) -> bool:
        return _conf_value(conf, f"model.{key}", default, bool)

    def contradict(key: str, conf_value: Any, weights: str) -> _Mismatch:
        return _Mismatch(f"model.{key} = {conf_value} but the checkpoint's weights have {weights}", in_conf=True)

    unsupported = {
        "use_encoder": (True, "a network without image features"),
        "use_xyz": (True, "z-only inputs"),
        "use_code": (True, "no positional code"),
        "use_code_viewdirs": (False, "a positional code of the view direction"),
        "canon_xyz": (False, "world-frame inputs (canon_xyz)"),
        "normalize_z": (True, "camera-frame translation of the encoded point (normalize_z = false)"),
        "use_global_encoder": (False, "a global image encoder"),
        "code.include_input": (True, "a positional code without the raw point"),
    }
    for key, (needed, what) in unsupported.items():
        if flag(key, needed) != needed:
            raise _Mismatch(f"model.{key} = {not needed}: {what} is not implemented here", in_conf=True)
    model_type = str(get("type", "pixelnerf"))
    if model_type not in ("pixelnerf", "pixelnerfembed"):
        raise _Mismatch(f"model.type = {model_type}: only pixelnerf and pixelnerfembed are supported", in_conf=True)
    for mlp in ("mlp_coarse", "mlp_fine"):
        if get(f"{mlp}.type", "resnet") not in ("resnet", "empty") or float(get(f"{mlp}.beta", 0.0)) > 0:
            raise _Mismatch(f"model.{mlp}: only the ReLU ResnetFC MLP is supported", in_conf=True)
        if str(get(f"{mlp}.combine_type", "average")) != "average":
            raise _Mismatch(f"model.{mlp}.combine_type: only 'average' is supported", in_conf=True)
    enc_checks = {
        "encoder.type": ("spatial", str),
        "encoder.index_interp": ("bilinear", str),
        "encoder.index_padding": ("border", str),
        "encoder.upsample_interp": ("bilinear", str),
        "encoder.feature_scale": (1.0, float),
    }
    for key, (needed, cast) in enc_checks.items():
        if cast(get(key, needed)) != needed:
            raise _Mismatch(f"model.{key} = {get(key, needed)}: only {needed} is supported", in_conf=True)

    checks = [
        ("encoder.num_layers", int(get("encoder.num_layers", 4)), arch.num_layers, f"{arch.num_layers} encoder levels"),
        ("mlp_coarse.d_hidden", int(get("mlp_coarse.d_hidden", 128)), arch.hidden_dim, f"width {arch.hidden_dim}"),
        ("mlp_coarse.n_blocks", int(get("mlp_coarse.n_blocks", 5)), arch.num_blocks, f"{arch.num_blocks} blocks"),
        ("code.num_freqs", int(get("code.num_freqs", 6)), arch.num_freqs, f"{arch.num_freqs} frequencies"),
        (
            "use_viewdirs",
            flag("use_viewdirs", False),
            arch.use_viewdirs,
            "view directions" if arch.use_viewdirs else "no view directions",
        ),
    ]
    if backbone_known:
        checks.append(("encoder.backbone", str(get("encoder.backbone", "resnet34")), arch.backbone, arch.backbone))
    combine = int(get("mlp_coarse.combine_layer", 1000))
    if min(combine, arch.num_blocks) != min(arch.combine_layer, arch.num_blocks):
        raise contradict(
            "mlp_coarse.combine_layer", combine, f"{min(arch.combine_layer, arch.num_blocks)} lin_z layers"
        )
    if abs(float(get("code.freq_factor", 1.5)) - arch.freq_factor) > 1e-6 * arch.freq_factor:
        raise contradict(
            "code.freq_factor", get("code.freq_factor", 1.5), f"code._freqs starting at {arch.freq_factor}"
        )
    if model_type == "pixelnerfembed":
        checks.append(
            (
                "d_embed",
                int(get("d_embed", 0)),
                arch.feature_dim,
                f"a {arch.feature_dim}-d feature head ({4 + arch.feature_dim + 3 * arch.regress_coord} outputs)",
            )
        )
    elif arch.feature_dim:
        raise contradict("type", model_type, f"a {arch.feature_dim}-d feature head (a pixelnerfembed network)")
    for key, conf_value, weights_value, weights in checks:
        if conf_value != weights_value:
            raise contradict(key, conf_value, weights)
    if flag("share_mlp", False) and not arch.share_mlp:
        raise contradict("share_mlp", "true", "different mlp_coarse and mlp_fine tensors")


def _settings(conf: dict, conf_path: Path | None, notes: list[str]) -> tuple[dict[str, Any], bool]:
    """Renderer and loss settings of a config, as model config fields."""
    where = conf_path if conf_path is not None else Path("config")
    try:
        n_coarse = int(hocon_get(conf, "renderer.n_coarse", 128))
        n_fine = int(hocon_get(conf, "renderer.n_fine", 0))
        n_fine_depth = int(hocon_get(conf, "renderer.n_fine_depth", 0))
        settings = {
            "num_coarse_samples": n_coarse,
            "num_fine_samples": n_fine,
            "num_fine_depth_samples": n_fine_depth,
            "depth_std": float(hocon_get(conf, "renderer.depth_std", 0.01)),
            "lambda_rgb_coarse": float(hocon_get(conf, "loss.lambda_coarse", 1.0)),
            "lambda_rgb_fine": float(hocon_get(conf, "loss.lambda_fine", 1.0)),
            "lambda_distill": float(hocon_get(conf, "loss.lambda_embed", 1.0)),
            "lambda_coord": float(hocon_get(conf, "loss.lambda_coord", 0.0)),
        }
        white = as_bool(hocon_get(conf, "renderer.white_bkgd", False), "renderer.white_bkgd")
    except (TypeError, ValueError) as e:
        raise DataError(where, f"renderer/loss settings: {e}") from None
    if n_fine_depth > n_fine:
        raise DataError(where, f"renderer.n_fine_depth = {n_fine_depth} exceeds renderer.n_fine = {n_fine}")
    if hocon_get(conf, "renderer.sched"):
        notes.append("renderer.sched (a sample-count schedule) is ignored: the final counts are used")
    for key in ("loss.rgb.use_l1", "loss.rgb_fine.use_l1"):
        try:
            use_l1 = _conf_value(conf, key, False, bool)
        except _Mismatch as e:
            raise DataError(where, str(e)) from None
        if use_l1:
            notes.append(f"{key} = true is ignored: fine-tuning here uses the MSE photometric loss")
    return settings, white


# --------------------------------------------------------------------------------------------- mapping
def to_model_state(ckpt: AuthorsCheckpoint, own_keys: Mapping[str, Any]) -> tuple[dict[str, Tensor], list[str]]:
    """The checkpoint's tensors under this model's parameter names, and the authors' keys left unused
    (``mlp_fine`` of a shared MLP is the same tensors as ``mlp_coarse``, not counted as unused).

    Args:
        ckpt: the checkpoint read by :func:`read_authors_checkpoint`.
        own_keys: the state dict (or its keys) of a model built with ``ckpt.architecture``.

    Raises:
        DataError: when a tensor the model needs is missing or misshapen.
    """
    mapped: dict[str, Tensor] = {}
    unused: list[str] = []
    shared = ckpt.architecture.share_mlp
    for key, value in ckpt.state.items():
        if key.startswith("mlp_coarse."):
            ours = "field.mlp." + key[len("mlp_coarse.") :]
        elif key.startswith("mlp_fine."):
            ours = None if ckpt.architecture.share_mlp else "field.mlp_fine." + key[len("mlp_fine.") :]
        elif key.startswith("encoder."):
            ours = key
        else:
            ours = None
        if ours is not None and ours in own_keys:
            mapped[ours] = value
        elif key not in ("code._freqs", "code._phases") and not (key.startswith("mlp_fine.") and shared):
            unused.append(key)
    missing = sorted(k for k in own_keys if k not in mapped and _is_weight(k))
    if missing:
        raise DataError(
            ckpt.path, f"has no tensor for {missing[0]}" + (f" (and {len(missing) - 1} more)" if missing[1:] else "")
        )
    return mapped, unused


def _is_weight(key: str) -> bool:
    return key.startswith(("encoder.", "field."))


def authors_view_of_model_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """This model's field/encoder tensors under the authors' names (the inverse of :func:`to_model_state`)."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.").removeprefix("_model.").removeprefix("module.")
        if key.startswith("field.mlp_fine."):
            out["mlp_fine." + key[len("field.mlp_fine.") :]] = value
        elif key.startswith("field.mlp."):
            out["mlp_coarse." + key[len("field.mlp.") :]] = value
        elif key.startswith("encoder."):
            out[key] = value
    return out


def architecture_of_model_state(state: Mapping[str, Tensor], regress_coord: bool) -> Architecture | None:
    """The network a checkpoint of this plugin holds, or None when its tensors fit no supported network."""
    try:
        return _infer(authors_view_of_model_state(state), None, regress_coord, [])
    except _Mismatch:
        return None


def differing_options(checkpoint: Architecture, current: Architecture) -> list[str]:
    """``ns-train`` options (``--option value``) that turn ``current``'s network into ``checkpoint``'s."""
    theirs, ours = checkpoint.options(), current.options()
    return [f"{k} {_cli_value(theirs[k])}" for k in theirs if theirs[k] != ours[k]]


def mismatch_message(checkpoint: Architecture, current: Architecture) -> str:
    """The ``ns-train`` options whose values differ between a checkpoint's network and a run's."""
    theirs, ours = checkpoint.options(), current.options()
    differ = [k for k in theirs if theirs[k] != ours[k]]
    if not differ:
        return ""
    now = ", ".join(f"{k.rsplit('.', 1)[-1]} {_cli_value(ours[k])}" for k in differ)
    return f"pass {' '.join(differing_options(checkpoint, current))} (this run has {now})"


def _cli_value(value: Any) -> str:
    return str(value) if not isinstance(value, float) else f"{value:g}"


def require_fits(ckpt: AuthorsCheckpoint, wanted: str) -> None:
    """Refuse to use a checkpoint as a method it cannot be (a pixelNeRF network as a distilled-feature model)."""
    if wanted == "featurenerf" and ckpt.kind != "featurenerf":
        raise UserError(
            f"{ckpt.path}: a pixelNeRF checkpoint (rgb and density only, no distilled feature head) cannot be imported "
            "as --method featurenerf; import it as --method featurenerf-nerf-feature (the 'NeRF feature' baseline)"
        )
