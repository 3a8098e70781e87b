"""Latent Diffusion teacher: U-Net decoder features of a noised image, prompted with the class name.

The authors released no extraction code; the paper says: noise is added to the image, the U-Net is
conditioned on the class-name prompt ("chair"), 4th-layer decoder features are used, 960 channels,
128x128 map. With Stable Diffusion v1.x (U-Net ``block_out_channels = (320, 640, 1280, 1280)``) the
decoder's up blocks output, for a 512-px image (64x64 latent)::

    up_blocks[0]: 1280 ch @ 16x16   (after its upsampler)
    up_blocks[1]: 1280 ch @ 32x32
    up_blocks[2]:  640 ch @ 64x64
    up_blocks[3]:  320 ch @ 64x64   (the last block has no upsampler)

The default concatenates the outputs of ``up_blocks[2]`` and ``up_blocks[3]`` (640 + 320 = 960 ch,
both at the latent resolution; the same 960 channels enter the 4th up block's first resnet as
``up_blocks[2]`` output + its skip connection) and resizes them bilinearly to 128x128. ``input_size=1024``
gives 128x128 natively.

Steps: RGBA -> composite (black) -> resize to ``input_size`` -> VAE encoder mean x scaling factor ->
``scheduler.add_noise`` at ``timestep`` with noise drawn once from ``seed`` (on CPU, so the same on
every device and for every view, whatever the batching or sharding) -> U-Net with the prompt's CLIP
text embedding -> selected up-block outputs -> ``feature_size``. With ``ensemble > 1`` features are
averaged over that many noise draws (as DIFT does).

Weights: a local folder in the diffusers pipeline layout (``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``) or a hub name, read from the local Hugging Face cache; the hub is contacted
only when ``allow_download`` asks for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from featurenerf_ns.teachers.base import (
    Teacher,
    TeacherConfig,
    TeacherUnavailableError,
    hugging_face_hub,
    run_until,
)
from featurenerf_ns.utils.io import DataError

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class DiffusionTeacherConfig(TeacherConfig):
    """Stable Diffusion U-Net decoder features (defaults: 960 x 128 x 128, the paper's shape)."""

    _target: type = field(default_factory=lambda: DiffusionTeacher)
    folder: str = "diffusion_feat_128"
    """Default cache folder."""
    model: str = SD15
    """A local folder in the diffusers pipeline layout (unet/, vae/, text_encoder/, tokenizer/, scheduler/), or a
    hub name read from the local Hugging Face cache ($HF_HOME/hub)."""
    allow_download: bool = False
    """Download a hub name that is not in the local Hugging Face cache. Off by default: without it nothing reaches
    for the network, and a missing model stops the run with one line naming what to get."""
    up_blocks: tuple[int, ...] = (2, 3)
    """Decoder (up) blocks whose outputs are concatenated; (2, 3) = 640 + 320 = 960 channels for SD 1.x."""
    timestep: int = 261
    """Diffusion timestep of the added noise (0 = clean latent; 261 is DIFT's choice for semantic matching)."""
    seed: int = 0
    """Seed of the noise (drawn once on CPU and shared by all views)."""
    ensemble: int = 1
    """Noise draws averaged per view."""
    prompt_template: str = "{name}"
    """Prompt; ``{name}`` is the category's class name (e.g. 'chair'); empty name when there is no category."""
    input_size: int = 512
    """Side (px) of the image given to the VAE (bilinear resize); latent side = input_size / 8 for SD."""
    feature_size: int = 128
    """Side of the returned map (bilinear resize of the up-block outputs)."""
    dtype: Literal["float32", "float16"] = "float32"
    """Weights and activations; float16 halves GPU memory and time (outputs are returned as float32)."""
    batch_size: int = 8
    """Views per forward pass (memory bound, not a setting that changes values)."""

    def fingerprint(self, category: str | None = None) -> dict[str, Any]:
        return {
            **super().fingerprint(category),
            "teacher": "diffusion",
            "model": _model_id(self.model),
            "up_blocks": list(self.up_blocks),
            "timestep": self.timestep,
            "seed": self.seed,
            "ensemble": self.ensemble,
            "prompt": self.prompt(category),
            "input_size": self.input_size,
            "feature_size": self.feature_size,
            "dtype": self.dtype,
        }

    def prompt(self, category: str | None) -> str:
        return self.prompt_template.format(name=category or "").strip()


class DiffusionTeacher(Teacher):
    """VAE + U-Net + CLIP text encoder of a latent diffusion model, frozen."""

    config: DiffusionTeacherConfig

    def __init__(self, config: DiffusionTeacherConfig, category: str | None = None, device: str | torch.device = "cpu"):
        super().__init__(config, category)
        dtype = torch.float16 if config.dtype == "float16" else torch.float32
        parts = load_pipeline_parts(config.model, config.allow_download, dtype)
        self.unet, self.vae, self.text_encoder = parts["unet"], parts["vae"], parts["text_encoder"]
        for m in (self.unet, self.vae, self.text_encoder):
            m.eval().requires_grad_(False)
        self.scheduler = parts["scheduler"]
        n_up = len(self.unet.up_blocks)
        if not config.up_blocks or any(not 0 <= i < n_up for i in config.up_blocks):
            raise ValueError(f"up_blocks {config.up_blocks} out of range: the U-Net has {n_up} up blocks")
        if not 0 <= config.timestep < self.scheduler.config.num_train_timesteps:
            raise ValueError(f"timestep {config.timestep} outside [0, {self.scheduler.config.num_train_timesteps})")
        self._dtype = dtype
        self.prompt = config.prompt(category)
        tok = parts["tokenizer"]
        max_len = min(int(tok.model_max_length), int(self.text_encoder.config.max_position_embeddings))
        ids = tok(self.prompt, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
        self.register_buffer("prompt_ids", ids.input_ids, persistent=False)
        self._prompt_emb: Tensor | None = None
        self.to(device)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dim(self) -> int:
        out = list(reversed(self.unet.config.block_out_channels))
        return sum(int(out[i]) for i in self.config.up_blocks)

    @property
    def latent_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "map_size": self.config.feature_size}

    def prompt_embedding(self) -> Float[Tensor, "1 L C"]:
        if self._prompt_emb is None or self._prompt_emb.device != self.device:
            self._prompt_emb = self.text_encoder(self.prompt_ids.to(self.device))[0].to(self._dtype)
        return self._prompt_emb

    def noise(self, shape: tuple[int, ...]) -> Float[Tensor, "E C h w"]:
        g = torch.Generator(device="cpu").manual_seed(self.config.seed)
        return torch.randn((self.config.ensemble, *shape), generator=g)

    def features(self, rgb: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B D h w"]:
        cfg = self.config
        if rgb.shape[-2:] != (cfg.input_size, cfg.input_size):
            rgb = F.interpolate(rgb, size=(cfg.input_size, cfg.input_size), mode="bilinear", align_corners=False)
        x = (rgb * 2.0 - 1.0).to(self._dtype)
        latents = self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor
        b = latents.shape[0]
        noise = self.noise(tuple(latents.shape[1:])).to(self.device, latents.dtype)
        # (E, B) flattened: every view gets the same E noise draws.
        latents = latents[None].expand(cfg.ensemble, *latents.shape).reshape(-1, *latents.shape[1:])
        noise = noise[:, None].expand(-1, b, *noise.shape[1:]).reshape(latents.shape)
        t = torch.full((latents.shape[0],), cfg.timestep, device=self.device, dtype=torch.long)
        noisy = self.scheduler.add_noise(latents, noise, t)
        emb = self.prompt_embedding().expand(latents.shape[0], -1, -1)
        captured = run_until(
            lambda: self.unet(noisy, t, encoder_hidden_states=emb), [self.unet.up_blocks[i] for i in cfg.up_blocks]
        )
        size = (cfg.feature_size, cfg.feature_size)
        maps = [
            F.interpolate(c.float(), size=size, mode="bilinear", align_corners=False)
            if c.shape[-2:] != size
            else c.float()
            for c in captured
        ]
        feats = torch.cat(maps, dim=1)
        return feats.reshape(cfg.ensemble, b, *feats.shape[1:]).mean(0)


def load_pipeline_parts(model: str, allow_download: bool, dtype: torch.dtype) -> dict[str, Any]:
    """U-Net, VAE, text encoder, tokenizer and (DDPM) scheduler from a local folder or a hub name.

    A hub name is looked up in the local Hugging Face cache first; the hub is contacted only when it is
    not there and ``allow_download`` is True.

    Raises:
        TeacherUnavailableError: neither a local folder nor obtainable from the hub (one line).
        DataError: a local folder that lacks a part or cannot be read.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.utils import logging as dlogging
    from huggingface_hub.constants import HF_HUB_CACHE
    from transformers import CLIPTextModel, CLIPTokenizer

    loaders = {
        "unet": lambda src, **kw: UNet2DConditionModel.from_pretrained(src, subfolder="unet", torch_dtype=dtype, **kw),
        "vae": lambda src, **kw: AutoencoderKL.from_pretrained(src, subfolder="vae", torch_dtype=dtype, **kw),
        "text_encoder": lambda src, **kw: CLIPTextModel.from_pretrained(
            src, subfolder="text_encoder", torch_dtype=dtype, **kw
        ),
        "tokenizer": lambda src, **kw: CLIPTokenizer.from_pretrained(src, subfolder="tokenizer", **kw),
        # Any SD scheduler config has the betas; DDPM's add_noise is the forward process itself.
        "scheduler": lambda src, **kw: DDPMScheduler.from_pretrained(src, subfolder="scheduler", **kw),
    }
    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        folder = Path(model).expanduser()
        if folder.is_dir():
            missing = [p for p in _PARTS if not (folder / p).is_dir()]
            if missing:
                raise DataError(
                    folder, f"not a diffusers pipeline folder: missing {', '.join(m + '/' for m in missing)}"
                )
            try:
                with hugging_face_hub(allow_download=False):
                    return {name: load(str(folder), local_files_only=True) for name, load in loaders.items()}
            except (OSError, ValueError, KeyError) as e:
                raise DataError(
                    folder, f"cannot load the diffusion model ({type(e).__name__}: {str(e)[:160]})"
                ) from None
        try:
            with hugging_face_hub(allow_download):
                return {name: load(model, local_files_only=not allow_download) for name, load in loaders.items()}
        except Exception as e:  # hub errors come as OSError, HTTP, connection or value errors
            where = (
                "downloaded from the Hugging Face hub"
                if allow_download
                else f"found in the local Hugging Face cache ({HF_HUB_CACHE})"
            )
            raise TeacherUnavailableError(
                f"diffusion model {model!r} is not a local folder and could not be {where} ({type(e).__name__}): "
                f"download {SD15} (diffusers layout: {', '.join(p + '/' for p in _PARTS)}) and pass its folder with "
                "--teacher.model PATH (DiffusionTeacherConfig.model)"
                + ("" if allow_download else ", or let the teacher download it with --teacher.allow-download")
            ) from None
    finally:
        dlogging.set_verbosity(level)


def _model_id(model: str) -> str:
    """Identity of the model for the fingerprint: the hub name, or a local folder's configs and weight sizes.

    Weight contents are not hashed (gigabytes); configs and file sizes catch a different model.
    """
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return f"hub:{model}"
    import hashlib

    h = hashlib.sha256()
    for part in _PARTS:
        for p in sorted((folder / part).glob("*")):
            if p.is_file():
                h.update(f"{part}/{p.name}:{p.stat().st_size}".encode())
                if p.suffix in (".json", ".txt"):
                    h.update(p.read_bytes())
    name = folder.name
    try:
        name = json.loads((folder / "model_index.json").read_text()).get("_name_or_path", name) or name
    except (OSError, ValueError):
        pass
    return f"local:{name}:{h.hexdigest()[:16]}"
