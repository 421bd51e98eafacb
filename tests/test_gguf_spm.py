"""A GGUF with a SentencePiece (``tokenizer.ggml.model = llama``) vocabulary, as Llama 2 / Mistral /
TinyLlama files have: our rebuilt tokenizer vs transformers' GGUF tokenizer, and the model loads."""

from __future__ import annotations

import numpy as np
import pytest

from astrai_core.checkpoint import load_model

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

WORDS = ["▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "▁he", "▁hel", "▁hell", "▁hello", "▁w", "▁wo", "▁wor",
         "▁worl", "▁world", "ll", "lo", "or", "ld", "t", "▁t", "▁th", "▁the", "a", "n", "▁a", "▁an", "▁and",
         "中", "文", "中文", "▁中", "▁中文"]


@pytest.fixture(scope="module")
def spm_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("spm") / "tiny-spm.gguf"
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + WORDS
    n_words = len(WORDS)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_embedding_length(32)
    w.add_head_count(2)
    w.add_feed_forward_length(32)
    w.add_context_length(64)
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(n_words)])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * n_words)  # unknown, control, byte, normal
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (len(pieces), 32), "output_norm.weight": (32,)}
    for name in ("attn_norm", "ffn_norm"):
        shapes[f"blk.0.{name}.weight"] = (32,)
    for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
        shapes[f"blk.0.{name}.weight"] = (32, 32)
    for name, shape in shapes.items():
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_spm_tokenizer_matches_transformers(spm_gguf):
    ours = load_model(spm_gguf)
    assert ours.tokenizer.bos_id == 1 and ours.tokenizer.eos_id == 2 and ours.tokenizer.config.add_bos_token
    ref = transformers.AutoTokenizer.from_pretrained(str(spm_gguf.parent), gguf_file=spm_gguf.name)
    for s in ["hello world", "  hello  world ", "the and 中文 hello", "中文中文 ÿ x\n\ty", "hello", " leading", "</s>"]:
        ids = ours.tokenizer.encode(s)
        assert ids == ref.encode(s, add_special_tokens=False), s
        assert ours.tokenizer.decode(ids) == ref.decode(ids)
    assert ours.tokenizer.encode("中文ÿ")[-2:] == [3 + 0xC3, 3 + 0xBF]  # byte fallback for unknown characters
