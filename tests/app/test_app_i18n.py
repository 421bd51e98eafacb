"""UI language: switching to Simplified Chinese retranslates the open window; system locale default."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from PySide6.QtCore import QLocale, Qt, QTranslator

from app.i18n import I18N_DIR, resolve_language


def test_switching_to_chinese_retranslates_the_window(make_window, fast_settings, qtbot):
    window = make_window(settings=fast_settings())
    conv = window.new_conversation()
    window.store.add_message(conv.id, "user", "你好")
    window.open_conversation(conv.id)
    assert window.windowTitle() == "AstrAI — offline assistant" and window.send_button.text() == "Send"

    window.apply_settings(window.settings.replace(language="zh_CN"))
    assert window.store.get_settings()["language"] == "zh_CN"  # saved for the next start
    qtbot.waitUntil(lambda: window.windowTitle() == "AstrAI — 离线助手")
    assert window.send_button.text() == "发送"
    assert window.documents.add_files.text() == "添加文件…"
    assert window.chat.widgets[0].copy_button.text() == "复制"
    assert window.documents_model.headerData(1, Qt.Orientation.Horizontal) == "状态"
    assert window.conv_list.item(0).text() == "新对话"  # an untitled conversation

    window.apply_settings(window.settings.replace(language="en"))
    qtbot.waitUntil(lambda: window.send_button.text() == "Send")


def test_language_follows_the_system_locale_by_default():
    assert resolve_language("system", QLocale("zh_CN")) == "zh_CN"
    assert resolve_language("system", QLocale("zh_TW")) == "zh_CN"
    assert resolve_language("system", QLocale("de_DE")) == "en"
    assert resolve_language("en", QLocale("zh_CN")) == "en"


def test_every_ui_string_is_translated_and_compiled():
    root = ET.parse(I18N_DIR / "astrai_zh_CN.ts").getroot()
    messages = root.findall("./context/message")
    assert len(messages) > 80
    unfinished = [m.findtext("source") for m in messages
                  if m.find("translation").get("type") == "unfinished" or not m.findtext("translation")]
    assert unfinished == []
    compiled = QTranslator()
    assert compiled.load(str(I18N_DIR / "astrai_zh_CN.qm"))
    # the committed .qm matches the .ts (rebuild with pyside6-lrelease after edits)
    contexts = {c.findtext("name"): c.findall("message") for c in root.findall("context")}
    for name, msgs in contexts.items():
        for m in msgs:
            assert compiled.translate(name, m.findtext("source")) == m.findtext("translation"), m.findtext("source")
