"""featurenerf-teacher never reaches for the network unless asked: missing weights end in one line without a single
DNS lookup or connection, weights already in the torch / Hugging Face caches load from there, and
``--teacher.allow-download`` is what it takes to try the network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from tests.teachers.teacher_helpers import TINY_ARCH, make_category, tiny_vit

SYNSET = "03001627"
REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_missing_weights_end_in_one_line_without_touching_the_network(tmp_path, tiny_dinov2_folder):
    root = tmp_path / "shapenet"
    make_category(root, SYNSET, n_objects=5, n_views=2)
    torch_home, hf_home = tmp_path / "torch", tmp_path / "hf"
    # Weights already in the caches: a tiny ViT as timm's DINO ViT-S/16 file, a tiny DINOv2 as a hub snapshot.
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(tiny_vit().state_dict(), torch_home / "hub" / "checkpoints" / "dino_deitsmall16_pretrain.pth")
    repo = hf_home / "hub" / "models--tiny--dinov2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(tiny_dinov2_folder, repo / "snapshots" / COMMIT)

    data = ["--data", str(root / "chair"), "--split", "test", "--no-progress"]
    tiny_dino = ["--teacher.model-name", "vit_small_patch16_224_dino", "--teacher.input-size", "32", "--teacher.arch"]
    tiny_dino += [str(x) for kv in {**TINY_ARCH, "patch_size": 8}.items() for x in kv]
    commands = {
        "dino": ["dino", *data],
        "dinov2": ["dinov2", *data],
        "diffusion": ["diffusion", *data],
        "dino cached": ["dino", *data, *tiny_dino],
        "dinov2 cached": ["dinov2", *data, "--teacher.model-name", "tiny/dinov2", "--teacher.input-size", "56"],
        "dino download": ["dino", *data, "--teacher.allow-download"],
    }
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")}
    env.update(TORCH_HOME=str(torch_home), HF_HOME=str(hf_home))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.teachers.no_network", json.dumps(list(commands.values()))],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = dict(zip(commands, json.loads(proc.stdout.strip().splitlines()[-1]), strict=True))

    expected = {
        "dino": ("dino_deitsmall8_pretrain.pth", "--teacher.weights PATH", "--teacher.allow-download"),
        "dinov2": ("facebook/dinov2-small", "--teacher.weights DIR", "--teacher.allow-download", str(hf_home / "hub")),
        "diffusion": ("stable-diffusion-v1-5", "--teacher.model PATH", "--teacher.allow-download"),
    }
    for name, words in expected.items():
        r = results[name]
        lines = r["stderr"].strip().splitlines()
        assert r["status"] != 0 and len(lines) == 1, (name, r)
        assert all(w in lines[0] for w in words), (name, lines[0])
        assert r["network"] == [], (name, r["network"])

    # Found in the caches: extracted without the network.
    for name, folder, dim in (("dino cached", "dino_feat_256", 48), ("dinov2 cached", "dinov2_feat_448", 48)):
        r = results[name]
        assert r["status"] == 0 and r["network"] == [], (name, r)
        assert (root / folder / SYNSET / "obj04.npy").is_file()
        fingerprint = json.loads((root / folder / SYNSET / "teacher.json").read_text())["fingerprint"]
        assert fingerprint["dim"] == dim

    # Asked to download: the network is tried (so the blocking above would have seen it), still one line.
    r = results["dino download"]
    assert r["network"] and r["status"] != 0 and len(r["stderr"].strip().splitlines()) == 1
    assert "could not be downloaded" in r["stderr"] and "dino_deitsmall8_pretrain.pth" in r["stderr"]
