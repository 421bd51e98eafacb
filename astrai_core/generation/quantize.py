"""Weight-only quantization applied at load time: every ``nn.Linear`` becomes an int8 (or int4)
linear whose matmul runs in PyTorch's CPU weight-only kernels; activations stay in the model dtype.

int8: symmetric, one scale per output channel, ``aten._weight_int8pack_mm``.
int4: asymmetric, one scale/zero per group of ``group_size`` inputs, ``aten._weight_int4pack_mm_for_cpu``.
"""

from __future__ import annotations

import torch
from torch import nn

from astrai_core.errors import ConfigError

QUANT_MODES = ("int8", "int4")


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float -> (int8 (N, K), scales (N,) float32): w ~= q * scale per row."""
    w = weight.float()
    scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


class Int8Linear(nn.Module):
    """y = x @ (q * scale).T + b with the int8 weight kept packed."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        q, scales = quantize_int8(linear.weight.detach())
        dtype = linear.weight.dtype
        self.out_features, self.in_features = q.shape
        self.register_buffer("weight", q)
        self.register_buffer("scales", scales.to(dtype))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, self.in_features).contiguous(), self.weight, self.scales)
        y = y.view(*shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


def quantize_int4(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, K) -> (codes uint 0..15 as int32 (N, K), scales (N, K/g), zeros (N, K/g)) float32.

    Dequantized weight = (code - 8) * scale + zero, the layout the CPU int4 kernel expects.
    """
    n, k = weight.shape
    w = weight.float().reshape(n, k // group_size, group_size)
    lo, hi = w.amin(-1), w.amax(-1)
    scales = ((hi - lo) / 15.0).clamp(min=1e-8)
    zeros = lo + 8.0 * scales
    codes = torch.round((w - lo[..., None]) / scales[..., None]).clamp(0, 15).to(torch.int32)
    return codes.reshape(n, k), scales, zeros


class Int4Linear(nn.Module):
    """Group-wise int4 weight-only linear (weights packed for the CPU kernel at load time)."""

    def __init__(self, linear: nn.Linear, group_size: int = 32) -> None:
        super().__init__()
        codes, scales, zeros = quantize_int4(linear.weight.detach(), group_size)
        dtype = linear.weight.dtype
        self.out_features, self.in_features = codes.shape
        self.group_size = group_size
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        self.register_buffer("weight", packed)
        # (K/g, N, 2): per group and output, (scale, zero)
        sz = torch.stack([scales.t(), zeros.t()], dim=-1).contiguous().to(dtype)
        self.register_buffer("scales_and_zeros", sz)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.reshape(-1, self.in_features).contiguous(), self.weight, self.group_size, self.scales_and_zeros)
        y = y.view(*shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


def quantize_model(model: nn.Module, mode: str, group_size: int = 32) -> nn.Module:
    """Replace every ``nn.Linear`` in ``model`` (the output head included) in place."""
    if mode not in QUANT_MODES:
        raise ConfigError(f"quantize={mode!r} is not supported; choose one of {QUANT_MODES} or None")
    targets = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    for name, linear in targets:
        if mode == "int4" and linear.in_features % group_size:
            continue  # the kernel needs whole groups; such a layer stays in the float dtype
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8Linear(linear) if mode == "int8" else Int4Linear(linear, group_size))
    return model
