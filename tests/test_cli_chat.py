"""The terminal front end: ``astrai chat`` (multi-line input, /reset, /sources, Ctrl+C), ``astrai ask``,
and the ``astrai serve`` bind rule. Answers come from the real SmolLM2-135M GGUF."""

from __future__ import annotations

import _thread
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import astrai_core.assistant as assistant_mod
from astrai_core.assistant import (NOT_FOUND_EN, Assistant, AssistantSettings, Runtime, chat_loop, cmd_ask,
                                   read_message)
from astrai_core.cli import build_parser
from astrai_core.generation import GenerationConfig

ROOT = Path(__file__).resolve().parents[1]
COUNT = "Count from 1 to 500, separated by commas."


def scripted(lines: list[str]):
    """A ``read_line`` that answers from ``lines`` and then behaves like Ctrl+D."""
    it = iter(lines)

    def read_line(prompt: str) -> str:
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    return read_line


@pytest.fixture
def assistant(smollm2_engine) -> Assistant:
    return Assistant(smollm2_engine, AssistantSettings(generation=GenerationConfig(max_new_tokens=12)))


def test_read_message_joins_continued_lines_and_triple_quoted_blocks():
    assert read_message(scripted(["hello"])) == "hello"
    assert read_message(scripted(["first \\", "second\\", "third"])) == "first \nsecond\nthird"
    assert read_message(scripted(['"""', "line one", "", "line three", '"""', "next"])) == "line one\n\nline three"
    with pytest.raises(EOFError):
        read_message(scripted(['"""', "never closed"]))


class Recorder(Assistant):
    """The real assistant, also recording each question it is asked."""

    questions: list[str]

    def stream_answer(self, history, question, collection=None, **kw):
        self.questions.append(question)
        self.histories.append([dict(m) for m in history])
        return super().stream_answer(history, question, collection, **kw)


def test_chat_keeps_history_and_handles_reset_sources_and_multiline(smollm2_engine):
    bot = Recorder(smollm2_engine, AssistantSettings(generation=GenerationConfig(max_new_tokens=10)))
    bot.questions, bot.histories = [], []
    out = io.StringIO()
    chat_loop(bot, None, out, scripted([
        "/sources", '"""', "What is the capital", "of France?", '"""', "/sources", "And of Italy?",
        "/reset", "Hello!", "/exit", "never read"]))
    text = out.getvalue()
    assert bot.questions == ["What is the capital\nof France?", "And of Italy?", "Hello!"]
    assert bot.histories[0] == [] and bot.histories[2] == []  # /reset cleared the conversation
    assert [m["role"] for m in bot.histories[1]] == ["user", "assistant"]
    assert "Paris" in bot.histories[1][1]["content"] and "Paris" in text
    assert "(no answer yet)" in text and "(this answer did not search any documents)" in text
    assert "(conversation cleared)" in text


def test_ctrl_c_stops_the_answer_not_the_chat(assistant):
    out = io.StringIO()
    answering = threading.Event()

    class Out(io.StringIO):
        def write(self, s: str) -> int:
            if out.tell() > len(assistant_mod.CHAT_HELP) + 10:  # a few tokens into the answer
                answering.set()
            return out.write(s)

        def flush(self) -> None:
            pass

    def press_ctrl_c() -> None:
        answering.wait(60)
        _thread.interrupt_main()  # delivers SIGINT to the main thread, like a terminal Ctrl+C

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    long_answer = GenerationConfig(max_new_tokens=1000)
    assistant.settings.generation = long_answer
    chat_loop(assistant, None, Out(), scripted([COUNT, "/sources", "/exit"]))
    presser.join()
    text = out.getvalue()
    assert " [stopped]" in text
    assert "(this answer did not search any documents)" in text  # the chat went on after Ctrl+C
    assert assistant.last_answer.finish_reason == "cancelled"
    assert assistant.last_answer.usage["completion_tokens"] < 1000


def _runtime(engine, tmp_path) -> Runtime:
    bot = Assistant(engine, AssistantSettings(generation=GenerationConfig(max_new_tokens=12)))
    return Runtime(bot, "SmolLM2-135M-Instruct", Path("smollm2.gguf"), tmp_path, None)


def test_ask_json_prints_answer_sources_usage_timings(smollm2_engine, tmp_path, monkeypatch):
    monkeypatch.setattr(assistant_mod, "load_runtime", lambda model, data_dir: _runtime(smollm2_engine, tmp_path))
    args = build_parser().parse_args(["ask", "What is the capital of France?", "--json"])
    out = io.StringIO()
    assert cmd_ask(args, out) == 0
    doc = json.loads(out.getvalue())
    assert set(doc) == {"answer", "sources", "usage", "timings"}
    assert "Paris" in doc["answer"] and doc["sources"] == []
    assert doc["usage"]["completion_tokens"] > 0 and doc["timings"]["decode_s"] > 0


class _NothingRelevant:
    def search(self, query: str, k: int):
        return []


def test_ask_in_a_collection_without_the_answer_says_so(smollm2_engine, tmp_path, monkeypatch):
    monkeypatch.setattr(assistant_mod, "load_runtime", lambda model, data_dir: _runtime(smollm2_engine, tmp_path))
    monkeypatch.setattr(assistant_mod, "open_collection", lambda runtime, name: _NothingRelevant())
    out = io.StringIO()
    assert cmd_ask(build_parser().parse_args(["ask", "Who won in 1998?", "--collection", "default"]), out) == 0
    assert NOT_FOUND_EN in out.getvalue() and "(no relevant passages were found)" in out.getvalue()


def test_commands_parse_their_flags():
    parser = build_parser()
    a = parser.parse_args(["chat", "--model", "m.gguf", "--collection", "papers", "--data-dir", "/d"])
    assert (a.model, a.collection, a.data_dir, a.func.__name__) == ("m.gguf", "papers", "/d", "cmd_chat")
    s = parser.parse_args(["serve"])
    assert (s.host, s.port, s.api_key, s.model) == ("127.0.0.1", 8000, None, None)


def _cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "astrai_core.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_serve_refuses_a_public_address_without_an_api_key():
    done = _cli("serve", "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2
    assert "--api-key" in done.stderr and "0.0.0.0" in done.stderr


def test_ask_without_any_model_says_to_pass_one(tmp_path):
    done = _cli("ask", "hello", "--model", str(tmp_path / "missing.gguf"), "--data-dir", str(tmp_path))
    assert done.returncode == 2 and "missing.gguf" in done.stderr


@pytest.mark.slow
def test_ask_end_to_end_in_a_subprocess(smollm2_gguf, tmp_path):
    """``astrai ask --json`` as a user runs it (loads the model itself: slow on a busy machine)."""
    done = _cli("ask", "What is the capital of France?", "--model", str(smollm2_gguf), "--json",
                "--data-dir", str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Paris" in json.loads(done.stdout)["answer"]


def test_the_terminal_uses_the_model_picked_in_the_app_unless_told_otherwise(tmp_path, smollm2_gguf):
    import sqlite3

    from astrai_core.assistant import load_runtime
    from astrai_core.errors import CheckpointError

    db = sqlite3.connect(tmp_path / "app.sqlite3")  # what the desktop app's settings table holds
    db.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO settings VALUES ('model_path', ?)", (json.dumps(str(tmp_path / "picked-in-app.gguf")),))
    db.commit()
    db.close()
    with pytest.raises(CheckpointError, match="picked-in-app.gguf"):
        load_runtime(None, tmp_path)
    with pytest.raises(CheckpointError, match="given-on-the-command-line.gguf"):
        load_runtime(tmp_path / "given-on-the-command-line.gguf", tmp_path)
