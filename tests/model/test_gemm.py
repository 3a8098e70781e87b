"""The MLP's linear layers: oneDNN on CPU must compute what ``F.linear`` computes, values and gradients."""

import platform

import pytest
import torch
import torch.nn.functional as F

from featurenerf_ns.model import gemm


@pytest.mark.skipif(platform.machine() != "x86_64", reason="oneDNN linear is asserted on x86-64 builds only")
def test_onednn_linear_is_available_on_x86():
    assert gemm.ONEDNN_AVAILABLE


@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_values_and_gradients_match_f_linear(gemm_backend, with_bias):
    torch.manual_seed(0)
    x = torch.randn(37, 13, requires_grad=True)
    w = torch.randn(11, 13, requires_grad=True)
    b = torch.randn(11, requires_grad=True) if with_bias else None
    g = torch.randn(37, 11)
    ours = gemm.linear(x, w, b)
    ref = F.linear(x, w, b)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    inputs = (x, w) + ((b,) if with_bias else ())
    for a, r in zip(torch.autograd.grad(ours, inputs, g), torch.autograd.grad(ref, inputs, g), strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


def test_only_requested_gradients_are_computed(gemm_backend):
    x = torch.randn(8, 5)
    w = torch.randn(3, 5, requires_grad=True)
    out = gemm.linear(x, w, None)
    (gw,) = torch.autograd.grad(out.sum(), (w,))
    torch.testing.assert_close(gw, x.sum(0).expand(3, 5))
    assert not gemm.linear(x, w.detach(), None).requires_grad


def test_linear_nograd_fuses_relu(gemm_backend):
    x, w, b = torch.randn(20, 6), torch.randn(4, 6), torch.randn(4)
    out = gemm.linear_nograd(x, w, b, relu=True)
    torch.testing.assert_close(out, F.linear(x, w, b).relu(), rtol=1e-5, atol=1e-6)
    assert (out >= 0).all() and (out == 0).any()


def test_disabled_backend_is_exactly_f_linear():
    previous = gemm.onednn_enabled()
    try:
        gemm.set_onednn_enabled(False)
        x, w, b = torch.randn(9, 7), torch.randn(5, 7), torch.randn(5)
        assert torch.equal(gemm.linear(x, w, b), F.linear(x, w, b))
    finally:
        gemm.set_onednn_enabled(previous)


def test_non_float32_inputs_take_the_default_path(gemm_backend):
    x, w = torch.randn(6, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    assert torch.equal(gemm.linear(x, w, None), F.linear(x, w))
