"""The paper's presets never train a randomly initialised encoder by accident; the small ones may, and say so."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision

from featurenerf_ns import method_configs
from featurenerf_ns.model.encoder import SpatialEncoder, SpatialEncoderConfig
from featurenerf_ns.utils.io import UserError


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.mark.parametrize("spec", [method_configs.featurenerf, method_configs.featurenerf_diffusion,
                                  method_configs.featurenerf_nerf_feature])  # fmt: skip
def test_paper_presets_stop_without_imagenet_weights(spec, empty_hub, tmp_path):
    config = copy.deepcopy(spec.config)
    config.output_dir = tmp_path / "out"
    with pytest.raises(UserError) as info:
        config.setup(local_rank=0, world_size=1)
    message = str(info.value)
    assert "\n" not in message and "resnet34-b627a593.pth" in message
    assert "--pipeline.model.encoder.weights" in message and "random" in message
    config.pipeline.model.encoder.weights = "random"  # the explicit opt-out
    assert config.setup(local_rank=0, world_size=1) is not None
    config.pipeline.model.encoder.weights = "imagenet"
    config.load_dir = tmp_path / "ckpts"  # resuming: the checkpoint holds the encoder
    assert config.setup(local_rank=0, world_size=1) is not None


def test_small_presets_train_from_scratch_and_say_so(empty_hub, tmp_path, capsys):
    for spec in (method_configs.featurenerf_cpu, method_configs.featurenerf_tiny):
        config = copy.deepcopy(spec.config)
        config.output_dir = tmp_path / "out"
        assert config.setup(local_rank=0, world_size=1) is not None
    assert "training it from random initialisation" in " ".join(capsys.readouterr().out.split())


def test_imagenet_weights_are_loaded_when_present(empty_hub):
    reference = torchvision.models.resnet18(weights=None)
    (empty_hub / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), empty_hub / "checkpoints" / "resnet18-f37072fd.pth")
    for weights in ("imagenet", "imagenet-if-available", str(empty_hub / "checkpoints" / "resnet18-f37072fd.pth")):
        encoder = SpatialEncoder(SpatialEncoderConfig(backbone="resnet18", num_layers=3, weights=weights))
        assert torch.equal(encoder.model.conv1.weight, reference.conv1.weight)
        assert torch.equal(encoder.model.layer2[0].bn1.running_var, reference.layer2[0].bn1.running_var)
    random = SpatialEncoder(SpatialEncoderConfig(backbone="resnet18", num_layers=3, weights="random"))
    assert not torch.equal(random.model.conv1.weight, reference.conv1.weight)
