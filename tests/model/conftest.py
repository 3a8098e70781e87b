import pytest
import torch

from featurenerf_ns.model.encoder import SpatialEncoder, SpatialEncoderConfig
from featurenerf_ns.model.field import FeatureNeRFField, FeatureNeRFFieldConfig


@pytest.fixture
def tiny_field():
    torch.manual_seed(0)
    encoder = SpatialEncoder(SpatialEncoderConfig(backbone="resnet18", num_layers=2, weights="random"))
    field = FeatureNeRFField(
        FeatureNeRFFieldConfig(hidden_dim=32, num_blocks=5, combine_layer=3), encoder.latent_size, 8, True
    )
    # fc_1 starts at zero in the authors' init; randomise so every block matters in the tests.
    for block in field.mlp.blocks:
        torch.nn.init.normal_(block.fc_1.weight, std=0.1)
    return encoder.eval(), field


@pytest.fixture(params=["onednn", "default"])
def gemm_backend(request):
    """Run a test with the MLP's CPU GEMMs on oneDNN and on PyTorch's default path."""
    from featurenerf_ns.model import gemm

    if request.param == "onednn" and not gemm.ONEDNN_AVAILABLE:
        pytest.skip("this torch build has no oneDNN linear")
    previous = gemm.onednn_enabled()
    gemm.set_onednn_enabled(request.param == "onednn")
    yield request.param
    gemm.set_onednn_enabled(previous)
