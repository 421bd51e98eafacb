"""The documents panel: every file with its indexing status, Add / Remove buttons."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QCoreApplication, QEvent, QModelIndex, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPushButton, QTableView,
                               QVBoxLayout, QWidget)

from app.store import DOC_FAILED, DOC_INDEXED, DOC_INDEXING, DOC_QUEUED, DocumentRow


def status_text(row: DocumentRow) -> str:
    """The status column, translated: queued / indexing 42% / indexed (pages, chunks) / failed: reason."""
    if row.status == DOC_QUEUED:
        return QCoreApplication.translate("DocumentsModel", "queued")
    if row.status == DOC_INDEXING:
        return QCoreApplication.translate("DocumentsModel", "indexing {percent}%").format(percent=int(round(row.progress * 100)))
    if row.status == DOC_INDEXED:
        return QCoreApplication.translate("DocumentsModel", "indexed: {pages} pages, {chunks} chunks").format(pages=row.pages, chunks=row.chunks)
    if row.status == DOC_FAILED:
        return QCoreApplication.translate("DocumentsModel", "failed: {reason}").format(reason=row.error)
    return row.status


class DocumentsModel(QAbstractTableModel):
    """Rows of :class:`DocumentRow` keyed by path; updated in place as indexing progresses."""

    COLUMNS = 2

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[DocumentRow] = []

    def set_rows(self, rows: list[DocumentRow]) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def upsert(self, row: DocumentRow) -> None:
        for i, r in enumerate(self.rows):
            if r.path == row.path:
                self.rows[i] = row
                self.dataChanged.emit(self.index(i, 0), self.index(i, self.COLUMNS - 1))
                return
        self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows))
        self.rows.append(row)
        self.endInsertRows()

    def remove(self, path: str) -> None:
        for i, r in enumerate(self.rows):
            if r.path == path:
                self.beginRemoveRows(QModelIndex(), i, i)
                del self.rows[i]
                self.endRemoveRows()
                return

    def row_for(self, path: str) -> DocumentRow | None:
        return next((r for r in self.rows if r.path == path), None)

    def retranslate(self) -> None:
        if self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, self.COLUMNS - 1))
        self.headerDataChanged.emit(Qt.Orientation.Horizontal, 0, self.COLUMNS - 1)

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else self.COLUMNS

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return Path(row.path).name if index.column() == 0 else status_text(row)
        if role == Qt.ItemDataRole.ToolTipRole:
            return row.path if index.column() == 0 else status_text(row)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return (QCoreApplication.translate("DocumentsModel", "File"),
                    QCoreApplication.translate("DocumentsModel", "Status"))[section]
        return None


class DocumentsPanel(QWidget):
    """Lists documents; emits ``add_files_requested`` / ``add_folder_requested`` / ``remove_requested``."""

    add_files_requested = Signal()
    add_folder_requested = Signal()
    remove_requested = Signal(list)
    password_requested = Signal(str)  # a failed, encrypted PDF: ask for its password and retry

    def __init__(self, model: DocumentsModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.title = QLabel(self)
        self.title.setStyleSheet("font-weight: bold")
        self.hint = QLabel(self)
        self.hint.setWordWrap(True)
        self.table = QTableView(self)
        self.table.setModel(model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setWordWrap(False)
        self.table.setAcceptDrops(False)
        self.table.doubleClicked.connect(self._on_double_click)
        self.add_files = QPushButton(self)
        self.add_folder = QPushButton(self)
        self.remove = QPushButton(self)
        self.add_files.clicked.connect(self.add_files_requested)
        self.add_folder.clicked.connect(self.add_folder_requested)
        self.remove.clicked.connect(self._remove_selected)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_files)
        buttons.addWidget(self.add_folder)
        buttons.addStretch(1)
        buttons.addWidget(self.remove)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.hint)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        self.retranslate()

    def retranslate(self) -> None:
        self.title.setText(self.tr("Documents"))
        self.hint.setText(self.tr("Drop files or folders anywhere on the window. "
                                  "Double-click a locked PDF to enter its password."))
        self.add_files.setText(self.tr("Add files…"))
        self.add_folder.setText(self.tr("Add folder…"))
        self.remove.setText(self.tr("Remove"))
        self.model.retranslate()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def _on_double_click(self, index) -> None:
        row = self.model.rows[index.row()]
        if row.status == DOC_FAILED and "password" in row.error.lower():
            self.password_requested.emit(row.path)

    def _remove_selected(self) -> None:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        paths = [self.model.rows[r].path for r in rows]
        if paths:
            self.remove_requested.emit(paths)
