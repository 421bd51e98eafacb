"""The app's SQLite store and settings, tested without widgets."""

from __future__ import annotations

import sqlite3

import pytest

from app.export import conversation_markdown
from app.settings import AppSettings
from app.store import (DOC_FAILED, DOC_INDEXED, DOCS_NONE, DOCS_SELECTED, SCHEMA_VERSION, DocumentRow, Store,
                       StoreError)
from astrai_core.errors import ConfigError


def test_store_round_trip_survives_reopen(tmp_path):
    store = Store.open(tmp_path)
    assert store.schema_version == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conv = store.create_conversation("量子 notes")
    store.add_message(conv.id, "user", "什么是量子纠缠？")
    store.add_message(conv.id, "assistant", "An answer [1].", [{"n": 1, "file": "/x/a.pdf", "page": 2, "text": "t"}])
    store.set_doc_scope(conv.id, DOCS_SELECTED, ["/x/a.pdf"])
    store.upsert_document(DocumentRow("/x/a.pdf", DOC_INDEXED, 1.0, 3, 12))
    store.put_settings({"temperature": 0.3, "language": "zh_CN"})
    store.close()

    again = Store.open(tmp_path)
    [c] = again.conversations()
    assert (c.title, c.doc_scope, c.doc_paths) == ("量子 notes", DOCS_SELECTED, ["/x/a.pdf"])
    msgs = again.messages(c.id)
    assert [m.role for m in msgs] == ["user", "assistant"]
    assert msgs[1].sources[0]["page"] == 2
    assert again.documents()[0].chunks == 12
    assert again.get_settings() == {"temperature": 0.3, "language": "zh_CN"}


def test_search_matches_titles_and_message_text(tmp_path):
    store = Store.open(tmp_path)
    a = store.create_conversation("Holiday plans")
    b = store.create_conversation("Work")
    store.add_message(b.id, "user", "the 100% quarterly report")
    assert [c.id for c in store.conversations("holiday")] == [a.id]
    assert [c.id for c in store.conversations("100%")] == [b.id]  # LIKE wildcards are escaped
    assert store.conversations("nothing here") == []


def test_delete_messages_from_truncates_for_edit_and_regenerate(tmp_path):
    store = Store.open(tmp_path)
    c = store.create_conversation("c")
    ids = [store.add_message(c.id, r, t).id for r, t in [("user", "1"), ("assistant", "2"), ("user", "3"), ("assistant", "4")]]
    store.delete_messages_from(c.id, ids[2])
    assert [m.content for m in store.messages(c.id)] == ["1", "2"]
    store.delete_conversation(c.id)
    assert store.messages(c.id) == []  # cascades


def test_migrates_a_version_1_database(tmp_path):
    db = sqlite3.connect(tmp_path / Store.FILENAME)
    from app.store import _migrate_1

    _migrate_1(db)
    db.execute("INSERT INTO conversations(title, created, updated) VALUES ('old', 1, 1)")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = Store.open(tmp_path)
    assert store.schema_version == SCHEMA_VERSION
    [c] = store.conversations()
    assert c.title == "old" and c.doc_scope == "all"  # new column got its default
    store.set_doc_scope(c.id, DOCS_NONE)
    assert store.conversation(c.id).doc_scope == DOCS_NONE


def test_refuses_a_database_from_a_newer_app(tmp_path):
    db = sqlite3.connect(tmp_path / Store.FILENAME)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store.open(tmp_path)


def test_settings_validation_names_the_bad_value():
    assert AppSettings().temperature == 0.7
    with pytest.raises(ConfigError, match="temperature.*5"):
        AppSettings(temperature=5)
    with pytest.raises(ConfigError, match="language.*'fr'"):
        AppSettings.from_dict({"language": "fr"})
    with pytest.raises(ConfigError, match="num_sources"):
        AppSettings().replace(num_sources=0)
    assert AppSettings.from_dict({"top_p": 0.5, "from_a_newer_version": 1}).top_p == 0.5


def test_export_markdown_lists_sources(tmp_path):
    store = Store.open(tmp_path)
    c = store.create_conversation("报告")
    store.add_message(c.id, "user", "What grew?")
    store.add_message(c.id, "assistant", "Revenue grew 12% [1].",
                      [{"n": 1, "file": "/docs/report.pdf", "page": 4, "text": "Revenue  grew\n12 percent."}])
    md = conversation_markdown(store.conversation(c.id), store.messages(c.id))
    assert md.startswith("# 报告\n")
    assert "## You\n\nWhat grew?" in md
    assert "1. `/docs/report.pdf`, p. 4" in md
    assert "> Revenue grew 12 percent." in md
    store.upsert_document(DocumentRow("/docs/bad.pdf", DOC_FAILED, error="password required"))
    assert store.document("/docs/bad.pdf").error == "password required"
