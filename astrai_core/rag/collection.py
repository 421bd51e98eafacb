"""A document collection: SQLite (documents, chunks, vectors, FTS5 terms) plus a FAISS index.

Layout under ``<data_dir>/collections/<name>/``::

    index.sqlite   the source of truth; every file is committed in one transaction
    vectors.faiss  a cache of the chunk vectors (rebuilt from SQLite when stale or missing)
    vectors.gen    the SQLite generation the cache was written for
    xvectors.faiss / xvectors.gen   the same for the cross-lingual vectors (``xvector`` column)

Why SQLite holds the vectors too: one transaction then covers a file's chunks, vectors and BM25
terms, so killing the process at any moment leaves the previous state; the FAISS file can only
be stale (detected through the generation counter), never inconsistent.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from astrai_core.errors import AstraiError, ConfigError, DocumentError
from astrai_core.rag import loaders
from astrai_core.rag.chunking import chunk_pages
from astrai_core.rag.lexicon import default_lexicon
from astrai_core.rag.search import fts_document, fts_query, query_terms, rrf, select_terms

# 2: chunks.xvector, the cross-lingual embedder's vector (a version-1 collection is upgraded on
#    open; its missing vectors are computed from the stored chunk texts before the next search or add).
SCHEMA_VERSION = 2
CHUNK_TOKENS = 256
CHUNK_OVERLAP = 48
# Cosine (E5, normalised) at or above which a hit counts as relevant. Calibrated on the bilingual
# debian-reference question set against off-topic questions (benchmarks/RESULTS.md, docs/retrieval.md).
RELEVANCE_THRESHOLD = 0.80
# The same for the cross-lingual (USE-m) cosine: the best chunk of on-topic questions scored >= 0.31 in
# 95% of cases (min 0.21), of off-topic ones at most 0.21 (same calibration set).
CROSS_RELEVANCE_THRESHOLD = 0.25
_NAME_RE = re.compile(r"^[\w.-]{1,64}$", re.UNICODE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    pages INTEGER NOT NULL, chunks INTEGER NOT NULL, notes TEXT NOT NULL DEFAULT '', added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    page INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, text TEXT NOT NULL,
    vector BLOB NOT NULL, xvector BLOB);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS pending (path TEXT PRIMARY KEY);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(terms, tokenize = 'unicode61 remove_diacritics 0');
CREATE VIRTUAL TABLE IF NOT EXISTS fts_vocab USING fts5vocab(fts, 'row');
"""


@dataclass
class Hit:
    """One search result; ``page`` starts at 1, ``start``/``end`` are character offsets in that page's text.

    ``score`` is the fused (reciprocal-rank) score used for ordering; ``dense`` the embedding
    cosine and ``cross`` the cross-lingual embedder's, from which ``relevant`` is decided.
    """

    file: str
    page: int
    score: float
    text: str
    chunk_id: int
    start: int
    end: int
    dense: float = 0.0
    relevant: bool = True
    cross: float = 0.0

    def to_dict(self) -> dict:
        return {"file": self.file, "page": self.page, "score": round(float(self.score), 6), "text": self.text}


@dataclass
class IndexProgress:
    """Indexing progress, reported after every page batch and file."""

    files_done: int
    files_total: int
    pages: int  # pages extracted so far (all files of this add)
    chunks: int  # chunks indexed so far
    eta_s: float | None  # seconds left, estimated from bytes processed; None before the first estimate
    file: str = ""  # file being processed
    file_fraction: float = 0.0  # 0..1 within the current file

    @property
    def done(self) -> float:
        """Files done including the current file's fraction (for progress bars: ``done / total``)."""
        return self.files_done + self.file_fraction

    @property
    def total(self) -> int:
        return self.files_total


@dataclass
class FileOutcome:
    path: str
    status: str  # "indexed" | "unchanged" | "failed" | "cancelled"
    reason: str = ""
    pages: int = 0
    chunks: int = 0


@dataclass
class AddReport:
    """Per-file outcomes of :meth:`Collection.add`."""

    outcomes: list[FileOutcome] = field(default_factory=list)

    def _with(self, status: str) -> list[str]:
        return [o.path for o in self.outcomes if o.status == status]

    @property
    def indexed(self) -> list[str]:
        return self._with("indexed")

    @property
    def unchanged(self) -> list[str]:
        return self._with("unchanged")

    @property
    def failed(self) -> dict[str, str]:
        return {o.path: o.reason for o in self.outcomes if o.status == "failed"}

    @property
    def pages(self) -> int:
        return sum(o.pages for o in self.outcomes)

    @property
    def chunks(self) -> int:
        return sum(o.chunks for o in self.outcomes)


@dataclass
class DocumentInfo:
    path: str
    status: str  # "indexed" or "pending" (an add was interrupted; the next add resumes it)
    pages: int
    chunks: int
    error: str | None = None
    notes: str = ""  # e.g. "page 3: no text layer (scanned?)"


class _Cancelled(Exception):
    pass


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Absolute file paths: folders recurse into supported files (sorted); duplicates dropped."""
    out: dict[str, Path] = {}
    for raw in paths:
        p = Path(raw).expanduser().absolute()
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() in loaders.SUPPORTED_SUFFIXES and f.is_file() and not f.name.startswith("."):
                    out.setdefault(str(f), f)
        else:
            out.setdefault(str(p), p)
    return list(out.values())


class Collection:
    """A named set of indexed documents. Open with :meth:`open`; not thread-safe (one writer)."""

    def __init__(self, folder: Path, embedder=None) -> None:
        self.folder = folder
        self._embedder = embedder
        self._xready = False  # every chunk has its cross-lingual vector (checked once per open)
        self.db = sqlite3.connect(str(folder / "index.sqlite"), isolation_level=None, check_same_thread=False)
        self._reader: sqlite3.Connection | None = None  # the keyword search's own connection (search())
        self._reader_lock = threading.Lock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(_SCHEMA)
        version = self._meta("schema_version")
        if version is None:
            self._set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) == 1:
            self._upgrade_from_1()
        elif int(version) != SCHEMA_VERSION:
            raise ConfigError(f"{folder}: collection schema {version} is not supported (expected {SCHEMA_VERSION})")
        # Finds the chunks still without a cross-lingual vector at once (upgraded collections only).
        self.db.execute("CREATE INDEX IF NOT EXISTS chunks_xmissing ON chunks(id) WHERE xvector IS NULL")
        self._indexes: dict[str, tuple[int, object]] = {}  # column -> (generation, faiss index)

    # ---- opening ------------------------------------------------------------------------------
    @staticmethod
    def folder_for(data_dir: Path, name: str) -> Path:
        if not _NAME_RE.match(name) or name in (".", ".."):
            raise ConfigError(f"invalid collection name {name!r} (letters, digits, '.', '_', '-'; at most 64)")
        return Path(data_dir) / "collections" / name

    @classmethod
    def exists(cls, data_dir: Path, name: str = "default") -> bool:
        return (cls.folder_for(data_dir, name) / "index.sqlite").is_file()

    @classmethod
    def open(cls, data_dir: Path, name: str = "default", embedder=None) -> "Collection":
        """Open (creating if needed) collection ``name``; ``embedder`` None = the bundled default, loaded lazily."""
        folder = cls.folder_for(data_dir, name)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder, embedder)

    def close(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self.db.close()

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _upgrade_from_1(self) -> None:
        """Schema 1 -> 2 in one transaction: the ``xvector`` column (filled by :meth:`_fill_xvectors`)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if "xvector" not in {r[1] for r in self.db.execute("PRAGMA table_info(chunks)")}:
                self.db.execute("ALTER TABLE chunks ADD COLUMN xvector BLOB")
            self._set_meta("schema_version", str(SCHEMA_VERSION))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _fill_xvectors(self, cancel: threading.Event | None = None, batch: int = 256) -> int:
        """Compute the cross-lingual vectors a version-1 collection lacks, from the stored chunk
        texts, committing each batch (an interrupted fill resumes where it stopped). Returns how many."""
        if self._xready:
            return 0
        done = 0
        while True:
            if cancel is not None and cancel.is_set():
                raise _Cancelled()
            rows = self.db.execute("SELECT id, text FROM chunks WHERE xvector IS NULL LIMIT ?", (batch,)).fetchall()
            if not rows:
                break
            vecs = self.crosslingual.encode([r[1] for r in rows]).astype(np.float16)
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany("UPDATE chunks SET xvector=? WHERE id=?",
                                    [(v.tobytes(), r[0]) for r, v in zip(rows, vecs)])
                self._bump_generation()
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            done += len(rows)
        self._xready = True
        return done

    @property
    def crosslingual(self):
        from astrai_core.rag.crosslingual import load_crosslingual

        return load_crosslingual()

    @property
    def embedder(self):
        if self._embedder is None:
            from astrai_core.rag.embedder import load_embedder

            self._embedder = load_embedder()
        return self._embedder

    def _check_embedder(self) -> None:
        """Vectors from different embedders are not comparable: refuse to mix them."""
        emb = self.embedder
        ident = f"{emb.name}:{emb.dim}"
        stored = self._meta("embedder")
        if stored is None:
            self._set_meta("embedder", ident)
        elif stored != ident and self.db.execute("SELECT 1 FROM chunks LIMIT 1").fetchone():
            raise ConfigError(f"{self.folder}: collection was indexed with embedder {stored}, not {ident}; "
                              f"use that embedder or remove and re-add the documents")

    # ---- meta ---------------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    def _generation(self) -> int:
        return int(self._meta("generation") or 0)

    def _bump_generation(self) -> None:  # inside the caller's transaction
        self._set_meta("generation", str(self._generation() + 1))

    # ---- documents ----------------------------------------------------------------------------
    def documents(self) -> list[DocumentInfo]:
        docs = [DocumentInfo(p, "indexed", pages, chunks, None, notes) for p, pages, chunks, notes in
                self.db.execute("SELECT path, pages, chunks, notes FROM documents ORDER BY path")]
        done = {d.path for d in docs}
        docs += [DocumentInfo(p, "pending", 0, 0, None) for (p,) in
                 self.db.execute("SELECT path FROM pending ORDER BY path") if p not in done]
        return docs

    def remove(self, paths: Sequence[str | os.PathLike[str]]) -> list[str]:
        """Remove documents (a folder removes every document under it); returns the paths removed."""
        removed: list[str] = []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for raw in paths:
                p = str(Path(raw).expanduser().absolute())
                rows = self.db.execute("SELECT id, path FROM documents WHERE path=? OR path LIKE ? ESCAPE '\\'",
                                       (p, _like_prefix(p))).fetchall()
                for doc_id, path in rows:
                    self._delete_doc(doc_id)
                    removed.append(path)
                self.db.execute("DELETE FROM pending WHERE path=? OR path LIKE ? ESCAPE '\\'", (p, _like_prefix(p)))
            if removed:
                self._bump_generation()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if removed:
            self._save_index_cache()
        return removed

    def _delete_doc(self, doc_id: int) -> None:
        self.db.execute("DELETE FROM fts WHERE rowid IN (SELECT id FROM chunks WHERE doc_id=?)", (doc_id,))
        self.db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
        self.db.execute("DELETE FROM documents WHERE id=?", (doc_id,))

    # ---- indexing -----------------------------------------------------------------------------
    def add(self, paths: Sequence[str | os.PathLike[str]], password: str | None = None,
            progress: Callable[[IndexProgress], None] | None = None,
            cancel: threading.Event | None = None) -> AddReport:
        """Index files and folders (recursively). Files an earlier, interrupted add left unfinished
        are resumed too. Each file is committed atomically; a file that fails leaves the index as it
        was. Unchanged files (same SHA-256) are skipped."""
        files = expand_paths(paths)
        known = {str(f) for f in files}
        files += [Path(p) for (p,) in self.db.execute("SELECT path FROM pending") if p not in known]
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT OR IGNORE INTO pending(path) VALUES(?)", [(str(f),) for f in files])
        self.db.execute("COMMIT")
        sizes = [_size_or_zero(f) for f in files]
        report = AddReport()
        state = {"pages": 0, "chunks": 0, "t0": time.monotonic(), "bytes_done": 0, "total_bytes": sum(sizes)}
        changed = False
        try:
            if files:  # an upgraded collection first gets the vectors it lacks (resumable, cancellable)
                try:
                    changed = self._fill_xvectors(cancel) > 0
                except _Cancelled:
                    report.outcomes += [FileOutcome(str(g), "cancelled") for g in files]
                    return report
            for i, f in enumerate(files):
                if cancel is not None and cancel.is_set():
                    report.outcomes += [FileOutcome(str(g), "cancelled") for g in files[i:]]
                    break

                def tick(fraction: float, i: int = i, f: Path = f) -> None:
                    if progress is None:
                        return
                    done_bytes = state["bytes_done"] + fraction * sizes[i]
                    elapsed = time.monotonic() - state["t0"]
                    eta = elapsed / done_bytes * (state["total_bytes"] - done_bytes) if done_bytes > 0 else None
                    progress(IndexProgress(i, len(files), state["pages"], state["chunks"], eta, str(f), fraction))

                tick(0.0)
                try:
                    outcome = self._add_file(f, password, tick, cancel, state)
                except _Cancelled:
                    report.outcomes += [FileOutcome(str(g), "cancelled") for g in files[i:]]
                    break
                except AstraiError as exc:
                    outcome = FileOutcome(str(f), "failed", str(exc))
                    self._clear_pending(f)  # a bad file must not be retried forever
                changed |= outcome.status == "indexed"
                report.outcomes.append(outcome)
                state["bytes_done"] += sizes[i]
                if progress is not None:
                    elapsed = time.monotonic() - state["t0"]
                    left = state["total_bytes"] - state["bytes_done"]
                    eta = elapsed / state["bytes_done"] * left if state["bytes_done"] else None
                    progress(IndexProgress(i + 1, len(files), state["pages"], state["chunks"], eta, str(f), 0.0))
        finally:
            if changed:
                self._save_index_cache()
        return report

    def _clear_pending(self, f: Path) -> None:
        self.db.execute("DELETE FROM pending WHERE path=?", (str(f),))

    def _add_file(self, f: Path, password: str | None, tick: Callable[[float], None],
                  cancel: threading.Event | None, state: dict) -> FileOutcome:
        if f.suffix.lower() not in loaders.SUPPORTED_SUFFIXES:
            raise DocumentError(f"{f}: unsupported file type {f.suffix or '(none)'}; "
                                f"supported: {', '.join(loaders.SUPPORTED_SUFFIXES)}")
        before = _stat(f)
        loaders.check_size(f, before.st_size)
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise DocumentError(f"{f}: cannot read ({exc.strerror or exc})") from None
        digest = hashlib.sha256(data).hexdigest()
        row = self.db.execute("SELECT sha256, pages, chunks FROM documents WHERE path=?", (str(f),)).fetchone()
        if row and row[0] == digest:
            self._clear_pending(f)
            return FileOutcome(str(f), "unchanged", pages=row[1], chunks=row[2])
        doc = loaders.load_bytes(f, data, password)
        del data
        tick(0.1)
        self._check_embedder()
        chunks = chunk_pages(doc.pages, self.embedder.count_tokens, CHUNK_TOKENS, CHUNK_OVERLAP)
        if not chunks:
            raise DocumentError(f"{f}: no text to index")
        # Embed in order of token length: every batch then holds chunks of nearly equal length and
        # almost no padding is computed (in document order 17% of the embedded tokens were padding).
        order = np.argsort(self.embedder.count_tokens([c.text for c in chunks]), kind="stable")
        vecs = np.empty((len(chunks), self.embedder.dim), dtype=np.float16)
        xvecs = np.empty((len(chunks), self.crosslingual.dim), dtype=np.float16)
        step = 64
        for s in range(0, len(chunks), step):
            if cancel is not None and cancel.is_set():
                raise _Cancelled()
            part = order[s:s + step]
            texts = [chunks[i].text for i in part]
            vecs[part] = self.embedder.encode(texts, kind="passage")
            xvecs[part] = self.crosslingual.encode(texts)
            tick(0.1 + 0.85 * min(1.0, (s + step) / len(chunks)))
        after = _stat(f)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise DocumentError(f"{f}: file changed while it was being indexed; add it again")
        notes = "; ".join(doc.notes)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            old = self.db.execute("SELECT id FROM documents WHERE path=?", (str(f),)).fetchone()
            if old:
                self._delete_doc(old[0])
            cur = self.db.execute(
                "INSERT INTO documents(path, sha256, size, pages, chunks, notes, added) VALUES(?,?,?,?,?,?,?)",
                (str(f), digest, before.st_size, len(doc.pages), len(chunks), notes, time.time()))
            doc_id = cur.lastrowid
            for c, v, xv in zip(chunks, vecs, xvecs):
                cid = self.db.execute(
                    "INSERT INTO chunks(doc_id, page, start, end, text, vector, xvector) VALUES(?,?,?,?,?,?,?)",
                    (doc_id, c.page, c.start, c.end, c.text, v.tobytes(), xv.tobytes())).lastrowid
                self.db.execute("INSERT INTO fts(rowid, terms) VALUES(?, ?)", (cid, fts_document(c.text)))
            self._clear_pending(f)
            self._bump_generation()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        state["pages"] += len(doc.pages)
        state["chunks"] += len(chunks)
        return FileOutcome(str(f), "indexed", notes, len(doc.pages), len(chunks))

    # ---- vectors ------------------------------------------------------------------------------
    _CACHES = {"vector": "vectors", "xvector": "xvectors"}  # column -> cache file stem

    def _load_index(self, column: str = "vector"):
        """The FAISS index of ``column`` for the current generation: from its cache file, else rebuilt
        from SQLite."""
        import faiss

        gen = self._generation()
        held = self._indexes.get(column)
        if held is not None and held[0] == gen:
            return held[1]
        stem = self._CACHES[column]
        cache, gen_file = self.folder / f"{stem}.faiss", self.folder / f"{stem}.gen"
        index = None
        try:
            if cache.is_file() and gen_file.read_text().strip() == str(gen):
                index = faiss.read_index(str(cache))
                if not isinstance(faiss.downcast_index(index.index), faiss.IndexScalarQuantizer):
                    index = None  # a cache from before the float16 index: rebuild it
        except (OSError, RuntimeError, ValueError, AttributeError):
            index = None  # a damaged cache is rebuilt
        if index is None:
            index = self._build_index(column)
        self._indexes[column] = (gen, index)
        return index

    def _build_index(self, column: str):
        import faiss

        rows = self.db.execute(f"SELECT id, {column} FROM chunks WHERE {column} IS NOT NULL").fetchall()
        if rows:
            dim = len(rows[0][1]) // 2
        elif column == "xvector":
            dim = self.crosslingual.dim
        else:
            dim = self._embedder.dim if self._embedder is not None else 384
        # Exact inner product over float16 codes: the vectors are stored as float16 anyway, so this
        # ranks exactly like a float32 flat index while scanning half the bytes (2x faster at 100k).
        index = faiss.IndexIDMap2(faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16,
                                                             faiss.METRIC_INNER_PRODUCT))
        if rows:
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), dim)
            index.add_with_ids(vecs.astype(np.float32), ids)
        return index

    def _save_index_cache(self) -> None:
        """Write each FAISS cache atomically (temp + replace), then the generation it belongs to."""
        import faiss

        self._indexes.clear()
        for column, stem in self._CACHES.items():
            index = self._load_index(column)
            gen = self._indexes[column][0]
            cache, gen_file = self.folder / f"{stem}.faiss", self.folder / f"{stem}.gen"
            tmp = cache.with_suffix(".faiss.tmp")
            faiss.write_index(index, str(tmp))
            os.replace(tmp, cache)
            tmp_gen = gen_file.with_suffix(".gen.tmp")
            tmp_gen.write_text(str(gen))
            os.replace(tmp_gen, gen_file)

    # ---- search -------------------------------------------------------------------------------
    def search(self, query: str, k: int = 5, paths: Sequence[str | os.PathLike[str]] | None = None,
               candidates: int = 50) -> list[Hit]:
        """Hybrid search: three rankings fused by reciprocal rank — the main embedder (FAISS inner
        product), BM25 (FTS5), and the cross-lingual embedder (:class:`CrossLingualEmbedder`).

        The BM25 query is the question plus its dictionary translation (:mod:`lexicon`), so a
        Chinese question also matches English passages by keyword and the reverse.

        ``paths`` limits the search to those documents. Each hit carries both cosines and
        ``relevant``: a cosine at its threshold (RELEVANCE_THRESHOLD, CROSS_RELEVANCE_THRESHOLD), or a
        keyword match when some hit passes one.
        """
        if not query.strip() or k <= 0:
            return []
        n = max(candidates, 4 * k)
        doc_ids = None
        if paths is not None:
            wanted = [str(Path(p).expanduser().absolute()) for p in paths]
            doc_ids = [r[0] for r in self.db.execute(
                f"SELECT id FROM documents WHERE path IN ({','.join('?' * len(wanted))})", wanted)] if wanted else []
            if not doc_ids:
                return []
        if not self.db.execute("SELECT 1 FROM chunks LIMIT 1").fetchone():
            return []
        self._check_embedder()
        if self._fill_xvectors():  # an upgraded collection's first search
            self._save_index_cache()
        # A worker thread runs the keyword search in SQLite (which releases the GIL) and then embeds the
        # query for the cross-lingual ranking, while this thread embeds it for the main one (one core each).
        side = _search_pool().submit(self._keyword_and_cross_query, query, n, doc_ids)
        qv = self.embedder.encode_query(query, threads=1).astype(np.float32)
        dense = self._dense_ids("vector", qv, n, doc_ids)
        lexical, qx = side.result()
        cross = self._dense_ids("xvector", qx, n, doc_ids)
        fused = rrf([dense, lexical, cross])
        top = sorted(fused, key=lambda cid: -fused[cid])[:k]
        if not top:
            return []
        rows = {r[0]: r for r in self.db.execute(
            "SELECT c.id, d.path, c.page, c.text, c.start, c.end, c.vector, c.xvector FROM chunks c JOIN documents d "
            f"ON d.id = c.doc_id WHERE c.id IN ({','.join('?' * len(top))})", top)}
        cos = {cid: float(np.frombuffer(rows[cid][6], dtype=np.float16).astype(np.float32) @ qv) for cid in top}
        xcos = {cid: float(np.frombuffer(rows[cid][7], dtype=np.float16).astype(np.float32) @ qx) for cid in top}
        # The embedders' scores decide whether the collection is on topic at all; once it is, a
        # passage the keyword search also found counts too (a translated keyword match often ranks
        # the right passage above one that is merely closer in embedding space).
        close = {cid for cid in top if cos[cid] >= RELEVANCE_THRESHOLD or xcos[cid] >= CROSS_RELEVANCE_THRESHOLD}
        keyword = set(lexical)
        return [Hit(rows[cid][1], rows[cid][2], fused[cid], rows[cid][3], cid, rows[cid][4], rows[cid][5], cos[cid],
                    cid in close or (bool(close) and cid in keyword), xcos[cid]) for cid in top]

    def _dense_ids(self, column: str, qv: np.ndarray, n: int, doc_ids: list[int] | None) -> list[int]:
        """Chunk ids by inner product of ``column``'s vectors with ``qv``, best first."""
        if doc_ids is not None:  # a few chosen documents: exact scores over just their chunks
            rows = self.db.execute(f"SELECT id, {column} FROM chunks WHERE doc_id IN "
                                   f"({','.join('?' * len(doc_ids))})", doc_ids).fetchall()
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), -1)
            order = np.argsort(-(vecs.astype(np.float32) @ qv))[:n]
            return [rows[i][0] for i in order]
        index = self._load_index(column)
        import faiss

        # One thread: the keyword search holds the other core, and FAISS's OpenMP team waiting for a
        # busy core cost more than the split saves (2-vCPU VM, 100k chunks: median 56 -> 48 ms a search).
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            _, ids = index.search(qv[None, :], min(n, index.ntotal))
        finally:
            faiss.omp_set_num_threads(threads)
        return [int(i) for i in ids[0] if i >= 0]

    def _keyword_and_cross_query(self, query: str, n: int, doc_ids: list[int] | None) -> tuple[list[int], np.ndarray]:
        return self._keyword_ids(query, n, doc_ids), self.crosslingual.encode_query(query)

    def _keyword_ids(self, query: str, n: int, doc_ids: list[int] | None) -> list[int]:
        """BM25 ids for the question plus its dictionary translation, on the reader connection."""
        lexicon = default_lexicon()
        with self._reader_lock:
            if self._reader is None:
                self._reader = sqlite3.connect(str(self.folder / "index.sqlite"), isolation_level=None,
                                               check_same_thread=False)
            return self._bm25_ids(f"{query} {lexicon.translate(query)}" if lexicon else query, n, doc_ids,
                                  self._reader)

    def _bm25_ids(self, query: str, n: int, doc_ids: list[int] | None, db: sqlite3.Connection) -> list[int]:
        terms = query_terms(query)
        if not terms:
            return []
        marks = ",".join("?" * len(terms))
        try:
            doc_freq = dict(db.execute(f"SELECT term, doc FROM fts_vocab WHERE term IN ({marks})", terms))
        except sqlite3.OperationalError:
            return []
        total = db.execute("SELECT COALESCE(SUM(chunks), 0) FROM documents").fetchone()[0]
        match = fts_query(select_terms(terms, doc_freq, total))
        if not match:
            return []
        sql = "SELECT rowid FROM fts WHERE fts MATCH ? "
        args: list = [match]
        if doc_ids is not None:
            sql += f"AND rowid IN (SELECT id FROM chunks WHERE doc_id IN ({','.join('?' * len(doc_ids))})) "
            args += doc_ids
        sql += "ORDER BY bm25(fts) LIMIT ?"
        try:
            return [r[0] for r in db.execute(sql, args + [n])]
        except sqlite3.OperationalError:  # a query FTS5 cannot parse falls back to dense only
            return []


@functools.cache
def _search_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="astrai-keyword-search")


def _stat(f: Path) -> os.stat_result:
    try:
        return f.stat()
    except FileNotFoundError:
        raise DocumentError(f"{f}: file not found (deleted?)") from None
    except OSError as exc:
        raise DocumentError(f"{f}: cannot read ({exc.strerror or exc})") from None


def _size_or_zero(f: Path) -> int:
    try:
        return f.stat().st_size
    except OSError:
        return 0


def _like_prefix(path: str) -> str:
    escaped = path.rstrip(os.sep).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + os.sep + "%"
