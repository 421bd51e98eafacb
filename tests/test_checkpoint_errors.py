"""Bad input gets one clear package error naming the file, never a deep torch trace."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from astrai_core.checkpoint import load_model, save_model
from astrai_core.config import preset
from astrai_core.errors import CheckpointError, ConfigError
from astrai_core.model import Transformer
from astrai_core.tokenizer import Tokenizer


def _tokenizer() -> Tokenizer:
    vocab = {"<|im_start|>": 0, "<|im_end|>": 1, **{chr(c): c - 30 for c in range(32, 127)}}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token="?"))
    hf.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return Tokenizer(hf)


@pytest.fixture
def good(tmp_path):
    model = Transformer(preset("tiny"))
    model.init_weights(seed=0)
    return save_model(model, _tokenizer(), tmp_path / "good")


def _copy(good, tmp_path, name="bad"):
    return shutil.copytree(good, tmp_path / name)


def test_good_folder_loads_and_tied_flag(good):
    lm = load_model(good)
    assert lm.format == "astrai" and lm.config == preset("tiny")


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "nope")


def test_missing_weights(good, tmp_path):
    bad = _copy(good, tmp_path)
    (bad / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors.*not found"):
        load_model(bad)


def test_truncated_safetensors(good, tmp_path):
    bad = _copy(good, tmp_path)
    st = bad / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated"):
        load_model(bad)


def test_corrupt_safetensors_header(good, tmp_path):
    bad = _copy(good, tmp_path)
    st = bad / "model.safetensors"
    data = bytearray(st.read_bytes())
    data[8:20] = b"not json!!!!"
    st.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*corrupt"):
        load_model(bad)


def test_unknown_config_field(good, tmp_path):
    bad = _copy(good, tmp_path)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["num_layer"] = 3  # typo
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config\.json.*num_layer"):
        load_model(bad)


def test_wrong_config_value(good, tmp_path):
    bad = _copy(good, tmp_path)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["num_heads"] = "four"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config\.json.*num_heads"):
        load_model(bad)


def test_shape_mismatch(good, tmp_path):
    bad = _copy(good, tmp_path)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["intermediate_size"] = 128  # weights were written for 160
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"bad: weight .*mlp.*has shape \[\d+, \d+\], config implies \[\d+, \d+\]"):
        load_model(bad)


def test_missing_and_unexpected_weights(good, tmp_path):
    from astrai_core.checkpoint.common import read_safetensors

    bad = _copy(good, tmp_path)
    state = dict(read_safetensors(bad / "model.safetensors"))
    state.pop("norm.weight")
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing weight.*norm.weight"):
        load_model(bad)
    state["norm.weight"] = torch.ones(64)
    state["layers.9.mlp.up_proj.weight"] = torch.ones(2)
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected weight.*layers.9"):
        load_model(bad)


def test_unsupported_hf_architecture(tmp_path):
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(CheckpointError, match=r"config\.json.*unsupported architecture.*gpt_neox"):
        load_model(tmp_path / "gpt")


def test_hf_config_missing_field(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(ConfigError, match=r"config\.json.*required field .* missing"):
        load_model(tmp_path / "hf")


def test_not_a_gguf(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"NOPE" + b"\0" * 100)
    with pytest.raises(CheckpointError, match=r"model\.gguf.*not a GGUF"):
        load_model(f)


def test_truncated_gguf(smollm2_gguf, tmp_path):
    f = tmp_path / "cut.gguf"
    with open(smollm2_gguf, "rb") as src:
        f.write_bytes(src.read(40_000_000))  # header intact, tensor data cut short
    with pytest.raises(CheckpointError, match=r"cut\.gguf.*truncated"):
        load_model(f)
    f.write_bytes(f.read_bytes()[:5000])  # cut inside the metadata
    with pytest.raises(CheckpointError, match=r"cut\.gguf.*truncated"):
        load_model(f)


def _tiny_gguf(path, arch="llama", qtype=None):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_embedding_length(256)
    w.add_head_count(2)
    w.add_feed_forward_length(32)
    w.add_context_length(64)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b"])
    w.add_token_merges([])
    data = np.ones((2, 256), dtype=np.float32)
    if qtype is not None:
        data = gguf.quants.quantize(data, qtype)
    w.add_tensor("token_embd.weight", data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_unsupported_gguf_architecture(tmp_path):
    _tiny_gguf(tmp_path / "falcon.gguf", arch="falcon")
    with pytest.raises(CheckpointError, match=r"falcon\.gguf.*unsupported GGUF architecture 'falcon'"):
        load_model(tmp_path / "falcon.gguf")


def test_unsupported_gguf_quant_type(tmp_path):
    gguf = pytest.importorskip("gguf")
    _tiny_gguf(tmp_path / "iq.gguf", qtype=gguf.GGMLQuantizationType.TQ1_0) if hasattr(
        gguf.GGMLQuantizationType, "TQ1_0") else pytest.skip("gguf lacks TQ1_0")
    with pytest.raises(CheckpointError, match=r"iq\.gguf.*token_embd.weight.*TQ1_0.*not supported"):
        load_model(tmp_path / "iq.gguf")


def test_save_is_atomic_on_failure(good, tmp_path, monkeypatch):
    """A failing save leaves the existing folder untouched and no temp folder behind."""
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    lm = load_model(good)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("astrai_core.checkpoint.own.save_file", boom)
    with pytest.raises(OSError):
        save_model(lm.model, lm.tokenizer, good)
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert sorted(p.name for p in good.parent.iterdir()) == ["good"]


def test_gguf_missing_metadata(tmp_path):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    w = gguf.GGUFWriter(str(tmp_path / "nometa.gguf"), "llama")
    w.add_embedding_length(32)
    w.add_head_count(2)
    w.add_tensor("token_embd.weight", np.ones((2, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ConfigError, match=r"nometa\.gguf: GGUF metadata llama\.\w+ is missing"):
        load_model(tmp_path / "nometa.gguf")
