"""Lexical terms for BM25 (Latin words + CJK bigrams) and reciprocal-rank fusion."""

from astrai_core.rag.search import fts_query, lexical_terms, query_terms, rrf, select_terms


def test_lexical_terms_mix_words_and_bigrams():
    assert lexical_terms("用 grep 搜索正则表达式 in GNU_sed") == ["用", "grep", "搜索", "索正", "正则", "则表", "表达", "达式",
                                                            "in", "gnu", "sed"]


def test_fts_query_quotes_terms():
    assert fts_query(query_terms('say "hi" 你好 hi')) == '"say" OR "hi" OR "你好"'
    assert fts_query(query_terms("!!!")) == ""
    assert query_terms("What are the options of grep?") == ["options", "grep"]  # question words dropped
    assert fts_query(['a"b']) == '"a""b"'


def test_select_terms_keeps_rare_present_terms():
    df = {"grep": 3, "file": 400, "options": 40, "regex": 1}
    assert select_terms(["file", "grep", "missing", "options", "regex"], df, total=1000) == ["regex", "grep", "options"]
    assert select_terms(["file", "grep", "options", "regex"], df, total=1000, max_terms=2) == ["regex", "grep"]
    assert select_terms(["file"], df, total=1000) == ["file"]  # only common terms: keep the rarest
    assert select_terms(["missing"], df, total=1000) == []
    # a postings budget keeps the rarest terms; the first term always stays
    assert select_terms(["file", "grep", "options", "regex"], df, total=1000, max_postings=df["regex"] + df["grep"]) \
        == ["regex", "grep"]
    assert select_terms(["options"], df, total=1000, max_postings=1) == ["options"]


def test_rrf_rewards_agreement():
    fused = rrf([[1, 2, 3], [3, 1, 9]])
    assert max(fused, key=fused.get) == 1
    assert fused[3] > fused[2] and fused[9] < fused[2]
