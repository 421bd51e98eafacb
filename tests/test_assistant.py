"""Assistant: model resolution, shared settings, prompt assembly, streaming, cancel, context limits.

Generation runs the real SmolLM2-135M GGUF (``smollm2_engine`` in conftest.py).
"""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from astrai_core.assistant import (NOT_FOUND_EN, Assistant, AssistantSettings, default_model_path,
                                   not_found_message, shared_settings, validate_messages)
from astrai_core.errors import CheckpointError, ContextLengthError, TokenizerError
from astrai_core.generation import GenerationConfig

CAPITAL = "What is the capital of France?"


def greedy(n: int = 16) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=n, temperature=0.0)


@pytest.fixture
def assistant(smollm2_engine) -> Assistant:
    return Assistant(smollm2_engine, AssistantSettings(system_prompt="You are a helpful assistant.", k=3,
                                                       generation=greedy()))


# ---- model resolution and settings (no model needed) ------------------------------------------
def test_default_model_path_prefers_the_explicit_path(tmp_path, smollm2_gguf):
    assert default_model_path(smollm2_gguf) == smollm2_gguf
    with pytest.raises(CheckpointError, match="nope.gguf"):
        default_model_path(tmp_path / "nope.gguf")


def test_default_model_path_finds_the_shipped_dpo_folder_or_says_what_to_do(tmp_path, monkeypatch):
    import astrai_core.paths

    monkeypatch.setattr(astrai_core.paths, "resource_path", lambda *parts: tmp_path.joinpath(*parts))
    with pytest.raises(CheckpointError, match="pass --model PATH"):
        default_model_path()
    (tmp_path / "models" / "astrai-mini-sft").mkdir(parents=True)
    (tmp_path / "models" / "astrai-mini-sft" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no model found"):
        default_model_path()  # only a *-dpo folder is the shipped chat model
    shipped = tmp_path / "models" / "astrai-mini-dpo"
    shipped.mkdir()
    (shipped / "config.json").write_text("{}")
    assert default_model_path() == shipped
    assert default_model_path("") == shipped


def test_shared_settings_reads_the_app_database_read_only(tmp_path):
    assert shared_settings(tmp_path) == {}
    db = sqlite3.connect(tmp_path / "app.sqlite3")
    db.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    values = {"temperature": 0.2, "top_p": 0.8, "max_new_tokens": 64, "num_sources": 6,
              "system_prompt": "Answer briefly.", "model_path": "/m/x.gguf"}
    db.executemany("INSERT INTO settings VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])
    db.commit()
    db.close()
    assert shared_settings(tmp_path) == values
    settings = AssistantSettings.from_shared(values)
    assert (settings.system_prompt, settings.k) == ("Answer briefly.", 6)
    g = settings.generation
    assert (g.temperature, g.top_p, g.max_new_tokens) == (0.2, 0.8, 64)
    (tmp_path / "app.sqlite3").write_bytes(b"not a database")
    assert shared_settings(tmp_path) == {}


def test_validate_messages_names_the_bad_message():
    assert validate_messages([{"role": "user", "content": "hi", "name": "x"}]) == [{"role": "user", "content": "hi"}]
    with pytest.raises(TokenizerError, match="message 1 has unknown role 'tool'"):
        validate_messages([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])
    with pytest.raises(TokenizerError, match="message 0 content must be text"):
        validate_messages([{"role": "user", "content": 3}])
    with pytest.raises(TokenizerError, match="message 0 must be a dict"):
        validate_messages(["hello"])


def test_not_found_message_follows_the_question_language():
    assert not_found_message("What is X?") == NOT_FOUND_EN
    assert "没有找到" in not_found_message("报告里说了什么？")


# ---- turns with the real model ----------------------------------------------------------------
def test_stream_answer_yields_the_answer_and_exact_usage(assistant, smollm2_engine):
    deltas = list(assistant.stream_answer([], CAPITAL))
    answer = assistant.last_answer
    assert len(deltas) > 1 and "".join(deltas) == answer.text
    assert "Paris" in answer.text
    assert answer.found is None and answer.sources == []
    messages = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": CAPITAL}]
    exact = len(smollm2_engine.tokenizer.encode_chat(messages))
    assert answer.usage["prompt_tokens"] == exact
    assert answer.usage["total_tokens"] == exact + answer.usage["completion_tokens"]
    assert answer.finish_reason in ("stop", "length") and answer.timings["decode_s"] > 0
    # the estimate used to check the context is close to the exact count
    prepared = assistant.prepare([], CAPITAL)
    assert abs(prepared.prompt_tokens - exact) <= 3


def test_history_and_system_messages_shape_the_prompt(assistant):
    history = [{"role": "system", "content": "Reply in French."},
               {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Bonjour"}]
    prepared = assistant.prepare(history, CAPITAL)
    assert prepared.messages == [{"role": "system", "content": "Reply in French."}, history[1], history[2],
                                 {"role": "user", "content": CAPITAL}]
    plain = assistant.prepare(history[1:], CAPITAL)
    assert plain.messages[0] == {"role": "system", "content": "You are a helpful assistant."}


def test_long_history_is_trimmed_oldest_first_or_refused(assistant):
    turn = "word " * 300
    history = []
    for i in range(8):
        history += [{"role": "user", "content": f"q{i} {turn}"}, {"role": "assistant", "content": f"a{i} {turn}"}]
    prepared = assistant.prepare(history, CAPITAL)
    kept = prepared.messages[1:-1]
    assert 0 < len(kept) < len(history)
    assert kept == history[-len(kept):] and kept[0]["role"] == "user"
    assert prepared.prompt_tokens <= 2048 - 16
    with pytest.raises(ContextLengthError, match="context is 2048 tokens"):
        assistant.prepare(history, CAPITAL, trim_history=False)


def test_a_question_longer_than_the_context_is_refused(assistant):
    with pytest.raises(ContextLengthError, match="2048"):
        assistant.prepare([], "token " * 2100)
    with pytest.raises(ContextLengthError, match="max_new_tokens=4096"):
        assistant.prepare([], CAPITAL, generation=GenerationConfig(max_new_tokens=4096))
    with pytest.raises(TokenizerError):
        assistant.prepare([], "   ")


def test_cancel_from_another_thread_stops_the_answer(assistant):
    started = threading.Event()
    gen = GenerationConfig(max_new_tokens=400, temperature=0.0)
    canceller = threading.Thread(target=lambda: (started.wait(30), assistant.cancel()))
    canceller.start()
    pieces = []
    for delta in assistant.stream_answer([], "Count from 1 to 500, separated by commas.", generation=gen):
        pieces.append(delta)
        started.set()
    canceller.join()
    answer = assistant.last_answer
    assert answer.finish_reason == "cancelled"
    assert answer.usage["completion_tokens"] < 400
    # the next turn is not affected by the earlier cancel
    assert "Paris" in assistant.answer([], CAPITAL, generation=greedy(8)).text


class _EmptyCollection:
    """A collection whose search finds nothing relevant (as for a question the documents don't cover)."""

    def search(self, query: str, k: int):
        return []


def test_nothing_found_says_so_instead_of_guessing(assistant, smollm2_engine):
    before = smollm2_engine.last_result
    answer = assistant.answer([], "Who won the 1998 football world cup?", _EmptyCollection())
    assert answer.found is False and answer.sources == []
    assert answer.text == NOT_FOUND_EN
    assert smollm2_engine.last_result is before  # the model was not asked to guess
