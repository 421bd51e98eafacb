"""Oracle tests on the real SmolLM2-135M GGUF: our engine against Hugging Face ``transformers``
with the same weights, cache against no cache, and quantized against float."""

from __future__ import annotations

import pytest
import torch

from astrai_core.checkpoint import load_model
from astrai_core.generation import Engine, GenerationConfig
from astrai_core.generation.cache import KVCache
from astrai_core.generation.hf_reference import hf_model

MESSAGES = [{"role": "user", "content": "Give three tips for staying healthy."}]


@pytest.fixture(scope="module")
def smol(smollm2_gguf):
    """(float32 engine, transformers model with the same weights, tokenizer)."""
    loaded = load_model(smollm2_gguf)
    reference = hf_model(loaded.model, torch.float32)  # copy the weights before the engine fuses them
    engine = Engine(loaded, dtype="float32", max_seq_len=1024)
    return engine, reference, loaded.tokenizer


@pytest.fixture(scope="module")
def continuation(smol):
    """A chat prompt and 200 greedy float32 tokens after it (shared by the quantization checks)."""
    engine, _, tok = smol
    prompt = tok.encode_chat([{"role": "user", "content": "Write a long story about a robot who learns to paint."}])
    res = engine.generate(prompt, GenerationConfig(max_new_tokens=200))
    return prompt, res.token_ids


def hf_greedy(reference, prompt: list[int], n: int, stop_ids, use_cache: bool) -> list[int]:
    out = reference.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, use_cache=use_cache,
                             eos_token_id=sorted(stop_ids), pad_token_id=sorted(stop_ids)[0])
    ids = out[0, len(prompt):].tolist()
    return ids[:-1] if ids and ids[-1] in stop_ids else ids


def test_greedy_equals_transformers_with_and_without_cache(smol):
    engine, reference, tok = smol
    prompt = tok.encode_chat(MESSAGES)
    ours = engine.generate(prompt, GenerationConfig(max_new_tokens=40))
    assert ours.completion_tokens >= 10
    assert ours.token_ids == hf_greedy(reference, prompt, 40, engine.stop_ids, use_cache=True)
    assert ours.token_ids[:16] == hf_greedy(reference, prompt, 16, engine.stop_ids, use_cache=False)[:16]
    assert ours.text == tok.decode(ours.token_ids, skip_special=True)


def test_cached_logits_equal_full_forward_and_transformers(smol):
    engine, reference, tok = smol
    ids = tok.encode_chat(MESSAGES) + tok.encode("1. Drink water. 2. Sleep")
    n = len(ids)
    c = engine.config
    cache = KVCache(c.num_layers, 1, c.num_kv_heads, n, c.head_dim, torch.float32)
    with torch.inference_mode():
        full = engine.model(torch.tensor([ids]))[0]  # (T, V), no cache
        steps = [engine._forward(torch.tensor([ids[:n - 6]]), torch.arange(n - 6), cache, 0, None)]
        for t in range(n - 6, n):
            steps.append(engine._decode_token(ids[t], t, cache))
        hf = reference(torch.tensor([ids])).logits[0]
    cached = torch.cat(steps)  # logits at positions n-7 .. n-1
    torch.testing.assert_close(cached, full[n - 7:], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(full, hf, atol=2e-4, rtol=1e-4)


def test_chat_follow_up_prefills_only_the_new_turn(smol, smollm2_gguf):
    engine, _, _ = smol
    cfg = GenerationConfig(max_new_tokens=24)
    first = engine.chat(MESSAGES, cfg)
    follow = MESSAGES + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "Why sleep?"}]
    second = engine.chat(follow, cfg)
    cold = Engine(load_model(smollm2_gguf), dtype="float32", max_seq_len=1024).chat(follow, cfg)
    assert second.token_ids == cold.token_ids
    assert cold.prefill_tokens == cold.prompt_tokens
    assert second.prefill_tokens <= second.prompt_tokens - first.prompt_tokens  # history not re-run


def test_chinese_and_emoji_stream_without_broken_characters(smol):
    engine, _, tok = smol
    prompt = tok.encode_chat([{"role": "user", "content": "Repeat exactly: 你好，世界！😀🚀"}])
    deltas = list(engine.stream(prompt, GenerationConfig(max_new_tokens=30)))
    res = engine.last_result
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == res.text
    assert any("\u4e00" <= ch <= "\u9fff" for ch in res.text), res.text


@pytest.mark.parametrize("quantize,dtype,min_agree", [("int8", "float32", 0.95), ("int8", "bfloat16", 0.95),
                                                       (None, "bfloat16", 0.95), ("int4", "bfloat16", 0.80)])
def test_quantized_top1_agreement(smol, continuation, smollm2_gguf, quantize, dtype, min_agree):
    """Teacher-forced over the float32 greedy continuation: how often the argmax is the same, both
    in one long forward (the prefill path) and one token at a time through the cache (the decode
    path, where low-precision linears run their bf16-input kernels)."""
    engine, _, _ = smol
    prompt, generated = continuation
    assert len(generated) >= 150
    ids = torch.tensor([prompt + generated])
    other = Engine(load_model(smollm2_gguf), dtype=dtype, quantize=quantize, max_seq_len=1024)
    c = other.config
    cache = KVCache(c.num_layers, 1, c.num_kv_heads, ids.shape[1], c.head_dim, other.dtype)
    n = len(prompt)
    with torch.inference_mode():
        a = engine.model(ids)[0, n - 1:-1].argmax(-1)
        b = other.model(ids)[0, n - 1:-1].argmax(-1)
        steps = [other._forward(ids[:, :n], torch.arange(n), cache, 0, None)]
        for t in range(n, ids.shape[1] - 1):
            steps.append(other._decode_token(int(ids[0, t]), t, cache))
    d = torch.cat(steps).argmax(-1)
    assert torch.equal(a, torch.tensor(generated))  # the float model reproduces its own greedy run
    agree = (a == b).float().mean().item()
    agree_decode = (a == d).float().mean().item()
    print(f"{quantize or 'none'}/{dtype}: top-1 agreement {agree:.3f} (one forward), "
          f"{agree_decode:.3f} (decode) over {len(generated)} steps")
    assert agree >= min_agree and agree_decode >= min_agree
