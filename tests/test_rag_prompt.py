"""Grounded prompt: numbered sources with file and page, token budget, and the not-found path."""

from __future__ import annotations

from astrai_core.rag import Hit, build_grounded_prompt
from astrai_core.rag.prompt import GROUNDED_SYSTEM_PROMPT, NO_SOURCES_SYSTEM_PROMPT


def count(text: str) -> int:
    return len(text.split()) + sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")


def hit(i: int, text: str, relevant: bool = True) -> Hit:
    return Hit(f"/docs/file{i}.pdf", i, 0.03, text, i, 0, len(text), 0.9 if relevant else 0.7, relevant)


def test_sources_numbered_with_file_and_page():
    p = build_grounded_prompt("grep 怎么用？", [hit(1, "grep searches text."), hit(2, "sed edits streams.")], count, 500)
    assert p.found and [h.chunk_id for h in p.sources] == [1, 2]
    assert [m["role"] for m in p.messages] == ["system", "user"]
    assert p.messages[0]["content"] == GROUNDED_SYSTEM_PROMPT
    user = p.messages[1]["content"]
    assert "[1] file1.pdf, page 1\ngrep searches text." in user and "[2] file2.pdf, page 2" in user
    assert user.endswith("Question / 问题:\ngrep 怎么用？")
    for phrase in ("only the numbered sources", "[n]", "same language as the question", "do not contain"):
        assert phrase in GROUNDED_SYSTEM_PROMPT


def test_budget_drops_or_cuts_sources():
    long = " ".join(["word"] * 300)
    hits = [hit(1, long), hit(2, long), hit(3, long)]
    p = build_grounded_prompt("q", hits, count, 500)
    total = sum(count(m["content"]) for m in p.messages)
    assert total <= 500 and 1 <= len(p.sources) < 3
    assert p.messages[1]["content"].count("[") == len(p.sources)


def test_not_found_path():
    p = build_grounded_prompt("What is the capital of Australia?", [hit(1, "grep", relevant=False)], count, 500)
    assert not p.found and p.sources == []
    assert p.messages[0]["content"] == NO_SOURCES_SYSTEM_PROMPT and "[1]" not in p.messages[1]["content"]
    tiny = build_grounded_prompt("q", [hit(1, " ".join(["w"] * 400))], count, 40)
    assert not tiny.found  # nothing fits: say so rather than pretend


def test_custom_system_prompt():
    p = build_grounded_prompt("q", [hit(1, "text")], count, 500, system_prompt="Be brief.")
    assert p.messages[0]["content"] == "Be brief." and p.found
