"""Settings dialog validation, theme switching and source highlighting (no model needed)."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QPalette, QTextDocument

from app.settings import AppSettings
from app.theme import apply_theme
from app.windows.dialogs import SettingsDialog, SourceDialog, find_passage, highlight
from astrai_core.errors import AstraiError


def test_settings_dialog_returns_validated_settings(qtbot, smollm2_gguf):
    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    dialog.model_path.setText(str(smollm2_gguf))
    dialog.quantize.setCurrentIndex(dialog.quantize.findData("int8"))
    dialog.temperature.setValue(0.2)
    dialog.num_sources.setValue(6)
    dialog.language.setCurrentIndex(dialog.language.findData("zh_CN"))
    dialog.system_prompt.setPlainText("  Be brief.  ")
    result = dialog.collect()
    assert (result.model_path, result.quantize, result.temperature, result.num_sources, result.language,
            result.system_prompt) == (str(smollm2_gguf), "int8", 0.2, 6, "zh_CN", "Be brief.")

    dialog.model_path.setText("/nowhere/model.gguf")
    with pytest.raises(AstraiError, match="/nowhere/model.gguf"):
        dialog.collect()


def test_theme_follows_the_system_unless_chosen(qapp):
    window_color = lambda: qapp.palette().color(QPalette.ColorRole.Window).lightness()  # noqa: E731
    try:
        apply_theme(qapp, "dark")
        assert window_color() < 100
        apply_theme(qapp, "light")
        assert window_color() > 200
    finally:
        apply_theme(qapp, "system")  # back to whatever the platform says


def test_cited_passage_is_found_despite_reflowed_whitespace(qtbot):
    page = "Intro line.\nThe launch code of\nProject Falcon is 7412.  The rocket is orange."
    start, end = find_passage(page, "launch code of Project Falcon is 7412.")
    assert page[start:end] == "launch code of\nProject Falcon is 7412."
    assert find_passage(page, "not on this page") is None
    doc = QTextDocument(page)
    start, end = highlight(doc, "launch code of Project Falcon is 7412.")
    assert doc.toPlainText()[start:end].endswith("7412.")

    dialog = SourceDialog({"n": 2, "file": "/x/report.pdf", "page": 5, "text": "Project Falcon is 7412."}, page)
    qtbot.addWidget(dialog)
    assert dialog.windowTitle() == "Source [2]"
    assert dialog.view.toPlainText()[dialog.highlighted[0]:dialog.highlighted[1]] == "Project Falcon is 7412."
