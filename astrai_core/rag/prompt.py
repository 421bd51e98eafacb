"""The grounded prompt: numbered sources fitted into a token budget.

The training package builds SFT data with this exact format, so the wording is part of the
interface: change it only together with the training data (and bump ``PROMPT_VERSION``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from astrai_core.rag.collection import Hit

PROMPT_VERSION = 1

# Written in English with a Chinese restatement so neither language dominates the instruction;
# "answer in the language of the question" is what makes it bilingual-neutral in practice.
GROUNDED_SYSTEM_PROMPT = (
    "You are AstrAI, a helpful assistant. Answer the question using only the numbered sources below. "
    "Cite the sources you use as [n], for example [1] or [2][3]. "
    "Answer in the same language as the question. "
    "If the sources do not contain the answer, say plainly that the documents do not contain it, and do not guess.\n"
    "只根据下面编号的资料回答问题，用 [n] 标注引用的资料；用提问所用的语言回答；"
    "如果资料中没有答案，请直接说明文档中没有相关内容，不要猜测。"
)

NO_SOURCES_SYSTEM_PROMPT = (
    "You are AstrAI, a helpful assistant. The user's documents were searched and no relevant passage was found. "
    "Say plainly that the documents do not contain the answer; you may add general knowledge only if you "
    "clearly mark it as not coming from the documents. Answer in the same language as the question.\n"
    "在用户的文档中没有找到相关内容。请直接说明文档中没有答案；如补充常识，须明确说明它不是来自文档。用提问所用的语言回答。"
)

SOURCE_HEADER = "Sources / 资料:"
QUESTION_HEADER = "Question / 问题:"


@dataclass
class GroundedPrompt:
    """ChatML-ready messages, the hits actually included (source ``n`` is ``sources[n-1]``), and
    whether any relevant passage was found."""

    messages: list[dict]
    sources: list["Hit"] = field(default_factory=list)
    found: bool = False


def format_source(n: int, hit: "Hit", text: str | None = None) -> str:
    from pathlib import Path

    page = f", page {hit.page}" if hit.page else ""
    return f"[{n}] {Path(str(hit.file)).name}{page}\n{(text if text is not None else hit.text).strip()}"


def build_grounded_prompt(question: str, hits: list["Hit"], count_tokens: Callable[[str], int], budget: int,
                          system_prompt: str | None = None) -> GroundedPrompt:
    """System + user messages with sources ``[1]..[k]`` (in the order given), within ``budget`` tokens.

    ``hits`` should already be filtered for relevance (``Collection.search`` marks weak ones with
    ``relevant=False``; those are dropped here). Sources are added whole while they fit; the first
    one that does not fit is cut to the remaining room if at least 32 tokens are left. With no
    relevant hit, ``found`` is False and the prompt asks the model to say so instead of feeding noise.
    ``system_prompt`` replaces the instruction text (not the sources).
    """
    relevant = [h for h in hits if getattr(h, "relevant", True)]
    user_tail = f"{QUESTION_HEADER}\n{question.strip()}"
    if not relevant:
        system = system_prompt or NO_SOURCES_SYSTEM_PROMPT
        return GroundedPrompt([{"role": "system", "content": system}, {"role": "user", "content": user_tail}],
                              [], False)
    system = system_prompt or GROUNDED_SYSTEM_PROMPT
    room = budget - count_tokens(system) - count_tokens(user_tail) - count_tokens(SOURCE_HEADER) - 16
    blocks: list[str] = []
    used: list["Hit"] = []
    for hit in relevant:
        block = format_source(len(used) + 1, hit)
        cost = count_tokens(block) + 2
        if cost <= room:
            blocks.append(block)
            used.append(hit)
            room -= cost
            continue
        if room >= 32:  # cut the passage to the room left, by characters in proportion to tokens
            keep = max(1, int(len(hit.text) * room / cost) - 8)
            block = format_source(len(used) + 1, hit, hit.text[:keep] + "…")
            while count_tokens(block) + 2 > room and keep > 16:
                keep = int(keep * 0.8)
                block = format_source(len(used) + 1, hit, hit.text[:keep] + "…")
            if count_tokens(block) + 2 <= room:
                blocks.append(block)
                used.append(hit)
        break
    if not used:
        return build_grounded_prompt(question, [], count_tokens, budget, system_prompt)
    user = SOURCE_HEADER + "\n\n" + "\n\n".join(blocks) + "\n\n" + user_tail
    return GroundedPrompt([{"role": "system", "content": system}, {"role": "user", "content": user}], used, True)
