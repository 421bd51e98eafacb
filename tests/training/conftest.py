"""Shared fixtures for the training tests: a real tiny bilingual tokenizer and real token stores."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from astrai_core.tokenizer import Tokenizer
from training.data.prepare import prepare
from training.data.tokenizer_train import train_tokenizer
from training.stages import StageConfig

EN = ["the cat sat on the mat", "a quick brown fox jumps over the lazy dog", "models learn from data",
      "hello world, this is a test", "we train a small language model", "rain falls in spring"]
ZH = ["你好，世界", "今天天气很好", "我们训练一个小模型", "机器学习从数据中学习", "中文和英文混合的语料", "春天下雨了"]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def make_corpora(root: Path, seed: int = 0) -> dict[str, Path]:
    rng = random.Random(seed)
    docs = [{"text": f"{rng.choice(EN)} {rng.choice(ZH)} {rng.choice(EN)}。{rng.choice(ZH)}"} for _ in range(300)]
    sft = [{"messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": rng.choice(EN)},
                         {"role": "assistant", "content": rng.choice(ZH)},
                         {"role": "user", "content": rng.choice(ZH)},
                         {"role": "assistant", "content": rng.choice(EN)}]} for _ in range(48)]
    pairs = [{"prompt": rng.choice(EN), "chosen": rng.choice(ZH), "rejected": rng.choice(EN)} for _ in range(48)]
    return {"pt": write_jsonl(root / "pt.jsonl", docs), "sft": write_jsonl(root / "sft.jsonl", sft),
            "dpo": write_jsonl(root / "dpo.jsonl", pairs)}


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # The tiny models gain nothing from threads, and on a shared 2-core machine two threads per
    # process spin against other processes (10x slower steps). Restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def corpora(tmp_path_factory) -> dict[str, Path]:
    return make_corpora(tmp_path_factory.mktemp("corpora"))


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory, corpora) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer([corpora["pt"]], out, vocab_size=400, num_reserved=8, show_progress=False)
    return out


@pytest.fixture(scope="session")
def tokenizer(tok_dir) -> Tokenizer:
    return Tokenizer.from_dir(tok_dir)


@pytest.fixture(scope="session")
def stores(tmp_path_factory, corpora, tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stores")
    out = {}
    for kind, src in (("pt", "pt"), ("sft", "sft"), ("dpo", "dpo"), ("rm", "dpo")):
        prepare(kind, [corpora[src]], tokenizer, root / kind, show_progress=False)
        out[kind] = root / kind
    return out


@pytest.fixture
def stage_cfg(tmp_path, stores, tok_dir):
    """A tiny StageConfig factory: ``stage_cfg("pt", max_steps=3)``."""

    def make(kind: str, **overrides) -> StageConfig:
        values = dict(train_data=str(stores[kind]), out_dir=str(tmp_path / f"run-{kind}"), tokenizer=str(tok_dir),
                      model="tiny", seq_len=32 if kind == "pt" else 128, batch_size=4, max_steps=4, warmup_steps=1, lr=3e-3, min_lr=3e-4,
                      log_every=1, progress=False, device="cpu")
        values.update(overrides)
        return StageConfig(**values)

    return make
