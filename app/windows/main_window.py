"""The main window: conversations on the left, the chat in the middle, documents on the right.

The window validates input, keeps the SQLite store up to date and drives the workers in
:mod:`app.workers`; it holds no model or index logic itself. Long work always runs on a worker
thread, so the window stays responsive while a model loads, an answer streams or files index.
"""

from __future__ import annotations

import html
import threading
import time
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QByteArray, QEvent, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QInputDialog, QLabel, QLineEdit, QListWidget,
                               QListWidgetItem, QMainWindow, QMenu, QMessageBox, QProgressBar, QPushButton,
                               QSplitter, QVBoxLayout, QWidget)

from app.export import conversation_markdown, write_text_atomic
from app.i18n import LanguageSwitcher, resolve_language
from app.settings import AppSettings
from app.store import (DOC_INDEXED, DOC_INDEXING, DOC_QUEUED, DOCS_ALL, DOCS_NONE, DOCS_SELECTED,
                       Conversation, DocumentRow, Message, Store)
from app.windows.chat_view import ChatInput, ChatView, copy_to_clipboard
from app.windows.dialogs import DocumentChooser, SettingsDialog, SourceDialog
from app.windows.documents_panel import DocumentsModel, DocumentsPanel
from app.workers import (GeneratorWorker, IndexEvent, IndexOp, TurnRequest, TurnResult, WorkerPool, chat_job, index_job,
                         iter_files, load_embedder_job, load_model_job, make_assistant, open_collection,
                         page_text_job, supported_suffixes)

class MainWindow(QMainWindow):
    """The app window. ``engine`` / ``embedder`` may be passed in already loaded (tests, self-test)."""

    engine_ready = Signal()
    embedder_ready = Signal()
    answer_delta = Signal(str)  # each streamed piece of the answer
    turn_finished = Signal(object)  # TurnResult
    document_changed = Signal(str, str)  # path, status
    error_shown = Signal(str)

    def __init__(self, store: Store, data_dir: Path, settings: AppSettings, languages: LanguageSwitcher,
                 *, engine: Any = None, embedder: Any = None, autoload: bool = True,
                 model_resolver: Callable[[str], Path] | None = None, theme_applier: Callable[[str], None] | None = None
                 ) -> None:
        super().__init__()
        self.store = store
        self.data_dir = Path(data_dir)
        self.settings = settings
        self.languages = languages
        self.engine = engine
        self.embedder = embedder
        self._model_resolver = model_resolver or _default_model_resolver
        self._theme_applier = theme_applier
        self.pool = WorkerPool()
        self.current: Conversation | None = None
        self.chat_worker: GeneratorWorker | None = None
        self._turn_conversation: int | None = None
        self._pending: tuple[int, TurnRequest, bool] | None = None  # a turn waiting for the model
        self._editing: Message | None = None
        self._finished_result: TurnResult | None = None
        self._model_load_id = 0
        self._shut_down = False
        self._turn_text = ""  # the answer streamed so far (survives switching conversations)
        self._model_path: Path | None = None
        self._index_queue: list[IndexOp] = []
        self.index_worker: GeneratorWorker | None = None
        self._index_cancel = threading.Event()
        self._loading: set[str] = set()
        self._banners: dict[str, str] = {}
        self._build()
        self.setAcceptDrops(True)
        self._restore_window_state()
        self.retranslate()
        self.reload_conversations()
        self._show_scope()
        self._load_documents()
        if autoload:
            QTimer.singleShot(0, self.start_loading)

    # ---- construction -------------------------------------------------------------------------
    def _build(self) -> None:
        # left: conversations
        self.search = QLineEdit()
        self.search.setClearButtonEnabled(True)
        self.search.setAcceptDrops(False)  # dropped files are documents, wherever they land
        self.search.textChanged.connect(lambda _t: self.reload_conversations())
        self.new_button = QPushButton()
        self.new_button.clicked.connect(self.new_conversation)
        self.conv_list = QListWidget()
        self.conv_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.conv_list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.conv_list.currentItemChanged.connect(self._on_conversation_selected)
        self.conv_list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.conv_list.customContextMenuRequested.connect(self._conversation_menu)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.addWidget(self.new_button)
        lv.addWidget(self.search)
        lv.addWidget(self.conv_list, 1)

        # middle: banner, document scope, chat, input
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setObjectName("banner")
        self.banner.setStyleSheet("#banner { background: #fff3cd; color: #5c4400; padding: 6px; border-radius: 4px; }")
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.LinksAccessibleByMouse)
        self.banner.linkActivated.connect(self._banner_link)
        self.banner.hide()
        self.scope_label = QLabel()
        self.scope = QComboBox()
        self.scope.addItem("", DOCS_ALL)
        self.scope.addItem("", DOCS_NONE)
        self.scope.addItem("", DOCS_SELECTED)
        self.scope.activated.connect(self._on_scope_changed)
        self.choose_docs = QPushButton()
        self.choose_docs.clicked.connect(self.choose_documents)
        scope_row = QHBoxLayout()
        scope_row.addWidget(self.scope_label)
        scope_row.addWidget(self.scope)
        scope_row.addWidget(self.choose_docs)
        scope_row.addStretch(1)
        self.chat = ChatView()
        self.chat.copy_requested.connect(copy_to_clipboard)
        self.chat.edit_requested.connect(self.edit_message)
        self.chat.regenerate_requested.connect(self.regenerate)
        self.chat.source_clicked.connect(self.show_source)
        self.edit_note = QLabel()
        self.edit_note.hide()
        self.input = ChatInput()
        self.input.setFixedHeight(80)
        self.input.submitted.connect(self.send)
        self.send_button = QPushButton()
        self.send_button.clicked.connect(self._send_or_stop)
        input_row = QHBoxLayout()
        input_row.addWidget(self.input, 1)
        input_row.addWidget(self.send_button)
        middle = QWidget()
        mv = QVBoxLayout(middle)
        mv.addWidget(self.banner)
        mv.addLayout(scope_row)
        mv.addWidget(self.chat, 1)
        mv.addWidget(self.edit_note)
        mv.addLayout(input_row)

        # right: documents
        self.documents_model = DocumentsModel(self)
        self.documents = DocumentsPanel(self.documents_model)
        self.documents.add_files_requested.connect(self._pick_files)
        self.documents.add_folder_requested.connect(self._pick_folder)
        self.documents.remove_requested.connect(self.remove_documents)
        self.documents.password_requested.connect(self._ask_password)

        self.splitter = QSplitter()
        self.splitter.addWidget(left)
        self.splitter.addWidget(middle)
        self.splitter.addWidget(self.documents)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([220, 640, 320])
        self.setCentralWidget(self.splitter)

        # status bar: what is loading / indexing
        self.status_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.hide()
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.progress)

        # menus and shortcuts
        self.file_menu = self.menuBar().addMenu("")
        self.act_new = QAction(self, shortcut=QKeySequence.StandardKey.New, triggered=self.new_conversation)
        self.act_add = QAction(self, triggered=self._pick_files)
        self.act_export = QAction(self, triggered=self.export_dialog)
        self.act_settings = QAction(self, shortcut=QKeySequence("Ctrl+,"), triggered=self.open_settings)
        self.act_quit = QAction(self, shortcut=QKeySequence.StandardKey.Quit, triggered=self.close)
        for a in (self.act_new, self.act_add, self.act_export, self.act_settings):
            self.file_menu.addAction(a)
        self.file_menu.addSeparator()
        self.file_menu.addAction(self.act_quit)
        self.stop_shortcut = QShortcut(QKeySequence(Qt.Key.Key_Escape), self, activated=self.stop)

    def retranslate(self) -> None:
        self.setWindowTitle(self.tr("AstrAI — offline assistant"))
        self.search.setPlaceholderText(self.tr("Search conversations…"))
        self.new_button.setText(self.tr("New chat"))
        self.scope_label.setText(self.tr("Documents:"))
        self.scope.setItemText(0, self.tr("all documents"))
        self.scope.setItemText(1, self.tr("none"))
        self.scope.setItemText(2, self.tr("chosen documents"))
        self.choose_docs.setText(self.tr("Choose…"))
        self.input.setPlaceholderText(self.tr("Ask anything — Enter sends, Shift+Enter adds a line"))
        self.edit_note.setText(self.tr("Editing an earlier message: sending replaces it and the answers after it."))
        self.file_menu.setTitle(self.tr("&File"))
        self.menuBar().adjustSize()
        self.act_new.setText(self.tr("New chat"))
        self.act_add.setText(self.tr("Add documents…"))
        self.act_export.setText(self.tr("Export conversation as Markdown…"))
        self.act_settings.setText(self.tr("Settings…"))
        self.act_quit.setText(self.tr("Quit"))
        self._update_send_button()
        self._update_status()
        self._refresh_banner()
        self.reload_conversations()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    # ---- window state (QSettings, one ini file in the data dir) -------------------------------
    def _qsettings(self) -> QSettings:
        return QSettings(str(self.data_dir / "window.ini"), QSettings.Format.IniFormat)

    def _restore_window_state(self) -> None:
        qs = self._qsettings()
        geometry = qs.value("geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1180, 760)
        splitter = qs.value("splitter")
        if isinstance(splitter, QByteArray):
            self.splitter.restoreState(splitter)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        qs = self._qsettings()
        qs.setValue("geometry", self.saveGeometry())
        qs.setValue("splitter", self.splitter.saveState())
        qs.sync()
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> int:
        """Stop every worker and wait for it (a streaming answer is lost, as documented).

        Returns the number of workers that could not be stopped in time (a model still loading).
        """
        self._index_cancel.set()
        self._shut_down = True  # reports still queued from the workers are dropped from now on
        return self.pool.stop_all()

    # ---- loading the model and the embedder ----------------------------------------------------
    def start_loading(self) -> None:
        """Load whatever is missing (model, embedder) on worker threads; the window stays usable."""
        self.load_model()
        self.load_embedder()

    def load_model(self) -> None:
        if self.engine is not None or "model" in self._loading:
            return
        try:
            path = self._model_resolver(self.settings.model_path)
        except Exception as exc:  # no model shipped and none chosen: say so, never crash
            self._show_banner("no_model", str(exc))
            return
        self._hide_banner("no_model")
        self._model_path = Path(path)
        self._loading.add("model")
        self._model_load_id += 1
        w = GeneratorWorker(load_model_job, path, self.settings)
        # a load started before the settings changed again must not install its (stale) engine
        w.returned.connect(lambda engine, n=self._model_load_id: self._on_engine_loaded(engine)
                           if n == self._model_load_id else None)
        w.errored.connect(lambda exc: self._on_load_failed("model", exc))
        self.pool.start(w)
        self._update_status()

    def load_embedder(self) -> None:
        if self.embedder is not None or "embedder" in self._loading:
            return
        self._loading.add("embedder")
        w = GeneratorWorker(load_embedder_job, self.settings.embedder)
        w.returned.connect(self._on_embedder_loaded)
        w.errored.connect(lambda exc: self._on_load_failed("embedder", exc))
        self.pool.start(w)
        self._update_status()

    def _on_engine_loaded(self, engine: Any) -> None:
        self._loading.discard("model")
        self.engine = engine
        self._hide_banner("no_model")
        self._update_status()
        self.engine_ready.emit()
        self._run_pending()

    def _on_embedder_loaded(self, embedder: Any) -> None:
        self._loading.discard("embedder")
        self.embedder = embedder
        self._update_status()
        self.embedder_ready.emit()
        self._kick_indexer()
        self._run_pending()

    def _on_load_failed(self, what: str, exc: BaseException) -> None:
        self._loading.discard(what)
        self._update_status()
        if self._pending is not None and (what == "model" or self._pending[2]):
            self.stop()  # the waiting question stays in the conversation; Regenerate retries it
        if what == "model":
            self.show_error(self.tr("The model could not be loaded: {error}").format(error=exc))
        else:
            self.show_error(self.tr("The document embedder could not be loaded: {error}").format(error=exc))

    def _update_status(self) -> None:
        parts = []
        if "model" in self._loading:
            parts.append(self.tr("Loading the model…"))
        elif self.engine is not None:
            name = self._model_path.name if self._model_path else "AstrAI"
            parts.append(self.tr("Model: {name}").format(name=name))
        if "embedder" in self._loading:
            parts.append(self.tr("Loading the document embedder…"))
        busy = [r for r in self.documents_model.rows if r.status in (DOC_QUEUED, DOC_INDEXING)]
        if busy:
            parts.append(self.tr("Indexing {count} document(s)…").format(count=len(busy)))
        self.status_label.setText("   ·   ".join(parts))
        loading = bool(self._loading) or bool(busy)
        self.progress.setVisible(loading)
        indexing = next((r for r in busy if r.status == DOC_INDEXING), None)
        if self._loading or indexing is None:
            self.progress.setRange(0, 0)  # busy indicator
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(int(indexing.progress * 100))

    # ---- banner and errors ----------------------------------------------------------------------
    # One banner above the chat lists every current notice (no model, missing CJK font, the last
    # error); each has its own close link. Texts are rebuilt on language change.
    def _show_banner(self, kind: str, detail: str = "") -> None:
        self._banners[kind] = detail
        self._refresh_banner()

    def _hide_banner(self, kind: str) -> None:
        self._banners.pop(kind, None)
        self._refresh_banner()

    def banner_kinds(self) -> list[str]:
        return list(self._banners)

    def _refresh_banner(self) -> None:
        lines = []
        for kind, detail in self._banners.items():
            if kind == "no_model":
                text = self.tr("No model found: choose a model folder or GGUF file in "
                               "<a href=\"settings\">Settings</a>.") + f" <small>({html.escape(detail)})</small>"
            elif kind == "no_cjk_font":
                text = self.tr("No font for Chinese text was found, so Chinese may show as empty boxes. Install "
                               "Noto Sans CJK (Debian/Ubuntu: fonts-noto-cjk) or copy a .ttf/.otf font into {folder} "
                               "and restart.").format(folder=html.escape(detail))
            else:
                text = html.escape(detail)
            lines.append(f'{text} &nbsp;<a href="close:{kind}">✕</a>')
        self.banner.setText("<br>".join(lines))
        self.banner.setVisible(bool(lines))

    def _banner_link(self, link: str) -> None:
        if link == "settings":
            self.open_settings()
        elif link.startswith("close:"):
            self._hide_banner(link.split(":", 1)[1])

    def warn_missing_cjk_font(self, font_dir: Path) -> None:
        self._show_banner("no_cjk_font", str(font_dir))

    def show_error(self, text: str) -> None:
        """Show a readable error without blocking the window (tests read ``error_shown``)."""
        self._show_banner("error", text)
        self.error_shown.emit(text)

    # ---- conversations ----------------------------------------------------------------------
    def reload_conversations(self, select: int | None = None) -> None:
        if select is None and self.current is not None:
            select = self.current.id
        self.conv_list.blockSignals(True)
        self.conv_list.clear()
        for c in self.store.conversations(self.search.text().strip()):
            item = QListWidgetItem(c.title or self.tr("New chat"))
            item.setData(Qt.ItemDataRole.UserRole, c.id)
            self.conv_list.addItem(item)
            if c.id == select:
                self.conv_list.setCurrentItem(item)
        self.conv_list.blockSignals(False)

    def new_conversation(self) -> Conversation:
        conv = self.store.create_conversation("")  # titled from its first question
        self.search.clear()
        self.open_conversation(conv.id)
        self.input.setFocus()
        return conv

    def open_conversation(self, conversation_id: int) -> None:
        self.current = self.store.conversation(conversation_id)
        self._cancel_edit()
        self.chat.set_messages(self.store.messages(conversation_id) if self.current else [])
        if self.current is not None and self._turn_conversation == self.current.id:
            self.chat.begin_stream(self._turn_text)  # came back to the conversation that is streaming
        self._show_scope()
        self.reload_conversations(conversation_id)

    def _on_conversation_selected(self, item: QListWidgetItem | None, _prev: Any) -> None:
        if item is not None:
            self.open_conversation(item.data(Qt.ItemDataRole.UserRole))

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        title = title.strip()
        if title:
            self.store.rename_conversation(conversation_id, title)
            if self.current and self.current.id == conversation_id:
                self.current.title = title
            self.reload_conversations()

    def delete_conversation(self, conversation_id: int) -> None:
        if self._turn_conversation == conversation_id:
            self.stop()
        self.store.delete_conversation(conversation_id)
        if self.current and self.current.id == conversation_id:
            self.current = None
            self.chat.clear()
        self.reload_conversations()

    def _conversation_menu(self, pos) -> None:
        item = self.conv_list.itemAt(pos)
        if item is None:
            return
        cid = item.data(Qt.ItemDataRole.UserRole)
        menu = QMenu(self)
        rename = menu.addAction(self.tr("Rename…"))
        export = menu.addAction(self.tr("Export as Markdown…"))
        delete = menu.addAction(self.tr("Delete"))
        chosen = menu.exec(self.conv_list.mapToGlobal(pos))
        if chosen is rename:
            title, ok = QInputDialog.getText(self, self.tr("Rename conversation"), self.tr("Title:"), text=item.text())
            if ok:
                self.rename_conversation(cid, title)
        elif chosen is export:
            self.open_conversation(cid)
            self.export_dialog()
        elif chosen is delete:
            answer = QMessageBox.question(self, self.tr("Delete conversation"),
                                          self.tr("Delete “{title}”?").format(title=item.text()))
            if answer == QMessageBox.StandardButton.Yes:
                self.delete_conversation(cid)

    # ---- document scope of the conversation ---------------------------------------------------
    def _show_scope(self) -> None:
        scope = self.current.doc_scope if self.current else DOCS_ALL
        self.scope.setCurrentIndex(self.scope.findData(scope))
        self.choose_docs.setVisible(scope == DOCS_SELECTED)

    def _on_scope_changed(self, _index: int) -> None:
        scope = self.scope.currentData()
        if self.current is None:
            self.new_conversation()
        self.set_conversation_scope(scope, None)
        if scope == DOCS_SELECTED and not self.current.doc_paths:
            self.choose_documents()

    def set_conversation_scope(self, scope: str, paths: list[str] | None) -> None:
        """Choose whether and which documents the current conversation uses."""
        if self.current is None:
            self.new_conversation()
        self.store.set_doc_scope(self.current.id, scope, paths)
        self.current = self.store.conversation(self.current.id)
        self._show_scope()

    def choose_documents(self) -> None:
        indexed = [r.path for r in self.documents_model.rows if r.status == DOC_INDEXED]
        dialog = DocumentChooser(indexed, self.current.doc_paths if self.current else [], self)
        if dialog.exec():
            self.set_conversation_scope(DOCS_SELECTED, dialog.chosen())

    # ---- chatting ----------------------------------------------------------------------------
    @property
    def generating(self) -> bool:
        """An answer is streaming or waiting for the model to load."""
        return self.chat_worker is not None or self._pending is not None

    def _send_or_stop(self) -> None:
        if self.generating:
            self.stop()
        else:
            self.send()

    def send(self, text: str | None = None) -> bool:
        """Send the input box (or ``text``) as the next user message; False when nothing was sent."""
        text = (self.input.toPlainText() if text is None else text).strip()
        if not text or self.generating:
            return False
        if self.current is None:
            self.new_conversation()
        conv = self.current
        edited = self._editing is not None
        if edited:
            self.store.delete_messages_from(conv.id, self._editing.id)
            self._cancel_edit()
        if not conv.title:
            self.rename_conversation(conv.id, _title_from(text))
        message = self.store.add_message(conv.id, "user", text)
        self.input.clear()
        if edited:  # later messages are gone: redraw; otherwise just append (long chats stay cheap)
            self.chat.set_messages(self.store.messages(conv.id))
        else:
            self.chat.add_message(message)
        self._start_turn(conv.id)
        return True

    def regenerate(self) -> None:
        """Drop the last answer and answer the last question again."""
        if self.generating or self.current is None:
            return
        messages = self.store.messages(self.current.id)
        if messages and messages[-1].role == "assistant":
            self.store.delete_messages_from(self.current.id, messages[-1].id)
            self.chat.set_messages(self.store.messages(self.current.id))
        if self.store.messages(self.current.id):
            self._start_turn(self.current.id)

    def edit_message(self, message: Message) -> None:
        """Put an earlier user message back in the input box; sending replaces it and what followed."""
        if self.generating or message is None:
            return
        self._editing = message
        self.input.setPlainText(message.content)
        self.edit_note.show()
        self.input.setFocus()

    def _cancel_edit(self) -> None:
        self._editing = None
        self.edit_note.hide()

    def _start_turn(self, conversation_id: int) -> None:
        messages = self.store.messages(conversation_id)
        assert messages and messages[-1].role == "user"
        history = [{"role": m.role, "content": m.content} for m in messages[:-1]]
        conv = self.store.conversation(conversation_id)
        doc_paths = self._documents_for(conv)
        request = TurnRequest(history, messages[-1].content, doc_paths if doc_paths else None)
        self._pending = (conversation_id, request, bool(doc_paths))
        self._turn_text = ""
        self.chat.begin_stream()
        self._turn_conversation = conversation_id
        self._update_send_button()
        self._run_pending()

    def _documents_for(self, conv: Conversation) -> list[str]:
        """Indexed documents this conversation may use (empty = answer without retrieval)."""
        indexed = [r.path for r in self.documents_model.rows if r.status == DOC_INDEXED]
        if conv.doc_scope == DOCS_NONE:
            return []
        if conv.doc_scope == DOCS_SELECTED:
            return [p for p in indexed if p in set(conv.doc_paths)]
        return indexed

    def _run_pending(self) -> None:
        """Start the waiting turn once the model (and, if it uses documents, the embedder) is ready."""
        if self._pending is None or self.chat_worker is not None:
            return
        if "no_model" in self._banners:  # nothing will load until the user picks a model
            if self.chat.streaming is not None:
                self.chat.streaming.set_note(self.tr("Waiting for a model (see Settings)…"))
            return
        conversation_id, request, use_docs = self._pending
        if self.engine is None or (use_docs and self.embedder is None):
            if self.engine is None and not self._loading and "no_model" not in self._banners:
                self.load_model()
            if use_docs and self.embedder is None:
                self.load_embedder()
            waiting = self.tr("Waiting for the model to load…") if self.engine is None else \
                self.tr("Waiting for the document embedder to load…")
            if self.chat.streaming is not None:
                self.chat.streaming.set_note(waiting)
            return
        self._pending = None
        if self.chat.streaming is not None:
            self.chat.streaming.set_note("")
        assistant = make_assistant(self.engine, self.settings)
        embedder, data_dir = self.embedder, self.data_dir
        opener = (lambda: open_collection(data_dir, embedder)) if use_docs else None
        worker = GeneratorWorker(chat_job, assistant, request, opener, on_abort=assistant.cancel)
        worker.yielded.connect(self._on_delta)
        worker.returned.connect(lambda result, cid=conversation_id: self._on_turn_returned(cid, result))
        worker.errored.connect(self._on_turn_error)
        worker.done.connect(self._on_turn_done)
        self.chat_worker = worker
        self.pool.start(worker)

    def _on_delta(self, delta: str) -> None:
        self._turn_text += delta
        self.chat.append_delta(delta)
        self.answer_delta.emit(delta)

    def stop(self) -> None:
        """Stop the streaming answer (Esc); the partial answer is kept."""
        if self.chat_worker is not None:
            self.chat_worker.abort()
        elif self._pending is not None:  # still waiting for the model: drop the turn
            self._pending = None
            self._turn_conversation = None
            self.chat.end_stream(None)
            self._update_send_button()

    def _on_turn_returned(self, conversation_id: int, result: TurnResult | None) -> None:
        if self._shut_down:  # closing: the partial answer is dropped, as documented
            return
        streamed = self._turn_text
        if result is None:  # aborted before the job produced a result
            result = TurnResult(streamed, [], True, cancelled=True)
        message = None
        if result.text.strip() and self.store.conversation(conversation_id) is not None:
            message = self.store.add_message(conversation_id, "assistant", result.text, result.sources)
        note = self.tr("(stopped)") if result.cancelled else ""
        if not result.found:
            note = self.tr("(no relevant passage found)")
        if result.completion_tokens and result.decode_s > 0:
            self.statusBar().showMessage(self.tr("{tokens} tokens, {speed:.1f} tokens/s").format(
                tokens=result.completion_tokens, speed=result.completion_tokens / result.decode_s), 15_000)
        if self.current is not None and self.current.id == conversation_id:
            self.chat.end_stream(message, note)
        self.reload_conversations()
        self._finished_result = result

    def _on_turn_error(self, exc: BaseException) -> None:
        self.chat.end_stream(None)
        self.show_error(self.tr("The answer failed: {error}").format(error=exc))

    def _on_turn_done(self) -> None:
        self.chat_worker = None
        self._turn_conversation = None
        if self.chat.streaming is not None:
            self.chat.end_stream(None)
        self._update_send_button()
        result, self._finished_result = self._finished_result, None
        if result is not None:
            self.turn_finished.emit(result)  # after clean-up, so listeners see an idle window

    def _update_send_button(self) -> None:
        busy = self.generating
        self.send_button.setText(self.tr("Stop") if busy else self.tr("Send"))
        self.send_button.setToolTip(self.tr("Stop the answer (Esc)") if busy else self.tr("Send (Enter)"))

    def show_source(self, source: dict) -> SourceDialog:
        """Open the cited passage; the full page is read on a worker and shown when it arrives."""
        dialog = SourceDialog(source, None, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        worker = GeneratorWorker(page_text_job, str(source.get("file", "")), source.get("page"))
        worker.returned.connect(lambda text, d=dialog: d.set_page_text(text) if _alive(d) and text else None)
        self.pool.start(worker)  # a file that moved since indexing just leaves the stored passage shown
        return dialog

    # ---- export ----------------------------------------------------------------------------
    def export_markdown(self, path: str | Path) -> Path:
        if self.current is None:
            raise ValueError("no conversation is open")
        text = conversation_markdown(self.current, self.store.messages(self.current.id),
                                     you=self.tr("You"), assistant=self.tr("AstrAI"), sources=self.tr("Sources"))
        return write_text_atomic(path, text)

    def export_dialog(self) -> None:
        if self.current is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, self.tr("Export conversation"),
                                              f"{_safe_filename(self.current.title)}.md", self.tr("Markdown (*.md)"))
        if path:
            try:
                self.export_markdown(path)
            except OSError as exc:
                self.show_error(self.tr("Could not write {path}: {error}").format(path=path, error=exc))

    # ---- documents ---------------------------------------------------------------------------
    def _load_documents(self) -> None:
        rows = self.store.documents()
        for r in rows:
            if r.status in (DOC_QUEUED, DOC_INDEXING):  # interrupted last time: index again
                r.status, r.progress = DOC_QUEUED, 0.0
                self._index_queue.append(IndexOp("add", r.path))
        self.documents_model.set_rows(rows)
        self._update_status()

    def add_documents(self, paths: list[str], password: str | None = None) -> list[str]:
        """Queue files (folders are expanded) for indexing in the background; return the files queued."""
        files = iter_files(paths, supported_suffixes())
        for f in files:
            old = self.documents_model.row_for(f)
            row = DocumentRow(f, DOC_QUEUED, added=old.added if old else time.time())
            self.store.upsert_document(row)
            self.documents_model.upsert(row)
            self._index_queue.append(IndexOp("add", f, password))
            self.document_changed.emit(f, DOC_QUEUED)
        self._update_status()
        self._kick_indexer()
        return files

    def remove_documents(self, paths: list[str]) -> None:
        for p in paths:
            self._index_queue = [op for op in self._index_queue if op.path != p]
            self.store.remove_document(p)
            self.documents_model.remove(p)
            self._index_queue.append(IndexOp("remove", p))
            self.document_changed.emit(p, "removed")
        if self.current is not None:
            self.current = self.store.conversation(self.current.id)
        self._update_status()
        self._kick_indexer()

    def _kick_indexer(self) -> None:
        if self.index_worker is not None or not self._index_queue:
            return
        if self.embedder is None:
            self.load_embedder()
            return
        ops, self._index_queue = self._index_queue, []
        embedder, data_dir = self.embedder, self.data_dir
        self._index_cancel = threading.Event()
        worker = GeneratorWorker(index_job, lambda: open_collection(data_dir, embedder), ops, self._index_cancel,
                                 inject_report=True)
        worker.yielded.connect(self._on_index_event)
        worker.errored.connect(lambda exc: self.show_error(self.tr("Indexing failed: {error}").format(error=exc)))
        worker.done.connect(self._on_index_done)
        self.index_worker = worker
        self.pool.start(worker)

    def _on_index_event(self, ev: IndexEvent | None) -> None:
        if ev is None or self._shut_down:  # None: the job's own yields only mark abort points
            return
        if self.store.document(ev.path) is None:  # removed while it was indexing
            return
        row = DocumentRow(ev.path, ev.status, ev.fraction, ev.pages, ev.chunks, ev.error)
        old = self.documents_model.row_for(ev.path)
        if old is not None:
            row.added = old.added
        self.documents_model.upsert(row)
        if old is None or old.status != row.status:  # progress ticks stay in memory
            self.store.upsert_document(row)
            self.document_changed.emit(ev.path, ev.status)
        self._update_status()

    def _on_index_done(self) -> None:
        self.index_worker = None
        if self._shut_down:
            return
        self._update_status()
        self._kick_indexer()

    def _ask_password(self, path: str) -> None:
        password, ok = QInputDialog.getText(self, self.tr("Password"),
                                            self.tr("Password for {name}:").format(name=Path(path).name),
                                            QLineEdit.EchoMode.Password)
        if ok and password:
            self.add_documents([path], password=password)

    def _pick_files(self) -> None:
        suffixes = " ".join(f"*{s}" for s in supported_suffixes())
        paths, _ = QFileDialog.getOpenFileNames(self, self.tr("Add documents"), "",
                                                self.tr("Documents ({patterns})").format(patterns=suffixes))
        if paths:
            self.add_documents(paths)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, self.tr("Add a folder of documents"))
        if path:
            self.add_documents([path])

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.add_documents(paths)

    # ---- settings ----------------------------------------------------------------------------
    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec() and dialog.result_settings() is not None:
            self.apply_settings(dialog.result_settings())

    def apply_settings(self, new: AppSettings) -> None:
        """Save ``new`` and apply what changed (language, theme, model, embedder)."""
        old, self.settings = self.settings, new
        self.store.put_settings(new.to_dict())
        if new.language != old.language:
            self.languages.apply(resolve_language(new.language))
        if new.theme != old.theme and self._theme_applier is not None:
            self._theme_applier(new.theme)
        if (new.model_path, new.dtype, new.quantize) != (old.model_path, old.dtype, old.quantize):
            self.stop()
            self.engine = None
            self._loading.discard("model")  # a load still running for the old settings is ignored
            self.load_model()
        if new.embedder != old.embedder:
            self.embedder = None
            self.load_embedder()


def _default_model_resolver(setting: str) -> Path:
    from astrai_core.assistant import default_model_path

    return default_model_path(setting or None)


def _alive(obj: Any) -> bool:
    from shiboken6 import isValid

    return isValid(obj)


def _title_from(text: str, limit: int = 40) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _safe_filename(title: str) -> str:
    return "".join(ch if ch.isalnum() or ch in " -_" else "_" for ch in title).strip() or "conversation"


