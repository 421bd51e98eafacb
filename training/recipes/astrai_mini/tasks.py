"""SFT conversations and DPO pairs for the job the model does in the app.

Grounded questions are generated from the documents' own structure (a man page's NAME line, a
help page's headings and paragraphs, a book section, a Wikipedia lead) in the document's
language, and the prompt is built by ``astrai_core.rag.build_grounded_prompt`` itself, so the
model trains on exactly the messages the app sends. The other tasks are translation (aligned
pairs), dictionary questions (CC-CEDICT) and a small hand-written set about the assistant.

Every builder is a pure function of its records and a ``random.Random``; held-out records make
the evaluation sets with the same code.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from astrai_core.rag.chunking import sentence_spans

CountTokens = Callable[[str], int]

REFUSAL = {
    "en": "The documents do not contain the answer to this question.",
    "zh": "文档中没有这个问题的答案。",
}
# Phrases that mark a refusal in either language (for evaluation; the model may word it its own way).
REFUSAL_MARKERS = ("do not contain", "don't contain", "does not contain", "not found in the",
                   "没有这个问题", "没有相关", "文档中没有", "资料中没有", "没有提到")

_CITE = re.compile(r"\[(\d+)\]")
_CJK = re.compile(r"[\u3400-\u9fff]")

SELF_FILE = Path(__file__).with_name("self_qa.json")


@dataclass
class QAItem:
    """A question whose answer is in ``passage``; ``key`` is the span a correct answer contains."""

    question: str
    lang: str
    passage: str
    file: str
    key: str
    answer_body: str  # the answer without its citation
    doc_id: str
    group: str
    page: int = 1


def is_refusal(text: str) -> bool:
    """Whether an answer says the documents do not hold the answer."""
    low = text.lower()
    return any(m in low for m in REFUSAL_MARKERS)


def cited(text: str) -> set[int]:
    """Source numbers cited as ``[n]`` in an answer."""
    return {int(n) for n in _CITE.findall(text)}


def answer_language(text: str) -> str:
    """``zh`` when at least a fifth of the non-space, non-citation characters are Chinese."""
    chars = [c for c in _CITE.sub("", text) if not c.isspace()]
    return "zh" if chars and sum(bool(_CJK.match(c)) for c in chars) / len(chars) >= 0.2 else "en"


def with_citation(body: str, n: int, lang: str) -> str:
    """``[n]`` first, then the answer (``[2] ls lists directory contents.``).

    The source is named before the text copied from it: at the first answer token the question sits
    right next to the source headers it must be matched against. With the citation at the end (the
    session-4 format) a 4.5 M-parameter model often copied the right passage and then cited another
    number (cited-source accuracy 0.33-0.48 on held-out questions).
    """
    body = body.strip()
    return f"[{n}]{body}" if lang == "zh" else f"[{n}] {body}"


def first_sentence(text: str, max_chars: int = 240) -> str:
    """The first paragraph when short enough, else its first sentence, cut at a word or clause
    boundary before ``max_chars``."""
    para = " ".join(text.strip().split("\n")[0].split())
    if len(para) <= max_chars:
        return para
    spans = sentence_spans(para)
    a, b = spans[0] if spans else (0, len(para))
    sent = para[a:b]
    if len(sent) <= max_chars:
        return sent
    cut = max(sent.rfind(c, 0, max_chars) for c in (" ", ",", "，", "、", "；"))
    return sent[:cut if cut > max_chars // 2 else max_chars].rstrip(" ,，、；")


def _file_name(doc: dict) -> tuple[str, int]:
    """(file name, page) like a user's document: ``ls.1``, ``01020000.html``, ``Python.txt``;
    a section of a book becomes a page of ``<book>.pdf``."""
    source, tail = doc["id"].split(":", 1)
    if "#" in tail:
        return f"{source}.pdf", int(tail.rsplit("#", 1)[1]) + 1
    name = tail.rsplit("/", 1)[-1]
    if name.endswith(".rst.txt"):
        name = name[:-8] + ".txt"
    if "." not in name:
        name += ".txt"
    return name, 1


def _passage(heading: str, text: str, max_chars: int) -> str:
    body = f"{heading}\n{text}" if heading else text
    return body[:max_chars].rstrip()


def common_headings(docs: Iterable[dict], min_docs: int = 3) -> frozenset[str]:
    """Section headings shared by ``min_docs`` or more documents ("NOTES", "示例", "相关主题"), casefolded.

    A question about such a heading ("Explain NOTES.") does not say which document it means, so
    another source in the prompt can hold an equally good answer; questions are not made from them.
    """
    counts: Counter = Counter()
    for doc in docs:
        counts.update({h.strip().casefold() for h, _ in doc["sections"] if h})
    return frozenset(h for h, n in counts.items() if n >= min_docs)


def qa_items(doc: dict, rng: random.Random, max_passage_chars: int = 700, per_doc: int = 2,
             skip_headings: frozenset[str] = frozenset()) -> list[QAItem]:
    """Questions from a document's structure, in its own language (at most ``per_doc``); no
    question is made from a heading in ``skip_headings`` (see :func:`common_headings`)."""
    lang, title = doc["lang"], doc["title"]
    items: list[QAItem] = []
    fname, page = _file_name(doc)
    if doc.get("summary") and len(doc["summary"]) >= 4:  # man page NAME line
        summ = doc["summary"].rstrip("。.")
        name_text = "\n".join(t for _, t in doc["sections"][:2])
        passage = _passage(title, name_text, max_passage_chars)
        if lang == "zh":
            q = rng.choice(["{t} 是做什么的？", "{t} 有什么用？", "{t} 的作用是什么？", "请问 {t} 是干什么用的？"])
            body = f"根据资料，{title} 的作用是：{summ}。"
        else:
            q = rng.choice(["What does {t} do?", "What is {t} used for?", "What is {t}?", "Tell me what {t} does."])
            body = f"According to the manual page, {title}: {summ}."
        items.append(QAItem(q.format(t=title), lang, passage, fname, summ, body, doc["id"], doc["group"], page))
    sections = [s for s in doc["sections"] if s[0] and len(s[1]) >= 20
                and s[0].upper() not in ("NAME", "名称", "SYNOPSIS", "概述", "SEE ALSO", "参见", "另见")
                and s[0].strip().casefold() not in skip_headings]
    rng.shuffle(sections)
    for heading, text in sections:
        if len(items) >= per_doc:
            break
        key = first_sentence(text)
        if len(key) < 12 or len(heading) > 80:
            continue
        if lang == "zh":
            q = rng.choice(["关于“{h}”，文档里是怎么说的？", "什么是“{h}”？", "请介绍一下“{h}”。", "“{h}”是什么意思？"])
        else:
            q = rng.choice(["What does the documentation say about {h}?", "What is {h}?", "Tell me about {h}.",
                            "Explain {h}."])
        passage = _passage(heading, text, max_passage_chars)
        items.append(QAItem(q.format(h=heading), lang, passage, fname, key, key, doc["id"], doc["group"], page))
    return items


def make_hit(file: str, page: int, text: str, score: float = 1.0, chunk_id: int = 0):
    """A retrieval hit of the app's own type, for a passage the recipe picked."""
    from astrai_core.rag import Hit

    return Hit(file=file, page=page, score=score, text=text, chunk_id=chunk_id, start=0, end=len(text))


def grounded_messages(question: str, passages: Sequence[QAItem], count_tokens: CountTokens,
                      budget: int) -> tuple[list[dict], int]:
    """The app's grounded prompt for the passages of ``passages``; returns (messages, sources kept)."""
    from astrai_core.rag import build_grounded_prompt

    hits = [make_hit(p.file, p.page, p.passage, 1.0 - 0.1 * i, i) for i, p in enumerate(passages)]
    gp = build_grounded_prompt(question, hits, count_tokens, budget)
    return [dict(m) for m in gp.messages], len(gp.sources)


@dataclass
class Grounded:
    """One grounded example: the prompt messages, the gold source number (0 = none) and answers."""

    messages: list[dict]
    gold: int
    n_sources: int
    lang: str
    answer: str
    key: str
    item: QAItem


def grounded_example(item: QAItem, distractors: Sequence[QAItem], rng: random.Random,
                     count_tokens: CountTokens, budget: int, refuse: bool) -> Grounded | None:
    """A positive (gold passage among distractors) or, with ``refuse``, a silent-sources example."""
    passages = list(distractors)
    gold = 0
    if not refuse:
        gold = rng.randint(1, len(passages) + 1)
        passages.insert(gold - 1, item)
    messages, kept = grounded_messages(item.question, passages, count_tokens, budget)
    if gold and gold > kept:  # the budget cut the gold passage off: unusable as a positive
        return None
    answer = REFUSAL[item.lang] if refuse else with_citation(item.answer_body, gold, item.lang)
    return Grounded(messages, gold, kept, item.lang, answer, item.key, item)


def pick_distractors(item: QAItem, pool: Sequence[QAItem], rng: random.Random, k: int) -> list[QAItem]:
    """``k`` passages from other documents (same language three times out of four)."""
    out: list[QAItem] = []
    for _ in range(k * 8):
        if len(out) >= k:
            break
        cand = rng.choice(pool)
        if cand.group == item.group or cand.file == item.file or any(c.doc_id == cand.doc_id for c in out):
            continue
        if cand.lang != item.lang and rng.random() < 0.75:
            continue
        out.append(cand)
    return out


def build_grounded(items: Sequence[QAItem], pool: Sequence[QAItem], rng: random.Random, count_tokens: CountTokens,
                   budget: int, refusal_fraction: float = 0.2, max_sources: int = 4) -> list[Grounded]:
    """Grounded examples for every item: positives, plus a share of refusals (sometimes with no source)."""
    out: list[Grounded] = []
    for item in items:
        refuse = rng.random() < refusal_fraction
        # A refusal with k = 0 exercises the app's "nothing found" prompt.
        k = rng.randint(0, max_sources) if refuse else rng.randint(0, max_sources - 1)
        ex = grounded_example(item, pick_distractors(item, pool, rng, k), rng, count_tokens, budget, refuse)
        if ex is not None:
            out.append(ex)
    return out


# ---- other tasks ----------------------------------------------------------------------------
_TO_ZH = ["Translate into Chinese:\n{t}", "把下面的英文翻译成中文：\n{t}", "Translate this into Chinese: {t}"]
_TO_EN = ["Translate into English:\n{t}", "把下面的中文翻译成英文：\n{t}", "请翻译成英文：{t}"]
EVAL_TO_ZH, EVAL_TO_EN = _TO_ZH[0], _TO_EN[0]


def translation_messages(pair: dict, to: str, template: str | None = None, rng: random.Random | None = None
                         ) -> tuple[list[dict], str]:
    """(messages, reference) translating a pair's text into ``to`` (``"zh"`` or ``"en"``)."""
    src = pair["en"] if to == "zh" else pair["zh"]
    tmpl = template or (rng or random).choice(_TO_ZH if to == "zh" else _TO_EN)
    return [{"role": "user", "content": tmpl.format(t=src)}], pair[to]


def dictionary_examples(entry: dict, rng: random.Random) -> list[tuple[list[dict], str]]:
    """Questions about one CC-CEDICT entry, in Chinese and English."""
    simp, pinyin = entry["simp"], entry["pinyin"]
    defs = [d for d in entry["defs"] if not d.startswith(("variant of", "old variant", "see ", "CL:"))]
    if not defs:
        return []
    meaning = "; ".join(defs[:4])
    out = []
    if rng.random() < 0.5:
        out.append(([{"role": "user", "content": rng.choice(["“{s}”是什么意思？", "“{s}”怎么解释？"]).format(s=simp)}],
                    f"“{simp}”（{pinyin}）的意思是：{meaning}。"))
    else:
        out.append(([{"role": "user", "content": rng.choice(["What does {s} mean?", "What is the meaning of {s}?"]
                                                           ).format(s=simp)}],
                    f"{simp} ({pinyin}) means: {meaning}."))
    first = defs[0]
    if len(first) <= 40 and "(" not in first and rng.random() < 0.3:
        out.append(([{"role": "user", "content": f"How do you say \"{first}\" in Chinese?"}],
                    f"\"{first}\" in Chinese is {simp} ({pinyin})."))
    return out


def self_examples(path: Path = SELF_FILE) -> list[tuple[list[dict], str]]:
    """The hand-written conversations about the assistant itself."""
    recs = json.loads(path.read_text(encoding="utf-8"))
    return [([{"role": "user", "content": r["q"]}], r["a"]) for r in recs]


def sft_record(messages: list[dict], answer: str, system: str | None = None) -> dict:
    """An ``astrai-train prepare --kind sft`` record."""
    head = [{"role": "system", "content": system}] if system and messages[0]["role"] != "system" else []
    return {"messages": head + messages + [{"role": "assistant", "content": answer}]}


def dpo_record(messages: list[dict], chosen: str, rejected: str, kind: str) -> dict:
    """An ``astrai-train prepare --kind dpo`` record (``kind`` names the rejection type)."""
    return {"prompt": messages, "chosen": chosen, "rejected": rejected, "type": kind}


def dpo_from_grounded(ex: Grounded, other: Grounded, translations: dict[str, str], rng: random.Random,
                      needless_refusal_rate: float = 1.0) -> list[dict]:
    """Preference pairs for one grounded example.

    - wrong source: the same answer citing a different source number;
    - wrong language: the aligned translation of the answer (when the corpus has one);
    - invented: when the sources are silent, a confident, cited answer taken from another document;
    - needless refusal: the answer is in the sources, yet the model says it is not. Without this type
      the only pairs with a large difference between chosen and rejected were "invented" ones, and
      DPO learned that refusing is always safe (session-2 run: false refusals 0.65 -> 1.0). With one
      such pair per answerable question they outnumbered the "invented" pairs 4.7 to 1 and DPO swung to
      never refusing (session-3 run); ``needless_refusal_rate`` keeps a share of them.
    """
    out = []
    if ex.gold:
        if ex.n_sources >= 2:
            wrong = rng.choice([i for i in range(1, ex.n_sources + 1) if i != ex.gold])
            out.append(dpo_record(ex.messages, ex.answer, with_citation(ex.item.answer_body, wrong, ex.lang),
                                  "wrong_source"))
        other_lang = translations.get(ex.item.answer_body)
        if other_lang:
            out.append(dpo_record(ex.messages, ex.answer,
                                  with_citation(other_lang, ex.gold, "en" if ex.lang == "zh" else "zh"),
                                  "wrong_language"))
        if needless_refusal_rate >= 1 or rng.random() < needless_refusal_rate:
            out.append(dpo_record(ex.messages, ex.answer, REFUSAL[ex.lang], "needless_refusal"))
    elif other.gold:
        invented = with_citation(other.item.answer_body, 1, ex.lang)
        out.append(dpo_record(ex.messages, ex.answer, invented, "invented"))
    return out


def translation_index(pairs: Iterable[dict]) -> dict[str, str]:
    """Both directions of the aligned pairs: en -> zh and zh -> en."""
    index: dict[str, str] = {}
    for p in pairs:
        index.setdefault(p["en"], p["zh"])
        index.setdefault(p["zh"], p["en"])
    return index
