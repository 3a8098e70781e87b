"""Tiny random teachers saved in the formats the real loading code reads, and a tiny category (helpers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TINY_ARCH = dict(embed_dim=48, depth=10, num_heads=3, img_size=32)
"""ViT with patch 8 (from vit_small_patch8_224_dino), 10 blocks so that block 9 exists."""


def tiny_vit(seed: int = 0):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    vit = VisionTransformer(patch_size=8, num_classes=0, qkv_bias=True, **TINY_ARCH)
    # timm initialises biases and LayerNorms to constants; randomise them so the test sees their use.
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return vit.eval()


@pytest.fixture(scope="session")
def tiny_vit_file(tmp_path_factory) -> Path:
    """A tiny ViT's state dict with DINO's official key names (same names as timm's)."""
    path = tmp_path_factory.mktemp("dino") / "tiny_dino.pth"
    torch.save(tiny_vit().state_dict(), path)
    return path


TINY_DINOV2 = dict(hidden_size=48, num_hidden_layers=10, num_attention_heads=3, intermediate_size=96, image_size=56)
"""DINOv2 with patch 14 trained at 56 px (a 4x4 grid), 10 blocks so that block 9 exists."""


def tiny_dinov2(seed: int = 0):
    """A tiny random transformers ``Dinov2Model`` with every parameter random (LayerNorms, biases, layer scales)."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(patch_size=14, **TINY_DINOV2))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "lambda" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_dinov2_folder(tmp_path_factory) -> Path:
    """A tiny DINOv2 saved with ``save_pretrained`` (config.json + model.safetensors)."""
    folder = tmp_path_factory.mktemp("dinov2") / "tiny-dinov2"
    tiny_dinov2().save_pretrained(folder)
    return folder


def _tiny_tokenizer_files():
    """A CLIP BPE vocabulary just big enough for the category names."""
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz"))
    tokens = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars] + ["ch"]
    vocab = {t: i for i, t in enumerate(tokens)}
    return vocab, [("c", "h")]


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory) -> Path:
    """A tiny latent diffusion model in the diffusers pipeline folder layout."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny_sd")
    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    ).save_pretrained(folder / "unet")
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    ).save_pretrained(folder / "vae")
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=60,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).save_pretrained(folder / "text_encoder")
    vocab, merges = _tiny_tokenizer_files()
    CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16).save_pretrained(folder / "tokenizer")
    DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    ).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionPipeline", "_name_or_path": "tiny-sd"})
    )
    return folder


def make_category(
    root: Path, synset: str = "03001627", n_objects: int = 5, n_views: int = 3, size: int = 16, seed: int = 0
):
    """``<root>/img/<synset>/<id>/*.png`` RGBA with a foreground square, and the split file."""
    rng = np.random.default_rng(seed)
    ids = [f"obj{i:02d}" for i in range(n_objects)]
    for obj_id in ids:
        d = root / "img" / synset / obj_id
        d.mkdir(parents=True)
        for v in range(n_views):
            img = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
            img[..., 3] = 0
            lo = rng.integers(0, size // 2)
            img[lo : lo + size // 2, lo : lo + size // 2, 3] = 255
            Image.fromarray(img, "RGBA").save(d / f"{v:03d}.png")
    (root / "splits").mkdir(parents=True, exist_ok=True)
    (root / "splits" / f"{synset}.json").write_text(json.dumps({"train": ids[:3], "val": ids[3:4], "test": ids[4:]}))
    return ids
