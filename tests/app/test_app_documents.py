"""Documents in the real window: drop a real PDF, index it, answer from it with page citations."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from app.settings import AppSettings
from app.store import DOC_FAILED, DOC_INDEXED, DOCS_ALL, DOCS_SELECTED
from app.windows.dialogs import SourceDialog
from app_pdfs import write_pdf

TIMEOUT_MS = 180_000
FILLER = ("Harbour towns keep records of tides, ferries and weather. The council meets on Mondays "
          "to discuss roads, parks and the library budget. ") * 6


def drop_files(window, paths: list[Path]) -> None:
    """Drag files from a file manager and drop them on the chat area of the window."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    target = window.chat.scroll.viewport()
    pos = QPointF(target.rect().center())
    enter = QDragEnterEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(target.mapTo(window, pos.toPoint())), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, drop)


@pytest.fixture
def falcon_pdf(tmp_path, qapp) -> Path:
    return write_pdf(tmp_path / "falcon report.pdf", [
        FILLER,
        "Project Falcon status. The launch code of Project Falcon is 7412. The rocket is painted orange "
        "and will launch from Kiruna in March.",
        FILLER,
    ])


def wait_status(window, qtbot, path: Path, status: str) -> None:
    qtbot.waitUntil(lambda: (row := window.store.document(str(path))) is not None and row.status == status,
                    timeout=TIMEOUT_MS)


def ask_top_source(window, qtbot, question: str) -> dict:
    """Send ``question``, wait for the answer, and return its first source (the answer must use documents)."""
    with qtbot.waitSignal(window.turn_finished, timeout=TIMEOUT_MS) as blocker:
        window.send(question)
    result = blocker.args[0]
    assert result.found and result.sources
    return result.sources[0]


def test_drop_a_pdf_index_it_and_answer_with_page_citation(make_window, smollm2_engine, real_embedder,
                                                         fast_settings, falcon_pdf, tmp_path, qtbot):
    data_dir = tmp_path / "data"
    window = make_window(data_dir, settings=fast_settings(max_new_tokens=32, num_sources=2),
                         engine=smollm2_engine, embedder=real_embedder)
    drop_files(window, [falcon_pdf])
    wait_status(window, qtbot, falcon_pdf, DOC_INDEXED)
    row = window.documents_model.row_for(str(falcon_pdf))
    assert row.pages == 3 and row.chunks >= 3
    assert window.documents_model.data(window.documents_model.index(0, 1)).startswith("indexed: 3 pages")

    window.new_conversation()
    assert window.current.doc_scope == DOCS_ALL
    top = ask_top_source(window, qtbot, "What is the launch code of Project Falcon?")
    assert Path(top["file"]) == falcon_pdf and top["page"] == 2 and "7412" in top["text"]
    bubble = window.chat.widgets[-1]
    assert "falcon report.pdf, p. 2" in bubble.sources.text()

    # clicking a source opens the passage with the cited text highlighted
    bubble.sources.linkActivated.emit("0")
    dialog = window.findChild(SourceDialog)
    assert dialog is not None and dialog.highlighted is not None
    qtbot.waitUntil(lambda: "Project Falcon status" in dialog.view.toPlainText(), timeout=30_000)  # full page arrived
    start, end = dialog.highlighted
    assert "7412" in dialog.view.toPlainText()[start:end]

    # nothing relevant in the documents: the answer says so instead of guessing
    with qtbot.waitSignal(window.turn_finished, timeout=TIMEOUT_MS) as blocker:
        window.send("Which composer wrote the opera Turandot?")
    assert blocker.args[0].found is False and blocker.args[0].sources == []
    assert "could not find" in window.chat.widgets[-1].body.markdown()
    assert window.chat.widgets[-1].note.text() == "(no relevant passage found)"

    # a corrupt PDF fails with its reason and changes nothing else
    messages_before = [(m.role, m.content) for m in window.store.messages(window.current.id)]
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 200)
    drop_files(window, [broken])
    wait_status(window, qtbot, broken, DOC_FAILED)
    failed = window.store.document(str(broken))
    assert failed.error and "broken.pdf" in window.documents_model.data(window.documents_model.index(1, 0))
    assert window.documents_model.data(window.documents_model.index(1, 1)).startswith("failed: ")
    assert window.store.document(str(falcon_pdf)).status == DOC_INDEXED
    assert [(m.role, m.content) for m in window.store.messages(window.current.id)] == messages_before
    assert "error" not in window.banner_kinds()
    conversation_id = window.current.id
    window.close()

    # restart: conversations, messages with their sources, and the document list are all back
    again = make_window(data_dir, engine=smollm2_engine, embedder=real_embedder)
    assert [c.id for c in again.store.conversations()] == [conversation_id]
    again.open_conversation(conversation_id)
    assert again.chat.widgets[1].sources_list()[0]["page"] == 2 and len(again.chat.widgets) == 4
    statuses = {Path(r.path).name: r.status for r in again.documents_model.rows}
    assert statuses == {"falcon report.pdf": DOC_INDEXED, "broken.pdf": DOC_FAILED}


def test_locked_pdf_asks_for_a_password_then_indexes_and_can_be_removed(make_window, real_embedder, falcon_pdf,
                                                                         tmp_path, qtbot):
    import pypdf

    from app.workers import open_collection

    locked = tmp_path / "locked.pdf"
    writer = pypdf.PdfWriter(clone_from=str(falcon_pdf))
    writer.encrypt("s3cret")
    with open(locked, "wb") as f:
        writer.write(f)
    # no model here (a missing path, so nothing loads even when a model is shipped): indexing only
    window = make_window(settings=AppSettings(model_path=str(tmp_path / "no-model")), embedder=real_embedder)
    window.add_documents([str(tmp_path)])  # a folder: expanded to the PDFs inside it
    wait_status(window, qtbot, locked, DOC_FAILED)
    wait_status(window, qtbot, falcon_pdf, DOC_INDEXED)
    assert "password" in window.store.document(str(locked)).error.lower()

    window.add_documents([str(locked)], password="s3cret")  # what double-clicking the row leads to
    wait_status(window, qtbot, locked, DOC_INDEXED)
    assert window.documents_model.row_for(str(locked)).pages == 3

    # a conversation limited to chosen documents retrieves from those only
    window.new_conversation()
    window.set_conversation_scope(DOCS_SELECTED, [str(falcon_pdf)])
    window.send("What is the launch code?")  # no model in this test: the turn waits, request is built
    assert window._pending[1].doc_paths == [str(falcon_pdf)]
    window.stop()
    window.set_conversation_scope(DOCS_ALL, None)
    window.send("What is the launch code?")
    assert sorted(window._pending[1].doc_paths) == sorted([str(falcon_pdf), str(locked)])
    window.stop()

    window.remove_documents([str(locked)])
    assert window.documents_model.row_for(str(locked)) is None and window.store.document(str(locked)) is None
    qtbot.waitUntil(lambda: window.index_worker is None, timeout=TIMEOUT_MS)
    remaining = [Path(d.path).name for d in open_collection(window.data_dir, real_embedder).documents()]
    assert remaining == ["falcon report.pdf"]


def test_drop_a_real_debian_pdf_and_answer_from_it(make_window, smollm2_engine, real_embedder, fast_settings,
                                                   tmp_path, qtbot):
    """A PDF nobody on the project wrote (a page of Debian's debian-reference, see tests/fixtures/docs)."""
    import shutil

    real = Path(__file__).resolve().parents[1] / "fixtures" / "docs" / "debian-reference.en.p61.pdf"
    pdf = tmp_path / real.name
    shutil.copy(real, pdf)
    window = make_window(tmp_path / "data", settings=fast_settings(max_new_tokens=24, num_sources=2),
                         engine=smollm2_engine, embedder=real_embedder)
    drop_files(window, [pdf])
    wait_status(window, qtbot, pdf, DOC_INDEXED)
    assert window.documents_model.row_for(str(pdf)).pages == 1

    window.new_conversation()
    top = ask_top_source(window, qtbot, "How can grep be used to perform a text search with regular expressions?")
    assert Path(top["file"]) == pdf and top["page"] == 1 and "grep" in top["text"]
    assert f"{pdf.name}, p. 1" in window.chat.widgets[-1].sources.text()
