"""SQLite store for the desktop app: conversations, messages, the document list and settings.

One file (``app.sqlite3``) under the user data directory, WAL journal, ``PRAGMA user_version``
as the schema version with forward-only migrations. Every write is its own transaction, so a
killed process loses at most the answer that was streaming (it is written only when it finishes).

The store is used from the GUI thread only; workers never touch it (they report through signals).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from astrai_core.errors import AstraiError

SCHEMA_VERSION = 2

# Document scope of a conversation: no documents, every indexed document, or a chosen subset.
DOCS_NONE, DOCS_ALL, DOCS_SELECTED = "none", "all", "selected"
DOC_SCOPES = (DOCS_NONE, DOCS_ALL, DOCS_SELECTED)

# Document status values shown in the documents panel.
DOC_QUEUED, DOC_INDEXING, DOC_INDEXED, DOC_FAILED = "queued", "indexing", "indexed", "failed"


class StoreError(AstraiError):
    """The app database cannot be opened or is from a newer version of the app."""


@dataclass
class Conversation:
    id: int
    title: str
    created: float
    updated: float
    doc_scope: str = DOCS_ALL
    doc_paths: list[str] = field(default_factory=list)  # used when doc_scope == "selected"


@dataclass
class Message:
    id: int
    conversation_id: int
    role: str  # "user" or "assistant"
    content: str
    sources: list[dict] = field(default_factory=list)  # [{"n", "path", "page", "text", ...}]
    created: float = 0.0


@dataclass
class DocumentRow:
    path: str
    status: str
    progress: float = 0.0  # 0..1 while indexing
    pages: int = 0
    chunks: int = 0
    error: str = ""
    added: float = 0.0


def _migrate_1(db: sqlite3.Connection) -> None:
    _run_script(db,
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            title TEXT NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content TEXT NOT NULL,
            sources TEXT NOT NULL DEFAULT '[]',
            created REAL NOT NULL
        );
        CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
        CREATE TABLE documents (
            path TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            progress REAL NOT NULL DEFAULT 0,
            pages INTEGER NOT NULL DEFAULT 0,
            chunks INTEGER NOT NULL DEFAULT 0,
            error TEXT NOT NULL DEFAULT '',
            added REAL NOT NULL
        );
        CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """
    )


def _migrate_2(db: sqlite3.Connection) -> None:
    # v2: each conversation chooses whether and which documents it uses.
    _run_script(db,
        """
        ALTER TABLE conversations ADD COLUMN doc_scope TEXT NOT NULL DEFAULT 'all';
        CREATE TABLE conversation_documents (
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            PRIMARY KEY (conversation_id, path)
        );
        """
    )


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the open migration transaction first; run statement by statement.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_1, 2: _migrate_2}


class Store:
    """The app's database. Open with :meth:`open`; close with :meth:`close`."""

    FILENAME = "app.sqlite3"

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    @classmethod
    def open(cls, data_dir: str | Path) -> "Store":
        """Open (creating and migrating as needed) the store in ``data_dir``."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / cls.FILENAME
        try:
            db = sqlite3.connect(str(path), isolation_level=None)  # autocommit; we open transactions explicitly
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            db.row_factory = sqlite3.Row
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: cannot open the app database ({exc})") from None
        if version > SCHEMA_VERSION:
            db.close()
            raise StoreError(
                f"{path}: database schema version {version} is newer than this app supports ({SCHEMA_VERSION})")
        store = cls(db, path)
        store._migrate(version)
        return store

    def _migrate(self, version: int) -> None:
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                MIGRATIONS[target](self.db)
                self.db.execute(f"PRAGMA user_version={target}")

    def transaction(self):
        """A ``with`` block that commits on success and rolls back on error."""
        return _Transaction(self.db)

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    # ---- conversations ----------------------------------------------------------------
    def create_conversation(self, title: str, doc_scope: str = DOCS_ALL) -> Conversation:
        if doc_scope not in DOC_SCOPES:
            raise StoreError(f"document scope must be one of {DOC_SCOPES}, got {doc_scope!r}")
        now = time.time()
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO conversations(title, created, updated, doc_scope) VALUES (?, ?, ?, ?)",
                (title, now, now, doc_scope))
        return Conversation(cur.lastrowid, title, now, now, doc_scope, [])

    def conversation(self, conversation_id: int) -> Conversation | None:
        row = self.db.execute("SELECT * FROM conversations WHERE id=?", (conversation_id,)).fetchone()
        return self._conv(row) if row else None

    def _conv(self, row: sqlite3.Row) -> Conversation:
        paths = [r[0] for r in self.db.execute(
            "SELECT path FROM conversation_documents WHERE conversation_id=? ORDER BY path", (row["id"],))]
        return Conversation(row["id"], row["title"], row["created"], row["updated"], row["doc_scope"], paths)

    def conversations(self, search: str = "") -> list[Conversation]:
        """Conversations, most recently updated first; ``search`` matches titles and message text."""
        if search:
            like = f"%{_escape_like(search)}%"
            rows = self.db.execute(
                """SELECT * FROM conversations c WHERE c.title LIKE ? ESCAPE '\\' OR EXISTS (
                       SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.content LIKE ? ESCAPE '\\')
                   ORDER BY c.updated DESC, c.id DESC""", (like, like)).fetchall()
        else:
            rows = self.db.execute("SELECT * FROM conversations ORDER BY updated DESC, id DESC").fetchall()
        return [self._conv(r) for r in rows]

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        with self.transaction():
            self.db.execute("UPDATE conversations SET title=? WHERE id=?", (title, conversation_id))

    def delete_conversation(self, conversation_id: int) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))

    def set_doc_scope(self, conversation_id: int, scope: str, paths: list[str] | None = None) -> None:
        """Choose whether (``scope``) and which (``paths``, for ``"selected"``) documents a conversation uses."""
        if scope not in DOC_SCOPES:
            raise StoreError(f"document scope must be one of {DOC_SCOPES}, got {scope!r}")
        with self.transaction():
            self.db.execute("UPDATE conversations SET doc_scope=? WHERE id=?", (scope, conversation_id))
            if paths is not None:
                self.db.execute("DELETE FROM conversation_documents WHERE conversation_id=?", (conversation_id,))
                self.db.executemany("INSERT INTO conversation_documents(conversation_id, path) VALUES (?, ?)",
                                    [(conversation_id, p) for p in sorted(set(paths))])

    # ---- messages -------------------------------------------------------------------------
    def add_message(self, conversation_id: int, role: str, content: str, sources: list[dict] | None = None) -> Message:
        now = time.time()
        src = sources or []
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO messages(conversation_id, role, content, sources, created) VALUES (?, ?, ?, ?, ?)",
                (conversation_id, role, content, json.dumps(src, ensure_ascii=False), now))
            self.db.execute("UPDATE conversations SET updated=? WHERE id=?", (now, conversation_id))
        return Message(cur.lastrowid, conversation_id, role, content, src, now)

    def messages(self, conversation_id: int) -> list[Message]:
        rows = self.db.execute("SELECT * FROM messages WHERE conversation_id=? ORDER BY id", (conversation_id,))
        return [Message(r["id"], r["conversation_id"], r["role"], r["content"], json.loads(r["sources"]), r["created"])
                for r in rows]

    def update_message(self, message_id: int, content: str) -> None:
        with self.transaction():
            self.db.execute("UPDATE messages SET content=? WHERE id=?", (content, message_id))

    def delete_messages_from(self, conversation_id: int, message_id: int) -> None:
        """Delete message ``message_id`` and every later message of the conversation (edit / regenerate)."""
        with self.transaction():
            self.db.execute("DELETE FROM messages WHERE conversation_id=? AND id>=?", (conversation_id, message_id))

    # ---- documents ---------------------------------------------------------------------------
    def upsert_document(self, row: DocumentRow) -> None:
        with self.transaction():
            self.db.execute(
                """INSERT INTO documents(path, status, progress, pages, chunks, error, added)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(path) DO UPDATE SET status=excluded.status, progress=excluded.progress,
                       pages=excluded.pages, chunks=excluded.chunks, error=excluded.error""",
                (row.path, row.status, row.progress, row.pages, row.chunks, row.error, row.added or time.time()))

    def documents(self) -> list[DocumentRow]:
        rows = self.db.execute("SELECT * FROM documents ORDER BY added, path")
        return [DocumentRow(r["path"], r["status"], r["progress"], r["pages"], r["chunks"], r["error"], r["added"])
                for r in rows]

    def document(self, path: str) -> DocumentRow | None:
        r = self.db.execute("SELECT * FROM documents WHERE path=?", (path,)).fetchone()
        return DocumentRow(r["path"], r["status"], r["progress"], r["pages"], r["chunks"], r["error"], r["added"]) if r else None

    def remove_document(self, path: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM documents WHERE path=?", (path,))
            self.db.execute("DELETE FROM conversation_documents WHERE path=?", (path,))

    # ---- settings ----------------------------------------------------------------------------
    def get_settings(self) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"]) for r in self.db.execute("SELECT key, value FROM settings")}

    def put_settings(self, values: dict[str, Any]) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [(k, json.dumps(v, ensure_ascii=False)) for k, v in values.items()])


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
