"""Hugging Face folders (llama, mistral, qwen2) written by transformers itself, loaded by us,
compared logit for logit against transformers; plus a qwen2 GGUF (no q/k permutation) checked
against transformers' own GGUF reader.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from astrai_core.checkpoint import load_model, save_model

transformers = pytest.importorskip("transformers")

TEXT = ["Hello world, this is a small corpus. 你好世界，这是一个小语料。", "def f(x): return x + 1", "😀 emoji ok"] * 20
VOCAB = 384


def byte_level_tokenizer() -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXT, trainer)
    return tok


def write_hf_folder(path, model) -> None:
    model.save_pretrained(path, safe_serialization=True)
    byte_level_tokenizer().save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "bos_token": None}))


SMALL = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def _make(kind: str, **extra):
    torch.manual_seed(0)
    cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
           "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
           "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[kind]
    cfg = cls[0](**SMALL, **extra)
    model = cls[1](cfg).eval()
    with torch.no_grad():  # random non-trivial norms and biases so a mis-mapped key shows
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", ".bias")):
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    return model


CASES = [
    ("llama", dict(rope_theta=50000.0, rms_norm_eps=1e-5)),
    ("llama", dict(tie_word_embeddings=True, head_dim=32)),
    ("mistral", dict(sliding_window=None)),
    ("qwen2", dict(tie_word_embeddings=True)),
]


@pytest.mark.parametrize("kind,extra", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_hf_folder_logits_match_transformers(tmp_path, kind, extra):
    ref = _make(kind, **extra)
    write_hf_folder(tmp_path / "hf", ref)
    loaded = load_model(tmp_path / "hf")
    assert loaded.format == "hf"
    assert loaded.config.attention_bias == (kind == "qwen2")
    ids = loaded.tokenizer.encode("Hello world 你好世界 😀 def f(x)")
    assert len(ids) > 5
    x = torch.tensor([ids])
    with torch.no_grad():
        diff = (loaded.model(x) - ref(x).logits).abs().max().item()
    assert diff <= 1e-4, diff
    # and the HF folder survives a save in our own format
    again = load_model(save_model(loaded.model, loaded.tokenizer, tmp_path / "own"))
    with torch.no_grad():
        assert torch.equal(again.model(x), loaded.model(x))


def test_hf_sharded_folder_and_bfloat16(tmp_path):
    ref = _make("llama")
    ref.save_pretrained(tmp_path / "hf", safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    byte_level_tokenizer().save(str(tmp_path / "hf" / "tokenizer.json"))
    loaded = load_model(tmp_path / "hf", dtype=torch.bfloat16)
    assert loaded.model.lm_head.weight.dtype == torch.bfloat16
    x = torch.tensor([[1, 5, 9, 42, 100]])
    with torch.no_grad():
        diff = (loaded.model(x).float() - ref(x).logits).abs().max().item()
    assert diff < 0.1  # bfloat16 rounding only


def test_mistral_sliding_window_caps_context(tmp_path):
    write_hf_folder(tmp_path / "m", _make("mistral", sliding_window=64))
    assert load_model(tmp_path / "m").config.max_position_embeddings == 64


def _write_qwen2_gguf(path, model) -> None:
    """A GGUF the way llama.cpp's converter writes qwen2: names mapped, q/k rows NOT permuted."""
    gguf = pytest.importorskip("gguf")
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    tok = byte_level_tokenizer()
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    tokens += [f"[PAD{i}]" for i in range(len(tokens), VOCAB)]
    merges = json.loads(tok.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t.startswith("<|") else 1 for t in tokens])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    w.add_eos_token_id(vocab["<|im_end|>"])
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    sub = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
           "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
           "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied
        if name not in names:
            i, rest = name.split(".")[2], ".".join(name.split(".")[3:])
            mod, leaf = rest.rsplit(".", 1)
            names[name] = f"blk.{i}.{sub[mod]}.{leaf}"
        arr = t.numpy().astype(np.float32)
        if arr.ndim == 2 and "token_embd" not in names[name]:
            arr = arr.astype(np.float16)  # F16 weights, F32 norms/biases, as converters do
        w.add_tensor(names[name], arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_qwen2_gguf_matches_transformers_reader(tmp_path):
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    src = _make("qwen2", tie_word_embeddings=True)
    path = tmp_path / "tiny-qwen2.gguf"
    _write_qwen2_gguf(path, src)
    ours = load_model(path)
    assert ours.format == "gguf" and ours.config.attention_bias

    ref = transformers.Qwen2ForCausalLM(src.config).eval()
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=ref)["tensors"]
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    ref.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    x = torch.tensor([ours.tokenizer.encode("Hello world 你好世界")])
    with torch.no_grad():
        diff = (ours.model(x) - ref(x).logits).abs().max().item()
    assert diff <= 1e-4, diff
    with torch.no_grad():  # and F16 rounding aside, it is the model we wrote
        assert (ours.model(x) - src(x).logits).abs().max().item() < 0.05
