"""`astrai index add|list|remove|search` in the exact forms other parts rely on.

The embedder is swapped for a hashing stand-in so the CLI is tested in seconds; the real
embedder's retrieval is covered by test_rag_embedder.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from astrai_core import cli
from astrai_core.rag.search import lexical_terms

DOCS = Path(__file__).parent / "fixtures" / "docs"


class HashEmbedder:
    name, dim = "hash-test", 64

    def encode(self, texts, kind="passage"):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for term in lexical_terms(t):
                out[i, sum(map(ord, term)) % self.dim] += 1.0
            out[i] /= max(1e-6, float(np.linalg.norm(out[i])))
        return out

    def encode_query(self, text, threads=None):
        return self.encode([text])[0]

    def count_tokens(self, texts):
        return [len(lexical_terms(t)) + 1 for t in texts]


@pytest.fixture(autouse=True)
def fake_embedder(monkeypatch):
    monkeypatch.setattr("astrai_core.rag.embedder.load_embedder", lambda *a, **k: HashEmbedder())


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "docs" / "sub"
    d.mkdir(parents=True)
    for name in ("regex.en.txt", "crazyones.pdf"):
        shutil.copy(DOCS / name, d / name)
    shutil.copy(DOCS / "invalid.pdf", d.parent / "invalid.pdf")
    return d.parent


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_add_list_search_remove(tmp_path, folder, capsys):
    data = str(tmp_path / "data")
    code, out, _ = run(capsys, "index", "add", str(folder), "--data-dir", data, "--collection", "notes")
    assert code == 1  # invalid.pdf failed; the rest indexed
    assert "2 indexed, 0 unchanged, 1 failed" in out and "not a readable PDF" in out
    code, out, _ = run(capsys, "index", "add", str(folder / "sub"), "--data-dir", data, "--collection", "notes")
    assert code == 0 and "0 indexed, 2 unchanged" in out

    code, out, _ = run(capsys, "index", "list", "--collection", "notes", "--json", "--data-dir", data)
    listed = json.loads(out)
    assert sorted(Path(d["path"]).name for d in listed) == ["crazyones.pdf", "regex.en.txt"]
    assert all(d["status"] == "indexed" and d["chunks"] > 0 for d in listed)

    code, out, _ = run(capsys, "index", "search", "crazy ones misfits", "--collection", "notes", "--k", "2",
                       "--json", "--data-dir", data)
    hits = json.loads(out)
    assert code == 0 and len(hits) == 2 and set(hits[0]) == {"file", "page", "score", "text"}
    assert hits[0]["file"].endswith("crazyones.pdf") and hits[0]["page"] == 1

    code, out, _ = run(capsys, "index", "remove", str(folder / "sub" / "crazyones.pdf"), "--collection", "notes",
                       "--data-dir", data)
    assert code == 0 and "removed" in out
    code, out, _ = run(capsys, "index", "list", "--collection", "notes", "--data-dir", data, "--json")
    assert [Path(d["path"]).name for d in json.loads(out)] == ["regex.en.txt"]


def test_default_collection_and_env_home(tmp_path, folder, capsys, monkeypatch):
    monkeypatch.setenv("ASTRAI_HOME", str(tmp_path / "home"))
    code, out, _ = run(capsys, "index", "add", str(folder / "sub" / "regex.en.txt"))
    assert code == 0
    assert (tmp_path / "home" / "collections" / "default" / "index.sqlite").is_file()
    code, out, _ = run(capsys, "index", "search", "regular expressions", "--json")
    assert json.loads(out)[0]["file"].endswith("regex.en.txt")


def test_errors_are_clear(tmp_path, capsys):
    data = str(tmp_path / "data")
    code, _, err = run(capsys, "index", "add", str(tmp_path / "nope.txt"), "--data-dir", data)
    assert code == 1 and "no such file" in err
    code, out, _ = run(capsys, "index", "search", "x", "--json", "--data-dir", data, "--collection", "empty")
    assert code == 0 and json.loads(out) == []
    code, _, err = run(capsys, "index", "list", "--collection", "../evil", "--data-dir", data)
    assert code == 2 and "invalid collection name" in err


def test_help_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "astrai_core.cli", "index", "search", "--help"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0 and "--k" in out.stdout and "--json" in out.stdout and "--data-dir" in out.stdout
