"""Linear layers for the MLP: oneDNN's fp32 GEMM on CPU, the regular ``F.linear`` everywhere else.

PyTorch's CPU ``addmm`` goes through MKL, which on this project's AMD EPYC machines reaches about half
the speed of oneDNN's GEMM, which PyTorch also ships (223-230 vs 480-506 GFLOP/s at 4096x512 @ 512x512;
``benchmarks/bench_model.py`` prints both side by side). Both compute the same fp32 products (no
reduced-precision math mode is used), so this is a choice of GEMM library, not of arithmetic; on CUDA,
and on CPU builds without oneDNN, every call is plain ``F.linear`` and its autograd. bf16 inputs (inference with
``inference_dtype="bfloat16"`` on a CPU with native bf16, see :func:`native_bf16`) take oneDNN's bf16 GEMM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def _probe_onednn() -> bool:
    """Whether this torch build can run oneDNN's fp32 linear on dense CPU tensors (checked on a 2x2 case)."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x, w = torch.eye(2), torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        return bool(torch.equal(op(x, w, None, "none", [], ""), w.t()))
    except (AttributeError, RuntimeError):
        return False


ONEDNN_AVAILABLE = _probe_onednn()
"""oneDNN's linear is usable in this process (x86 and most arm64 CPU builds of PyTorch)."""

CPU_BF16 = ONEDNN_AVAILABLE and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
"""This CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 GEMMs are emulated and slower than fp32."""


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 GEMMs run natively on ``device``: a CUDA GPU that supports bf16, or a CPU with :data:`CPU_BF16`."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and CPU_BF16


_use_onednn = ONEDNN_AVAILABLE


def set_onednn_enabled(enabled: bool) -> None:
    """Route CPU fp32 GEMMs through oneDNN (default when available) or through ``F.linear`` (MKL)."""
    global _use_onednn
    _use_onednn = enabled and ONEDNN_AVAILABLE


def onednn_enabled() -> bool:
    return _use_onednn


def _fast(x: Tensor) -> bool:
    return _use_onednn and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)


def linear_nograd(
    x: Float[Tensor, "N i"], weight: Float[Tensor, "o i"], bias: Float[Tensor, " o"] | None, relu: bool = False
) -> Float[Tensor, "N o"]:
    """``x @ weight.T + bias`` (then ReLU when ``relu``, fused into the GEMM on oneDNN), without autograd history."""
    if _fast(x):
        op = torch.ops.mkldnn._linear_pointwise
        x, weight, bias = x.detach(), weight.detach(), None if bias is None else bias.detach()
        return op(x, weight, bias, "relu", [None], "") if relu else op(x, weight, bias, "none", [], "")
    with torch.no_grad():
        y = F.linear(x, weight, bias)
        return y.relu_() if relu else y


class _Linear(torch.autograd.Function):
    """``F.linear`` with its three GEMMs (forward, input gradient, weight gradient) on the fast path."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear_nograd(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        gx = linear_nograd(grad, weight.t(), None) if ctx.needs_input_grad[0] else None
        # g^T x as a linear of g^T (made contiguous: oneDNN is much faster on it than on a strided view).
        gw = linear_nograd(grad.t().contiguous(), x.t(), None) if ctx.needs_input_grad[1] else None
        gb = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def linear(x: Float[Tensor, "N i"], weight: Float[Tensor, "o i"], bias: Float[Tensor, " o"] | None) -> Tensor:
    """``F.linear`` for 2-D inputs, differentiable, on oneDNN for CPU fp32 tensors."""
    if not _fast(x):
        return F.linear(x, weight, bias)
    tracked = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    if torch.is_grad_enabled() and tracked:
        return _Linear.apply(x, weight, bias)
    return linear_nograd(x, weight, bias)
