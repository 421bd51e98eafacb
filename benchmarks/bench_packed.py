"""Packed bfloat16 weights against the same weights unpacked, in one process, taking turns.

Packing (``astrai_core.generation.quantize.PackedBF16Linear``) stores each bfloat16 weight in 12 bits
without loss, so decode reads 3/4 of the bytes and must give exactly the same tokens. For each model
(the real SmolLM2-135M GGUF; the ``astrai-1b`` preset with random weights) this loads two bfloat16
engines, one packed and one not, then alternates between them (the order flips every round, so a
change in the machine's memory rate hits both): 128 greedy tokens after a cached 512-token prompt
(decode only, lookup drafting off: one token per pass over the weights) and a fresh 512-token prefill.
It reports the medians, the median of the per-round ratios, the weight bytes a token reads, the
engines' load time, and whether the two produced the same tokens.

    python benchmarks/bench_packed.py                       # both models, 8 rounds (~4 min on 2 cores)
    python benchmarks/bench_packed.py --models smollm2 --rounds 12

Needs a CPU where packing pays (AVX512-BF16 and VBMI: ``kernels.packed_fast()``). Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_generate as bg  # noqa: E402  (the models, prompts and byte count of the main benchmark)


def engines(model: str, max_len: int) -> tuple[dict, dict]:
    from astrai_core.generation import Engine, quantize

    out, setup = {}, {}
    for packed in (True, False):
        quantize.PACK_BF16 = packed
        loaded = bg.build_model(model)
        t = time.perf_counter()
        out[packed] = Engine(loaded, dtype="bfloat16", max_seq_len=max_len, lookahead=0)
        setup[packed] = time.perf_counter() - t
        out[packed].stop_ids = frozenset()  # exactly the tokens asked for, even on random weights
    quantize.PACK_BF16 = True
    return out, setup


def run(model: str, args) -> dict:
    import torch

    from astrai_core.generation import GenerationConfig, kernels
    from astrai_core.generation.quantize import PackedBF16Linear

    torch.set_num_threads(args.threads)
    eng, setup = engines(model, args.prompt_len + args.new_tokens + 16)
    vocab = eng[True].config.vocab_size
    prompt = bg.prompt_ids(vocab, args.prompt_len, 2)
    decode, prefill, tokens = {True: [], False: []}, {True: [], False: []}, {}
    for e in eng.values():
        e.generate(prompt, GenerationConfig(max_new_tokens=4))  # warm-up; the prompt stays cached
    for rnd in range(args.rounds):
        for packed in (True, False) if rnd % 2 == 0 else (False, True):
            e = eng[packed]
            res = e.generate(prompt, GenerationConfig(max_new_tokens=args.new_tokens + 1))
            assert res.prefill_tokens == 1  # the cached prompt was reused: decode alone is timed
            decode[packed].append((res.completion_tokens - 1) / res.timings["decode_s"])
            tokens.setdefault(packed, res.token_ids)
            fresh = e.generate(bg.prompt_ids(vocab, args.prompt_len, 100 + rnd), GenerationConfig(max_new_tokens=1))
            prefill[packed].append(fresh.prefill_tokens / fresh.timings["prefill_s"])
            e.generate(prompt, GenerationConfig(max_new_tokens=1))  # the decode prompt back in the cache
    ratio = (lambda d: statistics.median(a / b for a, b in zip(d[True], d[False])))
    packed_linears = sum(isinstance(m, PackedBF16Linear) for m in eng[True].model.modules())
    return {"model": model, "rounds": args.rounds, "threads": args.threads,
            "decode_packed": statistics.median(decode[True]), "decode_unpacked": statistics.median(decode[False]),
            "decode_ratio": ratio(decode), "decode_ratios": [a / b for a, b in zip(decode[True], decode[False])],
            "prefill_packed": statistics.median(prefill[True]), "prefill_unpacked": statistics.median(prefill[False]),
            "prefill_ratio": ratio(prefill),
            "bytes_packed": bg.weight_bytes(eng[True].model), "bytes_unpacked": bg.weight_bytes(eng[False].model),
            "setup_packed_s": setup[True], "setup_unpacked_s": setup[False], "packed_linears": packed_linears,
            "same_tokens": tokens[True] == tokens[False], "read_gb_s": bg.read_bandwidth_gb_s(),
            "packed_fast": kernels.packed_fast()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="smollm2,astrai-1b")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    args = p.parse_args()
    from astrai_core.generation import kernels

    if not kernels.packed_fast():
        raise SystemExit("packing does not pay on this CPU (needs AVX512-BF16 and VBMI): nothing to compare")
    rows = [run(m, args) for m in args.models.split(",")]
    print("| model | decode tok/s packed | unpacked | packed / unpacked (median of rounds) | prefill tok/s packed "
          "| unpacked | ratio | weight GB packed / unpacked | load s packed / unpacked | same tokens |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        span = f"{min(r['decode_ratios']):.2f}-{max(r['decode_ratios']):.2f}"
        print(f"| {r['model']} | {r['decode_packed']:.1f} | {r['decode_unpacked']:.1f} | {r['decode_ratio']:.2f}x "
              f"({span}) | {r['prefill_packed']:.0f} | {r['prefill_unpacked']:.0f} | {r['prefill_ratio']:.2f}x | "
              f"{r['bytes_packed'] / 1e9:.3f} / {r['bytes_unpacked'] / 1e9:.3f} | "
              f"{r['setup_packed_s']:.1f} / {r['setup_unpacked_s']:.1f} | {r['same_tokens']} |")
    print(f"\n{rows[0]['threads']} threads, {args.rounds} rounds; memory read rate at the end "
          + ", ".join(f"{r['model']} {r['read_gb_s']:.1f} GB/s" for r in rows))


if __name__ == "__main__":
    main()
