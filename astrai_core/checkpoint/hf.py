"""Hugging Face folders of the Llama family (``llama``, ``mistral``, ``qwen2``): config and key mapping."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from astrai_core.config import ModelConfig
from astrai_core.errors import CheckpointError, ConfigError

HF_MODEL_TYPES = ("llama", "mistral", "qwen2")

_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_LAYER_MAP = {
    "input_layernorm.weight": "input_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "self_attn.q_proj.weight": "attention.q_proj.weight",
    "self_attn.k_proj.weight": "attention.k_proj.weight",
    "self_attn.v_proj.weight": "attention.v_proj.weight",
    "self_attn.o_proj.weight": "attention.o_proj.weight",
    "self_attn.q_proj.bias": "attention.q_proj.bias",
    "self_attn.k_proj.bias": "attention.k_proj.bias",
    "self_attn.v_proj.bias": "attention.v_proj.bias",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}
_TOP_MAP = {"model.embed_tokens.weight": "embed_tokens.weight", "model.norm.weight": "norm.weight",
            "lm_head.weight": "lm_head.weight"}


def hf_key(name: str) -> str | None:
    """Our parameter name for a Hugging Face Llama/Mistral/Qwen2 weight name.

    Returns ``None`` for non-weights HF sometimes saves (``rotary_emb.inv_freq``); any other
    unknown name is returned unchanged so the model builder reports it as unexpected.
    """
    if name in _TOP_MAP:
        return _TOP_MAP[name]
    if name.endswith("rotary_emb.inv_freq"):
        return None
    m = _LAYER_RE.match(name)
    if m and m.group(2) in _LAYER_MAP:
        return f"layers.{m.group(1)}.{_LAYER_MAP[m.group(2)]}"
    return name


def _rope(data: dict[str, Any], source: str) -> tuple[float, float | None]:
    """(rope_theta, linear scaling factor) from either the v4 or the v5 transformers spelling."""
    params = data.get("rope_parameters") or {}
    scaling = data.get("rope_scaling") or {}
    theta = params.get("rope_theta", data.get("rope_theta", 10000.0))
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind == "default":
        return float(theta), None
    if kind == "linear":
        return float(theta), float(params.get("factor", scaling.get("factor")))
    raise ConfigError(f"{source}: rope scaling type {kind!r} is not supported (only default and linear)")


def hf_config(data: dict[str, Any], source: str | Path) -> ModelConfig:
    """Translate a Hugging Face ``config.json`` dict into a :class:`ModelConfig`."""
    source = str(source)
    model_type = data.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise CheckpointError(f"{source}: unsupported architecture model_type={model_type!r} "
                              f"(supported: {', '.join(HF_MODEL_TYPES)})")
    if data.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{source}: hidden_act={data['hidden_act']!r} is not supported (only silu)")
    if data.get("mlp_bias"):
        raise ConfigError(f"{source}: mlp_bias=true is not supported")
    if model_type == "llama" and data.get("attention_bias"):
        raise ConfigError(f"{source}: attention_bias=true (bias on o_proj too) is not supported for llama")
    try:
        n_heads = data["num_attention_heads"]
        max_pos = data.get("max_position_embeddings", 2048)
        window = data.get("sliding_window")
        windowed = window is not None and (model_type == "mistral" or data.get("use_sliding_window"))
        if windowed and isinstance(window, int) and window < max_pos:
            max_pos = window  # we attend over the full context; beyond the window results would differ
        theta, factor = _rope(data, source)
        return ModelConfig(
            vocab_size=data["vocab_size"],
            hidden_size=data["hidden_size"],
            num_layers=data["num_hidden_layers"],
            num_heads=n_heads,
            num_kv_heads=data.get("num_key_value_heads") or n_heads,
            head_dim=data.get("head_dim"),
            intermediate_size=data["intermediate_size"],
            max_position_embeddings=max_pos,
            rope_theta=theta,
            rope_scaling=factor,
            norm_eps=float(data.get("rms_norm_eps", 1e-6)),
            qk_norm=False,
            attention_bias=model_type == "qwen2",
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            model_type="astrai",
        )
    except KeyError as exc:
        raise ConfigError(f"{source}: required field {exc.args[0]!r} is missing") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: invalid value ({exc})") from None
