"""Lexical terms for BM25 (Latin words + CJK bigrams) and reciprocal-rank fusion."""

from astrai_core.rag.search import fts_query, lexical_terms, rrf


def test_lexical_terms_mix_words_and_bigrams():
    assert lexical_terms("用 grep 搜索正则表达式 in GNU_sed") == ["用", "grep", "搜索", "索正", "正则", "则表", "表达", "达式",
                                                            "in", "gnu", "sed"]


def test_fts_query_quotes_terms():
    assert fts_query('say "hi" 你好') == '"say" OR "hi" OR "你好"'
    assert fts_query("!!!") == ""
    assert fts_query("What are the options of grep?") == '"options" OR "grep"'  # question words dropped


def test_rrf_rewards_agreement():
    fused = rrf([[1, 2, 3], [3, 1, 9]])
    assert max(fused, key=fused.get) == 1
    assert fused[3] > fused[2] and fused[9] < fused[2]
