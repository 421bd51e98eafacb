"""Write real PDFs (with a text layer) for the app tests, using Qt's own PDF writer."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMarginsF, QRectF, Qt
from PySide6.QtGui import QFont, QPageLayout, QPageSize, QPainter, QPdfWriter


def write_pdf(path: Path, pages: list[str], point_size: int = 11) -> Path:
    """One PDF page per string; text is wrapped to the page. Needs a QGuiApplication."""
    writer = QPdfWriter(str(path))
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait,
                                     QMarginsF(20, 20, 20, 20), QPageLayout.Unit.Millimeter))
    painter = QPainter(writer)
    font = QFont("DejaVu Sans")
    font.setPointSize(point_size)
    painter.setFont(font)
    rect = QRectF(painter.viewport())
    for i, text in enumerate(pages):
        if i:
            writer.newPage()
        painter.drawText(rect, int(Qt.TextFlag.TextWordWrap), text)
    painter.end()
    return path
