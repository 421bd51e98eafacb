"""Python side of the compiled decode kernels (``_decode.c``, built by ``setup.py``).

``matvec`` serves the low-precision linears of :mod:`astrai_core.generation.quantize` at a few
rows; :class:`DecodeStep` runs one token, or a few in a row (a lookup draft to verify), of a batch
of one (the chat/stream path) from ids to logits in one call; :func:`pack_bf16` / :func:`unpack_bf16`
store bfloat16 weights in 12 bits a weight without loss. All are optional: where the extension was
not built, or the CPU has neither AVX2 nor AVX-512, :func:`available` is False and the engine runs
PyTorch's ops (and keeps bfloat16 weights unpacked).
"""

from __future__ import annotations

import torch
from torch import nn

from astrai_core.model import rms_norm as torch_rms_norm
from astrai_core.model import swiglu as torch_swiglu

try:  # absent where no C compiler was found at install (setup.py marks the extension optional)
    from astrai_core.generation import _decode
except ImportError:  # pragma: no cover - depends on the install
    _decode = None

#: set False to force PyTorch's ops everywhere (tests compare the two)
ENABLED = True
W_BF16, W_INT8, W_F32, W_PBF16 = 0, 1, 2, 3
#: weights packed from bfloat16 only where at most this share of them is listed apart as escapes
PACK_MAX_ESCAPES = 1 / 512


def level() -> int:
    """Vector path of the kernels: 0 none (not built, or no AVX2), 1 AVX2+FMA, 2 AVX-512, 3 AVX-512 with
    BF16 and VNNI dot products."""
    return _decode.level() if _decode is not None else 0


def available() -> bool:
    return ENABLED and _decode is not None and _decode.level() > 0


def matvec(kind: int, weight: torch.Tensor, scales: torch.Tensor | None, x: torch.Tensor,
           shape: tuple[int, int] | None = None) -> torch.Tensor:
    """x (..., K) @ weight (N, K).T for at most 16 rows of x (float32 or bfloat16, the output's dtype);
    ``shape`` (N, K) for packed weights (bytes)."""
    n, k = shape or weight.shape
    x2 = x.reshape(-1, k).contiguous()
    y = torch.empty(x2.shape[0], n, dtype=x.dtype)
    _decode.matvec(kind, weight.data_ptr(), 0 if scales is None else scales.data_ptr(), x2.data_ptr(),
                   x.dtype == torch.bfloat16, y.data_ptr(), y.dtype == torch.bfloat16, x2.shape[0], n, k,
                   torch.get_num_threads())
    return y.view(*x.shape[:-1], n)


def amx() -> bool:
    """Whether the CPU has AMX bfloat16 tiles (PyTorch's bfloat16 GEMM and flash attention run on them)."""
    return _decode is not None and _decode.amx()


#: bfloat16 prefill attention left to PyTorch's flash attention (:func:`prefill_attention`): where the CPU
#: has AMX (tests set it False to check the kernel there)
SDPA_BF16 = amx()


def packed_fast() -> bool:
    """Whether packed bfloat16 weights decode in registers here (AVX512-BF16 and VBMI): only then does
    packing pay (see ``_decode.c``, "packed bfloat16")."""
    return available() and _decode.packed_fast()


def pack_bf16(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` (N, K) bfloat16 as packed bytes (1.5 per weight plus the escapes; lossless), or None
    where packing does not pay (:func:`packed_fast`), the shape does not fit (K a multiple of 64, at
    most 16384) or more than
    :data:`PACK_MAX_ESCAPES` of the weights would be escapes."""
    n, k = weight.shape
    if not (packed_fast() and weight.dtype == torch.bfloat16 and k % 64 == 0 and k <= 16384):
        return None
    w = weight.contiguous()
    size, escapes, table = _decode.packed_size(w.data_ptr(), n, k, torch.get_num_threads())
    if escapes > PACK_MAX_ESCAPES * n * k:
        return None
    out = torch.empty(size, dtype=torch.uint8)  # PyTorch's CPU allocations are 64-byte aligned
    _decode.pack(w.data_ptr(), n, k, table, out.data_ptr(), torch.get_num_threads())
    return out


def unpack_bf16(packed: torch.Tensor, out: torch.Tensor, shape: tuple[int, int] | None = None,
                rows: tuple[int, int] | None = None) -> torch.Tensor:
    """out (N, K) bfloat16, contiguous = the weight that :func:`pack_bf16` packed, bit for bit; or, given
    the packed matrix's ``shape`` and ``rows`` (n0, n1), its rows n0..n1 into out (n1 - n0, K)."""
    n, k = shape or out.shape
    n0, n1 = rows or (0, n)
    if out.shape != (n1 - n0, k) or not out.is_contiguous():
        raise ValueError(f"unpack_bf16: out {tuple(out.shape)} does not hold rows {n0}..{n1} of {n} x {k}")
    _decode.unpack(packed.data_ptr(), n, k, out.data_ptr(), torch.get_num_threads(), n0, n1)
    return out


def dequantize_int8(weight: torch.Tensor, scales: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out (N, K), float32 or bfloat16, contiguous = weight (int8) * scales (float32, one per row)."""
    n, k = weight.shape
    _decode.dequant(weight.data_ptr(), scales.data_ptr(), out.data_ptr(), out.dtype == torch.bfloat16, n, k,
                    torch.get_num_threads())
    return out


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int) -> torch.Tensor | None:
    """Causal attention of the queries q (1, nh, T, hs) at cache slots ``start..start+T`` over the cache
    k, v (1, nkv, S_max, hs), slots 0..start+T already written: query t sees slots <= start + t. One C
    call (``_decode.c``, "prefill attention": ~2.4x PyTorch's CPU flash attention in bfloat16 on Zen 4,
    same numerics), or None where it does not apply (head size not a multiple of 64, no AVX-512,
    bfloat16 without AVX512-BF16, or bfloat16 on a CPU with AMX, where PyTorch's flash attention runs on
    the AMX tiles: 2.9x faster than this kernel on the Intel Xeon development VM, 1.1 vs 3.2 ms a
    SmolLM2 layer at 512 tokens); then the caller runs SDPA. Returns (1, nh, T, hs), a view of a
    (1, T, nh, hs) tensor."""
    B, nh, T, hs = q.shape
    if not (available() and B == 1 and q.dtype == k.dtype == v.dtype and q.dtype in (torch.float32, torch.bfloat16)
            and hs % 64 == 0 and k.is_contiguous() and v.is_contiguous() and k.shape[0] == 1):
        return None
    if q.dtype == torch.bfloat16 and SDPA_BF16:
        return None
    qt = q.transpose(1, 2).contiguous()  # rope keeps (T, nh, hs) memory order: no copy
    out = torch.empty(1, T, nh, hs, dtype=q.dtype)
    nkv, s_max = k.shape[1], k.shape[2]
    if not _decode.attend_prefill(qt.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), q.dtype == torch.float32,
                                  T, start, nh, nkv, hs, s_max, hs ** -0.5, torch.get_num_threads()):
        return None
    return out.transpose(1, 2)


def swiglu(gu: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gu = [gate | up] on the last dimension (the fused gate/up projection's
    output): one C pass over contiguous float32 or bfloat16 without autograd, where PyTorch's
    ``F.silu(gate) * up`` makes two, the first over a strided half (float32 prefill ~4-6% faster as
    measured on the development machine); bfloat16 rounds as those two ops do. Elsewhere, those two ops."""
    if not (available() and gu.dtype in (torch.float32, torch.bfloat16) and gu.is_contiguous() and gu.shape[-1] > 0
            and not (gu.requires_grad and torch.is_grad_enabled())):
        return torch_swiglu(gu)
    n = gu.shape[-1] // 2
    out = torch.empty(*gu.shape[:-1], n, dtype=gu.dtype)
    _decode.swiglu(gu.data_ptr(), out.data_ptr(), gu.numel() // gu.shape[-1], n, gu.dtype == torch.bfloat16,
                   torch.get_num_threads())
    return out


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``F.rms_norm(x, (n,), weight, eps)`` over the last dimension. bfloat16 without autograd: one C pass,
    rounded as PyTorch rounds, the result contiguous (PyTorch's bfloat16 path is several times slower than
    its float32 one). Anything else, float32 included: PyTorch's op, so its numerics exactly."""
    n = x.shape[-1]
    if not (available() and x.dtype == weight.dtype == torch.bfloat16 and n > 0
            and weight.is_contiguous() and weight.shape == (n,)
            and not ((x.requires_grad or weight.requires_grad) and torch.is_grad_enabled())):
        return torch_rms_norm(x, weight, eps)
    x = x.contiguous()  # q/k norms get views of the fused q/k/v output: a copy is cheaper than PyTorch's path
    out = torch.empty_like(x)
    _decode.rmsnorm(x.data_ptr(), weight.data_ptr(), out.data_ptr(), x.numel() // n, n, eps, torch.get_num_threads())
    return out


def argmax(x: torch.Tensor) -> int:
    """torch.argmax of a 1-D row (the first of equal maxima, the first NaN if any) as an int, in one C
    call for contiguous float32 (greedy decoding's per-token op)."""
    if available() and x.dtype == torch.float32 and x.dim() == 1 and x.is_contiguous() and x.numel() > 0:
        return _decode.argmax(x.data_ptr(), x.numel())
    return int(torch.argmax(x))


def sample(logits: torch.Tensor, previous: torch.Tensor, temperature: float, top_k: int, top_p: float,
           penalty: float, u: float) -> int | None:
    """:func:`~astrai_core.generation.sampling.next_token`'s choice for the uniform number ``u`` in one C
    call, or None where the C path does not apply (then the torch functions make it)."""
    if not (available() and logits.dtype == torch.float32 and logits.dim() == 1 and logits.is_contiguous()):
        return None
    n_prev = previous.numel() if penalty != 1.0 else 0
    if n_prev and (previous.dtype != torch.int64 or not previous.is_contiguous()):
        return None
    return _decode.sample(logits.data_ptr(), logits.numel(), previous.data_ptr() if n_prev else 0, n_prev,
                          float(penalty), float(temperature), int(top_k), float(top_p), float(u))


def _linear_parts(module: nn.Module) -> tuple[int, torch.Tensor, torch.Tensor | None] | None:
    from astrai_core.generation.quantize import BF16Linear, F32Linear, Int8Linear, PackedBF16Linear

    if isinstance(module, BF16Linear):
        return W_BF16, module.weight, None
    if isinstance(module, PackedBF16Linear):
        return W_PBF16, module.weight, None
    if isinstance(module, Int8Linear):
        return W_INT8, module.weight, module.scales
    if isinstance(module, (F32Linear, nn.Linear)) and module.weight.dtype == torch.float32:
        return W_F32, module.weight, None
    return None  # int4 and anything else: PyTorch's path


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


class DecodeStep:
    """Decode tokens for a batch of one, in one call into ``_decode.token``: the embedding row, every
    layer, the final norm and the output head (float32 logits). Python's per-token work is then the
    sampling alone (PyTorch ops around the layers took ~0.5 ms of a ~10 ms SmolLM2 token). One call
    takes up to :attr:`ROWS` consecutive tokens, reading each weight once for all of them; each row's
    logits are bit for bit those of one-token calls.

    Built once per engine after its model is fused and quantized; it holds raw pointers into the
    model's tensors, so the engine keeps both alive together and never changes the weights after.
    """

    #: the most tokens one call takes
    ROWS = 8

    def __init__(self, plan, model: nn.Module, dtype: torch.dtype, max_len: int, threads: int) -> None:
        self.plan = plan
        self.model = model
        self.dtype = dtype
        self.max_len = max_len  # slots the plan's scratch covers
        self.threads = threads
        # rotary rows for every position the plan covers, kept here (the model may rebuild its tables)
        self.cos, self.sin = model.rope_tables(max_len, torch.device("cpu"), dtype)
        self.rope_row = self.cos.shape[1] * self.cos.element_size()
        self.vocab = model.lm_head.out_features

    @classmethod
    def build(cls, model: nn.Module, dtype: torch.dtype, max_len: int) -> "DecodeStep | None":
        """The step for ``model`` (fused, in ``dtype`` activations), or None where it does not apply."""
        if not available() or dtype not in (torch.float32, torch.bfloat16):
            return None
        c = model.config
        layers = []
        for block in model.layers:
            att, mlp = block.attention, block.mlp
            parts = [_linear_parts(m) if m is not None else None
                     for m in (att.qkv_proj, att.o_proj, mlp.gate_up_proj, mlp.down_proj)]
            if any(p is None for p in parts) or att.o_proj.bias is not None:
                return None
            tensors = [block.input_norm.weight, block.post_attention_norm.weight]
            tensors += [att.q_norm.weight, att.k_norm.weight] if att.q_norm is not None else [None, None]
            tensors.append(att.qkv_proj.bias)
            if any(t is not None and (t.dtype != dtype or not t.is_contiguous()) for t in tensors):
                return None
            row = [_ptr(t) for t in tensors]
            for kind, w, s in parts:
                if not w.is_contiguous() or w.device.type != "cpu":
                    return None
                row += [kind, w.data_ptr(), _ptr(s)]
            layers.append(tuple(row))
        head, embed, norm = _linear_parts(model.lm_head), model.embed_tokens.weight, model.norm.weight
        if head is None or not head[1].is_contiguous() or any(
                t.dtype != dtype or not t.is_contiguous() or t.device.type != "cpu" for t in (embed, norm)):
            return None
        dims = (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size,
                float(c.norm_eps), int(dtype == torch.bfloat16), max_len, cls.ROWS, torch.get_num_threads())
        if any(d % 32 for d in (c.hidden_size, c.num_heads * c.head_dim, c.intermediate_size)) or c.head_dim > 1024:
            return None
        kind, w, s = head
        top = (embed.data_ptr(), embed.shape[0], norm.data_ptr(), kind, w.data_ptr(), _ptr(s),
               model.lm_head.out_features)
        return cls(_decode.plan(dims, layers, top), model, dtype, max_len, torch.get_num_threads())

    def fits(self, cache, slot: int, n: int = 1) -> bool:
        """Whether a step writing slots ``slot..slot+n-1`` of ``cache`` can run here (batch 1, this dtype,
        in range, at most :attr:`ROWS` tokens)."""
        return (ENABLED and 1 <= n <= self.ROWS and cache.batch == 1 and cache.k.dtype == self.dtype
                and slot + n <= min(cache.max_len, self.max_len) and cache.k.device.type == "cpu")

    def __call__(self, tokens: tuple[int, ...], pos: int, cache, slot: int) -> torch.Tensor:
        """Logits (len(tokens), vocab) float32 of the token ids ``tokens`` at rotary positions ``pos..``
        (< max_len), writing the cache's slots ``slot..`` (cache: a
        :class:`~astrai_core.generation.cache.KVCache` of batch 1); row t attends to slots 0..slot+t.
        Plain ints in, one tensor made: this runs between every two tokens."""
        if not (0 <= pos and pos + len(tokens) <= self.max_len):
            raise ValueError(f"positions {pos}..{pos + len(tokens) - 1} are outside the step's {self.max_len} "
                             "rotary rows")
        row = self.rope_row * pos
        logits = torch.empty(len(tokens), self.vocab, dtype=torch.float32)
        _decode.token(self.plan, tokens, self.cos.data_ptr() + row, self.sin.data_ptr() + row, cache.k.data_ptr(),
                      cache.v.data_ptr(), slot, cache.max_len, min(torch.get_num_threads(), self.threads),
                      logits.data_ptr())
        return logits
