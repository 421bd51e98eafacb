"""Killing the app while an answer streams loses only that partial answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.store import Store

ROOT = Path(__file__).resolve().parents[2]
CHILD = r"""
import os, signal, sys
from pathlib import Path
from PySide6.QtWidgets import QApplication
from app.i18n import LanguageSwitcher
from app.settings import AppSettings
from app.store import DOCS_NONE, Store
from app.windows.main_window import MainWindow

data_dir, model = Path(sys.argv[1]), sys.argv[2]
app = QApplication([])
store = Store.open(data_dir)
earlier = store.create_conversation("earlier")
store.add_message(earlier.id, "user", "hello")
store.add_message(earlier.id, "assistant", "hi there")
settings = AppSettings(model_path=model, max_new_tokens=200, temperature=0.0)
window = MainWindow(store, data_dir, settings, LanguageSwitcher(app), autoload=False)
window.load_model()

def ask():
    window.new_conversation()
    window.set_conversation_scope(DOCS_NONE, None)
    window.send("Write a long poem about the sea.")

def killed(_delta):
    print("killing mid-answer", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

window.engine_ready.connect(ask)
window.answer_delta.connect(killed)
app.exec()
"""


@pytest.mark.slow
def test_kill_while_streaming_keeps_everything_but_the_partial_answer(smollm2_gguf, tmp_path):
    """Slow (a fresh process loads the GGUF): ``pytest -m slow tests/app/test_app_kill.py``."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(smollm2_gguf)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -9 and "killing mid-answer" in proc.stdout, proc.stdout + proc.stderr
    store = Store.open(tmp_path)
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    convs = {c.title: store.messages(c.id) for c in store.conversations()}
    assert [(m.role, m.content) for m in convs["earlier"]] == [("user", "hello"), ("assistant", "hi there")]
    [streaming] = [msgs for title, msgs in convs.items() if title != "earlier"]
    assert [(m.role, m.content) for m in streaming] == [("user", "Write a long poem about the sea.")]
