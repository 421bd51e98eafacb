"""``astrai-app --self-test``: load the default model, index a bundled document, answer from it.

Drives a real :class:`MainWindow` through its public methods and signals, the way a user would,
and finishes with exit code 0 only when the answer cites the bundled document.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from app.store import DOC_FAILED, DOC_INDEXED
from app.windows.main_window import MainWindow
from app.workers import TurnResult


class SelfTest(QObject):
    """Emits ``finished(exit_code)``; prints one line per step to stdout."""

    finished = Signal(int)

    def __init__(self, window: MainWindow, document: Path, question: str, timeout_ms: int) -> None:
        super().__init__(window)
        self.window = window
        self.document = str(Path(document).resolve())
        self.question = question
        self.timeout_ms = timeout_ms
        self.t0 = time.monotonic()
        self._ready: set[str] = set()
        self._asked = False
        self._done = False

    def start(self) -> None:
        w = self.window
        w.engine_ready.connect(lambda: self._ready_part("model"))
        w.embedder_ready.connect(lambda: self._ready_part("embedder"))
        w.error_shown.connect(lambda text: self._fail(f"error: {text}"))
        w.document_changed.connect(self._on_document)
        w.turn_finished.connect(self._on_answer)
        QTimer.singleShot(self.timeout_ms, lambda: self._fail(f"timed out after {self.timeout_ms / 1000:.0f} s"))
        if w.engine is not None:
            self._ready.add("model")
        if w.embedder is not None:
            self._ready.add("embedder")
        self._log("starting; waiting for the model and the embedder")
        if "no_model" in w.banner_kinds():
            QTimer.singleShot(0, lambda: self._fail("no model found (choose one with --model PATH)"))
        else:
            QTimer.singleShot(0, self._maybe_index)

    def _log(self, text: str) -> None:
        print(f"[self-test {time.monotonic() - self.t0:6.1f}s] {text}", flush=True)

    def _ready_part(self, part: str) -> None:
        self._ready.add(part)
        self._log(f"{part} loaded")
        self._maybe_index()

    def _maybe_index(self) -> None:
        if self._ready >= {"model", "embedder"} and not self._asked:
            self._asked = True
            self._log(f"indexing {self.document}")
            self.window.add_documents([self.document])

    def _on_document(self, path: str, status: str) -> None:
        if path != self.document:
            return
        if status == DOC_INDEXED:
            self._log("document indexed; asking: " + self.question)
            self.window.new_conversation()
            self.window.send(self.question)
        elif status == DOC_FAILED:
            row = self.window.store.document(path)
            self._fail(f"indexing failed: {row.error if row else '?'}")

    def _on_answer(self, result: TurnResult) -> None:
        self._log(f"answer: {result.text.strip()[:300]!r}")
        files = [str(Path(s.get("file", "")).resolve()) for s in result.sources]
        if not result.text.strip():
            self._fail("the answer is empty")
        elif self.document not in files:
            self._fail(f"the answer does not cite the bundled document (sources: {files})")
        else:
            self._log("sources: " + "; ".join(f"[{s['n']}] {Path(s['file']).name} p.{s.get('page')}" for s in result.sources))
            self._finish(0)

    def _fail(self, why: str) -> None:
        print(f"[self-test] FAILED: {why}", file=sys.stderr, flush=True)
        self._finish(1)

    def _finish(self, code: int) -> None:
        if not self._done:
            self._done = True
            if code == 0:
                self._log("OK")
            self.finished.emit(code)
