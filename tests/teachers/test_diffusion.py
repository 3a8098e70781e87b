"""Latent diffusion teacher on a tiny model saved in the diffusers pipeline layout."""

from __future__ import annotations

import pytest
import torch

from featurenerf_ns.teachers.base import TeacherUnavailableError
from featurenerf_ns.teachers.diffusion import DiffusionTeacherConfig
from featurenerf_ns.utils.io import DataError


def _config(folder, **kw) -> DiffusionTeacherConfig:
    return DiffusionTeacherConfig(model=str(folder), input_size=32, feature_size=kw.pop("feature_size", 24), **kw)


def _views(n=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    rgba = torch.rand(n, 4, size, size, generator=g)
    rgba[:, 3] = 0.0
    rgba[:, 3, 2:12, 3:13] = 1.0
    return rgba


def test_channels_and_size_as_configured(tiny_sd_folder):
    # Tiny U-Net block_out_channels (8, 16, 32, 32): up blocks output (32, 32, 16, 8) channels.
    for blocks, dim in (((2, 3), 24), ((1,), 32), ((0, 3), 40)):
        teacher = _config(tiny_sd_folder, up_blocks=blocks).setup(category="chair")
        out = teacher(_views())
        assert teacher.dim == dim and out.shape == (3, dim, 24, 24) and out.dtype == torch.float32
    assert teacher.prompt == "chair"


def test_sd15_default_is_960_channels(tiny_sd_folder):
    """The default teacher on Stable Diffusion 1.5's architecture (U-Net block_out_channels 320, 640, 1280, 1280,
    cross-attention 768; VAE 128..512, 8x downsampling; not downloadable here) returns the paper's 960 x 128 x 128
    maps: the real teacher runs on SD 1.5-shaped networks built on the meta device (shapes, no weights)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    teacher = DiffusionTeacherConfig(model=str(tiny_sd_folder)).setup(category="chair")
    with torch.device("meta"):
        teacher.unet = UNet2DConditionModel(
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8, sample_size=64
        )
        teacher.vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
            sample_size=512,
        )
    teacher._prompt_emb = torch.zeros(1, 77, 768, device="meta")
    size = teacher.config.input_size
    feats = teacher.features(torch.zeros(2, 3, size, size, device="meta"))
    assert teacher.dim == 960
    assert tuple(feats.shape) == (2, 960, 128, 128) == (2, teacher.dim, *(teacher.config.feature_size,) * 2)


def test_deterministic_and_independent_of_batching(tiny_sd_folder):
    views = _views(4)
    a = _config(tiny_sd_folder).setup(category="chair")(views)
    b = _config(tiny_sd_folder, batch_size=1).setup(category="chair")(views)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        a[2:3], _config(tiny_sd_folder).setup(category="chair")(views[2:3]), atol=1e-5, rtol=1e-4
    )
    other_seed = _config(tiny_sd_folder, seed=1).setup(category="chair")(views)
    assert not torch.allclose(a, other_seed)


def test_prompt_and_timestep_change_features(tiny_sd_folder):
    views = _views(2)
    chair = _config(tiny_sd_folder).setup(category="chair")(views)
    car = _config(tiny_sd_folder).setup(category="car")(views)
    early = _config(tiny_sd_folder, timestep=10).setup(category="chair")(views)
    assert not torch.allclose(chair, car) and not torch.allclose(chair, early)
    assert _config(tiny_sd_folder).fingerprint("car")["prompt"] == "car"


def test_background_zeroed(tiny_sd_folder):
    views = _views(1)
    out = _config(tiny_sd_folder, feature_size=16).setup(category="chair")(views)
    fg = views[0, 3] > 0
    assert (out[0][:, ~fg] == 0).all() and (out[0][:, fg].abs().sum(0) > 0).all()


def test_ensemble_averages_noise_draws(tiny_sd_folder):
    views = _views(2)
    teacher = _config(tiny_sd_folder, ensemble=3, zero_background=False).setup(category="chair")
    draws = teacher.noise((4, 16, 16))
    assert draws.shape == (3, 4, 16, 16)
    out = teacher(views)
    singles = []
    teacher.config.ensemble = 1
    for d in draws:
        teacher.noise = lambda shape, d=d: d[None]
        singles.append(teacher(views))
    torch.testing.assert_close(out, torch.stack(singles).mean(0), atol=1e-5, rtol=1e-4)


def test_missing_model_is_one_line(tmp_path):
    with pytest.raises(TeacherUnavailableError) as e:
        DiffusionTeacherConfig(model="nobody/no-such-model").setup(category="chair")
    msg = str(e.value)
    assert "\n" not in msg and "--teacher.model" in msg and "stable-diffusion-v1-5" in msg
    assert "local Hugging Face cache" in msg and "--teacher.allow-download" in msg
    (tmp_path / "unet").mkdir()
    with pytest.raises(DataError, match="missing vae/"):
        DiffusionTeacherConfig(model=str(tmp_path)).setup(category="chair")


def test_bad_settings(tiny_sd_folder):
    with pytest.raises(ValueError, match="up_blocks"):
        _config(tiny_sd_folder, up_blocks=(4,)).setup()
    with pytest.raises(ValueError, match="timestep"):
        _config(tiny_sd_folder, timestep=1000).setup()
