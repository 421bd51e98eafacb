"""Hybrid search pieces: the lexical tokenizer for BM25 and reciprocal-rank fusion.

BM25 itself runs inside SQLite FTS5 (``bm25()``); we feed FTS5 text that is already split into
terms — lower-cased Latin/digit words and overlapping CJK character bigrams — so one index
serves both languages without a word segmenter.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W{_CJK}]+", re.UNICODE)
_IS_CJK = re.compile(rf"[{_CJK}]")
# Question words carry no topic; left in, they let any English passage outrank the right passage
# in another language (the lexical list then disagrees with the dense one for no reason).
QUERY_STOPWORDS = frozenset("""a an and are as at be by can could did do does for from how i if in is it its me my
of on or should so that the their then there these this to was what when where which who whom why will with would
you your""".split())
RRF_K = 60  # the constant from Cormack et al.; damps the weight of the very top ranks
MAX_QUERY_TERMS = 24
COMMON_FRACTION = 0.1
MAX_POSTINGS = 20_000


def lexical_terms(text: str) -> list[str]:
    """Terms for BM25: Latin words (lower-cased, split at ``_`` too) and CJK character bigrams.

    A single CJK character between non-CJK text is kept as a unigram so it stays searchable.
    """
    out: list[str] = []
    for m in _TOKEN.finditer(text.lower()):
        tok = m.group()
        if _IS_CJK.match(tok):
            if len(tok) == 1:
                out.append(tok)
            else:
                out.extend(tok[i:i + 2] for i in range(len(tok) - 1))
        else:
            out.extend(p for p in tok.split("_") if p)
    return out


def fts_document(text: str) -> str:
    """The text stored in the FTS5 table: terms joined by spaces (FTS5's tokenizer splits them)."""
    return " ".join(lexical_terms(text))


def query_terms(text: str) -> list[str]:
    """The distinct BM25 terms of a query, in order, without question words."""
    return [t for t in dict.fromkeys(lexical_terms(text)) if t not in QUERY_STOPWORDS]


def select_terms(terms: Sequence[str], doc_freq: dict[str, int], total: int,
                 max_terms: int = MAX_QUERY_TERMS, common: float = COMMON_FRACTION,
                 max_postings: int = MAX_POSTINGS) -> list[str]:
    """The terms worth sending to BM25, rarest first.

    Terms no chunk contains add nothing; terms in more than ``common`` of the chunks carry almost
    no BM25 weight (idf ~ log(1/common)) yet dominate the cost of an OR query, since every chunk
    holding one must be scored — they are dropped unless nothing rarer is left. At most
    ``max_terms`` remain (a translated question can bring dozens), and together they may occur in at
    most ``max_postings`` chunks: in a large collection the rare terms that decide the ranking stay
    and the frequent ones, which cost the most, go (the cost of a query grows with its postings).
    """
    present = sorted((t for t in terms if doc_freq.get(t, 0) > 0), key=lambda t: doc_freq[t])
    rare = [t for t in present if doc_freq[t] <= common * total] or present[:1]
    out, postings = [], 0
    for t in rare[:max_terms]:
        postings += doc_freq[t]
        if out and postings > max_postings:
            break
        out.append(t)
    return out


def fts_query(terms: Iterable[str]) -> str:
    """An FTS5 MATCH expression: any of the terms (OR), each quoted as a literal."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def rrf(rankings: Iterable[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal-rank fusion: ``sum 1/(k + rank)`` over every ranking an id appears in (rank from 1)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, cid in enumerate(ranking, start=1):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (k + rank)
    return scores
