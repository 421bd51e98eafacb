"""A Hugging Face ``transformers`` model with the same weights as one of ours: the oracle for
the equality tests and the baseline of ``benchmarks/bench_generate.py``. Needs the ``dev`` extra.
"""

from __future__ import annotations

import torch

from astrai_core.config import ModelConfig
from astrai_core.model import Transformer


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our (unfused) state_dict under HF Llama/Qwen3 key names."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("layers."):
            key = "model." + key.replace(".attention.", ".self_attn.").replace(".input_norm.", ".input_layernorm.") \
                .replace(".post_attention_norm.", ".post_attention_layernorm.")
        elif key.startswith(("embed_tokens.", "norm.")):
            key = "model." + key
        out[key] = value
    return out


def hf_model(model: Transformer, dtype: torch.dtype = torch.float32):
    """``LlamaForCausalLM`` (``Qwen3ForCausalLM`` when the config uses QK-norm) holding copies of
    ``model``'s weights, in eval mode, in ``dtype``."""
    import transformers

    c: ModelConfig = model.config
    rope = {"rope_type": "default", "rope_theta": c.rope_theta}
    if c.rope_scaling is not None:
        rope = {"rope_type": "linear", "factor": float(c.rope_scaling), "rope_theta": c.rope_theta}
    common = dict(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                  num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                  num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim,
                  max_position_embeddings=c.max_position_embeddings, rms_norm_eps=c.norm_eps,
                  tie_word_embeddings=c.tie_word_embeddings, attention_bias=c.attention_bias,
                  rope_parameters=rope, rope_theta=c.rope_theta, rope_scaling=None if c.rope_scaling is None else rope)
    if c.qk_norm:
        cls, cfg = transformers.Qwen3ForCausalLM, transformers.Qwen3Config(**common)
    else:
        cls, cfg = transformers.LlamaForCausalLM, transformers.LlamaConfig(mlp_bias=False, **common)
    with torch.device("meta"):
        hf = cls(cfg)
    state = {k: v.detach().to(dtype).clone() for k, v in hf_state_dict(model).items()}
    if c.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = hf.load_state_dict(state, strict=False, assign=True)
    if c.tie_word_embeddings:
        hf.tie_weights()
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping mismatch: missing {missing}, unexpected {unexpected}")
    # rotary inv_freq is a non-persistent buffer left on meta by the meta-device build: rebuild it
    rotary = hf.model.rotary_emb
    hf.model.rotary_emb = type(rotary)(cfg)
    return hf.eval()
