"""``load_model``: the one entry point; detects the format and hands over to its reader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from astrai_core.checkpoint.common import LoadedModel, build_model
from astrai_core.checkpoint.gguf import GGUF_MAGIC, GGUFFile, gguf_config, gguf_tokenizer, iter_gguf_state
from astrai_core.checkpoint.hf import HF_MODEL_TYPES, hf_config, hf_key
from astrai_core.checkpoint.own import iter_folder_tensors
from astrai_core.config import ModelConfig
from astrai_core.errors import CheckpointError, ConfigError
from astrai_core.tokenizer import Tokenizer


def detect_format(path: Path) -> str:
    """``"gguf"``, ``"astrai"`` or ``"hf"`` for ``path``; anything else raises :class:`CheckpointError`."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_file():
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if magic == GGUF_MAGIC:
            return "gguf"
        if path.suffix.lower() == ".gguf":
            raise CheckpointError(f"{path}: not a GGUF file (bad magic bytes {magic!r})")
        raise CheckpointError(f"{path}: not a model file; expected a .gguf file or a model folder")
    cfg = path / "config.json"
    if not cfg.is_file():
        raise CheckpointError(f"{path}: not a model folder (config.json not found)")
    data = _read_json(cfg)
    model_type = data.get("model_type", "astrai")
    if model_type == "astrai":
        return "astrai"
    if model_type in HF_MODEL_TYPES:
        return "hf"
    raise CheckpointError(f"{cfg}: unsupported architecture model_type={model_type!r} "
                          f"(supported: astrai, {', '.join(HF_MODEL_TYPES)})")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_model(
    path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load an AstrAI folder, a Hugging Face Llama/Mistral/Qwen2 folder or a GGUF file.

    Weights are converted to ``dtype`` one tensor at a time. Every problem with the input raises
    :class:`CheckpointError` or :class:`ConfigError` naming the file; nothing half-loaded escapes.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "gguf":
        with GGUFFile(path) as gf:
            config = gguf_config(gf)
            tokenizer = gguf_tokenizer(gf)
            model = build_model(config, iter_gguf_state(gf, config), path, dtype, device)
        return LoadedModel(model, tokenizer, config, path, fmt)
    if fmt == "astrai":
        config = ModelConfig.from_json(path / "config.json")
        rename = lambda k: k  # noqa: E731 - our own names
    else:
        config = hf_config(_read_json(path / "config.json"), path / "config.json")
        rename = hf_key
    tokenizer = Tokenizer.from_dir(path)  # before the weights: a bad tokenizer fails fast
    model = build_model(config, iter_folder_tensors(path, dtype), path, dtype, device, rename)
    return LoadedModel(model, tokenizer, config, path, fmt)
