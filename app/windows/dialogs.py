"""Dialogs: settings, a cited passage, choosing a conversation's documents."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QColor, QDesktopServices, QTextCharFormat, QTextCursor, QTextDocument
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem, QMessageBox,
                               QPlainTextEdit, QPushButton, QSpinBox, QTextBrowser, QVBoxLayout,
                               QWidget)

from app.settings import DTYPES, LANGUAGES, QUANTIZE, THEMES, AppSettings
from astrai_core.errors import AstraiError


class SettingsDialog(QDialog):
    """Edits an :class:`AppSettings`; :meth:`result_settings` returns the validated copy."""

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(self.tr("Settings"))
        self._settings = settings
        form = QFormLayout()
        self.model_path = QLineEdit(settings.model_path)
        self.model_path.setPlaceholderText(self.tr("the shipped model"))
        pick_folder = QPushButton(self.tr("Folder…"))
        pick_folder.clicked.connect(self._pick_model_folder)
        pick_file = QPushButton(self.tr("GGUF file…"))
        pick_file.clicked.connect(self._pick_model_file)
        row = QHBoxLayout()
        row.addWidget(self.model_path, 1)
        row.addWidget(pick_folder)
        row.addWidget(pick_file)
        form.addRow(self.tr("Model"), row)
        self.dtype = self._combo(DTYPES, settings.dtype, {
            "auto": self.tr("automatic"), "float32": "float32", "bfloat16": "bfloat16"})
        form.addRow(self.tr("Precision"), self.dtype)
        self.quantize = self._combo(QUANTIZE, settings.quantize, {
            "none": self.tr("none"), "int8": self.tr("int8 (weights)"), "int4": self.tr("int4 (weights)")})
        form.addRow(self.tr("Quantization"), self.quantize)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.05)
        self.temperature.setValue(settings.temperature)
        form.addRow(self.tr("Temperature"), self.temperature)
        self.top_p = QDoubleSpinBox()
        self.top_p.setRange(0.05, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setValue(settings.top_p)
        form.addRow(self.tr("Top-p"), self.top_p)
        self.max_new_tokens = QSpinBox()
        self.max_new_tokens.setRange(1, 8192)
        self.max_new_tokens.setValue(settings.max_new_tokens)
        form.addRow(self.tr("Max new tokens"), self.max_new_tokens)
        self.system_prompt = QPlainTextEdit(settings.system_prompt)
        self.system_prompt.setFixedHeight(80)
        form.addRow(self.tr("System prompt"), self.system_prompt)
        self.num_sources = QSpinBox()
        self.num_sources.setRange(1, 20)
        self.num_sources.setValue(settings.num_sources)
        form.addRow(self.tr("Sources per answer"), self.num_sources)
        self.embedder = QLineEdit(settings.embedder)
        self.embedder.setPlaceholderText(self.tr("the bundled embedder"))
        pick_embedder = QPushButton(self.tr("Folder…"))
        pick_embedder.clicked.connect(self._pick_embedder)
        embedder_row = QHBoxLayout()
        embedder_row.addWidget(self.embedder, 1)
        embedder_row.addWidget(pick_embedder)
        form.addRow(self.tr("Embedder"), embedder_row)
        self.language = self._combo(LANGUAGES, settings.language, {
            "system": self.tr("follow the system"), "en": "English", "zh_CN": "简体中文"})
        form.addRow(self.tr("Language"), self.language)
        self.theme = self._combo(THEMES, settings.theme, {
            "system": self.tr("follow the system"), "light": self.tr("light"), "dark": self.tr("dark")})
        form.addRow(self.tr("Appearance"), self.theme)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)
        self._result: AppSettings | None = None

    @staticmethod
    def _combo(values: tuple[str, ...], current: str, labels: dict[str, str]) -> QComboBox:
        box = QComboBox()
        for v in values:
            box.addItem(labels.get(v, v), v)
        box.setCurrentIndex(values.index(current))
        return box

    def _pick_model_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, self.tr("Choose a model folder"))
        if path:
            self.model_path.setText(path)

    def _pick_embedder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, self.tr("Choose a sentence-transformers folder"))
        if path:
            self.embedder.setText(path)

    def _pick_model_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, self.tr("Choose a GGUF file"), "", self.tr("GGUF models (*.gguf)"))
        if path:
            self.model_path.setText(path)

    def collect(self) -> AppSettings:
        """The edited settings, validated (raises :class:`AstraiError` naming the bad value)."""
        model = self.model_path.text().strip()
        if model and not Path(model).expanduser().exists():
            raise AstraiError(self.tr("Model not found: {path}").format(path=model))
        return self._settings.replace(
            model_path=model, dtype=self.dtype.currentData(), quantize=self.quantize.currentData(),
            temperature=round(self.temperature.value(), 3), top_p=round(self.top_p.value(), 3),
            max_new_tokens=self.max_new_tokens.value(), system_prompt=self.system_prompt.toPlainText().strip(),
            num_sources=self.num_sources.value(), embedder=self.embedder.text().strip(),
            language=self.language.currentData(), theme=self.theme.currentData())

    def accept(self) -> None:
        try:
            self._result = self.collect()
        except AstraiError as exc:
            QMessageBox.warning(self, self.tr("Invalid setting"), str(exc))
            return
        super().accept()

    def result_settings(self) -> AppSettings | None:
        return self._result


class SourceDialog(QDialog):
    """Shows the passage a source number points at, with the cited text highlighted."""

    def __init__(self, source: dict, page_text: str | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source = source
        path = Path(str(source.get("file", "")))
        page = source.get("page")
        self.setWindowTitle(self.tr("Source [{n}]").format(n=source.get("n", "?")))
        header = QLabel(f"<b>{path.name}</b>" + (self.tr(", page {page}").format(page=page) if page else ""))
        header.setToolTip(str(path))
        self.view = QTextBrowser()
        self.highlighted: tuple[int, int] | None = None
        open_button = QPushButton(self.tr("Open file"))
        open_button.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))))
        open_button.setEnabled(path.is_file())
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        bottom = QHBoxLayout()
        bottom.addWidget(open_button)
        bottom.addStretch(1)
        bottom.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(header)
        layout.addWidget(self.view, 1)
        layout.addLayout(bottom)
        self.resize(700, 500)
        self.set_page_text(page_text)

    def set_page_text(self, page_text: str | None) -> None:
        """Show the whole page (or just the stored passage) and highlight the cited text in it."""
        passage = str(self.source.get("text", ""))
        self.view.setPlainText(page_text if page_text else passage)
        self.highlighted = highlight(self.view.document(), passage)
        if self.highlighted:
            cursor = self.view.textCursor()
            cursor.setPosition(self.highlighted[0])
            self.view.setTextCursor(cursor)
            self.view.ensureCursorVisible()


def highlight(document: QTextDocument, passage: str) -> tuple[int, int] | None:
    """Highlight ``passage`` in ``document`` (whitespace-insensitive); return its (start, end) or None."""
    text = document.toPlainText()
    span = find_passage(text, passage)
    if span is None:
        return None
    fmt = QTextCharFormat()
    fmt.setBackground(QColor(255, 230, 120))
    fmt.setForeground(QColor(0, 0, 0))
    cursor = QTextCursor(document)
    cursor.setPosition(span[0])
    cursor.setPosition(span[1], QTextCursor.MoveMode.KeepAnchor)
    cursor.mergeCharFormat(fmt)
    return span


def find_passage(text: str, passage: str) -> tuple[int, int] | None:
    """Locate ``passage`` in ``text`` ignoring differences in whitespace (chunkers normalise it)."""
    words = passage.split()
    if not words:
        return None
    exact = text.find(passage)
    if exact >= 0:
        return exact, exact + len(passage)
    import re

    pattern = r"\s*".join(re.escape(w) for w in words)
    m = re.search(pattern, text)
    return (m.start(), m.end()) if m else None


class DocumentChooser(QDialog):
    """Checkable list of indexed documents: which ones a conversation may use."""

    def __init__(self, paths: list[str], chosen: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(self.tr("Documents for this conversation"))
        self.list = QListWidget()
        for p in paths:
            item = QListWidgetItem(Path(p).name)
            item.setToolTip(p)
            item.setData(Qt.ItemDataRole.UserRole, p)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if p in chosen else Qt.CheckState.Unchecked)
            self.list.addItem(item)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addWidget(buttons)

    def chosen(self) -> list[str]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.CheckState.Checked]
