"""What a checkpoint of the model holds does not depend on the machine it was saved on."""

from __future__ import annotations

import torch
import torchvision

from tests.model.test_losses import tiny_model


def test_lpips_weights_stay_out_of_checkpoints(tmp_path):
    """With AlexNet weights present LPIPS is computed, but its weights are not model state: a checkpoint from a
    machine that has them loads (strictly) on one that has not, and the reverse."""
    alexnet = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), alexnet)
    with_lpips = tiny_model(lpips_alexnet_weights=alexnet)
    without = tiny_model()
    assert with_lpips.lpips is not None and without.lpips is None
    assert set(with_lpips.state_dict()) == set(without.state_dict())
    assert not any("lpips" in k for k in with_lpips.state_dict())
    without.load_state_dict(with_lpips.state_dict(), strict=True)
    with_lpips.load_state_dict(without.state_dict(), strict=True)
    img = torch.rand(1, 3, 32, 32)
    assert float(with_lpips.lpips(img, img)) < 1e-6 < float(with_lpips.lpips(img, torch.rand(1, 3, 32, 32)))


def test_lpips_weights_file_leaves_the_hub_cache_alone(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    alexnet = tmp_path / "weights" / "alexnet-owt-7be5be79.pth"
    alexnet.parent.mkdir()
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), alexnet)
    assert tiny_model(lpips_alexnet_weights=alexnet).lpips is not None
    assert torch.hub.get_dir() == str(hub) and not hub.exists()
