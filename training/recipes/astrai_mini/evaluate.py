"""Held-out evaluation of a stage's model: bits per byte (against ``xz -9``), translation chrF,
grounded QA with citations and refusals, and DPO reward accuracy.

All metrics are pure functions of a loaded model and the held-out files made by :mod:`.data`.
"""

from __future__ import annotations

import json
import lzma
import math
from collections import Counter
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from training.recipes.astrai_mini import tasks
from training.recipes.astrai_mini.corpus import read_jsonl


# ---- compression baselines ------------------------------------------------------------------
def xz_size(data: bytes) -> int:
    """Bytes of ``data`` compressed like ``xz -9``."""
    return len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9))


def xz_bits_per_byte(held: bytes, train: bytes | None = None) -> float:
    """``xz -9`` bits per byte of ``held``; with ``train``, the cost of ``held`` after the training
    text: size(compress(train + held)) - size(compress(train))."""
    if train is None:
        return 8 * xz_size(held) / len(held)
    return 8 * (xz_size(train + held) - xz_size(train)) / len(held)


# ---- language-model bits per byte -----------------------------------------------------------
@torch.no_grad()
def model_bits_per_byte(model: torch.nn.Module, tokenizer, text: str, seq_len: int, batch_size: int = 8) -> float:
    """Bits per UTF-8 byte of ``text`` under ``model``: windows of ``seq_len`` tokens overlapping by
    one, so every token but the first is predicted exactly once."""
    ids = tokenizer.encode(text)
    n_bytes = len(text.encode("utf-8"))
    windows = [ids[i:i + seq_len + 1] for i in range(0, max(1, len(ids) - 1), seq_len)]
    windows = [w for w in windows if len(w) >= 2]
    total = 0.0
    model.eval()
    for b in range(0, len(windows), batch_size):
        batch = windows[b:b + batch_size]
        width = max(len(w) for w in batch)
        x = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width - 1)
        for i, w in enumerate(batch):
            x[i, :len(w)] = torch.tensor(w)
            mask[i, :len(w) - 1] = 1
        logits = model(x[:, :-1]).float()  # (B, T-1, V)
        nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")  # (B, T-1)
        total += float((nll * mask).sum())
    return total / math.log(2) / n_bytes


# ---- translation ----------------------------------------------------------------------------
def _char_ngrams(text: str, n: int) -> Counter:
    s = "".join(text.split())  # chrF ignores whitespace
    return Counter(s[i:i + n] for i in range(len(s) - n + 1))


def chrf(hypothesis: str, reference: str, max_n: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF (Popović 2015): character n-gram F-beta averaged over n = 1..max_n, in 0..100."""
    precisions, recalls = [], []
    for n in range(1, max_n + 1):
        hyp, ref = _char_ngrams(hypothesis, n), _char_ngrams(reference, n)
        if not hyp or not ref:
            continue
        match = sum((hyp & ref).values())
        precisions.append(match / sum(hyp.values()))
        recalls.append(match / sum(ref.values()))
    if not precisions:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if p + r == 0:
        return 0.0
    return 100 * (1 + beta ** 2) * p * r / (beta ** 2 * p + r)


# ---- generation-based evaluations -----------------------------------------------------------
def _generate(engine, messages: list[dict], max_new_tokens: int) -> str:
    from astrai_core.generation import GenerationConfig

    return engine.chat(messages, GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)).text


def grounded_qa(engine, examples: Sequence[dict], max_new_tokens: int = 96) -> dict:
    """Key span contained, right source cited, question's language kept; refusal accuracy."""
    pos = {"n": 0, "key": 0, "cite": 0, "lang": 0, "false_refusal": 0}
    neg = {"n": 0, "refused": 0}
    samples = []
    for ex in examples:
        answer = _generate(engine, ex["messages"], max_new_tokens)
        if len(samples) < 6:
            samples.append({"question": ex["messages"][-1]["content"][-200:], "answer": answer, "gold": ex["gold"]})
        if ex["gold"]:
            pos["n"] += 1
            pos["key"] += _norm(ex["key"]) in _norm(answer)
            pos["cite"] += ex["gold"] in tasks.cited(answer)
            pos["lang"] += tasks.answer_language(answer) == ex["lang"]
            pos["false_refusal"] += tasks.is_refusal(answer)
        else:
            neg["n"] += 1
            neg["refused"] += tasks.is_refusal(answer)
    n = max(1, pos["n"])
    return {"questions": pos["n"], "key_span": pos["key"] / n, "cited_source": pos["cite"] / n,
            "language": pos["lang"] / n, "false_refusal": pos["false_refusal"] / n,
            "silent_questions": neg["n"], "refusal_accuracy": neg["refused"] / max(1, neg["n"]),
            "samples": samples}


def _norm(text: str) -> str:
    return "".join(text.lower().split())


def translation_chrf(engine, pairs: Sequence[dict], max_new_tokens: int = 128) -> dict:
    """Mean chrF of greedy translations of held-out pairs, both directions."""
    out = {}
    for to, tmpl in (("zh", tasks.EVAL_TO_ZH), ("en", tasks.EVAL_TO_EN)):
        scores = []
        for p in pairs:
            msgs, ref = tasks.translation_messages(p, to, template=tmpl)
            scores.append(chrf(_generate(engine, msgs, max_new_tokens), ref))
        out[f"en_to_zh" if to == "zh" else "zh_to_en"] = sum(scores) / max(1, len(scores))
    out["pairs"] = len(pairs)
    return out


@torch.no_grad()
def dpo_reward(policy: torch.nn.Module, reference: torch.nn.Module, tokenizer, pairs: Sequence[dict],
               beta: float, seq_len: int) -> dict:
    """Implicit-reward accuracy and margin of ``policy`` over ``reference`` on held-out pairs."""
    from training.data.prepare import encode_completion, encode_prompt

    def logp(model, prompt_ids, completion_ids) -> float:
        ids = (prompt_ids + completion_ids)[-seq_len:]
        n_c = min(len(completion_ids), len(ids) - 1)
        x = torch.tensor([ids])
        logits = model(x[:, :-1]).float()
        lp = torch.log_softmax(logits, -1).gather(-1, x[:, 1:].unsqueeze(-1)).squeeze(-1)
        return float(lp[0, -n_c:].sum())

    correct, margins, by_type = 0, [], Counter()
    totals = Counter()
    for p in pairs:
        prompt = encode_prompt(tokenizer, p["prompt"])
        ch, rj = encode_completion(tokenizer, p["chosen"]), encode_completion(tokenizer, p["rejected"])
        r_c = beta * (logp(policy, prompt, ch) - logp(reference, prompt, ch))
        r_r = beta * (logp(policy, prompt, rj) - logp(reference, prompt, rj))
        ok = r_c > r_r
        correct += ok
        margins.append(r_c - r_r)
        by_type[p.get("type", "")] += ok
        totals[p.get("type", "")] += 1
    n = max(1, len(pairs))
    return {"pairs": len(pairs), "accuracy": correct / n, "margin": sum(margins) / n,
            "accuracy_by_type": {k: by_type[k] / totals[k] for k in totals}}


def evaluate_model(model_dir: Path, data_dir: Path, seq_len: int, limits: dict | None = None,
                   reference_dir: Path | None = None, beta: float = 0.1) -> dict:
    """Every held-out metric of one model folder (the DPO reward ones when ``reference_dir`` is given)."""
    from astrai_core.checkpoint import load_model
    from astrai_core.generation import Engine

    limits = limits or {}
    loaded = load_model(model_dir)
    model, tok = loaded.model, loaded.tokenizer
    out: dict = {"bits_per_byte": {}}
    for lang in ("en", "zh"):
        text = held_text(data_dir, lang, limits)
        if text:
            out["bits_per_byte"][lang] = model_bits_per_byte(model, tok, text, seq_len)
    if limits.get("generation", True):
        engine = Engine(loaded)
        # ``grounded`` questions with the answer in the sources, and a third as many silent ones.
        n = int(limits.get("grounded", 10 ** 9))
        examples = list(read_jsonl(data_dir / "eval_grounded.jsonl"))
        grounded = [e for e in examples if e["gold"]][:n] + [e for e in examples if not e["gold"]][:max(1, n // 3)]
        max_new = int(limits.get("max_new_tokens", 96))
        out["grounded_qa"] = grounded_qa(engine, grounded, max_new)
        pairs = list(read_jsonl(data_dir / "eval_translation.jsonl"))[:limits.get("translation", 10 ** 9)]
        out["translation_chrf"] = translation_chrf(engine, pairs, max_new)
    if reference_dir is not None:
        ref = load_model(reference_dir).model
        pairs = list(read_jsonl(data_dir / "dpo_held.jsonl"))[:limits.get("dpo", 10 ** 9)]
        out["dpo_reward"] = dpo_reward(model, ref, tok, pairs, beta, seq_len)
    return out


def held_text(data_dir: Path, lang: str, limits: dict | None = None) -> str:
    """The held-out text of ``lang``, cut to ``limits["bpb_chars_<lang>"]`` characters when set."""
    text = (data_dir / "text" / f"held_{lang}.txt").read_text(encoding="utf-8")
    cap = (limits or {}).get(f"bpb_chars_{lang}")
    return text[:int(cap)] if cap else text


def xz_baselines(data_dir: Path, limits: dict | None = None) -> dict:
    """``xz -9`` bits per byte of the held-out text, alone and with the training text as dictionary."""
    out = {}
    for lang in ("en", "zh"):
        held = held_text(data_dir, lang, limits).encode("utf-8")
        train = (data_dir / "text" / f"train_{lang}.txt").read_bytes()
        if held:
            out[lang] = {"xz": xz_bits_per_byte(held), "xz_with_train": xz_bits_per_byte(held, train),
                         "held_bytes": len(held), "train_bytes": len(train)}
    return out


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
