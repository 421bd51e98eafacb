"""Lookup decoding: drafts taken from the context, verified with the next token in one step.

The real SmolLM2-135M answers from a real document (the Debian Reference appendix in
tests/fixtures/docs); with drafting on it must produce exactly the tokens it produces with drafting
off, greedy or sampled, while taking fewer passes over the weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from astrai_core.checkpoint import load_model
from astrai_core.errors import ConfigError
from astrai_core.generation import Engine, GenerationConfig
from astrai_core.generation.engine import _Lookup
from astrai_core.rag.loaders import load_bytes

DOC = Path(__file__).parent / "fixtures" / "docs" / "debian-reference-apa.en.html"
APP = dict(temperature=0.7, top_p=0.9, repetition_penalty=1.1)  # the app's sampling settings
COST = [1.0 + 0.2 * (t - 1) for t in range(9)]  # each drafted token 0.2 of a step


@pytest.fixture(scope="module")
def passage() -> str:
    doc = load_bytes(DOC, DOC.read_bytes())
    return " ".join(p.text for p in doc.pages)[:1400]


@pytest.fixture(scope="module")
def engines(smollm2_gguf):
    """(drafting on, drafting off) over the same float32 SmolLM2."""
    return (Engine(load_model(smollm2_gguf), dtype="float32", max_seq_len=1024),
            Engine(load_model(smollm2_gguf), dtype="float32", max_seq_len=1024, lookahead=0))


def grounded(engine: Engine, passage: str, question: str) -> list[int]:
    return engine.tokenizer.encode_chat([
        {"role": "system", "content": "Answer using only the numbered source; cite it as [1]."},
        {"role": "user", "content": f"Sources:\n\n[1] debian-reference-apa.en.html\n{passage}\n\nQuestion:\n{question}"}])


def counting(engine: Engine, monkeypatch) -> list[tuple[int, int]]:
    """Record (position, drafted tokens) of every decode step the engine takes."""
    calls: list[tuple[int, int]] = []
    real = engine._decode_token

    def step(token, pos, cache, draft=()):
        calls.append((pos, len(draft)))
        return real(token, pos, cache, draft)

    monkeypatch.setattr(engine, "_decode_token", step)
    return calls


@pytest.mark.parametrize("sampling", [{}, dict(APP, seed=11)], ids=["greedy", "sampled"])
def test_drafting_changes_nothing_but_the_number_of_passes(engines, passage, monkeypatch, sampling):
    on, off = engines
    prompt = grounded(on, passage, "Who wrote this appendix and under which license? Quote the source.")
    cfg = GenerationConfig(max_new_tokens=120, **sampling)
    calls = counting(on, monkeypatch)
    a, b = on.generate(prompt, cfg), off.generate(prompt, cfg)
    assert a.token_ids == b.token_ids and a.text == b.text and a.finish_reason == b.finish_reason
    assert b.drafted == b.accepted == 0
    assert 0 < a.accepted <= a.drafted == sum(n for _, n in calls)
    # every accepted token is a pass saved: the first token comes from the prefill
    assert len(calls) == a.completion_tokens - 1 - a.accepted + (a.finish_reason == "stop")
    if not sampling:  # greedy copies the source: most tokens ride on a draft
        assert a.accepted > a.completion_tokens // 3, (a.accepted, a.completion_tokens)


def test_bfloat16_drafting_gives_the_same_tokens(smollm2_gguf, passage):
    on = Engine(load_model(smollm2_gguf), dtype="bfloat16", max_seq_len=1024)
    if on.dtype != torch.bfloat16:
        pytest.skip("no native bfloat16 here")
    off = Engine(load_model(smollm2_gguf), dtype="bfloat16", max_seq_len=1024, lookahead=0)
    prompt = grounded(on, passage, "Summarize the source in two sentences.")
    cfg = GenerationConfig(max_new_tokens=80)
    a, b = on.generate(prompt, cfg), off.generate(prompt, cfg)
    assert a.token_ids == b.token_ids and a.accepted > 0


def test_stops_and_limits_inside_a_draft(engines, passage, monkeypatch):
    on, off = engines
    prompt = grounded(on, passage, "Quote the first sentence of the source.")
    greedy = off.generate(prompt, GenerationConfig(max_new_tokens=60))
    words = greedy.text.split()
    assert len(words) > 8
    for cfg in (GenerationConfig(max_new_tokens=9), GenerationConfig(max_new_tokens=60, stop=[words[6]])):
        calls = counting(on, monkeypatch)
        a, b = on.generate(prompt, cfg), off.generate(prompt, cfg)
        assert (a.token_ids, a.text, a.finish_reason) == (b.token_ids, b.text, b.finish_reason)
        # no step drafts past the last token the request may generate
        assert all(pos + n < len(prompt) + cfg.max_new_tokens for pos, n in calls)
        monkeypatch.undo()


def test_follow_up_reuses_only_what_was_generated(engines, passage, smollm2_gguf):
    """Draft slots past the accepted tokens hold rejected guesses: the next turn must not reuse them."""
    on, _ = engines
    prompt = grounded(on, passage, "Quote the first sentence of the source.")
    cfg = GenerationConfig(max_new_tokens=40)
    first = on.generate(prompt, cfg)
    assert first.drafted > first.accepted  # some guesses were rejected and sit in the cache
    follow = prompt + first.token_ids + on.tokenizer.encode("\nAnd the license?")
    second = on.generate(follow, cfg)
    assert second.prefill_tokens == len(follow) - (len(prompt) + len(first.token_ids) - 1)
    cold = Engine(load_model(smollm2_gguf), dtype="float32", max_seq_len=1024, lookahead=0).generate(follow, cfg)
    assert second.token_ids == cold.token_ids


def test_drafting_at_the_end_of_the_context(smollm2_gguf, passage):
    on = Engine(load_model(smollm2_gguf), dtype="float32", max_seq_len=420)
    off = Engine(load_model(smollm2_gguf), dtype="float32", max_seq_len=420, lookahead=0)
    prompt = grounded(on, passage[:900], "Quote the source.")
    cfg = GenerationConfig(max_new_tokens=420 - len(prompt))
    a, b = on.generate(prompt, cfg), off.generate(prompt, cfg)
    assert a.token_ids == b.token_ids and a.accepted > 0


def test_lookup_guesses_from_the_latest_longest_match():
    seq = [1, 2, 3, 9, 9, 2, 3, 7, 8, 5, 4, 2, 3]
    look = _Lookup(seq, ngrams=(3, 2, 1), cost=COST.__getitem__)
    assert look.guess(3) == (2, [7, 8, 5])  # "2 3" last continued by 7 8 5 (not by 9 9 2)
    look.push(7)  # now "2 3 7" occurred before: the 3-gram wins
    assert look.guess(2) == (3, [8, 5])
    assert look.guess(9) == (3, [8, 5, 4, 2, 3, 7])  # a guess stops where the sequence does
    assert _Lookup([1, 2, 3], (2, 1), COST.__getitem__).guess(4) == (0, [])  # nothing to match


def test_draft_length_follows_the_hit_rate():
    look = _Lookup(list(range(20)) * 2, ngrams=(2,), cost=COST.__getitem__)
    assert look.length(look.rate[2], 7) == 1  # the prior rate 0.5: one token
    for _ in range(40):
        look.hit(2)
    assert look.length(look.rate[2], 7) == 7  # right every time: as far as allowed
    assert look.length(look.rate[2], 3) == 3
    for _ in range(40):
        look.miss(2)
    assert look.length(look.rate[2], 7) == 0  # always wrong: a draft would cost more than it saves
    assert _Lookup([], (2,), cost=lambda t: 1.0).length(0.1, 5) == 5  # free rows: any chance pays
    assert _Lookup([], (2,), cost=[0.0, 1.0, 1.1, 3.0, 3.0, 3.0].__getitem__).length(0.9, 4) == 1  # 3 tokens cost 3 steps


def test_undrafted_guesses_still_teach_the_rate(engines, passage, monkeypatch):
    """A request whose rate fell below drafting still checks its guesses, so drafting resumes when the
    answer starts to quote (here: rates that start at 0 recover and drafts follow)."""
    on, off = engines
    prompt = grounded(on, passage, "Quote the first sentence of the source.")
    cfg = GenerationConfig(max_new_tokens=60)
    monkeypatch.setattr(_Lookup, "PRIOR", 0.0)
    a = on.generate(prompt, cfg)
    assert a.token_ids == off.generate(prompt, cfg).token_ids
    assert a.accepted > 0


def test_lookahead_is_validated(smollm2_gguf):
    loaded = load_model(smollm2_gguf)
    for bad in (-1, 8, 2.5):
        with pytest.raises(ConfigError, match="lookahead"):
            Engine(loaded, lookahead=bad)


def test_step_costs_follow_measured_times(engines, monkeypatch):
    """The cost model is what this machine's steps take: a step of 3 tokens that takes three times a
    one-token step costs 3, and sizes never timed keep the assumed 0.2 per drafted token."""
    import time as _time

    eng = engines[0]
    saved = list(eng._step_s)
    eng._step_s = [None] * len(eng._step_s)  # as a fresh engine
    cache = eng._new_cache(1, 64)

    def fake(token, pos, cache, draft=()):
        _time.sleep(0.01 * (1 + 2 * bool(draft)))
        return torch.zeros(1 + len(draft), 4)

    monkeypatch.setattr(eng, "_decode_token", fake)
    try:
        eng._timed_step(1, 0, cache, [2, 3])  # no one-token time yet: costs stay assumed
        assert eng.step_cost(3) == pytest.approx(1.4)
        for _ in range(3):
            eng._timed_step(1, 0, cache, [])
            eng._timed_step(1, 0, cache, [2, 3])
        assert eng.step_cost(1) == 1.0
        assert 2.4 < eng.step_cost(3) < 3.6
        assert eng.step_cost(5) == pytest.approx(1.8)
    finally:
        eng._step_s = saved
