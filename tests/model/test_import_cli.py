"""featurenerf-import: refused inputs are one line and write nothing; an imported run fine-tunes with ns-train."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from featurenerf_ns.model.authors_checkpoint import read_authors_checkpoint
from featurenerf_ns.model.import_cli import ImportConfig, import_checkpoint
from featurenerf_ns.utils.io import UserError

BIN = Path(sys.executable).parent


def _import(parity, tmp_path: Path, checkpoint: Path, **kw) -> Path:
    cfg = ImportConfig(
        checkpoint=checkpoint, data=Path("unused/chair"), output_dir=tmp_path / "out", device_type="cpu", **kw
    )
    return import_checkpoint(cfg)


def _state(parity) -> dict[str, torch.Tensor]:
    return torch.load(parity.checkpoint, map_location="cpu", weights_only=True)


def _save(state, path: Path) -> Path:
    torch.save(state, path)
    return path


def _refused(parity, tmp_path: Path, checkpoint: Path, match: str, **kw) -> str:
    with pytest.raises(UserError, match=match) as info:
        _import(parity, tmp_path, checkpoint, **kw)
    message = str(info.value)
    assert "\n" not in message
    assert not (tmp_path / "out").exists(), "a refused import wrote something"
    return message


def test_random_file_is_refused(parity, tmp_path):
    path = tmp_path / "pixel_nerf_latest"
    path.write_bytes(os.urandom(4096))
    assert str(path) in _refused(parity, tmp_path, path, "not a readable PyTorch checkpoint")


def test_truncated_checkpoint_is_refused(parity, tmp_path):
    data = parity.checkpoint.read_bytes()
    path = tmp_path / "pixel_nerf_latest"
    path.write_bytes(data[: len(data) // 2])
    _refused(parity, tmp_path, path, "not a readable PyTorch checkpoint")


def test_unknown_key_layout_is_refused(parity, tmp_path):
    import torchvision

    path = _save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    _refused(parity, tmp_path, path, "unknown key layout")


def test_shape_that_fits_no_architecture_is_refused(parity, tmp_path):
    state = _state(parity)
    for key in [k for k in state if ".lin_z." in k and k.endswith("weight")]:
        state[key] = state[key][:, :300]  # 300-d image features: no number of ResNet levels gives that
    path = _save(state, tmp_path / "pixel_nerf_latest")
    _refused(parity, tmp_path, path, "300-d image features")


def test_pixelnerf_checkpoint_given_to_the_feature_model_is_refused(parity, tmp_path):
    state = {k: (v[:4] if "lin_out" in k else v) for k, v in _state(parity).items()}
    path = _save(state, tmp_path / "pixel_nerf_latest")
    message = _refused(parity, tmp_path, path, "featurenerf-nerf-feature", method="featurenerf")
    assert "pixelNeRF" in message
    # With FeatureNeRF's config (d_embed, coordinate head) the same file contradicts the config.
    _refused(parity, tmp_path, path, "model.conf", config=parity.conf_path)


def test_config_contradicting_the_weights_is_refused(parity, tmp_path):
    text = parity.conf_path.read_text()
    d_embed = parity.conf["model"]["d_embed"]
    conf = tmp_path / "model.conf"
    conf.write_text(text.replace(f"d_embed = {d_embed}", f"d_embed = {d_embed + 8}"))
    message = _refused(parity, tmp_path, parity.checkpoint, "d_embed", config=conf)
    assert message.startswith(str(conf))


def test_unused_encoder_stages_are_reported_not_refused(parity, tmp_path):
    ckpt = read_authors_checkpoint(parity.checkpoint, parity.conf_path)
    from featurenerf_ns.model.authors_checkpoint import to_model_state

    own = {k: None for k in ckpt.state if k.startswith("encoder.model.") and ".layer4." not in k}
    own.update({"field.mlp." + k[len("mlp_coarse.") :]: None for k in ckpt.state if k.startswith("mlp_coarse.")})
    mapped, unused = to_model_state(ckpt, own)
    assert unused and all(".layer4." in k for k in unused)
    assert set(mapped) == set(own)


def test_cli_reports_one_line_and_exit_code_2(parity, tmp_path):
    path = tmp_path / "pixel_nerf_latest"
    path.write_bytes(b"not a checkpoint")
    proc = subprocess.run(
        [str(BIN / "featurenerf-import"), str(path), "--output-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_imported_run_fine_tunes_with_the_printed_command(parity, tiny_root, tmp_path):
    """The command featurenerf-import prints continues training (here without distillation: the tiny data's
    synthetic teacher has other channels than the fixture's head, which ns-train says in one line)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    data = tiny_root / "chair"
    proc = subprocess.run(
        [str(BIN / "featurenerf-import"), str(parity.checkpoint), "--config", str(parity.conf_path),
         "--data", str(data), "--output-dir", str(tmp_path / "out"), "--timestamp", "imp"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    command = " ".join(proc.stdout.split()).split("fine-tune: ")[1].split()
    assert command[:2] == ["ns-train", "featurenerf"]
    extra = ["--vis", "tensorboard", "--max-num-iterations", "2", "--steps-per-save", "1",
             "--output-dir", str(tmp_path / "out"), "--timestamp", "ft"]  # fmt: skip
    first = subprocess.run(
        [str(BIN / "ns-train"), *command[1:], *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    teacher_dim = 16  # tests/conftest.py TINY
    if parity.conf["model"]["d_embed"] != teacher_dim:
        assert first.returncode == 2
        assert "--pipeline.model.lambda-distill 0" in first.stderr.strip().splitlines()[-1]
        command += ["--pipeline.model.lambda-distill", "0"]
    second = subprocess.run(
        [str(BIN / "ns-train"), *command[1:], *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Done loading Nerfstudio checkpoint" in second.stdout + second.stderr
    steps = sorted(p.name for p in (tmp_path / "out" / "chair" / "featurenerf" / "ft" / "nerfstudio_models").iterdir())
    assert steps[-1] == "step-000000002.ckpt"
