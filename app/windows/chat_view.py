"""The chat view: message bubbles rendered as Markdown, the input box and their actions."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QKeyEvent, QTextDocument
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QScrollArea,
                               QSizePolicy, QTextBrowser, QVBoxLayout, QWidget)

from app.store import Message

# How often a streaming answer is re-rendered: coalescing deltas keeps long answers cheap.
RENDER_INTERVAL_MS = 50


def source_label(src: dict) -> str:
    """``[n] file.pdf, p. 3`` (page omitted when unknown), translated."""
    name = Path(str(src.get("file", ""))).name
    page = src.get("page")
    where = QCoreApplication.translate("MessageWidget", ", p. {page}").format(page=page) if page else ""
    return f"[{src.get('n', '?')}] {name}{where}"


class MarkdownView(QTextBrowser):
    """A read-only Markdown block that grows to fit its text (no inner scroll bar)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenExternalLinks(False)
        self.setOpenLinks(False)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.document().setDocumentMargin(4)
        self.setStyleSheet("QTextBrowser { background: transparent; }")
        self.viewport().setAutoFillBackground(False)
        self.setAcceptDrops(False)  # files dropped here go to the window (documents), not into the text
        self._markdown = ""
        self.document().contentsChanged.connect(self._fit)

    def set_markdown(self, text: str) -> None:
        self._markdown = text
        self.document().setMarkdown(text, QTextDocument.MarkdownFeature.MarkdownDialectGitHub)
        self._fit()

    def markdown(self) -> str:
        return self._markdown

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        self.document().setTextWidth(self.viewport().width())
        height = int(self.document().size().height()) + 4
        if self.height() != height:
            self.setFixedHeight(height)


class MessageWidget(QFrame):
    """One message: role, Markdown body, numbered sources and the actions that apply to it."""

    copy_requested = Signal(str)
    edit_requested = Signal(object)  # Message
    regenerate_requested = Signal()
    source_clicked = Signal(dict)

    def __init__(self, message: Message | None, role: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message = message
        self.role = role
        self.setObjectName("userMessage" if role == "user" else "assistantMessage")
        # Tinted bubbles that read well on light and dark palettes alike.
        self.setStyleSheet(
            "QFrame#userMessage { background-color: rgba(70, 130, 230, 0.12); border-radius: 8px; }"
            "QFrame#assistantMessage { border: 1px solid rgba(128, 128, 128, 0.35); border-radius: 8px; }")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        self.role_label = QLabel(self)
        self.role_label.setStyleSheet("font-weight: bold")
        self.body = MarkdownView(self)
        self.note = QLabel(self)  # "no relevant passage found", "stopped"
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: palette(mid); font-style: italic")
        self.note.hide()
        self.sources = QLabel(self)
        self.sources.setWordWrap(True)
        self.sources.setTextInteractionFlags(Qt.TextInteractionFlag.LinksAccessibleByMouse)
        self.sources.linkActivated.connect(self._open_source)
        self.sources.hide()
        self._sources: list[dict] = []
        actions = QHBoxLayout()
        actions.setContentsMargins(0, 0, 0, 0)
        self.copy_button = QPushButton(self)
        self.copy_button.setFlat(True)
        self.copy_button.clicked.connect(lambda: self.copy_requested.emit(self.body.markdown()))
        self.edit_button = QPushButton(self)
        self.edit_button.setFlat(True)
        self.edit_button.clicked.connect(lambda: self.edit_requested.emit(self.message))
        self.edit_button.setVisible(role == "user")
        self.regen_button = QPushButton(self)
        self.regen_button.setFlat(True)
        self.regen_button.clicked.connect(self.regenerate_requested.emit)
        self.regen_button.hide()
        actions.addWidget(self.copy_button)
        actions.addWidget(self.edit_button)
        actions.addWidget(self.regen_button)
        actions.addStretch(1)
        layout.addWidget(self.role_label)
        layout.addWidget(self.body)
        layout.addWidget(self.note)
        layout.addWidget(self.sources)
        layout.addLayout(actions)
        if message is not None:
            self.body.set_markdown(message.content)
            self.set_sources(message.sources)
        self.retranslate()

    def retranslate(self) -> None:
        self.role_label.setText(self.tr("You") if self.role == "user" else self.tr("AstrAI"))
        self.copy_button.setText(self.tr("Copy"))
        self.edit_button.setText(self.tr("Edit"))
        self.regen_button.setText(self.tr("Regenerate"))
        self.sources.setText(self._sources_html())

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def set_sources(self, sources: list[dict]) -> None:
        self._sources = list(sources)
        self.sources.setText(self._sources_html())
        self.sources.setVisible(bool(self._sources))

    def sources_list(self) -> list[dict]:
        return list(self._sources)

    def _sources_html(self) -> str:
        if not self._sources:
            return ""
        links = " &nbsp; ".join(
            f'<a href="{i}">{html.escape(source_label(s))}</a>' for i, s in enumerate(self._sources))
        label = self.tr("Sources:")
        return f"{label} {links}"

    def _open_source(self, link: str) -> None:
        self.source_clicked.emit(self._sources[int(link)])

    def set_note(self, text: str) -> None:
        self.note.setText(text)
        self.note.setVisible(bool(text))



class ChatInput(QPlainTextEdit):
    """The question box: Enter sends, Shift+Enter inserts a newline."""

    submitted = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(False)  # a dropped file is a document to index, not text to paste

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
                event.modifiers() & Qt.KeyboardModifier.ShiftModifier):
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class ChatView(QWidget):
    """The scrolling list of messages plus the streaming answer currently being written."""

    copy_requested = Signal(str)
    edit_requested = Signal(object)
    regenerate_requested = Signal()
    source_clicked = Signal(dict)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scroll = QScrollArea(self)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.container = QWidget()
        self.column = QVBoxLayout(self.container)
        self.column.addStretch(1)
        self.scroll.setWidget(self.container)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.scroll)
        self.widgets: list[MessageWidget] = []
        self.streaming: MessageWidget | None = None
        self._stream_text = ""
        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(RENDER_INTERVAL_MS)
        self._render_timer.timeout.connect(self._render_stream)
        self.scroll.verticalScrollBar().rangeChanged.connect(self._follow)
        self._stick_to_bottom = True

    def clear(self) -> None:
        for w in self.widgets:
            w.deleteLater()
        self.widgets.clear()
        self.streaming = None

    def set_messages(self, messages: list[Message]) -> None:
        self.clear()
        for m in messages:
            self.add_message(m)
        self._update_regenerate()

    def add_message(self, message: Message) -> MessageWidget:
        w = MessageWidget(message, message.role, self.container)
        self._insert(w)
        return w

    def _insert(self, w: MessageWidget) -> None:
        w.copy_requested.connect(self.copy_requested)
        w.edit_requested.connect(self.edit_requested)
        w.regenerate_requested.connect(self.regenerate_requested)
        w.source_clicked.connect(self.source_clicked)
        self.column.insertWidget(self.column.count() - 1, w)
        self.widgets.append(w)
        self._stick_to_bottom = True

    # ---- streaming ---------------------------------------------------------------------------
    def begin_stream(self, text: str = "") -> MessageWidget:
        """Add the bubble the answer streams into (``text``: what already arrived, when re-opened)."""
        w = MessageWidget(None, "assistant", self.container)
        w.copy_button.setEnabled(False)
        self._insert(w)
        self.streaming = w
        self._stream_text = text
        if text:
            w.body.set_markdown(text)
        self._update_regenerate()
        return w

    def append_delta(self, delta: str) -> None:
        self._stream_text += delta
        if not self._render_timer.isActive():
            self._render_timer.start()

    def _render_stream(self) -> None:
        if self.streaming is not None:
            bar = self.scroll.verticalScrollBar()
            self._stick_to_bottom = bar.value() >= bar.maximum() - 40
            self.streaming.body.set_markdown(self._stream_text)

    def end_stream(self, message: Message | None, note: str = "") -> None:
        """Finish the streaming bubble: bind it to its stored message (or drop it when ``None``)."""
        self._render_timer.stop()
        w = self.streaming
        self.streaming = None
        if w is None:
            return
        if message is None and not self._stream_text:
            self.widgets.remove(w)
            w.deleteLater()
        else:
            w.message = message
            w.body.set_markdown(message.content if message else self._stream_text)
            if message is not None:
                w.set_sources(message.sources)
            w.copy_button.setEnabled(True)
            w.set_note(note)
        self._update_regenerate()

    def _update_regenerate(self) -> None:
        last = self.widgets[-1] if self.widgets else None
        for w in self.widgets:
            w.regen_button.setVisible(w is last and w.role == "assistant" and self.streaming is None)

    def _follow(self, _min: int, maximum: int) -> None:
        if self._stick_to_bottom:
            self.scroll.verticalScrollBar().setValue(maximum)


def copy_to_clipboard(text: str) -> None:
    QGuiApplication.clipboard().setText(text)
