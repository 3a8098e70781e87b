"""featurenerf-teacher end to end on a tiny category, its one-line errors, and the online teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurenerf_ns.teachers.cache import check_fingerprint, load_rgba, view_paths
from featurenerf_ns.teachers.cli import entrypoint
from featurenerf_ns.teachers.diffusion import DiffusionTeacherConfig
from featurenerf_ns.teachers.dino import DinoTeacherConfig
from featurenerf_ns.teachers.online import OnlineTeacher
from featurenerf_ns.teachers.store import open_teacher_features
from tests.teachers.teacher_helpers import TINY_ARCH, make_category

SYNSET = "03001627"
ARCH_ARGS = ["--teacher.arch"] + [str(x) for kv in TINY_ARCH.items() for x in kv]


def test_cli_dino_split_and_shards(tmp_path, tiny_vit_file, capsys):
    root = tmp_path / "shapenet"
    ids = make_category(root, SYNSET)
    base = ["dino", "--data", str(root / "chair"), "--teacher.weights", str(tiny_vit_file), "--no-progress"]
    base += ARCH_ARGS + ["--teacher.input-size", "32"]
    entrypoint(base + ["--split", "train", "--shard", "1/2"])
    folder = root / "dino_feat_256" / SYNSET
    assert sorted(p.stem for p in folder.glob("*.npy")) == [ids[1]]
    entrypoint(base + ["--split", "train", "--shard", "0/2"])
    assert sorted(p.stem for p in folder.glob("*.npy")) == ids[:3]
    entrypoint(base + ["--split", "all"])
    out = capsys.readouterr().out
    assert "2 objects extracted, 3 already cached" in out and "objects/s on cpu" in out
    assert open_teacher_features(folder / f"{ids[4]}.npy").shape == (3, 48, 4, 4)
    assert check_fingerprint(
        folder, DinoTeacherConfig(weights=tiny_vit_file, arch=dict(TINY_ARCH), input_size=32).fingerprint("chair")
    )

    # Other settings on the same folder: one line, exit code 2; --overwrite redoes it.
    with pytest.raises(SystemExit) as e:
        entrypoint(base + ["--teacher.layer", "8"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {folder / 'teacher.json'}: ") and "layer: 9 != 8" in err and "\n" not in err
    entrypoint(base + ["--teacher.layer", "8", "--overwrite", "--split", "val"])
    assert sorted(p.stem for p in folder.glob("*.npy")) == [ids[3]]


def test_cli_diffusion_tiny(tmp_path, tiny_sd_folder):
    root = tmp_path / "shapenet"
    ids = make_category(root, "02958343", n_objects=5, n_views=2)
    entrypoint(
        [
            "diffusion",
            "--data",
            str(root / "car"),
            "--split",
            "test",
            "--no-progress",
            "--teacher.model",
            str(tiny_sd_folder),
        ]
        + ["--teacher.input-size", "32", "--teacher.feature-size", "16", "--folder", "sd_tiny"]
    )
    folder = root / "sd_tiny" / "02958343"
    feats = open_teacher_features(folder / f"{ids[4]}.npy")
    assert feats.shape == (2, 24, 16, 16)
    assert check_fingerprint(folder, {"teacher": "diffusion", "prompt": "car", "dim": 24})


def test_online_teacher_matches_cache(tmp_path, tiny_vit_file):
    root = tmp_path / "shapenet"
    ids = make_category(root, SYNSET, n_objects=5)
    config = DinoTeacherConfig(weights=tiny_vit_file, arch=dict(TINY_ARCH), input_size=32)
    online = OnlineTeacher(config, category="chair", device="cpu")
    assert online.dim == 48
    rgba = torch.from_numpy(load_rgba(view_paths(root / "img" / SYNSET / ids[0])))
    channels_last = online(rgba.permute(0, 2, 3, 1))
    torch.testing.assert_close(channels_last, online(rgba, channels_last=False))
    entrypoint(
        [
            "dino",
            "--data",
            str(root / "chair"),
            "--split",
            "train",
            "--no-progress",
            "--teacher.weights",
            str(tiny_vit_file),
        ]
        + ARCH_ARGS
        + ["--teacher.input-size", "32"]
    )
    cached = open_teacher_features(root / "dino_feat_256" / SYNSET / f"{ids[0]}.npy").read(range(3))
    np.testing.assert_allclose(channels_last.numpy(), cached, rtol=2e-3, atol=2e-3)
    assert not channels_last.requires_grad


def test_online_diffusion_on_input_device(tiny_sd_folder):
    online = OnlineTeacher(
        DiffusionTeacherConfig(model=str(tiny_sd_folder), input_size=32, feature_size=8), category="chair"
    )
    out = online(torch.rand(2, 16, 16, 4))
    assert out.shape == (2, 24, 8, 8) and out.device.type == "cpu"
