"""Sentence splitting on Chinese and English punctuation, token budgets, overlap and offsets."""

from __future__ import annotations

from pathlib import Path

from astrai_core.rag.chunking import chunk_page, sentence_spans
from astrai_core.rag.loaders import Page

DOCS = Path(__file__).parent / "fixtures" / "docs"


def words(texts):  # a stand-in tokenizer: one token per character for CJK, per word otherwise
    return [sum(1 if "\u4e00" <= ch <= "\u9fff" else 0 for ch in t) + len(t.split()) for t in texts]


def test_sentences_split_on_both_languages():
    text = "第一句。第二句！第三句？第四句；Fifth one. Sixth one! e.g.x stays"
    parts = [text[a:b] for a, b in sentence_spans(text)]
    assert parts == ["第一句。", "第二句！", "第三句？", "第四句；", "Fifth one.", "Sixth one!", "e.g.x stays"]


def test_chunks_respect_budget_offsets_and_overlap():
    text = (DOCS / "regex.zh.md").read_text(encoding="utf-8") + "\n\n" + (DOCS / "regex.en.txt").read_text()
    page = Page(3, text)
    chunks = chunk_page(page, words, max_tokens=60, overlap=15)
    assert len(chunks) > 3
    for c in chunks:
        assert c.page == 3
        assert text[c.start:c.end] == c.text  # offsets point at the exact passage
        assert words([c.text])[0] <= 75
    # consecutive chunks overlap (or touch), never leave a gap of text
    for a, b in zip(chunks, chunks[1:]):
        assert b.start > a.start
        assert b.start <= a.end or not text[a.end:b.start].strip()
    assert chunks[-1].end >= len(text.rstrip()) - 1


def test_overlong_sentence_is_cut():
    text = "word " * 500
    chunks = chunk_page(Page(1, text), words, max_tokens=64, overlap=8)
    assert all(words([c.text])[0] <= 64 for c in chunks[:-1]) and words([chunks[-1].text])[0] <= 80
    assert sum(words([c.text])[0] for c in chunks) >= 500


def test_short_tail_is_folded_into_previous_chunk():
    text = "one two three four five six seven eight nine ten. " * 6 + "Tail."
    chunks = chunk_page(Page(1, text), words, max_tokens=30, overlap=0)
    assert chunks[-1].text.endswith("Tail.") and words([chunks[-1].text])[0] > 2


def test_no_scrap_chunks_between_long_sentences():
    long = "word " * 55
    text = f"{long}. |. {long}. ok. {long}."
    chunks = chunk_page(Page(1, text), words, max_tokens=60, overlap=10)
    assert all(words([c.text])[0] >= 8 for c in chunks), [c.text[:20] for c in chunks]
