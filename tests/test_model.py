import json

import pytest
import torch

from astrai_core.config import ModelConfig, preset
from astrai_core.errors import ConfigError
from astrai_core.model import Transformer


def test_forward_shape_and_causality():
    torch.manual_seed(0)
    model = Transformer(preset("tiny"))
    model.init_weights(seed=0)
    x = torch.randint(0, 512, (2, 12))
    full = model(x)
    assert full.shape == (2, 12, 512)
    prefix = model(x[:, :5])
    torch.testing.assert_close(full[:, :5], prefix, atol=1e-5, rtol=1e-5)


def test_state_dict_uses_published_key_names():
    cfg = ModelConfig(**{**preset("tiny").to_dict(), "qk_norm": True})
    keys = set(Transformer(cfg).state_dict())
    for k in ("embed_tokens.weight", "layers.0.attention.q_proj.weight", "layers.1.attention.k_norm.weight",
              "layers.0.input_norm.weight", "layers.0.post_attention_norm.weight",
              "layers.0.mlp.gate_proj.weight", "norm.weight", "lm_head.weight"):
        assert k in keys


def test_param_count_matches_config():
    for tie in (False, True):
        cfg = ModelConfig(**{**preset("tiny").to_dict(), "tie_word_embeddings": tie, "attention_bias": True, "qk_norm": True})
        n = sum(p.numel() for p in Transformer(cfg).parameters())
        assert n == cfg.num_parameters()


def test_astrai_1b_preset_is_about_1b():
    cfg = preset("astrai-1b")
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size) == (1536, 24, 24, 4, 6912)
    assert not cfg.tie_word_embeddings
    assert 0.9e9 < cfg.num_parameters() < 1.2e9


def test_unknown_config_key_is_an_error(tmp_path):
    data = preset("tiny").to_dict()
    data["num_layer"] = 3  # misspelled
    p = tmp_path / "config.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="num_layer"):
        ModelConfig.from_json(p)


def test_bad_config_values_are_errors():
    with pytest.raises(ConfigError, match="num_kv_heads"):
        ModelConfig(hidden_size=64, num_heads=4, num_kv_heads=3)
    with pytest.raises(ConfigError, match="vocab_size"):
        ModelConfig(vocab_size=0)
