"""DINO teacher: the facet equals the hand-computed projection, loading formats, masking, errors."""

from __future__ import annotations

import math
import urllib.error

import pytest
import timm
import torch
import torch.nn.functional as F

from featurenerf_ns.teachers.base import IMAGENET_MEAN, IMAGENET_STD, TeacherUnavailableError
from featurenerf_ns.teachers.dino import DinoTeacherConfig
from featurenerf_ns.utils.io import DataError
from tests.teachers.teacher_helpers import TINY_ARCH, tiny_vit


def _config(weights, **kw) -> DinoTeacherConfig:
    return DinoTeacherConfig(weights=weights, arch=dict(TINY_ARCH), input_size=32, **kw)


def _normalise(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _block_input(vit, x: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and output of ``blocks[layer]`` captured by hooks while timm's own forward runs."""
    seen = {}
    h1 = vit.blocks[layer].register_forward_pre_hook(lambda m, a: seen.__setitem__("in", a[0]))
    h2 = vit.blocks[layer].register_forward_hook(lambda m, a, o: seen.__setitem__("out", o))
    vit.forward_features(x)
    h1.remove()
    h2.remove()
    return seen["in"], seen["out"]


@pytest.mark.parametrize("facet,index", [("query", 0), ("key", 1), ("value", 2)])
def test_facet_equals_qkv_projection_of_block_input(tiny_vit_file, facet, index):
    teacher = _config(tiny_vit_file, facet=facet).setup()
    rgba = torch.rand(2, 4, 32, 32)
    rgba[:, 3] = 1.0  # opaque: no compositing change, no masking
    out = teacher(rgba)
    assert out.shape == (2, 48, 4, 4) and out.dtype == torch.float32

    ref = tiny_vit()  # same seed = same weights as the saved file, but built independently
    x_in, _ = _block_input(ref, _normalise(rgba[:, :3]), 9)
    blk = ref.blocks[9]
    qkv = blk.attn.qkv(blk.norm1(x_in))  # (B, 1 + 16, 3 * 48), laid out (3, heads, head_dim)
    want = qkv[:, 1:, index * 48 : (index + 1) * 48].transpose(1, 2).reshape(2, 48, 4, 4)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    # Heads concatenated head-major, as the authors' reshape of (B, heads, tokens, head_dim).
    per_head = qkv[:, 1:].reshape(2, 16, 3, 3, 16)[:, :, index]  # (B, T, heads, head_dim)
    torch.testing.assert_close(out[:, 16:32].flatten(2), per_head[:, :, 1].transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_token_facet_and_other_layer(tiny_vit_file):
    rgba = torch.rand(1, 4, 32, 32)
    rgba[:, 3] = 1.0
    ref = tiny_vit()
    _, x_out = _block_input(ref, _normalise(rgba[:, :3]), 4)
    out = _config(tiny_vit_file, facet="token", layer=4).setup()(rgba)
    torch.testing.assert_close(out, x_out[:, 1:].transpose(1, 2).reshape(1, 48, 4, 4), atol=1e-5, rtol=1e-5)


def test_background_cells_zeroed_with_nearest_mask(tiny_vit_file):
    teacher = _config(tiny_vit_file).setup()
    rgba = torch.rand(1, 4, 16, 16)
    rgba[:, 3] = 0.0
    rgba[:, 3, 4:12, 0:8] = 0.5
    out = teacher(rgba)  # 16 px -> resized to 32 -> 4x4 map; the mask is taken from the 16-px alpha
    fg = F.interpolate(rgba[:, 3:], size=(4, 4), mode="nearest")[0, 0] > 0
    assert fg.any() and (~fg).any()
    assert (out[0][:, ~fg] == 0).all()
    assert (out[0][:, fg].abs().sum(0) > 0).all()


def test_background_compositing(tiny_vit_file):
    rgba = torch.rand(1, 4, 32, 32)
    rgba[:, 3] = (torch.rand(32, 32) > 0.5).float()
    rgba[:, 3, :8, :8] = 1.0
    black = _config(tiny_vit_file, zero_background=False, background="black").setup()(rgba)
    stored = _config(tiny_vit_file, zero_background=False).setup()(rgba)  # the default: as the authors'
    assert DinoTeacherConfig().background == "as-stored"
    by_hand = _config(tiny_vit_file, zero_background=False, background="as-stored").setup()(
        torch.cat([rgba[:, :3] * rgba[:, 3:], torch.ones_like(rgba[:, 3:])], 1)
    )
    torch.testing.assert_close(black, by_hand)
    assert not torch.allclose(black, stored)


def test_pos_embed_interpolated_for_larger_input(tiny_vit_file):
    teacher = _config(tiny_vit_file).setup()
    teacher.config.input_size = 64  # 8x8 grid from the 4x4 the weights were trained for
    out = teacher(torch.ones(1, 4, 64, 64))
    assert out.shape == (1, 48, 8, 8)
    pos = teacher.vit.pos_embed
    assert teacher.pos_embed(4, 4) is pos
    grid = pos[:, 1:].reshape(1, 4, 4, 48).permute(0, 3, 1, 2)
    want = F.interpolate(grid, scale_factor=(8.1 / 4, 8.1 / 4), mode="bicubic")
    got = teacher.pos_embed(8, 8)
    torch.testing.assert_close(got[:, 1:], want.permute(0, 2, 3, 1).reshape(1, 64, 48))
    torch.testing.assert_close(got[:, :1], pos[:, :1])


def test_default_map_is_32x32_for_256_px(tmp_path):
    """Real-size ViT-S/8 (random weights): 224-px weights resampled to the 256-px input -> 384 x 32 x 32."""
    teacher = DinoTeacherConfig(random_init=True).setup()
    assert teacher.dim == 384 and teacher.map_size == 32 and teacher.patch_size == 8
    assert math.isclose(teacher.vit.pos_embed.shape[1], 28 * 28 + 1)
    assert teacher.pos_embed(32, 32).shape == (1, 32 * 32 + 1, 384)


@pytest.mark.parametrize("wrap", ["plain", "module", "teacher", "model"])
def test_loads_dino_checkpoint_formats(tmp_path, wrap):
    sd = tiny_vit(seed=3).state_dict()
    if wrap == "module":
        sd = {f"module.{k}": v for k, v in sd.items()}
    elif wrap == "teacher":  # DINO training checkpoint: backbone + projection head, DDP prefixes
        head = {"head.mlp.0.weight": torch.zeros(8, 48), "head.last_layer.weight_g": torch.ones(8, 1)}
        sd = {"teacher": {**{f"backbone.{k}": v for k, v in sd.items()}, **head}, "epoch": 100}
    elif wrap == "model":
        sd = {"model": sd}
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    teacher = _config(path).setup()
    torch.testing.assert_close(teacher.vit.blocks[9].attn.qkv.weight, tiny_vit(seed=3).blocks[9].attn.qkv.weight)


def test_wrong_or_missing_weights_file_is_one_line(tmp_path):
    with pytest.raises(DataError, match="not found"):
        _config(tmp_path / "nope.pth").setup()
    bad = tmp_path / "bad.pth"
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(DataError, match="do not fit") as e:
        _config(bad).setup()
    assert "\n" not in str(e.value)


def test_no_weights_names_the_file_and_downloads_only_when_asked(monkeypatch, tmp_path):
    downloads = []

    def offline(url, dst, *args, **kwargs):
        downloads.append(url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    with pytest.raises(TeacherUnavailableError) as e:
        DinoTeacherConfig().setup()
    msg = str(e.value)
    assert "\n" not in msg and "dino_deitsmall8_pretrain.pth" in msg and "--teacher.weights" in msg
    assert "--teacher.allow-download" in msg and str(tmp_path / "checkpoints") in msg
    assert downloads == []
    with pytest.raises(TeacherUnavailableError) as e:
        DinoTeacherConfig(allow_download=True).setup()
    assert downloads == [timm.models.get_pretrained_cfg("vit_small_patch8_224_dino")["url"]]
    assert "could not be downloaded (URLError)" in str(e.value) and "\n" not in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_weights_in_the_hub_cache_are_used(monkeypatch, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save(tiny_vit(seed=5).state_dict(), tmp_path / "checkpoints" / "dino_deitsmall8_pretrain.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    teacher = DinoTeacherConfig(arch=dict(TINY_ARCH), input_size=32).setup()
    torch.testing.assert_close(teacher.vit.blocks[9].attn.qkv.weight, tiny_vit(seed=5).blocks[9].attn.qkv.weight)


def test_fingerprint_names_weights_hash_and_settings(tiny_vit_file):
    fp = _config(tiny_vit_file).fingerprint()
    assert fp["weights"].startswith("sha256:") and fp["layer"] == 9 and fp["facet"] == "key"
    assert fp != _config(tiny_vit_file, layer=8).fingerprint()
    assert DinoTeacherConfig().fingerprint()["weights"] == "timm:vit_small_patch8_224_dino"
    assert "vit_small_patch8_224_dino" in timm.list_models()
