"""The compiled decode kernels (astrai_core/generation/_decode.c) against PyTorch's own ops.

Each vector path the CPU has (AVX-512, AVX2) is checked by capping the kernels' level; the fused
decode step is checked against the model's own forward on a config with every optional part
(QK-norm, q/k/v bias, grouped heads, scaled rotary) and on the real SmolLM2-135M.
"""

from __future__ import annotations

import pytest
import torch

from astrai_core.checkpoint import LoadedModel, load_model
from astrai_core.config import ModelConfig
from astrai_core.generation import Engine, GenerationConfig, kernels, quantize
from astrai_core.generation.cache import KVCache
from astrai_core.generation.kernels import W_BF16, W_F32, W_INT8, W_PBF16, matvec
from astrai_core.generation.quantize import BF16Linear, PackedBF16Linear, quantize_int8
from astrai_core.generation.sampling import all_tokens, apply_repetition_penalty, top_k_filter, top_p_filter
from astrai_core.model import Transformer, attention

_decode = pytest.importorskip("astrai_core.generation._decode", reason="the C extension was not built")
LEVELS = [lvl for lvl in (1, 2, 3) if lvl <= _decode.set_level(99)]
pytestmark = pytest.mark.skipif(not LEVELS, reason="CPU has neither AVX2 nor AVX-512")


@pytest.fixture(params=LEVELS, ids=lambda lvl: {1: "avx2", 2: "avx512", 3: "avx512bf16"}[lvl])
def level(request):
    assert _decode.set_level(request.param) == request.param
    yield request.param
    _decode.set_level(99)


def test_built_and_used_on_this_machine():
    """The development/CI machine has AVX-512 or AVX2: the fast path must not silently be off."""
    assert kernels.level() in (1, 2, 3) and kernels.available()


@pytest.mark.parametrize("rows", [1, 3, 16])
@pytest.mark.parametrize("n,k", [(100, 96), (576, 576), (1030, 1536)])
@pytest.mark.parametrize("act", [torch.float32, torch.bfloat16])
def test_matvec_bfloat16_weights(level, rows, n, k, act):
    torch.manual_seed(n + k + rows)
    w = torch.randn(n, k).to(torch.bfloat16)
    x = torch.randn(rows, k).to(act)
    y = matvec(W_BF16, w, None, x)
    ref = x.float() @ w.float().t()
    assert y.dtype == act and y.shape == (rows, n)
    # float32 sums in another order; a bfloat16 output is rounded once (8 bits)
    tol = 1e-4 if act == torch.float32 else 1e-2
    assert ((y.float() - ref).abs() / ref.abs().clamp(min=1.0)).max() < tol


def awkward_bf16(n: int, k: int, seed: int) -> torch.Tensor:
    """Normal weights with the values packing must list apart or treat specially: large and tiny
    magnitudes, zeros of both signs, subnormals, infinities and NaN."""
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(n, k, generator=g) * 0.02).to(torch.bfloat16)
    flat = w.view(-1)
    odd = torch.tensor([300.0, -1e-30, 0.0, -0.0, 1e-40, float("inf"), float("-inf"), float("nan"), 7.5, -2e5])
    idx = torch.randperm(n * k, generator=g)[: n * k // 600]
    flat[idx] = odd.repeat(len(idx) // len(odd) + 1)[: len(idx)].to(torch.bfloat16)
    return w


needs_vbmi = pytest.mark.skipif(not kernels.packed_fast(), reason="packed bfloat16 needs AVX512-BF16 and VBMI")


@needs_vbmi
@pytest.mark.parametrize("n,k", [(5, 64), (300, 576), (70, 6912)])
def test_packed_bfloat16_unpacks_bit_for_bit(n, k):
    """Packing is lossless: every bit pattern comes back, escapes (rare high bytes, NaN, infinities)
    included, and a matrix of 1.5 bytes a weight plus the escapes' 6 bytes each."""
    w = awkward_bf16(n, k, n + k)
    packed = kernels.pack_bf16(w)
    assert packed is not None and packed.dtype == torch.uint8
    size, escapes, _ = _decode.packed_size(w.data_ptr(), n, k, 2)
    assert packed.numel() == size == 64 + n * k * 3 // 2 + 4 * (n + 1) + 6 * escapes
    assert escapes >= n * k // 600 // 10 * 6  # the odd values beside 0, -0 and subnormals are escapes
    out = torch.empty(n, k, dtype=torch.bfloat16)
    assert torch.equal(kernels.unpack_bf16(packed, out).view(torch.int16), w.view(torch.int16))
    lin = torch.nn.Linear(k, n, bias=False).to(torch.bfloat16)
    lin.weight.data.copy_(w)
    assert torch.equal(PackedBF16Linear(lin, packed).unpacked().view(torch.int16), w.view(torch.int16))


@needs_vbmi
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 9, 16])
@pytest.mark.parametrize("act", [torch.float32, torch.bfloat16])
def test_packed_matvec_equals_unpacked(level, rows, act):
    """Packed weights give exactly the unpacked kernel's results, on every vector path (the packed
    kernel where VBMI is on, each row unpacked first on the others), escapes and all."""
    n, k = 333, 1536
    w = awkward_bf16(n, k, rows)
    w.view(-1)[w.view(-1).isnan() | w.view(-1).isinf()] = 5.0  # finite sums, so equality means something
    _decode.set_level(99)  # packing itself needs the vector path; the product then runs on ``level``'s
    packed = kernels.pack_bf16(w)
    _decode.set_level(level)
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(rows)).to(act)
    want = matvec(W_BF16, w, None, x)
    got = matvec(W_PBF16, packed, None, x, (n, k))
    assert torch.isfinite(want).all() and torch.equal(got, want)


def test_packing_declines_what_it_cannot_pack(level):
    """Rows not a multiple of 64, weights that are not bfloat16, more than 1/512 escapes (uniformly
    random bits: ~256 high bytes in use), and any CPU without VBMI: left unpacked (None)."""
    g = torch.Generator().manual_seed(0)
    normal = (torch.randn(64, 128, generator=g) * 0.02).to(torch.bfloat16)
    if not kernels.packed_fast():
        assert kernels.pack_bf16(normal) is None
        return
    assert kernels.pack_bf16(normal) is not None
    assert kernels.pack_bf16(normal[:, :96].contiguous()) is None
    assert kernels.pack_bf16(normal.float()) is None
    noise = torch.randint(-32768, 32767, (64, 128), generator=g, dtype=torch.int16).view(torch.bfloat16)
    assert kernels.pack_bf16(noise) is None
    lin = torch.nn.Linear(128, 64, bias=False).to(torch.bfloat16)
    lin.weight.data.copy_(noise)
    assert isinstance(quantize.bf16_linear(lin), BF16Linear)
    with pytest.raises(ValueError, match="multiple of 64"):
        _decode.packed_size(normal.data_ptr(), 64, 96, 1)


@pytest.mark.parametrize("rows", [1, 5])
def test_software_prefetch_switch_changes_no_result(rows):
    """int8 and packed bfloat16 products are prefetched in software or not depending on the CPU (not on
    AMD, where it slows them): both instances give the same bits, whichever is this machine's default."""
    default = _decode.prefetch_compact()
    assert default == _decode.prefetch_compact(None)
    g = torch.Generator().manual_seed(rows)
    q, scales = quantize_int8(torch.randn(700, 2048, generator=g) * 0.05)
    w = awkward_bf16(640, 2048, rows)
    w.view(-1)[w.view(-1).isnan() | w.view(-1).isinf()] = 5.0
    packed = kernels.pack_bf16(w)
    x = torch.randn(rows, 2048, generator=g)
    got = {}
    try:
        for on in (False, True):
            assert _decode.prefetch_compact(on) is on
            got[on] = [matvec(W_INT8, q, scales, x), matvec(W_INT8, q, scales, x.to(torch.bfloat16))]
            if packed is not None:
                got[on] += [matvec(W_PBF16, packed, None, x.to(torch.bfloat16), (640, 2048)),
                            kernels.unpack_bf16(packed, torch.empty(640, 2048, dtype=torch.bfloat16), (640, 2048))]
    finally:
        _decode.prefetch_compact(None)
    assert _decode.prefetch_compact() == default
    assert all(torch.isfinite(a.float()).all() and torch.equal(a, b) for a, b in zip(got[False], got[True]))
    with pytest.raises(TypeError):
        _decode.prefetch_compact(True, False)


@pytest.mark.parametrize("rows", [1, 4])
def test_matvec_float32_weights(level, rows):
    torch.manual_seed(rows)
    w, x = torch.randn(333, 640), torch.randn(rows, 640)
    torch.testing.assert_close(matvec(W_F32, w, None, x), x @ w.t(), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("n,k", [(64, 32), (300, 576), (2050, 6912)])
def test_matvec_int8_weights(level, rows, n, k):
    torch.manual_seed(n + k)
    q, scales = quantize_int8(torch.randn(n, k) * 0.05)
    x = torch.randn(rows, k) * 3
    x[:, 7] = 80.0  # an outlier channel, as real activations have
    y = matvec(W_INT8, q, scales, x)
    ref = (x.double() @ q.double().t()) * scales.double()
    # the input is rounded per row to int16 (absmax/32767): relative error ~1e-4 of the row scale
    assert ((y.double() - ref).abs().max() / ref.abs().max()) < 1e-3


@pytest.mark.parametrize("k", [32, 96, 70016])
def test_matvec_int8_sums_exactly(level, k):
    """The int16-rounded input times int8 weights is an integer sum. The VNNI path (level 3: x split into
    two bytes) sums it exactly, beyond int32 too (k=70016 at full scale: 70016 * 32767 * 127 > 2^31), so
    only the final float32 rounding remains; the widening paths add 256-wide exact blocks in float32."""
    g = torch.Generator().manual_seed(k)
    q = torch.randint(-127, 128, (6, k), generator=g, dtype=torch.int8)
    q[0], q[1] = 127, -127  # full-scale rows: the largest sums
    scales = torch.rand(6, generator=g) * 0.01 + 0.001
    x = torch.randn(2, k, generator=g)
    x[1] = 1.5  # every value rounds to 32767
    y = matvec(W_INT8, q, scales, x).double()
    xs = x.abs().amax(dim=1) / 32767.0  # the kernel's per-row rounding of x, in float32 as it does
    x16 = torch.round(x * (1.0 / xs)[:, None]).double()
    row_scale = xs.double()[:, None] * scales.double()
    exact = (x16 @ q.double().t()) * row_scale
    if level == 3:
        assert ((y - exact).abs() / exact.abs()).max() < 1e-6
    else:  # float32 sums of blocks: bounded by the magnitudes summed, not by the (cancelling) result
        assert ((y - exact).abs() / ((x16.abs() @ q.double().abs().t()) * row_scale)).max() < 1e-6


@pytest.mark.parametrize("n", [1, 7, 16, 17, 49152, 151937])
def test_argmax_is_torchs(n):
    """Greedy decoding's argmax: torch.argmax's index (its clone is the CPU's, whatever the level), ties
    (first wins), NaN (first NaN wins), all -inf, a maximum in the tail the vector loop leaves."""
    g = torch.Generator().manual_seed(n)
    rows = [torch.randn(n, generator=g), torch.round(torch.randn(n, generator=g) * 2),
            torch.full((n,), float("-inf")), torch.randn(n, generator=g)]
    rows[3][-1] = 50.0
    nan = torch.randn(n, generator=g)
    nan[torch.randint(0, n, (3,), generator=g)] = float("nan")
    rows.append(nan)
    for x in rows:
        assert kernels.argmax(x) == int(torch.argmax(x))
    assert kernels.argmax(torch.tensor([1.0, 3.0, 2.0, 3.0] * 9)) == 1


# (temperature, top_k, top_p, repetition penalty): the app's settings, top-k before top-p, top-k alone,
# a narrow nucleus, plain temperature (the whole vocabulary), greedy on the penalized row
SAMPLING = [(0.7, 0, 0.9, 1.1), (1.3, 50, 0.95, 1.2), (0.5, 5, 1.0, 1.0), (1.0, 0, 0.3, 1.0), (1.0, 0, 0.995, 1.0),
            (1.0, 0, 1.0, 1.0), (0.0, 0, 1.0, 1.3)]


@pytest.mark.parametrize("temperature,top_k,top_p,penalty", SAMPLING)
def test_sample_makes_the_torch_functions_choice(level, temperature, top_k, top_p, penalty):
    """One C call (kernels.sample) against sampling.py's torch functions, on a peaked row like a language
    model's (49k vocabulary, some -inf), a flat one, and one token far above the rest (the top-k or the
    nucleus reach past e^-8 of it: the candidates widen), with ids seen twice in the history (penalized
    once): for each of 300 uniform numbers u the C token is the one whose slice [lo, hi) of the torch
    functions' cumulative probabilities holds u (to 1e-5: the two compute e^x and the nucleus' edge in
    different precisions)."""
    g = torch.Generator().manual_seed(5)
    peaked, flat = torch.randn(49152, generator=g) * 4, torch.randn(3000, generator=g) * 0.3
    peaked[torch.randint(0, 49152, (100,), generator=g)] = float("-inf")
    spike = torch.randn(5000, generator=g) * 0.5
    spike[17] = 12.0  # ~97% of the mass at temperature 1
    for x in (peaked, flat, spike):
        prev = torch.randint(0, x.shape[0], (300,), generator=g)
        prev[:50] = prev[50:100]
        z = apply_repetition_penalty(x, prev, penalty)
        if temperature == 0.0:
            assert kernels.sample(x, prev, 0.0, top_k, top_p, penalty, 0.0) == int(torch.argmax(z))
            continue
        logits, ids = top_p_filter(top_k_filter(all_tokens(z / temperature), top_k), top_p)
        ids = torch.arange(x.shape[0]) if ids is None else ids
        cdf = logits.double().softmax(-1).cumsum(-1)
        slices = {int(t): (float(cdf[i - 1]) if i else 0.0, float(cdf[i])) for i, t in enumerate(ids)}
        drawn = set()
        for u in torch.rand(300, generator=g).tolist():
            tok = kernels.sample(x, prev, temperature, top_k, top_p, penalty, u)
            lo, hi = slices[tok]  # a KeyError: a token the filters dropped
            assert lo - 1e-5 <= u < hi + 1e-5, (tok, u, lo, hi)
            drawn.add(tok)
        assert len(drawn) > 1 or slices[tok][1] > 0.9  # (or one token holds the nucleus)


def test_sample_rejects_bad_arguments():
    x = torch.zeros(10)
    with pytest.raises(ValueError, match="previous id 10 outside the vocabulary of 10"):
        kernels.sample(x, torch.tensor([3, 10]), 1.0, 0, 1.0, 1.2, 0.5)
    with pytest.raises(ValueError, match="u outside"):
        kernels.sample(x, torch.tensor([3]), 1.0, 0, 1.0, 1.2, 1.0)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_dequantize_int8_folds_the_row_scales(out_dtype):
    """The prefill weight: int8 times its row scale, rounded once to the output dtype (as PyTorch rounds)."""
    g = torch.Generator().manual_seed(3)
    w = torch.randint(-127, 128, (300, 200), generator=g, dtype=torch.int8)
    s = torch.rand(300, generator=g) * 0.05
    out = torch.empty(300, 200, dtype=out_dtype)
    assert torch.equal(kernels.dequantize_int8(w, s, out), (w.float() * s[:, None]).to(out_dtype))


def test_matvec_rejects_unsupported_shapes():
    w = torch.zeros(8, 40, dtype=torch.bfloat16)
    x = torch.zeros(1, 40)
    y = torch.empty(1, 8)
    with pytest.raises(ValueError, match="unsupported shape"):
        _decode.matvec(W_BF16, w.data_ptr(), 0, x.data_ptr(), False, y.data_ptr(), False, 1, 8, 40, 1)
    with pytest.raises(ValueError, match="unsupported shape"):  # more rows than the kernel takes
        _decode.matvec(W_BF16, w.data_ptr(), 0, x.data_ptr(), False, y.data_ptr(), False, 17, 8, 32, 1)


FULL = ModelConfig(vocab_size=300, hidden_size=128, num_layers=3, num_heads=8, num_kv_heads=2, head_dim=32,
                   intermediate_size=224, max_position_embeddings=256, rope_theta=10000.0, rope_scaling=2.0,
                   qk_norm=True, attention_bias=True)


needs_bf16_dp = pytest.mark.skipif(kernels.level() < 3, reason="bfloat16 prefill attention needs AVX512-BF16")


@pytest.fixture
def bf16_kernel(monkeypatch):
    """The bfloat16 prefill attention kernel in use even where AMX sends bfloat16 to PyTorch's SDPA."""
    monkeypatch.setattr(kernels, "SDPA_BF16", False)


def causal_attention_f64(q, k, v, start):
    """q (1, nh, T, hs) at slots start.., over slots 0..start+T of k, v (1, nkv, S, hs), in float64."""
    T, g = q.shape[2], q.shape[1] // k.shape[1]
    n = start + T
    k, v = (t[:, :, :n].double().repeat_interleave(g, dim=1) for t in (k, v))
    s = (q.double() @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    s = s.masked_fill(torch.arange(n)[None, :] > (start + torch.arange(T))[:, None], float("-inf"))
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("nh,nkv,hs,T,start", [(9, 3, 64, 130, 0), (24, 4, 64, 200, 0), (9, 3, 64, 37, 100),
                                               (16, 4, 128, 70, 300), (8, 1, 64, 65, 63), (5, 5, 64, 1, 9),
                                               (14, 2, 64, 1, 0), (7, 7, 192, 50, 14)])
def test_prefill_attention_kernel(nh, nkv, hs, T, start, dtype, bf16_kernel):
    """The compiled prefill attention against float64: in bfloat16 as accurate as PyTorch's bfloat16
    SDPA, in float32 to float32 rounding; for grouped heads (1..8 per group, odd tails of rows and
    keys), a cached past, head sizes 64-192. Slots past start + T hold NaN: reading one would show."""
    if kernels.level() < (3 if dtype == torch.bfloat16 else 2):
        pytest.skip("no prefill attention kernel for this dtype on this CPU")
    g = torch.Generator().manual_seed(nh * T + start)
    S = start + T + 7
    q = (torch.randn(1, nh, T, hs, generator=g) * 2).to(dtype)
    k = (torch.randn(1, nkv, S, hs, generator=g) * 2).to(dtype)
    v = torch.randn(1, nkv, S, hs, generator=g).to(dtype)
    k[:, :, start + T:] = float("nan")
    v[:, :, start + T:] = float("nan")
    y = kernels.prefill_attention(q, k, v, start)
    assert y is not None and y.shape == (1, nh, T, hs) and y.dtype == dtype
    ref = causal_attention_f64(q, k, v, start)
    sdpa = attention(q, k[:, :, :start + T], v[:, :, :start + T])  # PyTorch's, same dtype
    err, sdpa_err = ((t.double() - ref).abs().max().item() for t in (y, sdpa))
    if dtype == torch.bfloat16:
        assert err <= 1.25 * sdpa_err + 1e-3, (err, sdpa_err)
    else:
        assert err < 2e-5, (err, sdpa_err)


@needs_bf16_dp
def test_prefill_attention_declines_what_it_cannot_run(bf16_kernel):
    q, k = torch.randn(1, 4, 8, 64).bfloat16(), torch.randn(1, 2, 16, 64).bfloat16()
    assert kernels.prefill_attention(q, k.float(), k.float(), 0) is None  # mixed dtypes
    assert kernels.prefill_attention(q.half(), k.half(), k.half(), 0) is None  # float16
    assert kernels.prefill_attention(q[..., :32].contiguous(), k[..., :32].contiguous(), k[..., :32].contiguous(),
                                     0) is None  # head size 32
    assert kernels.prefill_attention(q.expand(2, -1, -1, -1), k.expand(2, -1, -1, -1),
                                     k.expand(2, -1, -1, -1), 0) is None  # a batch
    with pytest.raises(ValueError, match="bad shape"):
        kernels.prefill_attention(q, k, k, 9)  # 9 + 8 slots > 16


def test_bfloat16_prefill_attention_is_sdpa_on_amx(monkeypatch):
    """With AMX (or SDPA_BF16 set), bfloat16 prefill attention is left to PyTorch; float32 keeps the kernel."""
    assert kernels.SDPA_BF16 == kernels.amx()
    monkeypatch.setattr(kernels, "SDPA_BF16", True)
    q, k = torch.randn(1, 4, 8, 64), torch.randn(1, 2, 16, 64)
    assert kernels.prefill_attention(q.bfloat16(), k.bfloat16(), k.bfloat16(), 0) is None
    if kernels.level() >= 2:
        assert kernels.prefill_attention(q, k, k, 0) is not None


@needs_bf16_dp
@pytest.mark.parametrize("sdpa", [False, True])
def test_chunked_bfloat16_prefill_matches_one_shot(smollm2_gguf, monkeypatch, sdpa):
    """The real SmolLM2 in bfloat16: a prompt prefilled in chunks of 10 (each chunk attends to the cached
    past through the kernel, or SDPA as on AMX CPUs) gives the one-shot prefill's logits up to bfloat16
    rounding, and its tokens."""
    monkeypatch.setattr(kernels, "SDPA_BF16", sdpa)
    ids = load_model(smollm2_gguf).tokenizer.encode_chat(
        [{"role": "system", "content": "You are a careful assistant. Answer from the sources; cite them."},
         {"role": "user", "content": "Summarise the history of the Grand Canal of China in a few sentences."}])
    one = Engine(load_model(smollm2_gguf), dtype="bfloat16", max_seq_len=256, lookahead=0)
    chunked = Engine(load_model(smollm2_gguf), dtype="bfloat16", max_seq_len=256, lookahead=0, prefill_chunk=10)
    assert len(ids) > 3 * 10
    logits = []
    for eng in (one, chunked):
        kv = KVCache(eng.config.num_layers, 1, eng.config.num_kv_heads, len(ids), eng.config.head_dim, eng.dtype)
        with torch.inference_mode():
            for s in range(0, len(ids), eng.prefill_chunk):
                part = ids[s:s + eng.prefill_chunk]
                out = eng._forward(torch.tensor([part]), torch.arange(s, s + len(part)), kv, s, None)
        logits.append(out[0])
    assert ((logits[0] - logits[1]).abs().max() / logits[0].abs().max()).item() < 0.03
    cfg = GenerationConfig(max_new_tokens=12)
    assert one.generate(ids, cfg).token_ids == chunked.generate(ids, cfg).token_ids


@pytest.fixture(scope="module")
def tok(smollm2_gguf):
    return load_model(smollm2_gguf).tokenizer


def random_loaded(config: ModelConfig, tokenizer) -> LoadedModel:
    model = Transformer(config)
    model.init_weights(seed=0, std=0.1)
    with torch.no_grad():  # non-trivial norm weights and biases, so a dropped term shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.copy_(torch.rand(p.shape, generator=torch.Generator().manual_seed(len(name))) + 0.5)
    return LoadedModel(model, tokenizer, config, None, "random")


def stepwise_logits(engine: Engine, ids: list[int], n_prompt: int) -> torch.Tensor:
    """Prefill ``ids[:n_prompt]``, then one token at a time through the cache: logits after each."""
    c = engine.config
    kv = KVCache(c.num_layers, 1, c.num_kv_heads, len(ids), c.head_dim, engine.dtype)
    t = torch.tensor([ids])
    with torch.inference_mode():
        steps = [engine._forward(t[:, :n_prompt], torch.arange(n_prompt), kv, 0, None)]
        for i in range(n_prompt, len(ids) - 1):
            steps.append(engine._decode_token(ids[i], i, kv))
    return torch.cat(steps)


def draft_step_logits(engine: Engine, ids: list[int], n_prompt: int) -> torch.Tensor:
    """Prefill ``ids[:n_prompt]``, then the rest in one several-token step (a lookup draft's check)."""
    c = engine.config
    kv = KVCache(c.num_layers, 1, c.num_kv_heads, 64, c.head_dim, engine.dtype)
    with torch.inference_mode():
        engine._forward(torch.tensor([ids[:n_prompt]]), torch.arange(n_prompt), kv, 0, None)
    return engine._step(tuple(ids[n_prompt:]), n_prompt, kv, n_prompt)


def step_vs_model_error(config: ModelConfig, tok, monkeypatch, dtype: str, quant: str | None, n: int,
                        n_prompt: int, seed: int) -> float:
    """Largest relative logit error of the fused step against the model's own forward over ``n`` tokens."""
    fast = Engine(random_loaded(config, tok), dtype=dtype, quantize=quant)
    if dtype == "bfloat16" and fast.dtype != torch.bfloat16:
        pytest.skip("no native bfloat16 here: bfloat16 runs as float32 activations")
    assert fast._step is not None
    ids = torch.randint(0, config.vocab_size, (n,), generator=torch.Generator().manual_seed(seed)).tolist()
    a = stepwise_logits(fast, ids, n_prompt)
    monkeypatch.setattr(kernels, "ENABLED", False)
    slow = Engine(random_loaded(config, tok), dtype=dtype, quantize=quant)
    assert slow._step is None
    b = stepwise_logits(slow, ids, n_prompt)
    return ((a - b).abs().max(-1).values / b.abs().max(-1).values).max().item()


@pytest.mark.parametrize("dtype,quant,tol", [("float32", None, 1e-4), ("bfloat16", None, 0.06),
                                             ("float32", "int8", 0.02), ("bfloat16", "int8", 0.06)])
def test_fused_step_matches_the_model_forward(level, tok, monkeypatch, dtype, quant, tol):
    """Every optional part of a layer (QK-norm, q/k/v bias, 8 query heads on 2 kv heads, scaled
    rotary) through the fused step gives the logits of the model's own forward, step by step."""
    err = step_vs_model_error(FULL, tok, monkeypatch, dtype, quant, n=80, n_prompt=10, seed=1)
    assert err < tol, err


# ten query heads on one kv head: more than the 8 heads per group the AVX-512/AVX2 attention unrolls, so
# the portable loops run; 1 kv head also leaves both threads splitting the positions of one group
MQA = ModelConfig(vocab_size=300, hidden_size=128, num_layers=2, num_heads=10, num_kv_heads=1, head_dim=32,
                  intermediate_size=224, max_position_embeddings=256, rope_theta=10000.0)
# head size 64 (SmolLM2's, Llama's): the AVX-512 values pass holds 4 vectors per head, the BF16 dot
# products take two pairs of 32 lanes, and 100 positions split over two threads leave partial blocks
GQA64 = ModelConfig(vocab_size=300, hidden_size=384, num_layers=2, num_heads=6, num_kv_heads=2, head_dim=64,
                    intermediate_size=256, max_position_embeddings=256, rope_theta=10000.0)


# bfloat16 bounds: the largest relative logit error of bf16 activations against PyTorch's own bf16 ops,
# measured 0.04-0.09 for GQA64 over seeds 1-8 on every vector path (0.06 at seed 3 on AVX2 and AVX-512);
# a misplaced position or head gives errors of order 1
@pytest.mark.parametrize("config,n,n_prompt,bf16_tol", [(MQA, 150, 5, 0.06), (GQA64, 100, 3, 0.1)],
                         ids=["mqa-10-heads", "head-size-64"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_step_attention_shapes(level, tok, monkeypatch, dtype, config, n, n_prompt, bf16_tol):
    err = step_vs_model_error(config, tok, monkeypatch, dtype, None, n=n, n_prompt=n_prompt, seed=n_prompt)
    assert err < (1e-4 if dtype == "float32" else bf16_tol), err


@pytest.mark.parametrize("dtype,quant", [("float32", None), ("bfloat16", None), ("float32", "int8"),
                                         ("bfloat16", "int8")])
def test_several_token_step_equals_one_token_steps(level, tok, dtype, quant):
    """A step of T tokens (a draft to verify) gives, row for row, the very logits and cache entries of T
    one-token steps, for every T up to ROWS (the linears take rows in fours, then the rest): lookup
    decoding's output is then exactly the plain decoder's."""
    eng = Engine(random_loaded(FULL, tok), dtype=dtype, quantize=quant, max_seq_len=64)
    if dtype == "bfloat16" and eng.dtype != torch.bfloat16:
        pytest.skip("no native bfloat16 here: bfloat16 runs as float32 activations")
    c, step = FULL, eng._step
    ids = torch.randint(0, c.vocab_size, (40,), generator=torch.Generator().manual_seed(4)).tolist()
    one = KVCache(c.num_layers, 1, c.num_kv_heads, 64, c.head_dim, eng.dtype)
    with torch.inference_mode():
        eng._forward(torch.tensor([ids[:20]]), torch.arange(20), one, 0, None)
    many = KVCache(c.num_layers, 1, c.num_kv_heads, 64, c.head_dim, eng.dtype)
    many.k.copy_(one.k)
    many.v.copy_(one.v)
    singles = torch.cat([step((ids[20 + i],), 20 + i, one, 20 + i) for i in range(step.ROWS)])
    for T in range(2, step.ROWS + 1):
        rows = step(tuple(ids[20: 20 + T]), 20, many, 20)
        assert rows.shape == (T, c.vocab_size)
        assert torch.equal(rows, singles[:T]), T
        assert torch.equal(many.k[:, :, :, :20 + T], one.k[:, :, :, :20 + T])
        assert torch.equal(many.v[:, :, :, :20 + T], one.v[:, :, :, :20 + T])


def test_step_falls_back_outside_its_plan(tok):
    """A cache longer than the engine's context (slots the plan has no scratch for) takes PyTorch's path."""
    eng = Engine(random_loaded(FULL, tok), dtype="float32", max_seq_len=16)
    assert eng._step is not None
    c = FULL
    kv = KVCache(c.num_layers, 1, c.num_kv_heads, 40, c.head_dim, torch.float32)
    assert eng._step.fits(kv, 15) and not eng._step.fits(kv, 16)
    ids = list(range(1, 40))
    with torch.inference_mode():
        eng._forward(torch.tensor([ids[:30]]), torch.arange(30), kv, 0, None)
        out = eng._decode_token(ids[30], 30, kv)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="outside the step"):  # its rotary rows end at the plan's length
        eng._step((ids[30],), 30, kv, 15)
    with pytest.raises(ValueError, match="outside the step"):  # so do the rows of a several-token step
        eng._step((1, 2, 3), 14, kv, 14)
    assert eng._step.fits(kv, 12, 4) and not eng._step.fits(kv, 13, 4) and not eng._step.fits(kv, 0, 9)
    with pytest.raises(ValueError, match="outside the cache"):  # the C side checks too
        _decode.token(eng._step.plan, (1,), 0, 0, 0, 0, 16, 40, 1, 0)
    with pytest.raises(ValueError, match="outside the cache"):
        _decode.token(eng._step.plan, (1, 2), 0, 0, 0, 0, 15, 40, 1, 0)
    with pytest.raises(ValueError, match="outside the embedding"):
        _decode.token(eng._step.plan, (3, FULL.vocab_size), 0, 0, 0, 0, 3, 40, 1, 0)
    with pytest.raises(ValueError, match="tuple of 1 to 8"):
        _decode.token(eng._step.plan, tuple(range(9)), 0, 0, 0, 0, 3, 40, 1, 0)
    with pytest.raises(ValueError, match="tuple of 1 to 8"):
        _decode.token(eng._step.plan, (), 0, 0, 0, 0, 3, 40, 1, 0)


def test_int4_engine_keeps_pytorch_path(tok):
    eng = Engine(random_loaded(FULL, tok), dtype="float32", quantize="int4")
    assert eng._step is None
    assert len(eng.generate([1, 2, 3], GenerationConfig(max_new_tokens=4)).token_ids) == 4


def test_float32_engine_keeps_bfloat16_valued_weights_in_bfloat16(level, tok, monkeypatch):
    """A bfloat16 checkpoint run in float32 (a CPU without native bfloat16): its linears keep their
    weights in bfloat16, half the bytes a decode token reads, and the logits (prefill, one-token steps,
    several-token steps) are bit for bit those of float32 weights. Weights that are not all bfloat16
    values stay float32."""
    from astrai_core.generation.quantize import F32Linear

    def loaded(bf16_values: bool) -> LoadedModel:
        lo = random_loaded(FULL, tok)
        if bf16_values:
            with torch.no_grad():
                for p in lo.model.parameters():
                    p.copy_(p.to(torch.bfloat16).float())
        return lo

    narrow = Engine(loaded(True), dtype="float32")
    linears = [m for m in narrow.model.modules() if hasattr(m, "out_features")]
    assert linears and all(isinstance(m, BF16Linear) and m.weight.dtype == torch.bfloat16 for m in linears)
    assert narrow.dtype == torch.float32 and narrow._step is not None
    general = Engine(loaded(False), dtype="float32")
    assert all(isinstance(m, F32Linear) for m in general.model.modules() if hasattr(m, "out_features"))
    odd = torch.nn.Linear(40, 8, bias=False)  # no kernel for 40 inputs: BF16Linear would round x there
    odd.weight.data.copy_(odd.weight.data.to(torch.bfloat16).float())
    assert isinstance(quantize.f32_linear(odd), F32Linear)
    monkeypatch.setattr(quantize, "F32_AS_BF16", False)
    wide = Engine(loaded(True), dtype="float32")
    assert all(isinstance(m, F32Linear) for m in wide.model.modules() if hasattr(m, "out_features"))
    ids = torch.randint(0, FULL.vocab_size, (40,), generator=torch.Generator().manual_seed(4)).tolist()
    assert torch.equal(stepwise_logits(narrow, ids, 12), stepwise_logits(wide, ids, 12))
    assert torch.equal(draft_step_logits(narrow, ids[:18], 12), draft_step_logits(wide, ids[:18], 12))


@needs_vbmi
def test_real_model_packed_bfloat16_is_exact(smollm2_gguf, tok, monkeypatch):
    """SmolLM2-135M in bfloat16: every linear packs (its trained weights list ~0.02% apart), and the
    packed engine's logits (prefill, one-token and several-token steps) equal the unpacked engine's
    bit for bit."""
    packed = Engine(load_model(smollm2_gguf), dtype="bfloat16", max_seq_len=256)
    linears = [m for m in packed.model.modules() if hasattr(m, "out_features")]
    assert linears and all(isinstance(m, PackedBF16Linear) for m in linears)
    monkeypatch.setattr(quantize, "PACK_BF16", False)
    plain = Engine(load_model(smollm2_gguf), dtype="bfloat16", max_seq_len=256)
    assert not any(isinstance(m, PackedBF16Linear) for m in plain.model.modules())
    ids = tok.encode_chat([{"role": "user", "content": "Name three rivers in China."}])
    ids += tok.encode(" The Yangtze, the Yellow River and the Pearl River.")
    assert torch.equal(stepwise_logits(packed, ids, 10), stepwise_logits(plain, ids, 10))
    assert torch.equal(draft_step_logits(packed, ids[:20], 12), draft_step_logits(plain, ids[:20], 12))


@pytest.fixture(scope="module")
def float_reference(smollm2_gguf):
    """The real SmolLM2-135M in float32: a chat prompt and its greedy continuation of 128 tokens (made
    with the kernels; the float32 case below checks that PyTorch's ops choose every one of them too)."""
    ref = Engine(load_model(smollm2_gguf), dtype="float32", max_seq_len=512)
    prompt = ref.tokenizer.encode_chat([{"role": "user", "content": "Explain how a bicycle works."}])
    res = ref.generate(prompt, GenerationConfig(max_new_tokens=128))
    assert res.completion_tokens == 128
    return prompt, res.token_ids


@pytest.mark.parametrize("dtype,quant", [("float32", None), ("bfloat16", None), ("bfloat16", "int8"),
                                         ("float32", "int8")])
def test_real_model_same_with_and_without_kernels(smollm2_gguf, float_reference, monkeypatch, dtype, quant):
    """On the real SmolLM2-135M: in float32 the kernels' greedy tokens are PyTorch's; where numbers are
    rounded (bfloat16 activations, int8 weights) the kernels follow the float32 model as closely as
    PyTorch's ops at the same precision do: top-1 agreement along the float32 continuation, teacher-forced
    over 128 steps, wrong on at most 3 steps more than PyTorch's (the rounding order differs, so single
    steps near a tie may flip either way)."""
    prompt, ref_ids = float_reference
    ids = prompt + ref_ids
    fast = Engine(load_model(smollm2_gguf), dtype=dtype, quantize=quant, max_seq_len=512)
    assert fast._step is not None
    res = fast.generate(prompt, GenerationConfig(max_new_tokens=32))
    if dtype == "float32" and quant is None:
        assert res.token_ids == ref_ids[:32]
    fast_top1 = stepwise_logits(fast, ids, len(prompt)).argmax(-1)
    gen_top1 = stepwise_logits(fast, prompt + res.token_ids, len(prompt)).argmax(-1)
    assert gen_top1.tolist() == res.token_ids  # the teacher-forced run replays the greedy one
    monkeypatch.setattr(kernels, "ENABLED", False)
    slow = Engine(load_model(smollm2_gguf), dtype=dtype, quantize=quant, max_seq_len=512)
    assert slow._step is None
    slow_top1 = stepwise_logits(slow, ids, len(prompt)).argmax(-1)
    want = torch.tensor(ref_ids)
    fast_wrong = int((fast_top1 != want).sum())
    slow_wrong = int((slow_top1 != want).sum())
    if dtype == "float32" and quant is None:
        assert fast_wrong == slow_wrong == 0
    assert fast_wrong <= slow_wrong + 3, (fast_wrong, slow_wrong)
    assert fast_wrong <= 0.1 * len(ref_ids), fast_wrong


@pytest.mark.parametrize("shape", [(1, 2 * 17), (3, 2 * 1536), (2, 5, 2 * 100)])
def test_swiglu_kernel(shape):
    """silu(gate) * up in one C pass (float32 prefill's MLP) within a few float32 ulps of the exact
    value, both signs, tiny and saturating gates (|g| up to 100) included."""
    torch.manual_seed(sum(shape))
    gu = torch.randn(shape) * 6
    gu[..., 0], gu[..., 1], gu[..., 2] = 100.0, -100.0, 1e-30
    n = shape[-1] // 2
    got = kernels.swiglu(gu)
    exact = torch.nn.functional.silu(gu[..., :n].double()) * gu[..., n:].double()
    assert got.shape == (*shape[:-1], n) and got.dtype == torch.float32
    # relative to the exact value; for g = -100 (exact ~1e-42) the kernel's exp stops at e^-87
    err = ((got.double() - exact).abs() - 1e-6 * exact.abs()).max().item()
    assert err < 1e-33, err


def bf16_close(got: torch.Tensor, want: torch.Tensor, equal_share: float = 0.999) -> None:
    """bfloat16 results rounded as PyTorch rounds: nearly all equal (below 1e-30 counts as equal: the
    kernels' exp stops at e^-87), the rest one rounding step apart (summation order)."""
    assert got.shape == want.shape and got.dtype == want.dtype == torch.bfloat16
    g, w = got.float(), want.float()
    assert ((g == w) | ((g - w).abs() < 1e-30)).float().mean().item() >= equal_share
    assert ((g - w).abs() <= w.abs() * 2 ** -7 + 1e-30).all()


@pytest.mark.parametrize("shape", [(1, 2 * 17), (7, 2 * 1536), (2, 5, 2 * 100)])
def test_swiglu_bfloat16_rounds_as_torch(level, shape):
    """bfloat16 swiglu in one C pass (AVX512-BF16, or the portable loop): silu(gate) rounded to
    bfloat16, then the product, as PyTorch's two ops; saturating, tiny and zero gates included."""
    torch.manual_seed(sum(shape))
    gu = (torch.randn(shape) * 6).to(torch.bfloat16)
    gu[..., 0], gu[..., 1], gu[..., 2], gu[..., 3] = 100.0, -100.0, 1e-30, 0.0
    n = shape[-1] // 2
    gate, up = gu.chunk(2, dim=-1)
    bf16_close(kernels.swiglu(gu), torch.nn.functional.silu(gate) * up)


def test_swiglu_leaves_autograd_to_torch():
    gu = torch.randn(4, 64, requires_grad=True)
    kernels.swiglu(gu).sum().backward()
    assert gu.grad is not None and gu.grad.abs().sum() > 0


@pytest.mark.parametrize("rows,n", [(1, 64), (37, 100), (512, 1536), (3, 17)])
def test_rms_norm_kernel(level, rows, n):
    """bfloat16 RMSNorm in one C pass (AVX512-BF16, or the portable loop) rounds as F.rms_norm; a strided
    view (the q/k norms' input) too; float32 and autograd keep PyTorch's op exactly."""
    torch.manual_seed(rows + n)
    x = (torch.randn(rows, 2 * n) * 3).to(torch.bfloat16)[:, n // 2:n // 2 + n]  # not contiguous
    w = torch.randn(n).to(torch.bfloat16)
    bf16_close(kernels.rms_norm(x, w, 1e-6), torch.nn.functional.rms_norm(x, (n,), w, 1e-6))
    xf, wf = x.float(), w.float()
    assert torch.equal(kernels.rms_norm(xf, wf, 1e-6), torch.nn.functional.rms_norm(xf, (n,), wf, 1e-6))
    wg = w.float().requires_grad_()
    kernels.rms_norm(xf, wg, 1e-6).sum().backward()
    assert wg.grad is not None and wg.grad.abs().sum() > 0


def test_float32_prefill_linear_in_row_blocks(monkeypatch):
    """float32 prefill GEMMs run F32_TILE_ROWS rows of the weight at a time, a short last block
    included, with the bias: PyTorch's answer up to float32 rounding, and bfloat16-valued weights kept in
    bfloat16 (BF16Linear, widened block by block) give exactly F32Linear's bits."""
    monkeypatch.setattr(quantize, "F32_TILE_ROWS", 64)
    torch.manual_seed(4)
    lin = torch.nn.Linear(192, 300, bias=True)
    lin.weight.data = lin.weight.data.to(torch.bfloat16).float()  # bfloat16 values, as f32_linear keeps them
    x = torch.randn(2, 20, 192)
    with torch.inference_mode():
        got = quantize.F32Linear(lin)(x)
        widened = BF16Linear(lin)(x)
        want = torch.nn.functional.linear(x, lin.weight, lin.bias)
    assert got.shape == (2, 20, 300) and torch.equal(got, widened)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["packed", "int8"])
def test_prefill_linear_in_row_blocks(kind, monkeypatch):
    """Prefill GEMMs of packed bfloat16 and int8 weights convert the weight a block of rows at a time
    (tiled_linear): the same result as one GEMM on the whole converted weight, up to the GEMM's own
    bfloat16 rounding, with a last block shorter than the rest."""
    if kind == "packed" and not kernels.packed_fast():
        pytest.skip("no packed bfloat16 here")
    monkeypatch.setattr(quantize, "TILE_ROWS", 64)
    torch.manual_seed(3)
    lin = torch.nn.Linear(192, 300, bias=True).to(torch.bfloat16)
    x = torch.randn(2, 20, 192).to(torch.bfloat16)
    if kind == "packed":
        layer = PackedBF16Linear(lin, kernels.pack_bf16(lin.weight.detach()))
        for n0, n1 in [(0, 64), (256, 300), (5, 6)]:
            assert torch.equal(layer.unpacked(n0, n1).view(torch.int16), lin.weight[n0:n1].view(torch.int16))
        want = torch.nn.functional.linear(x, lin.weight, lin.bias)
    else:
        layer = quantize.Int8Linear(lin)
        w = (layer.weight.float() * layer.scales[:, None]).to(torch.bfloat16)
        want = torch.nn.functional.linear(x, w, lin.bias)
    with torch.inference_mode():
        got = layer(x)
    assert got.shape == (2, 20, 300)
    assert ((got.float() - want.float()).abs() <= want.float().abs() * 2 ** -6 + 0.05).all()
    with pytest.raises(ValueError, match="does not hold rows"):
        kernels.unpack_bf16(torch.zeros(10, dtype=torch.uint8), torch.empty(3, 64, dtype=torch.bfloat16),
                            (10, 64), (0, 4))
