"""Low-precision weights applied at load time: every ``nn.Linear`` becomes a bfloat16, int8 or
int4 linear while the rest of the model (norms, rotary, attention, residual stream, KV cache)
keeps its own activation dtype.

Why weights only: decode reads every weight once per token, so its speed is weight bytes divided
by memory bandwidth, while everything else is small. On CPUs without native bfloat16 (AVX-512
without AVX512-BF16/AMX) bfloat16 *activations* are emulated and make every elementwise op slower;
float32 activations with low-precision weights get the byte savings without that cost
(benchmarks/RESULTS.md, "Generation").

Three paths per call, chosen by the number of rows (tokens) in the input:

- few rows (decode), when the compiled kernels of :mod:`astrai_core.generation.kernels` are built and
  the CPU has AVX2 or AVX-512: our matrix-vector loops, which stream the weights at about twice the
  rate of PyTorch's one-row kernels (measured 30 vs 15-19 GB/s on the 2-core development machine,
  benchmarks/RESULTS.md); int8 there multiplies int8 weights by the input rounded per row to int16;
- few rows without them: PyTorch's weight-only kernels, which are fast only with bfloat16 inputs
  (int8 x float32 runs a naive loop, measured 15-30x slower), so the input is rounded to bfloat16
  right before the matmul and the result returned in the input's dtype;
- many rows (prefill): the weight is dequantized to the input's dtype for this call and the float
  GEMM runs (measured 2.5-4x faster than the weight-only kernels at 512 rows, and as fast as
  float32 weights). The dequantized copy goes into one scratch buffer per thread, reused by every
  layer: a fresh allocation each call paid its page faults every time (int8 -> bfloat16 of a 1B
  model's MLP weight: 15.5 ms into new memory, 1.6 ms into the reused buffer, against 53 ms for
  the GEMM at 512 rows; AMD EPYC, 2 threads); where the CPU has AMX, int8 and packed weights are
  converted a block of rows at a time (:func:`tiled_linear`), and float32 GEMMs always run in blocks
  of rows (``F32_TILE_ROWS``).

float32 weights whose values are all bfloat16 values (a bfloat16 checkpoint run in float32, the
precision of CPUs without native bfloat16) are stored in bfloat16 (:func:`f32_linear`): the same results
bit for bit from half the bytes (decode 1.8x for a 1B model on the Intel Xeon development VM).
bfloat16 under bfloat16 activations, where the CPU has AVX512-BF16 and VBMI: packed losslessly to 12
bits a weight (:class:`PackedBF16Linear`, the layout in ``_decode.c``): decode reads 3/4 of the bytes
and computes exactly what the unpacked weights give; prefill unpacks into the scratch buffer (a block
of rows at a time where the CPU has AMX).
int8: symmetric, one scale per output channel (``aten._weight_int8pack_mm`` layout).
int4: asymmetric, one scale/zero per group of ``group_size`` inputs, ``aten._weight_int4pack_mm_for_cpu``
(always the kernel: its packed layout is not dequantized here, so int4 prefill is slower).
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

from astrai_core.errors import ConfigError
from astrai_core.generation import kernels

QUANT_MODES = ("int8", "int4")
WEIGHT_FORMATS = ("float32", "bfloat16") + QUANT_MODES
# Above this many rows the dequantize-then-GEMM path wins (crossover measured at ~16 rows).
KERNEL_MAX_ROWS = 16
#: rows of a packed or int8 weight converted at a time for a prefill GEMM (:func:`tiled_linear`): blocks
#: pay where the GEMM runs on AMX tiles (1B bfloat16 prefill 835 -> 738 ms, Intel Xeon VM); with
#: AVX-512 GEMMs the conversion is a smaller share and the narrower GEMMs cost more than the cache
#: saves (1B int8 prefill 1.054x transformers whole, 0.995x in blocks of 2048; packed bfloat16 the
#: same either way; AMD EPYC Zen 4 VM, one process, 8 alternating rounds): one block there
TILE_ROWS = 2048 if kernels.amx() else 1 << 30
#: rows of a float32 weight per prefill GEMM: PyTorch's float32 GEMM runs 10% faster on blocks of 512-2048
#: rows of a wide matrix than on the whole (a 1B model's gate/up, 13824 x 1536 at 512 rows: 123 vs 111 ms
#: in blocks of 1024; whole prefill 1.02x -> 1.06-1.11x transformers; AMD EPYC Zen 4 VM); bfloat16 GEMMs
#: run the same either way
F32_TILE_ROWS = 1024
#: store float32 weights that are bfloat16 values in bfloat16 (:func:`f32_linear`); False keeps them in
#: float32 (tests compare the two)
F32_AS_BF16 = True
#: pack bfloat16 weights where it pays (:func:`bf16_linear`); False keeps them as they are (benchmarks
#: and tests compare the two)
PACK_BF16 = True


def _matvec_ok(x: torch.Tensor, in_features: int) -> bool:
    return (x.device.type == "cpu" and in_features % 32 == 0 and x.dtype in (torch.float32, torch.bfloat16)
            and kernels.available())


_scratch = threading.local()


def scratch(shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """This thread's reused buffer viewed as ``shape`` (valid until the thread's next call; it grows
    to the largest weight converted)."""
    n = shape.numel()
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.dtype != dtype or buf.numel() < n:
        _scratch.buf = None  # let the old buffer go before the new one is allocated
        buf = _scratch.buf = torch.empty(n, dtype=dtype)
    return buf[:n].view(shape)


def dequantized(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` converted to ``dtype`` in this thread's scratch buffer."""
    return scratch(weight.shape, dtype).copy_(weight)


def tiled_linear(x: torch.Tensor, out_features: int, rows, tile: int | None = None) -> torch.Tensor:
    """x (..., K) @ W.T for a weight W (out_features, K) that ``rows(n0, n1)`` materialises TILE_ROWS rows
    at a time (a packed or int8 weight converted into the scratch buffer): each block is still in cache
    for its GEMM, which writes its columns of y in place. Converting the whole weight first sent it
    through memory: a 1B model's bfloat16 prefill of 512 tokens took 835 ms whole, 738 ms in blocks of
    2048 rows (Intel Xeon development VM, AMX GEMMs, 2 threads). ``tile``: rows per block (default
    TILE_ROWS)."""
    tile = tile or TILE_ROWS
    x2 = x.reshape(-1, x.shape[-1])
    y = torch.empty(x2.shape[0], out_features, dtype=x.dtype)
    for n0 in range(0, out_features, tile):
        n1 = min(n0 + tile, out_features)
        torch.mm(x2, rows(n0, n1).t(), out=y[:, n0:n1])
    return y.view(*x.shape[:-1], out_features)


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float -> (int8 (N, K), scales (N,) float32): w ~= q * scale per row."""
    w = weight.float()
    scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


def _bias(linear: nn.Linear) -> nn.Parameter | None:
    """The float bias, kept in the linear's (= the activations') dtype."""
    return None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)


class F32Linear(nn.Module):
    """y = x @ w.T + b with float32 weights (shared with the original linear, not copied): our
    matrix-vector kernel for decode-sized calls, which streams float32 weights at 21-24 GB/s against
    10-15 GB/s for PyTorch's one-row GEMM (a 49152 x 576 head: 4.8 vs 10.8 ms), PyTorch's GEMM otherwise."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.out_features, self.in_features = linear.weight.shape
        self.register_buffer("weight", linear.weight.detach())
        self.bias = _bias(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if x.dtype == torch.float32 and rows > KERNEL_MAX_ROWS:
            y = tiled_linear(x, self.out_features, lambda n0, n1: self.weight[n0:n1], F32_TILE_ROWS)
        elif x.dtype == torch.float32 and _matvec_ok(x, self.in_features):
            y = kernels.matvec(kernels.W_F32, self.weight, None, x)
        else:  # one GEMM: decode-sized calls without the kernels (blocks would only add calls per token)
            return F.linear(x, self.weight.to(x.dtype), self.bias)
        return y if self.bias is None else y.add_(self.bias)


class BF16Linear(nn.Module):
    """y = x @ w.T + b with ``w`` stored in bfloat16, for activations of another dtype."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.out_features, self.in_features = linear.weight.shape
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16))
        self.bias = _bias(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if rows > KERNEL_MAX_ROWS and x.dtype == torch.float32:  # as F32Linear: the same GEMMs, the same bits
            y = tiled_linear(x, self.out_features, lambda n0, n1: dequantized(self.weight[n0:n1], x.dtype),
                             F32_TILE_ROWS)
        elif rows > KERNEL_MAX_ROWS:
            y = F.linear(x, self.weight if x.dtype == torch.bfloat16 else dequantized(self.weight, x.dtype))
        elif _matvec_ok(x, self.in_features):
            y = kernels.matvec(kernels.W_BF16, self.weight, None, x)
        else:
            y = F.linear(x.to(torch.bfloat16), self.weight).to(x.dtype)
        return y if self.bias is None else y + self.bias


class PackedBF16Linear(nn.Module):
    """A bfloat16 linear whose weight is kept packed, losslessly, in 12 bits a weight
    (:func:`~astrai_core.generation.kernels.pack_bf16`): decode-sized calls read 1.5 bytes per weight
    instead of 2 and get exactly the unpacked kernel's results; larger calls unpack into this thread's
    scratch buffer for the GEMM (as int8 dequantizes)."""

    def __init__(self, linear: nn.Linear, packed: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = linear.weight.shape
        self.register_buffer("weight", packed)  # uint8, the layout of _decode.c's packed_parts
        self.bias = _bias(linear)

    def unpacked(self, n0: int = 0, n1: int | None = None) -> torch.Tensor:
        """Rows n0..n1 (all by default) of the bfloat16 weight (out_features, in_features) in this
        thread's scratch buffer."""
        n1 = self.out_features if n1 is None else n1
        out = scratch(torch.Size((n1 - n0, self.in_features)), torch.bfloat16)
        return kernels.unpack_bf16(self.weight, out, (self.out_features, self.in_features), (n0, n1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if rows <= KERNEL_MAX_ROWS and _matvec_ok(x, self.in_features):
            y = kernels.matvec(kernels.W_PBF16, self.weight, None, x, (self.out_features, self.in_features))
        elif x.dtype == torch.bfloat16 and self.out_features > 2 * TILE_ROWS:
            y = tiled_linear(x, self.out_features, self.unpacked)
        else:
            w = self.unpacked()
            y = F.linear(x, w if x.dtype == torch.bfloat16 else w.to(x.dtype))
        return y if self.bias is None else y + self.bias


def bf16_linear(linear: nn.Linear) -> nn.Module:
    """The bfloat16 linear for ``linear``: packed where the weight is already bfloat16 (the activations
    are, so the kernel's bfloat16 dot products run), packing pays here (:func:`kernels.packed_fast`) and
    the matrix packs (:func:`kernels.pack_bf16`); a :class:`BF16Linear` otherwise."""
    if PACK_BF16 and linear.weight.dtype == torch.bfloat16 and kernels.packed_fast():
        packed = kernels.pack_bf16(linear.weight.detach())
        if packed is not None:
            return PackedBF16Linear(linear, packed)
    return BF16Linear(linear)


class Int8Linear(nn.Module):
    """y = x @ (q * scale).T + b with the int8 weight kept packed."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        q, scales = quantize_int8(linear.weight.detach())
        self.out_features, self.in_features = q.shape
        self.register_buffer("weight", q)
        self.register_buffer("scales", scales)  # float32, for our kernel and the dequantized GEMM
        # PyTorch's kernel wants scales in its input's dtype (bfloat16)
        self.register_buffer("scales_bf16", scales.to(torch.bfloat16), persistent=False)
        self.bias = _bias(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] > KERNEL_MAX_ROWS:
            # per-output-channel scales commute with the matmul: scale the (rows, N) output instead
            if kernels.available() and x.dtype in (torch.float32, torch.bfloat16):  # scales folded in, one pass
                y = tiled_linear(x2, self.out_features, lambda n0, n1: kernels.dequantize_int8(
                    self.weight[n0:n1], self.scales[n0:n1], scratch(torch.Size((n1 - n0, self.in_features)), x.dtype)))
            else:
                y = F.linear(x2, dequantized(self.weight, x.dtype)).mul_(self.scales.to(x.dtype))
        elif _matvec_ok(x, self.in_features):
            y = kernels.matvec(kernels.W_INT8, self.weight, self.scales, x2)
        else:
            y = torch.ops.aten._weight_int8pack_mm(x2.to(torch.bfloat16).contiguous(), self.weight, self.scales_bf16)
            y = y.to(x.dtype)
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
        self.out_features, self.in_features = codes.shape
        self.group_size = group_size
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        self.register_buffer("weight", packed)
        # (K/g, N, 2): per group and output, (scale, zero)
        sz = torch.stack([scales.t(), zeros.t()], dim=-1).contiguous().to(torch.bfloat16)
        self.register_buffer("scales_and_zeros", sz)
        self.bias = _bias(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.weight, self.group_size, self.scales_and_zeros)
        y = y.to(x.dtype).view(*shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


def bf16_exact(weight: torch.Tensor) -> bool:
    """Whether every value of a float32 ``weight`` is a bfloat16 value (its low 16 bits zero): a
    bfloat16 checkpoint loaded in float32. The first row is checked alone first: a float32 checkpoint
    fails there, without a pass over the whole matrix at load (~2 s for a 1B model)."""
    if weight.dtype != torch.float32:
        return False
    bits = weight.detach().reshape(weight.shape[0], -1).view(torch.int32)
    return not bool((bits[:1] & 0xFFFF).any()) and not bool((bits & 0xFFFF).any())


def f32_linear(linear: nn.Linear) -> nn.Module:
    """The float32 linear for ``linear``: its weight stored in bfloat16 where that loses nothing
    (:func:`bf16_exact`, e.g. a bfloat16 checkpoint on a CPU without native bfloat16) and the kernels
    run (their bfloat16-weight dot products widen each weight and take the float32 path's products in
    its order, so the results are the same bits while decode reads half the bytes); an
    :class:`F32Linear` otherwise, and where the kernel cannot take the shape (a :class:`BF16Linear` would
    round the input to bfloat16 there)."""
    if F32_AS_BF16 and kernels.available() and linear.in_features % 32 == 0 and bf16_exact(linear.weight):
        return BF16Linear(linear)
    return F32Linear(linear)


_LINEARS = {"int8": Int8Linear, "bfloat16": bf16_linear, "float32": f32_linear}


def quantize_model(model: nn.Module, mode: str, group_size: int = 32) -> nn.Module:
    """Replace every ``nn.Linear`` in ``model`` (the output head included) in place by a
    ``mode`` ("float32", "bfloat16", "int8" or "int4") weight linear. A head tied to the embedding gets
    its own low-precision copy (float32 shares it, unless its values are bfloat16 ones: :func:`f32_linear`);
    the embedding table itself is left as it is (it is only indexed)."""
    if mode not in WEIGHT_FORMATS:
        raise ConfigError(f"weights={mode!r} is not supported; choose one of {WEIGHT_FORMATS}")
    targets = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    for name, linear in targets:
        if mode == "int4" and (linear.in_features % group_size or linear.out_features % 16):
            continue  # the kernel needs whole groups and rows in 16s; such a layer stays in the float dtype
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int4Linear(linear, group_size) if mode == "int4" else _LINEARS[mode](linear))
    return model
