"""Chatting in the real window with the real SmolLM2 GGUF engine: streaming, Stop, regenerate, edit."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from app.store import DOCS_NONE

TURN_TIMEOUT_MS = 120_000


def _open_chat(window, text: str, qtbot):
    window.new_conversation()
    window.set_conversation_scope(DOCS_NONE, None)
    window.input.setPlainText(text)
    with qtbot.waitSignal(window.turn_finished, timeout=TURN_TIMEOUT_MS) as blocker:
        QTest.keyClick(window.input, Qt.Key.Key_Return)  # Enter sends
    return blocker.args[0]


def test_answer_streams_into_the_window_and_is_saved(make_window, smollm2_engine, fast_settings, qtbot):
    window = make_window(settings=fast_settings(), engine=smollm2_engine)
    deltas: list[str] = []
    window.answer_delta.connect(deltas.append)
    result = _open_chat(window, "What is the capital of France?", qtbot)

    assert len(deltas) >= 2, deltas  # token by token, not one block at the end
    assert "".join(deltas) == result.text and "Paris" in result.text
    messages = window.store.messages(window.current.id)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].content == result.text
    assert window.chat.widgets[-1].body.markdown() == result.text  # rendered in the chat view
    assert window.conv_list.currentItem().text().startswith("What is the capital")  # titled from the question
    assert window.send_button.text() == "Send" and not window.generating
    assert "tokens/s" in window.statusBar().currentMessage()  # speed of the answer, from the engine's timings


def test_shift_enter_inserts_a_newline_instead_of_sending(make_window, smollm2_engine, qtbot):
    window = make_window(engine=smollm2_engine)
    window.input.setPlainText("line one")
    window.input.moveCursor(window.input.textCursor().MoveOperation.End)
    QTest.keyClick(window.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    assert window.input.toPlainText() == "line one\n" and not window.generating


def test_escape_stops_the_answer_within_a_token(make_window, smollm2_engine, fast_settings, qtbot):
    window = make_window(settings=fast_settings(max_new_tokens=400), engine=smollm2_engine)
    window.new_conversation()
    window.set_conversation_scope(DOCS_NONE, None)
    stopped_at: list[float] = []

    def stop_on_first_delta(_delta: str) -> None:
        if not stopped_at:
            stopped_at.append(time.monotonic())
            QTest.keyClick(window, Qt.Key.Key_Escape)

    window.answer_delta.connect(stop_on_first_delta)
    with qtbot.waitSignal(window.turn_finished, timeout=TURN_TIMEOUT_MS) as blocker:
        window.send("Write a very long story about a dragon who learns to cook.")
    latency = time.monotonic() - stopped_at[0]
    result = blocker.args[0]
    assert result.cancelled
    assert smollm2_engine.count_tokens(result.text) <= 4, result.text  # stopped within a token or two of the click
    assert latency < 5.0, latency  # generous: the shared 2-core machine is often loaded
    assert window.chat.widgets[-1].note.text() == "(stopped)"
    assert not window.generating


def test_regenerate_replaces_the_last_answer_and_edit_truncates(make_window, smollm2_engine, fast_settings, qtbot):
    window = make_window(settings=fast_settings(max_new_tokens=4), engine=smollm2_engine)
    _open_chat(window, "Say hello.", qtbot)
    with qtbot.waitSignal(window.turn_finished, timeout=TURN_TIMEOUT_MS):
        window.send("Now say goodbye.")
    conv = window.current.id
    before = window.store.messages(conv)
    assert [m.role for m in before] == ["user", "assistant", "user", "assistant"]

    with qtbot.waitSignal(window.turn_finished, timeout=TURN_TIMEOUT_MS):
        window.chat.widgets[-1].regen_button.click()
    after = window.store.messages(conv)
    assert len(after) == 4 and after[-1].id != before[-1].id and after[2].content == "Now say goodbye."

    window.chat.widgets[0].edit_button.click()  # edit the first question and resend
    assert window.input.toPlainText() == "Say hello."
    window.input.setPlainText("Say hi.")
    with qtbot.waitSignal(window.turn_finished, timeout=TURN_TIMEOUT_MS):
        window.send()
    edited = window.store.messages(conv)
    assert [m.content for m in edited][:1] == ["Say hi."] and len(edited) == 2


def test_copy_puts_the_message_on_the_clipboard(make_window, smollm2_engine, qtbot, qapp):
    window = make_window(engine=smollm2_engine)
    conv = window.new_conversation()
    window.store.add_message(conv.id, "user", "| a | b |\n|---|---|\n| 1 | 2 |")
    window.open_conversation(conv.id)
    window.chat.widgets[0].copy_button.click()
    assert qapp.clipboard().text() == "| a | b |\n|---|---|\n| 1 | 2 |"
    table = window.chat.widgets[0].body.document().rootFrame().childFrames()
    assert table, "Markdown tables render as real tables"


def test_first_run_without_a_model_says_so(make_window, tmp_path, fast_settings, qtbot):
    window = make_window(settings=fast_settings(model_path=str(tmp_path / "missing-model")))
    window.load_model()
    assert window.banner_kinds() == ["no_model"]
    assert "No model found" in window.banner.text() and "Settings" in window.banner.text()
    window.send("Are you there?")  # typing and sending still work; the turn waits for a model
    assert window.store.messages(window.current.id)[0].content == "Are you there?"
    assert window.send_button.text() == "Stop"
    window.stop()
    assert window.send_button.text() == "Send"


def test_conversation_list_new_rename_search_delete_and_export(make_window, fast_settings, tmp_path, qtbot):
    window = make_window(settings=fast_settings())
    assert window.act_new.shortcut().toString() == "Ctrl+N"
    window.act_new.trigger()
    first = window.current
    window.store.add_message(first.id, "user", "How do I bake 面包?")
    window.store.add_message(first.id, "assistant", "```python\nprint('knead')\n```\n\n- flour\n- water",
                             [{"n": 1, "file": str(tmp_path / "bread.pdf"), "page": 3, "text": "Knead for ten minutes."}])
    window.rename_conversation(first.id, "Bread")
    second = window.new_conversation()
    assert second.id != first.id and window.conv_list.count() == 2

    window.search.setText("面包")  # searches message text, not only titles
    assert [window.conv_list.item(i).text() for i in range(window.conv_list.count())] == ["Bread"]
    window.search.clear()

    window.open_conversation(first.id)
    assert window.chat.widgets[1].sources.text().count("bread.pdf, p. 3") == 1
    out = window.export_markdown(tmp_path / "bread.md")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Bread") and "bread.pdf`, p. 3" in text and "> Knead for ten minutes." in text

    window.delete_conversation(first.id)
    assert [c.id for c in window.store.conversations()] == [second.id] and window.chat.widgets == []


def test_a_failing_turn_reaches_the_user_as_a_readable_message(make_window, smollm2_engine, fast_settings, qtbot):
    # max_new_tokens fills the whole 2048-token context: the assistant refuses in the worker thread
    window = make_window(settings=fast_settings(max_new_tokens=2048), engine=smollm2_engine)
    with qtbot.waitSignal(window.error_shown, timeout=TURN_TIMEOUT_MS) as blocker:
        window.send("Hello?")
    assert "max_new_tokens=2048" in blocker.args[0] and "context" in blocker.args[0]
    assert "error" in window.banner_kinds() and "max_new_tokens=2048" in window.banner.text()
    qtbot.waitUntil(lambda: not window.generating)  # the worker ended; the window is usable again
    assert window.send_button.text() == "Send"
    assert [m.role for m in window.store.messages(window.current.id)] == ["user"]  # the question is kept
