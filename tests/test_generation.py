"""Engine tests on a tiny random model and a tiny byte-level BPE trained in the test.

The real-checkpoint oracle tests (SmolLM2 GGUF vs transformers) are in test_generation_hf.py.
"""

from __future__ import annotations

import sys
import threading

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from astrai_core.checkpoint import LoadedModel
from astrai_core.config import preset
from astrai_core.errors import ConfigError, GenerationError
from astrai_core.generation import Engine, GenerationConfig
from astrai_core.generation.cache import KVCache
from astrai_core.generation.engine import held_back, native_bf16
from astrai_core.generation.quantize import KERNEL_MAX_ROWS, quantize_model
from astrai_core.generation.sampling import (all_tokens, apply_repetition_penalty, draw, next_token, top_k_filter,
                                             top_p_filter)
from astrai_core.model import Transformer
from astrai_core.tokenizer import IM_END, IM_START, Tokenizer, TokenizerConfig

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Offline assistants answer questions about your documents with citations.",
    "离线助手可以回答关于文档的问题，并给出引用。你好，世界！",
    "Emoji stream without broken characters: 😀🚀✨ and 中文 too.",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[IM_END, IM_START],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(CORPUS * 5, trainer)
    return Tokenizer(hf, TokenizerConfig(eos_token=IM_END))


def make_loaded(tokenizer: Tokenizer, seed: int = 0) -> LoadedModel:
    config = preset("tiny")
    model = Transformer(config)
    # a larger init std makes the random model's logits peaked, so greedy choices are not near-ties
    model.init_weights(seed=seed, std=0.2)
    return LoadedModel(model, tokenizer, config, path=None, format="test")


@pytest.fixture
def engine(tokenizer) -> Engine:
    return Engine(make_loaded(tokenizer), dtype="float32")


PROMPT = [5, 17, 42, 99, 7, 300, 12, 250, 33]


def naive_greedy(model: Transformer, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding with no cache: the whole sequence through the model every step."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


# ---- sampling (pure functions) -------------------------------------------------------------
def test_top_k_and_top_p_filters_by_hand():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.0])
    everything = all_tokens(logits)
    assert [t.tolist() for t in top_k_filter(everything, 2)] == [[3.0, 2.0], [1, 2]]
    assert top_k_filter(everything, 0) is everything
    # probs of the sorted logits (3, 2, 1, 0) are about 0.64, 0.24, 0.09, 0.03
    assert top_p_filter(everything, 0.5)[1].tolist() == [1]  # ids of the whole vocabulary: positions
    assert top_p_filter(everything, 0.8)[1].tolist() == [1, 2]
    assert top_p_filter(everything, 1.0) is everything
    # after top-k the nucleus is taken over the renormalized survivors: 0.73 of (3, 2) is token 1
    assert top_p_filter(top_k_filter(everything, 2), 0.7)[1].tolist() == [1]
    assert top_p_filter(top_k_filter(everything, 2), 0.75)[1].tolist() == [1, 2]


@pytest.mark.parametrize("scale", [0.1, 1.0, 8.0])  # flat (wide nucleus, k widens) to peaked
@pytest.mark.parametrize("p", [0.3, 0.9, 0.999])
def test_top_p_filter_equals_a_full_sort(scale, p):
    logits = torch.randn(5000, generator=torch.Generator().manual_seed(7)) * scale
    sorted_logits, order = torch.sort(logits, descending=True)
    probs = sorted_logits.softmax(-1)
    expected = order[probs.cumsum(-1) - probs < p]
    kept_logits, kept_ids = top_p_filter(all_tokens(logits), p)
    assert sorted(kept_ids.tolist()) == sorted(expected.tolist())  # equal probabilities may swap places
    assert torch.equal(kept_logits, logits[kept_ids])
    kept_probs = logits.softmax(-1)[kept_ids]
    assert bool((kept_probs[:-1] >= kept_probs[1:]).all())  # most probable first


def test_draw_follows_the_softmax_and_never_picks_a_zero_probability_token():
    logits = torch.tensor([0.0, float("-inf"), 1.0, 2.0, float("-inf")])
    ids = torch.tensor([10, 11, 12, 13, 14])
    g = torch.Generator().manual_seed(0)
    n = 20000
    counts = torch.bincount(torch.tensor([draw((logits, ids), float(u)) for u in torch.rand(n, generator=g)]) - 10,
                            minlength=5)
    assert counts[1] == 0 and counts[4] == 0
    expected = logits.softmax(-1) * n  # about 1800, 4900, 13300
    assert torch.all((counts - expected).abs() <= 4 * expected.sqrt() + 1), (counts, expected)
    assert draw((logits, ids), 0.0) == 10 and draw((logits, ids), 0.999999) == 13


def test_draw_when_the_uniform_number_rounds_up_to_the_total():
    logits, ids = torch.tensor([1.0, 2.0, float("-inf")]), torch.tensor([5, 6, 7])
    assert draw((logits, ids), 1.0) == 6  # u * total == total: the last token with mass, not the -inf one


def test_filtered_sampling_draws_only_survivors():
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(2)) * 3
    g = torch.Generator().manual_seed(0)
    allowed = set(torch.topk(logits, 5).indices.tolist())
    draws = {next_token(logits, torch.tensor([], dtype=torch.long), 1.0, top_k=5, top_p=0.99, generator=g)
             for _ in range(200)}
    assert draws <= allowed and len(draws) > 1


def test_repetition_penalty_and_greedy():
    logits = torch.tensor([2.0, -1.0, 1.5, 0.5])
    out = apply_repetition_penalty(logits, torch.tensor([0, 1]), 2.0)
    assert out.tolist() == [1.0, -2.0, 1.5, 0.5]
    assert logits.tolist() == [2.0, -1.0, 1.5, 0.5]  # input untouched
    assert next_token(logits, torch.tensor([0])) == 0  # penalty 1.0: plain argmax
    assert next_token(logits, torch.tensor([0]), repetition_penalty=2.0) == 2


def test_sampling_seed_is_reproducible():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(1))
    draw = lambda seed: [next_token(logits, torch.tensor([], dtype=torch.long), 1.0,
                                    generator=g) for g in [torch.Generator().manual_seed(seed)] for _ in range(20)]
    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


# ---- cache and decode ------------------------------------------------------------------------
def test_cached_logits_equal_uncached(tokenizer):
    loaded = make_loaded(tokenizer)
    model = loaded.model.eval()
    ids = torch.tensor([PROMPT + [1, 2, 3, 4, 5]])
    with torch.no_grad():
        full = model(ids)  # (1, T, V)
        c = loaded.config
        cache = KVCache(c.num_layers, 1, c.num_kv_heads, 32, c.head_dim, torch.float32)
        steps = [model(ids[:, :6], torch.arange(6), cache.layers)]
        for t in range(6, ids.shape[1]):
            cache.start = t
            steps.append(model(ids[:, t:t + 1], torch.tensor([t]), cache.layers))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


def test_greedy_matches_uncached_reference(tokenizer, engine):
    reference = naive_greedy(make_loaded(tokenizer).model.eval(), PROMPT, 24)
    res = engine.generate(PROMPT, GenerationConfig(max_new_tokens=24))
    # the reference ignores stop ids: compare up to where the engine stopped
    assert res.token_ids == reference[:len(res.token_ids)]
    assert res.finish_reason == "length" or reference[len(res.token_ids)] in engine.stop_ids
    assert res.prompt_tokens == len(PROMPT) and res.prefill_tokens == len(PROMPT)
    assert set(res.timings) == {"ttft_s", "prefill_s", "decode_s"}


def test_chunked_prefill_equals_single_chunk(tokenizer):
    prompt = (PROMPT * 8)[:70]
    one = Engine(make_loaded(tokenizer), dtype="float32").generate(prompt, GenerationConfig(max_new_tokens=12))
    chunked = Engine(make_loaded(tokenizer), dtype="float32", prefill_chunk=16)
    res = chunked.generate(prompt, GenerationConfig(max_new_tokens=12))
    assert res.token_ids == one.token_ids


def test_prefix_reuse_prefills_only_the_suffix(tokenizer, engine):
    cfg = GenerationConfig(max_new_tokens=10)
    first = engine.generate(PROMPT, cfg)
    follow_up = PROMPT + first.token_ids + [8, 9, 10, 11]
    second = engine.generate(follow_up, cfg)
    # everything but the last sampled token of turn 1 was fed to the cache
    assert second.prefill_tokens == len(follow_up) - (len(PROMPT) + len(first.token_ids) - 1)
    cold = Engine(make_loaded(tokenizer), dtype="float32").generate(follow_up, cfg)
    assert cold.prefill_tokens == len(follow_up)
    assert second.token_ids == cold.token_ids
    # an unrelated prompt shares nothing and is fully prefilled; the same prompt again only 1 token
    assert engine.generate([1, 2, 3], cfg).prefill_tokens == 3
    assert engine.generate([1, 2, 3], cfg).prefill_tokens == 1


def test_batch_equals_each_prompt_alone(tokenizer, engine):
    prompts = [PROMPT, [3, 1, 4], PROMPT[::-1] + [77, 88]]
    configs = [GenerationConfig(max_new_tokens=n) for n in (12, 7, 15)]
    batch = engine.generate_batch(prompts, configs)
    for p, c, b in zip(prompts, configs, batch):
        alone = Engine(make_loaded(tokenizer), dtype="float32").generate(p, c)
        assert b.token_ids == alone.token_ids
        assert (b.text, b.finish_reason, b.prompt_tokens) == (alone.text, alone.finish_reason, alone.prompt_tokens)


# ---- stopping ----------------------------------------------------------------------------------
def test_stop_string_is_cut_and_never_streamed(tokenizer, engine):
    full = engine.generate(PROMPT, GenerationConfig(max_new_tokens=30)).text
    assert len(full) > 12, full
    stop = full[6:9]
    expected = full[:full.index(stop)]
    cfg = GenerationConfig(max_new_tokens=30, stop=["<never>", stop])
    deltas = list(engine.stream(PROMPT, cfg))
    res = engine.last_result
    assert res.text == expected and "".join(deltas) == expected
    assert res.finish_reason == "stop"
    assert engine.generate(PROMPT, cfg).text == expected


def test_held_back_tail():
    assert held_back("hello wor", ["world"]) == 3
    assert held_back("hello", ["xyz"]) == 0
    assert held_back("ab", ["abc", "bq"]) == 2


def test_eos_stops_generation(tokenizer):
    reference = Engine(make_loaded(tokenizer), dtype="float32").generate(PROMPT, GenerationConfig(max_new_tokens=12))
    eos = reference.token_ids[4]
    first = reference.token_ids.index(eos)
    tok = Tokenizer(tokenizer.tok, TokenizerConfig(eos_token=tokenizer.tok.id_to_token(eos)))
    res = Engine(make_loaded(tok), dtype="float32").generate(PROMPT, GenerationConfig(max_new_tokens=12))
    assert res.finish_reason == "stop"
    assert res.token_ids == reference.token_ids[:first]  # the EOS id itself is not returned


def test_max_new_tokens_and_streaming_text(tokenizer, engine):
    deltas = list(engine.stream(PROMPT, GenerationConfig(max_new_tokens=9)))
    res = engine.last_result
    assert res.finish_reason in ("length", "stop")
    if res.finish_reason == "length":
        assert res.completion_tokens == len(res.token_ids) == 9
    assert "".join(deltas) == res.text == tokenizer.decode(res.token_ids, skip_special=True)


def test_seeded_sampling_is_reproducible(engine):
    cfg = lambda seed: GenerationConfig(max_new_tokens=20, temperature=1.5, top_k=50, top_p=0.95,
                                        repetition_penalty=1.2, seed=seed)
    a, b, c = (engine.generate(PROMPT, cfg(s)).token_ids for s in (11, 11, 12))
    assert a == b
    assert a != c


# ---- cancellation, errors ------------------------------------------------------------------------
def test_cancel_within_one_step_and_engine_reusable(tokenizer, engine):
    cfg = GenerationConfig(max_new_tokens=200)
    expected = Engine(make_loaded(tokenizer), dtype="float32").generate(PROMPT, cfg)
    consumed = 0
    for _ in engine.stream(PROMPT, cfg):
        consumed += 1
        engine.cancel()  # from the consumer, between steps
    res = engine.last_result
    assert res.finish_reason == "cancelled"
    assert consumed == 1
    # the first text delta may need a few tokens; after the cancel no further token is decoded
    assert res.token_ids == expected.token_ids[:len(res.token_ids)] and len(res.token_ids) < 200
    again = engine.generate(PROMPT, cfg)
    assert again.token_ids == expected.token_ids and again.finish_reason == expected.finish_reason


def test_cancel_from_another_thread(tokenizer):
    """cancel() from another thread while a stream runs: it ends within one decode step."""
    eng = Engine(make_loaded(tokenizer), dtype="float32", max_seq_len=256)
    no_stop = GenerationConfig(max_new_tokens=240)
    eng.stop_ids = frozenset()  # the random model must not stop on its own here
    stream = eng.stream([1], no_stop)
    next(stream)  # generation is under way
    produced = len(eng._cache_tokens)
    canceller = threading.Thread(target=eng.cancel)
    canceller.start()
    canceller.join()
    rest = list(stream)
    res = eng.last_result
    assert res.finish_reason == "cancelled", res.completion_tokens
    assert len(eng._cache_tokens) <= produced + 2 and len(rest) <= 2  # at most the step already running
    assert eng.generate([1, 2], GenerationConfig(max_new_tokens=3)).completion_tokens == 3  # still usable


def test_context_overflow_is_a_clear_error(engine):
    assert engine.context_length == 256
    with pytest.raises(GenerationError, match=r"250 tokens \+ max_new_tokens=10 = 260 .* 256"):
        engine.generate([1] * 250, GenerationConfig(max_new_tokens=10))
    assert engine.generate([1] * 250, GenerationConfig(max_new_tokens=6)).completion_tokens <= 6
    with pytest.raises(GenerationError, match="empty"):
        engine.generate([], GenerationConfig())
    with pytest.raises(GenerationError, match="top_p"):
        engine.generate(PROMPT, GenerationConfig(top_p=0.0))
    with pytest.raises(ConfigError, match="int3"):
        Engine(make_loaded(engine.tokenizer), quantize="int3")


# ---- chat, precision ---------------------------------------------------------------------------
def test_chat_follow_up_reuses_history(tokenizer, engine):
    cfg = GenerationConfig(max_new_tokens=8)
    messages = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "你好"}]
    first = engine.chat(messages, cfg)
    assert first.prefill_tokens == first.prompt_tokens
    messages += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "And then?"}]
    deltas = list(engine.stream_chat(messages, cfg))
    second = engine.last_result
    assert "".join(deltas) == second.text
    assert second.prefill_tokens < second.prompt_tokens - first.prompt_tokens + 4  # history not re-run
    assert engine.count_tokens(tokenizer.render_chat(messages)) == second.prompt_tokens


@pytest.mark.parametrize("dtype,quantize", [("bfloat16", None), ("float32", "int8"), ("bfloat16", "int8"),
                                            ("float32", "int4")])
def test_precisions_stay_close_to_float32(tokenizer, dtype, quantize):
    ref = Engine(make_loaded(tokenizer), dtype="float32")
    eng = Engine(make_loaded(tokenizer), dtype=dtype, quantize=quantize)
    assert eng.weights == (quantize or dtype)
    # activations are bfloat16 only where the CPU has native bf16 (else bf16 means bf16 weights)
    assert eng.dtype == (torch.bfloat16 if dtype == "bfloat16" and native_bf16() else torch.float32)
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        a = ref.model(ids).float()[0]
        b = eng.model(ids).float()[0]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    # int4 on this 64-wide random net (groups of 32) is coarse; the real-model check is in test_generation_hf.py
    assert cos.min() > (0.8 if quantize == "int4" else 0.99), cos
    res = eng.generate(PROMPT, GenerationConfig(max_new_tokens=5))
    assert res.completion_tokens >= 1


def test_auto_dtype_is_bf16_or_f32(tokenizer):
    assert Engine(make_loaded(tokenizer)).dtype in (torch.bfloat16, torch.float32)


@pytest.mark.parametrize("fmt", ["float32", "bfloat16", "int8", "int4"])
def test_low_precision_linear_decode_and_prefill_paths_agree(fmt):
    """Few rows run the bf16-input kernel, many rows dequantize for the float GEMM: same numbers."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=True)
    x = torch.randn(KERNEL_MAX_ROWS + 8, 64)
    with torch.no_grad():
        ref = linear(x)
        low = quantize_model(torch.nn.Sequential(linear), fmt)[0]
        many = low(x)  # one call, more rows than KERNEL_MAX_ROWS
        one = torch.cat([low(x[i:i + 1]) for i in range(x.shape[0])])  # decode-sized calls
    assert many.dtype == one.dtype == torch.float32
    tol = {"int4": 0.1, "float32": 1e-5}.get(fmt, 0.02)  # relative to the output scale
    scale = ref.abs().max()
    assert (many - ref).abs().max() < tol * scale
    assert (one - ref).abs().max() < tol * scale
    assert (one - many).abs().max() < tol * scale


@pytest.mark.parametrize("fmt", ["bfloat16", "int8"])
def test_prefill_scratch_shared_by_linears_of_different_sizes(fmt):
    """Prefill dequantizes every layer into one reused buffer: a small layer after a big one, and a
    big one after a small one (the buffer grows), each still gets exactly its own weight."""
    torch.manual_seed(1)
    big, small = torch.nn.Linear(96, 200), torch.nn.Linear(64, 32)
    x_big, x_small = torch.randn(40, 96), torch.randn(40, 64)
    with torch.no_grad():
        ref_big, ref_small = big(x_big), small(x_small)
        low_small, low_big = quantize_model(torch.nn.Sequential(small, big), fmt)
        outs = [low_small(x_small), low_big(x_big), low_small(x_small), low_big(x_big)]
    for out, ref in zip(outs, [ref_small, ref_big, ref_small, ref_big]):
        assert out.shape == ref.shape
        assert (out - ref).abs().max() < 0.02 * ref.abs().max()
    assert torch.equal(outs[0], outs[2]) and torch.equal(outs[1], outs[3])


RSS_SCRIPT = """
import sys
from astrai_core.checkpoint import load_model
from astrai_core.generation import Engine

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

loaded = load_model(sys.argv[1])
before = rss_mb()
engine = Engine(loaded, dtype="bfloat16")
print(before, rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc's malloc_trim")
def test_engine_returns_the_weights_it_converted_to_the_os(smollm2_gguf):
    """Converting the loaded float32 weights (bfloat16, packed where it pays) frees them: the engine
    hands those pages back, so a fresh process holds less after building a bfloat16 engine than with
    the float32 model alone (without the trim: 1027 MB against 777 for SmolLM2)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(smollm2_gguf)], capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    before, after = float(out[0]), float(out[1])
    assert after < before, (before, after)
