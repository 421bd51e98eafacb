"""Training throughput and model FLOPs utilisation (MFU) of the one training loop.

Runs :class:`training.trainer.Trainer` with the PT strategy on random tokens for a stand-in
"bench-16m" config (about 16 M parameters; the shipped model's config is chosen by the recipe) and
reports tokens/s and MFU = achieved model FLOP/s / measured matmul peak, in float32 and with
bfloat16 autocast, on CPU and (when present) CUDA.

Model FLOPs per token = 6 * N (N = parameters of every matmul: all weights but the embedding table,
the head counted once even when tied) + 12 * layers * heads * head_dim * seq_len (attention scores and
values, forward + backward, PaLM appendix B). The peak is a large square matmul in the same dtype on
the same device, measured in this run.

    python benchmarks/bench_train.py            # CPU float32 + bfloat16 (+ CUDA when available)
    python benchmarks/bench_train.py --steps 10 --batch-size 8 --seq-len 256
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astrai_core.config import ModelConfig  # noqa: E402
from astrai_core.model import Transformer  # noqa: E402
from training.distributed import DistContext  # noqa: E402
from training.strategies import PTStrategy  # noqa: E402
from training.trainer import TrainConfig, Trainer  # noqa: E402

BENCH_16M = ModelConfig(vocab_size=8192, hidden_size=384, num_layers=8, num_heads=6, num_kv_heads=2,
                        intermediate_size=1024, max_position_embeddings=1024, tie_word_embeddings=True)


class RandomTokens:
    """A PT dataset of random windows (throughput does not depend on the text)."""

    kind = "pt"

    def __init__(self, n: int, seq_len: int, vocab: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.data = torch.randint(0, vocab, (n, seq_len + 1), generator=g)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.data[i]}


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    matmul_params = cfg.num_parameters() - cfg.hidden_size * (2 * cfg.num_layers + 1)  # minus norm weights
    if not cfg.tie_word_embeddings:
        matmul_params -= cfg.vocab_size * cfg.hidden_size  # the embedding lookup is not a matmul
    # tied: num_parameters counted the shared table once, and it is used once as a matmul (the head)
    return 6.0 * matmul_params + 12.0 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Best-of FLOP/s of an n x n matmul (the achievable peak, not the datasheet one)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        times.append((time.perf_counter() - t) / 4)
    return 2.0 * n**3 / min(times[1:])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(device: torch.device, dtype: str, batch_size: int, seq_len: int, steps: int) -> dict:
    cfg = BENCH_16M
    model = Transformer(cfg)
    model.init_weights(seed=0)
    data = RandomTokens(batch_size * (steps + 2), seq_len, cfg.vocab_size)
    tc = TrainConfig(max_steps=steps + 2, batch_size=batch_size, warmup_steps=1, dtype=dtype, lr=1e-4, min_lr=1e-5)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(model, PTStrategy(), data, tc, tmp, ctx=DistContext(device=device))
        for _ in range(2):  # warm-up: allocator, kernels, autocast caches
            tr.train_step()
        times = []
        for _ in range(steps):
            _sync(device)
            t = time.perf_counter()
            tr.train_step()
            _sync(device)
            times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    tok_s = batch_size * seq_len / step_s
    peak_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    peak = matmul_peak(device, peak_dtype, 8192 if device.type == "cuda" else 1024)
    achieved = tok_s * flops_per_token(cfg, seq_len)
    return {"device": str(device), "dtype": dtype, "batch": batch_size, "seq_len": seq_len,
            "step_s": step_s, "tokens_per_s": tok_s, "model_tflops": achieved / 1e12,
            "peak_tflops": peak / 1e12, "mfu": achieved / peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per setting (median reported)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--gpu-batch-size", type=int, default=32)
    ap.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = ap.parse_args()
    print(f"# bench-16m: {BENCH_16M.num_parameters() / 1e6:.1f} M params, "
          f"{flops_per_token(BENCH_16M, args.seq_len) / 1e6:.1f} MFLOP/token; torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads", flush=True)
    settings = [(torch.device("cpu"), d, args.batch_size) for d in ("float32", "bfloat16")]
    if torch.cuda.is_available():
        print(f"# GPU: {torch.cuda.get_device_name()}")
        settings += [(torch.device("cuda"), d, args.gpu_batch_size) for d in ("float32", "bfloat16")]
    if not args.json:
        print("| device | dtype | batch x seq | step (s) | tokens/s | model TFLOP/s | matmul peak TFLOP/s | MFU |")
        print("|---|---|---|---|---|---|---|---|")
    for device, dtype, bs in settings:
        r = bench(device, dtype, bs, args.seq_len, args.steps)
        if args.json:
            print(json.dumps(r))
        else:
            print(f"| {r['device']} | {r['dtype']} | {bs} x {args.seq_len} | {r['step_s']:.3f} | "
                  f"{r['tokens_per_s']:.0f} | {r['model_tflops']:.4f} | {r['peak_tflops']:.4f} | {100 * r['mfu']:.1f}% |",
                  flush=True)


if __name__ == "__main__":
    main()
