"""Collection: content hashes, re-index, remove, atomic writes, resume, bad input never changes the index.

Most tests use a small deterministic hashing embedder (bag of lexical terms) so they run in
seconds; retrieval quality with the real embedder is in test_rag_embedder.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from astrai_core.rag import CROSS_RELEVANCE_THRESHOLD, Collection, IndexProgress
from astrai_core.rag.search import lexical_terms

DOCS = Path(__file__).parent / "fixtures" / "docs"
ROOT = Path(__file__).resolve().parent.parent


class HashEmbedder:
    """Deterministic stand-in: hashed bag of BM25 terms, L2-normalised."""

    name, dim = "hash-test", 64

    def __init__(self, on_encode=None):
        self.on_encode = on_encode

    def encode(self, texts, kind="passage"):
        if self.on_encode:
            self.on_encode()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for term in lexical_terms(t):
                out[i, hash(term) % self.dim] += 1.0
            out[i] /= max(1e-6, float(np.linalg.norm(out[i])))
        return out

    def encode_query(self, text, threads=None):
        return self.encode([text], "query")[0]

    def count_tokens(self, texts):
        return [len(lexical_terms(t)) + 1 for t in texts]


def snapshot(coll: Collection):
    docs = [(d.path, d.status, d.pages, d.chunks) for d in coll.documents()]
    rows = coll.db.execute("SELECT id, doc_id, text FROM chunks ORDER BY id").fetchall()
    return docs, rows


@pytest.fixture
def coll(tmp_path):
    c = Collection.open(tmp_path / "data", embedder=HashEmbedder())
    yield c
    c.close()


@pytest.fixture
def docs(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    for name in ("regex.en.txt", "regex.zh.md", "crazyones.pdf"):
        shutil.copy(DOCS / name, d / name)
    return d


def test_add_unchanged_changed_and_progress(coll, docs):
    events: list[IndexProgress] = []
    report = coll.add([docs], progress=events.append)
    assert sorted(Path(p).name for p in report.indexed) == ["crazyones.pdf", "regex.en.txt", "regex.zh.md"]
    assert events[-1].files_done == events[-1].files_total == 3 and events[-1].chunks == report.chunks > 0
    assert events[-1].eta_s == pytest.approx(0.0, abs=1e-6) and events[-1].done == 3
    before = snapshot(coll)
    again = coll.add([docs])
    assert len(again.unchanged) == 3 and snapshot(coll) == before  # unchanged file: no-op
    (docs / "regex.en.txt").write_text("Completely new text about sed and awk.\n")
    changed = coll.add([docs / "regex.en.txt"])
    assert [Path(p).name for p in changed.indexed] == ["regex.en.txt"]
    hits = coll.search("awk sed", k=1)
    assert hits[0].file.endswith("regex.en.txt") and "awk" in hits[0].text


def test_search_returns_page_offsets_and_text(coll, docs):
    coll.add([docs])
    hits = coll.search("crazy ones misfits", k=3)
    top = hits[0]
    assert top.file.endswith("crazyones.pdf") and top.page == 1
    assert top.end > top.start and top.score > 0
    assert set(top.to_dict()) == {"file", "page", "score", "text"}
    only = coll.search("crazy ones", k=3, paths=[docs / "regex.zh.md"])
    assert only and all(h.file.endswith("regex.zh.md") for h in only)


def test_remove_is_fast_and_complete(coll, docs):
    coll.add([docs])
    t0 = time.perf_counter()
    removed = coll.remove([docs / "crazyones.pdf"])
    assert time.perf_counter() - t0 < 1.0
    assert [Path(p).name for p in removed] == ["crazyones.pdf"]
    assert all(not h.file.endswith("crazyones.pdf") for h in coll.search("crazy ones", k=5))
    assert coll.remove([docs]) and coll.documents() == []


def _bad_inputs(tmp: Path) -> list[tuple[Path, str]]:
    (tmp / "empty.txt").write_bytes(b"")
    (tmp / "binary.txt").write_bytes(bytes(range(256)) * 40)
    shutil.copy(DOCS / "aspect.pdf", tmp / "scan.pdf")
    shutil.copy(DOCS / "invalid.pdf", tmp / "corrupt.pdf")
    shutil.copy(DOCS / "r6-user-password.pdf", tmp / "locked.pdf")
    with open(tmp / "huge.md", "wb") as f:
        f.truncate(2 * 1024**3)  # sparse 2 GiB
    (tmp / "data.xyz").write_text("unsupported")
    return [(tmp / "empty.txt", "empty"), (tmp / "binary.txt", "binary"), (tmp / "scan.pdf", "no text layer"),
            (tmp / "corrupt.pdf", "not a readable PDF"), (tmp / "locked.pdf", "password"),
            (tmp / "huge.md", "512 MiB limit"), (tmp / "data.xyz", "unsupported file type"),
            (tmp / "missing.txt", "not found")]


def test_bad_inputs_fail_clearly_and_change_nothing(coll, docs, tmp_path):
    coll.add([docs])
    before = snapshot(coll)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    cases = _bad_inputs(bad_dir)
    report = coll.add([p for p, _ in cases], password=None)
    for path, reason in cases:
        assert reason in report.failed[str(path)], (path, report.failed.get(str(path)))
    wrong = coll.add([bad_dir / "locked.pdf"], password="wrong")
    assert "wrong password" in wrong.failed[str(bad_dir / "locked.pdf")]
    assert snapshot(coll) == before
    ok = coll.add([bad_dir / "locked.pdf"], password="asdfzxcv")
    assert ok.indexed == [str(bad_dir / "locked.pdf")]


def test_unreadable_file(coll, docs, monkeypatch):
    """Tests run as root, where chmod 000 does not stop reading; simulate the OS refusing instead."""
    coll.add([docs])
    before = snapshot(coll)
    target = docs / "regex.en.txt"
    target.write_text("changed, but unreadable now")
    real = Path.read_bytes

    def deny(self):
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    report = coll.add([target])
    assert "Permission denied" in report.failed[str(target)]
    assert snapshot(coll) == before


def test_file_changed_or_deleted_while_indexing(tmp_path, docs):
    target = docs / "regex.en.txt"
    calls = {"n": 0}

    def touch():
        calls["n"] += 1
        if calls["n"] == 1:
            target.write_text(target.read_text() + "\nappended while indexing.\n")

    with Collection.open(tmp_path / "d1", embedder=HashEmbedder(on_encode=touch)) as c:
        report = c.add([target])
        assert "changed while it was being indexed" in report.failed[str(target)]
        assert c.documents() == []

    def delete():
        if target.exists():
            target.unlink()

    with Collection.open(tmp_path / "d2", embedder=HashEmbedder(on_encode=delete)) as c:
        report = c.add([target])
        assert "deleted" in report.failed[str(target)]
        assert c.documents() == []


def test_duplicates_and_thousands_of_files(coll, tmp_path):
    many = tmp_path / "many"
    many.mkdir()
    for i in range(2000):
        (many / f"note{i:04d}.txt").write_text(f"Note {i}: the value of item {i} is {i * 7}.\n")
    (many / "skip.bin").write_bytes(b"\0\1")  # not a supported type: ignored inside folders
    report = coll.add([many, many / "note0001.txt", many])
    assert len(report.indexed) == 2000 and not report.failed
    assert len(coll.documents()) == 2000
    assert coll.search("item 1234", k=1)[0].file.endswith("note1234.txt")


def test_cancel_then_resume(coll, docs):
    cancel = threading.Event()
    seen = []

    def progress(p):
        seen.append(p)
        if p.files_done == 1:
            cancel.set()

    report = coll.add([docs], progress=progress, cancel=cancel)
    assert len(report.indexed) == 1 and len([o for o in report.outcomes if o.status == "cancelled"]) == 2
    assert sorted(d.status for d in coll.documents()) == ["indexed", "pending", "pending"]
    resumed = coll.add([])  # the next run finishes what was left
    assert len(resumed.indexed) == 2
    assert [d.status for d in coll.documents()] == ["indexed"] * 3


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    from pathlib import Path
    from test_rag_collection import HashEmbedder
    from astrai_core.rag import Collection
    c = Collection.open(Path({data!r}), embedder=HashEmbedder(on_encode=lambda: time.sleep(0.02)))
    print("start", flush=True)
    c.add([Path({docs!r})])
""")


def test_kill_during_indexing_keeps_index_and_resumes(tmp_path, docs):
    data = tmp_path / "data"
    with Collection.open(data, embedder=HashEmbedder()) as c:
        c.add([docs / "regex.en.txt"])
        first = snapshot(c)
    many = docs / "many"
    many.mkdir()
    for i in range(300):
        (many / f"n{i:03d}.md").write_text(f"# Note {i}\n\nSentence {i} about topic {i % 17}.\n" * 3)
    script = KILL_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"), data=str(data), docs=str(docs))
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    assert proc.stdout.readline().strip() == b"start"
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Collection.open(data, embedder=HashEmbedder()) as c:
        assert c.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        docs_now = {d.path: d for d in c.documents()}
        assert docs_now[first[0][0][0]].status == "indexed"  # the earlier index is intact
        done = [d for d in docs_now.values() if d.status == "indexed"]
        assert 1 <= len(done) < 303, "the kill should land mid-way"
        for d in done:  # every committed document is complete
            n = c.db.execute("SELECT COUNT(*) FROM chunks JOIN documents ON documents.id = chunks.doc_id "
                             "WHERE documents.path = ?", (d.path,)).fetchone()[0]
            assert n == d.chunks > 0
        report = c.add([])  # resume without naming the files again
        assert len(report.indexed) + len(done) == 303
        assert all(d.status == "indexed" for d in c.documents())
        assert c.search("topic 5", k=1)


def test_chinese_question_finds_the_english_passage_through_the_cross_lingual_ranking(coll, docs, monkeypatch):
    # Neither the hashing embedder nor BM25 can bridge the languages here (no dictionary either):
    # only the cross-lingual embedder's ranking can.
    monkeypatch.setattr("astrai_core.rag.collection.default_lexicon", lambda: None)
    coll.add([docs / "regex.en.txt", docs / "crazyones.pdf"])
    hits = coll.search("那些疯狂到以为自己能改变世界的人，才能真正改变世界。", k=5)
    by_file = {Path(h.file).name: h for h in hits}
    crazy = by_file["crazyones.pdf"]
    assert crazy.relevant and crazy.cross >= CROSS_RELEVANCE_THRESHOLD
    assert all(h.cross < crazy.cross for h in hits if h is not crazy)
    assert not [h for h in hits if Path(h.file).name == "regex.en.txt" and h.relevant]


def test_version_1_collection_is_upgraded_and_gets_cross_lingual_vectors(tmp_path, docs):
    data = tmp_path / "data"
    with Collection.open(data, embedder=HashEmbedder()) as c:
        c.add([docs])
        fresh = dict(c.db.execute("SELECT id, xvector FROM chunks"))
        # What a collection written before schema 2 looks like: no xvector column, version 1.
        c.db.execute("DROP INDEX chunks_xmissing")
        c.db.execute("ALTER TABLE chunks DROP COLUMN xvector")
        c._set_meta("schema_version", "1")
        before = snapshot(c)
    with Collection.open(data, embedder=HashEmbedder()) as c:
        assert c._meta("schema_version") == "2" and snapshot(c) == before
        missing = "SELECT COUNT(*) FROM chunks WHERE xvector IS NULL"
        assert c.db.execute(missing).fetchone()[0] == len(fresh)
        cancel = threading.Event()
        cancel.set()
        report = c.add([docs], cancel=cancel)  # cancelled while filling: nothing else changes
        assert {o.status for o in report.outcomes} == {"cancelled"} and snapshot(c) == before
        hits = c.search("crazy ones misfits", k=3)  # the first search fills the vectors in
        assert c.db.execute(missing).fetchone()[0] == 0 and snapshot(c) == before
        assert hits[0].file.endswith("crazyones.pdf") and hits[0].cross > 0
        for cid, blob in c.db.execute("SELECT id, xvector FROM chunks"):  # same vectors as a fresh add
            a, b = (np.frombuffer(x, dtype=np.float16).astype(np.float32) for x in (blob, fresh[cid]))
            assert float(a @ b) > 0.999
    with Collection.open(data, embedder=HashEmbedder()) as c:
        assert c._fill_xvectors() == 0 and len(c.add([docs]).unchanged) == 3
