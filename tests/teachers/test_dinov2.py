"""DINOv2 teacher: facets equal transformers' own activations and attention, masking, the CLI cache, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import Dinov2Model, ViTConfig, ViTModel

from featurenerf_ns.teachers.base import IMAGENET_MEAN, IMAGENET_STD, TeacherUnavailableError
from featurenerf_ns.teachers.cache import check_fingerprint, load_rgba, view_paths
from featurenerf_ns.teachers.cli import entrypoint
from featurenerf_ns.teachers.dinov2 import Dinov2TeacherConfig
from featurenerf_ns.teachers.store import open_teacher_features
from featurenerf_ns.utils.io import DataError
from tests.teachers.teacher_helpers import make_category, tiny_dinov2

SYNSET = "03001627"
HEADS, HEAD_DIM, SIDE = 3, 16, 4  # tiny_dinov2: 48 channels = 3 heads x 16; 56 px / patch 14 = 4x4 map


def _config(folder, **kw) -> Dinov2TeacherConfig:
    return Dinov2TeacherConfig(weights=folder, input_size=56, **kw)


def _opaque(n: int = 2, seed: int = 0) -> torch.Tensor:
    rgba = torch.rand(n, 4, 56, 56, generator=torch.Generator().manual_seed(seed))
    rgba[:, 3] = 1.0  # nothing composited away, nothing masked
    return rgba


def _reference(folder, rgba: torch.Tensor, **kw):
    """transformers' own forward of the saved model (loaded by transformers, not by the teacher), eager attention."""
    model = Dinov2Model.from_pretrained(folder, attn_implementation="eager").eval()
    x = (rgba[:, :3] - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model, model(pixel_values=x, output_hidden_states=True, **kw)


def _grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, 1 + 16, C) tokens -> (B, C, 4, 4) map of the patch tokens."""
    return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, SIDE, SIDE)


@pytest.mark.parametrize("facet", ["key", "query", "value", "token"])
def test_facet_equals_the_projection_of_transformers_hidden_state(tiny_dinov2_folder, facet):
    rgba = _opaque()
    out = _config(tiny_dinov2_folder, facet=facet).setup()(rgba)
    assert out.shape == (2, 48, SIDE, SIDE) and out.dtype == torch.float32
    model, ref = _reference(tiny_dinov2_folder, rgba)
    # hidden_states[i] is the input of block i (0 = the embeddings), hidden_states[i + 1] its output.
    block, x_in = model.encoder.layer[9], ref.hidden_states[9]
    attn = block.attention
    with torch.no_grad():
        want = {
            "key": lambda: attn.k_proj(block.norm1(x_in)),
            "query": lambda: attn.q_proj(block.norm1(x_in)),
            "value": lambda: attn.v_proj(block.norm1(x_in)),
            "token": lambda: ref.hidden_states[10],
        }[facet]()
    torch.testing.assert_close(out, _grid(want), atol=1e-5, rtol=1e-5)


def test_query_and_key_facets_reproduce_transformers_attention(tiny_dinov2_folder):
    """Head layout: per head, q_i . (k_j - k_0) * scale is the log-ratio of transformers' attention probabilities
    between patch tokens j and 0 (the class token drops out of the ratio)."""
    rgba = _opaque(1, seed=1)
    q = _config(tiny_dinov2_folder, facet="query").setup()(rgba)[0].flatten(1)  # (48, 16 patches)
    k = _config(tiny_dinov2_folder, facet="key").setup()(rgba)[0].flatten(1)
    _, ref = _reference(tiny_dinov2_folder, rgba, output_attentions=True)
    probs = ref.attentions[9][0, :, 1:, 1:]  # (heads, query patch, key patch)
    for h in range(HEADS):
        qh, kh = q[h * HEAD_DIM : (h + 1) * HEAD_DIM].T, k[h * HEAD_DIM : (h + 1) * HEAD_DIM].T  # (16, head_dim)
        logits = qh @ kh.T * HEAD_DIM**-0.5
        torch.testing.assert_close(logits - logits[:, :1], probs[h].log() - probs[h, :, :1].log(), atol=1e-4, rtol=1e-4)
    # The wrong layout (channels interleaved across heads) does not fit: the check can fail.
    wrong = q.view(HEAD_DIM, HEADS, -1)[:, 0].T @ k.view(HEAD_DIM, HEADS, -1)[:, 0] * HEAD_DIM**-0.5
    assert not torch.allclose(wrong - wrong[:, :1], probs[0].log() - probs[0, :, :1].log(), atol=1e-2)


def test_background_composited_on_black_and_cells_zeroed(tiny_dinov2_folder):
    rgba = torch.rand(1, 4, 28, 28, generator=torch.Generator().manual_seed(2))
    rgba[:, 3] = 0.0
    rgba[:, 3, 7:21, 0:14] = 0.5
    teacher = _config(tiny_dinov2_folder).setup()
    out = teacher(rgba)  # 28 px -> resized to 56 -> 4x4 map; the mask is taken from the 28-px alpha
    fg = F.interpolate(rgba[:, 3:], size=(SIDE, SIDE), mode="nearest")[0, 0] > 0
    assert fg.any() and (~fg).any()
    assert (out[0][:, ~fg] == 0).all() and (out[0][:, fg].abs().sum(0) > 0).all()
    # The default composites on black: the same as an opaque premultiplied image.
    premultiplied = torch.cat([rgba[:, :3] * rgba[:, 3:], torch.ones_like(rgba[:, 3:])], 1)
    full = _config(tiny_dinov2_folder, zero_background=False).setup()
    torch.testing.assert_close(full(rgba), full(premultiplied))
    assert not torch.allclose(
        full(rgba), _config(tiny_dinov2_folder, zero_background=False, background="white").setup()(rgba)
    )


def test_cli_extracts_into_the_cache_reuses_it_and_refuses_other_settings(tmp_path, tiny_dinov2_folder, capsys):
    root = tmp_path / "shapenet"
    ids = make_category(root, SYNSET, n_objects=5, n_views=3, size=28)
    base = ["dinov2", "--data", str(root / "chair"), "--teacher.weights", str(tiny_dinov2_folder), "--no-progress"]
    base += ["--teacher.input-size", "56"]
    entrypoint(base + ["--shard", "1/2"])
    folder = root / "dinov2_feat_448" / SYNSET
    assert sorted(p.stem for p in folder.glob("*.npy")) == ids[1::2]
    entrypoint(base)
    assert "3 objects extracted, 2 already cached" in capsys.readouterr().out
    teacher = _config(tiny_dinov2_folder).setup(category="chair")
    for obj_id in ids:
        rgba = torch.from_numpy(load_rgba(view_paths(root / "img" / SYNSET / obj_id)))
        cached = open_teacher_features(folder / f"{obj_id}.npy").read(range(3))
        assert cached.shape == (3, 48, SIDE, SIDE)
        np.testing.assert_allclose(cached, teacher(rgba).numpy(), rtol=2e-3, atol=2e-3)  # float16 storage
    assert check_fingerprint(folder, _config(tiny_dinov2_folder).fingerprint("chair"))["teacher"] == "dinov2"
    entrypoint(base)
    assert "0 objects extracted, 5 already cached" in capsys.readouterr().out

    # Another block, or other weights in another folder: refused in one line; --overwrite recomputes.
    other = tmp_path / "other-dinov2"
    tiny_dinov2(seed=1).save_pretrained(other)
    capsys.readouterr()  # save_pretrained's progress bar
    for option, value, diff in (
        ("--teacher.layer", "8", "layer: 9 != 8"),
        ("--teacher.weights", str(other), "weights"),
    ):
        with pytest.raises(SystemExit) as e:
            entrypoint(base + [option, value])
        assert e.value.code != 0
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and str(folder / "teacher.json") in err and diff in err
    before = open_teacher_features(folder / f"{ids[0]}.npy").read([0])
    entrypoint(base + ["--teacher.layer", "8", "--overwrite"])
    after = open_teacher_features(folder / f"{ids[0]}.npy").read([0])
    assert np.abs(after - before).max() > 0.1
    assert check_fingerprint(folder, {"teacher": "dinov2", "layer": 8, "dim": 48, "map_size": SIDE})


def test_missing_or_wrong_weights_are_one_line(tmp_path):
    with pytest.raises(TeacherUnavailableError) as e:
        Dinov2TeacherConfig(model_name="nobody/no-such-dinov2").setup()
    msg = str(e.value)
    assert "\n" not in msg and "--teacher.weights DIR" in msg and "--teacher.allow-download" in msg
    assert "nobody/no-such-dinov2" in msg and "save_pretrained" in msg
    with pytest.raises(DataError, match="no config.json") as e:
        _config(tmp_path / "nowhere").setup()
    assert e.value.path == tmp_path / "nowhere"
    vit = tmp_path / "vit"
    ViTModel(
        ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(vit)
    with pytest.raises(DataError, match="not DINOv2"):
        _config(vit).setup()


def test_fingerprint_names_the_weights_and_settings(tiny_dinov2_folder, tmp_path):
    fp = _config(tiny_dinov2_folder).fingerprint()
    assert fp["teacher"] == "dinov2" and fp["weights"].startswith("sha256:") and fp["layer"] == 9
    assert fp["facet"] == "key" and fp["background"] == "black"
    assert fp != _config(tiny_dinov2_folder, facet="value").fingerprint()
    assert Dinov2TeacherConfig().fingerprint()["weights"] == "hub:facebook/dinov2-small"
    assert Dinov2TeacherConfig().input_size == 448 and Dinov2TeacherConfig().folder == "dinov2_feat_448"


def test_featurenerf_dinov2_preset_reads_what_the_teacher_extracted(tmp_path, tiny_dinov2_folder):
    """The registered ``featurenerf-dinov2`` method trains on ``featurenerf-teacher dinov2``'s cache: its dataparser
    finds the folder, and batches carry the teacher's 48 channels (the feature head's size)."""
    from importlib.metadata import entry_points

    from featurenerf_ns.synthetic.generate import generate_category

    root = tmp_path / "data"
    generate_category(root, "chair", num_objects=5, num_views=3, image_size=32, num_pairs=2, workers=0, progress=False)
    weights = ["--teacher.weights", str(tiny_dinov2_folder), "--teacher.input-size", "56"]
    entrypoint(["dinov2", "--data", str(root / "chair"), "--no-progress", *weights])
    (spec,) = [e.load() for e in entry_points(group="nerfstudio.method_configs") if e.name == "featurenerf-dinov2"]
    config = spec.config
    assert config.method_name == "featurenerf-dinov2" and config.pipeline.model.feature_dim is None
    dm_config = config.pipeline.datamanager
    dm_config.dataparser.data = root / "chair"
    dm_config.objects_per_batch, dm_config.rays_per_object, dm_config.num_workers = 2, 8, 1
    dm = dm_config.setup(device="cpu", test_mode="val")
    meta = dm.train_dataparser_outputs.metadata
    assert meta["teacher_folder"] == "dinov2_feat_448" and meta["teacher_dim"] == 48
    _, batch = dm.next_train(0)
    assert batch["teacher"].shape == (16, 48) and batch["teacher"].abs().sum() > 0
