"""From extracted corpus records to the files the training stages and the evaluation read.

All outputs are JSONL/text under ``<work>/data``:

- ``pt_train.jsonl``               ``{"text"}`` pre-training documents (train split, capped per source)
- ``text/{train,held}_{en,zh}.txt`` plain text per language: bits-per-byte and the ``xz`` baselines
- ``sft_train.jsonl`` / ``sft_held.jsonl``  ``{"messages"}`` conversations (train: plus ``{"text"}`` replay)
- ``dpo_train.jsonl`` / ``dpo_held.jsonl``  ``{"prompt", "chosen", "rejected", "type"}``
- ``eval_grounded.jsonl``          held-out grounded questions with the gold source number
- ``eval_translation.jsonl``       held-out aligned pairs
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from training.recipes.astrai_mini import tasks
from training.recipes.astrai_mini.corpus import read_jsonl, write_jsonl


@dataclass
class DataConfig:
    """Sizes of the derived data sets (the smoke run shrinks all of them)."""

    pt_source_caps: dict = field(default_factory=dict)  # corpus output name -> max characters of train text
    pt_pairs_as_text: bool = True  # add train aligned pairs as "en\nzh" documents
    held_text_chars: int = 300_000  # per language, for bits per byte
    xz_train_chars: int = 8_000_000  # per language, the xz dictionary text
    sft_qa_per_doc: int = 2
    passage_chars: int = 700  # longest source passage in a grounded prompt
    sft_max_docs: int = 20_000
    sft_translation: int = 6_000
    sft_dictionary: int = 3_000
    sft_self_repeats: int = 4
    # Replay: windows of pre-training documents mixed into the SFT set, trained on every token, so
    # fine-tuning keeps the language model (without it held-out bits per byte rose 1.76 -> 2.94).
    sft_replay: int = 0
    replay_chars: int = 1500
    refusal_fraction: float = 0.2
    max_sources: int = 4
    prompt_budget: int = 384  # tokens for the grounded prompt (seq_len minus room for the answer)
    dpo_max: int = 6_000
    needless_refusal_rate: float = 1.0  # share of answerable questions that get a "needless refusal" DPO pair
    eval_grounded: int = 120
    eval_translation: int = 60
    eval_dpo: int = 200
    system_share: float = 0.5  # share of non-grounded chats that carry a short system prompt


SHORT_SYSTEM = "You are AstrAI, a helpful assistant."


def iter_kind(corpus: Path, kind: str, split: str | None = None) -> Iterator[tuple[str, dict]]:
    """(output name, record) of every ``corpus/<kind>/*.jsonl`` record, optionally of one split."""
    for path in sorted((corpus / kind).glob("*.jsonl")):
        for rec in read_jsonl(path):
            if split is None or rec["split"] == split:
                yield path.stem, rec


def build_text(corpus: Path, out: Path, cfg: DataConfig, seed: int) -> dict:
    """Pre-training documents and the per-language plain-text files; returns character counts."""
    rng = random.Random(seed)
    docs: list[str] = []
    used: dict[str, int] = {}
    by_lang: dict[tuple[str, str], list[str]] = {(s, l): [] for s in ("train", "held") for l in ("en", "zh")}
    for name, rec in iter_kind(corpus, "docs"):
        by_lang[(rec["split"], rec["lang"])].append(rec["text"])
        if rec["split"] != "train":
            continue
        cap = cfg.pt_source_caps.get(name)
        if cap is not None and used.get(name, 0) >= cap:
            continue
        used[name] = used.get(name, 0) + len(rec["text"])
        docs.append(rec["text"])
    extra = []
    if cfg.pt_pairs_as_text:
        extra += [(name, f"{rec['en']}\n{rec['zh']}") for name, rec in iter_kind(corpus, "pairs", "train")]
    extra += [(name, f"{rec['simp']} {rec['trad']} [{rec['pinyin']}] /{'/'.join(rec['defs'])}/")
              for name, rec in iter_kind(corpus, "dict", "train")]
    for name, text in extra:
        cap = cfg.pt_source_caps.get(name)
        if cap is None or used.get(name, 0) < cap:
            docs.append(text)
            used[name] = used.get(name, 0) + len(text)
    rng.shuffle(docs)
    write_jsonl(out / "pt_train.jsonl", ({"text": d} for d in docs))
    (out / "text").mkdir(parents=True, exist_ok=True)
    chars = {}
    for (split, lang), texts in by_lang.items():
        rng.shuffle(texts)
        cap = cfg.held_text_chars if split == "held" else cfg.xz_train_chars
        text = _take(texts, cap)
        (out / "text" / f"{split}_{lang}.txt").write_text(text, encoding="utf-8")
        chars[f"{split}_{lang}"] = len(text)
    return {"pt_docs": len(docs), "pt_chars_by_output": used, "text_chars": chars}


def _take(texts: list[str], cap: int) -> str:
    parts, n = [], 0
    for t in texts:
        if n >= cap:
            break
        parts.append(t[:cap - n])
        n += len(parts[-1]) + 2
    return "\n\n".join(parts)


def _qa_pool(corpus: Path, split: str, cfg: DataConfig, rng: random.Random,
             common: frozenset[str]) -> list[tasks.QAItem]:
    docs = [rec for _, rec in iter_kind(corpus, "docs", split)]
    rng.shuffle(docs)
    items: list[tasks.QAItem] = []
    for rec in docs[:cfg.sft_max_docs]:
        items += tasks.qa_items(rec, rng, cfg.passage_chars, cfg.sft_qa_per_doc, common)
    return items


def build_chat(corpus: Path, out: Path, cfg: DataConfig, count_tokens: tasks.CountTokens, seed: int) -> dict:
    """SFT conversations, DPO pairs and the held-out evaluation sets; returns counts per task."""
    stats: dict[str, int] = {}
    translations = tasks.translation_index(rec for _, rec in iter_kind(corpus, "pairs"))
    # Heading frequencies over both splits: the held-out split alone is too small to tell a generic
    # heading from a rare one.
    common = tasks.common_headings(rec for _, rec in iter_kind(corpus, "docs"))
    for split in ("train", "held"):
        rng = random.Random(f"{seed}:{split}")
        items = _qa_pool(corpus, split, cfg, rng, common)
        # Distractors come from the same split, so no held-out passage leaks into training prompts.
        grounded = tasks.build_grounded(items, items, rng, count_tokens, cfg.prompt_budget,
                                        cfg.refusal_fraction, cfg.max_sources)
        records = [tasks.sft_record(g.messages, g.answer) for g in grounded]
        stats[f"{split}_grounded"] = sum(1 for g in grounded if g.gold)
        stats[f"{split}_refusal"] = sum(1 for g in grounded if not g.gold)
        pairs = [rec for _, rec in iter_kind(corpus, "pairs", split)]
        rng.shuffle(pairs)
        n_tr = cfg.sft_translation if split == "train" else cfg.eval_translation
        for p in pairs[:n_tr]:
            to = rng.choice(("en", "zh"))
            msgs, ref = tasks.translation_messages(p, to, rng=rng)
            records.append(tasks.sft_record(msgs, ref, SHORT_SYSTEM if rng.random() < cfg.system_share else None))
        stats[f"{split}_translation"] = min(n_tr, len(pairs))
        entries = [rec for _, rec in iter_kind(corpus, "dict", split)]
        rng.shuffle(entries)
        n_dict = 0
        for e in entries[:cfg.sft_dictionary if split == "train" else cfg.eval_translation]:
            for msgs, ans in tasks.dictionary_examples(e, rng):
                records.append(tasks.sft_record(msgs, ans, SHORT_SYSTEM if rng.random() < cfg.system_share else None))
                n_dict += 1
        stats[f"{split}_dictionary"] = n_dict
        if split == "train":
            replay = _replay(out / "pt_train.jsonl", cfg.sft_replay, cfg.replay_chars, rng)
            records += replay
            stats["train_replay"] = len(replay)
            for _ in range(cfg.sft_self_repeats):
                for msgs, ans in tasks.self_examples():
                    records.append(tasks.sft_record(msgs, ans, SHORT_SYSTEM if rng.random() < cfg.system_share else None))
        rng.shuffle(records)
        write_jsonl(out / f"sft_{split}.jsonl", records)
        dpo = []
        for i, g in enumerate(grounded):
            other = grounded[(i + 1 + rng.randrange(max(1, len(grounded) - 1))) % len(grounded)]
            dpo += tasks.dpo_from_grounded(g, other, translations, rng, cfg.needless_refusal_rate)
        for e in entries[:cfg.sft_dictionary // 4 if split == "train" else cfg.eval_translation]:
            dpo.append(_dictionary_wrong_language(e, rng))
        dpo = [d for d in dpo if d]
        rng.shuffle(dpo)
        dpo = dpo[:cfg.dpo_max if split == "train" else cfg.eval_dpo]
        write_jsonl(out / f"dpo_{split}.jsonl", dpo)
        for kind in ("wrong_source", "wrong_language", "invented", "needless_refusal"):
            stats[f"{split}_dpo_{kind}"] = sum(d["type"] == kind for d in dpo)
        if split == "held":
            positives = [g for g in grounded if g.gold][:cfg.eval_grounded]
            refusals = [g for g in grounded if not g.gold][:max(1, cfg.eval_grounded // 3)]
            write_jsonl(out / "eval_grounded.jsonl", (
                {"messages": g.messages, "gold": g.gold, "lang": g.lang, "key": g.key, "answer": g.answer}
                for g in positives + refusals))
            write_jsonl(out / "eval_translation.jsonl", ({"en": p["en"], "zh": p["zh"], "id": p["id"]}
                                                          for p in pairs[:cfg.eval_translation]))
    return stats


def _replay(pt_file: Path, count: int, chars: int, rng: random.Random) -> list[dict]:
    """``count`` plain-text SFT records: a window of up to ``chars`` characters from as many PT documents."""
    if count <= 0:
        return []
    docs = [rec["text"] for rec in read_jsonl(pt_file) if len(rec["text"]) >= 200]
    out = []
    for text in rng.sample(docs, min(count, len(docs))):
        start = rng.randrange(max(1, len(text) - chars))
        out.append({"text": text[start:start + chars]})
    return out


def _dictionary_wrong_language(entry: dict, rng: random.Random) -> dict | None:
    """A Chinese dictionary question: chosen answers in Chinese, rejected in English."""
    defs = [d for d in entry["defs"] if not d.startswith(("variant of", "old variant", "see ", "CL:"))]
    if not defs:
        return None
    simp, pinyin, meaning = entry["simp"], entry["pinyin"], "; ".join(defs[:4])
    msgs = [{"role": "user", "content": f"“{simp}”是什么意思？"}]
    return tasks.dpo_record(msgs, f"“{simp}”（{pinyin}）的意思是：{meaning}。", f"{simp} ({pinyin}) means: {meaning}.",
                            "wrong_language")
