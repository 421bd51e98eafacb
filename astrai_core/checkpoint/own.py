"""The project's own model folder format (the published AstrAI layout).

NOTE: first cut (own folder format only). HF folders and GGUF are dispatched from ``load_model``
once their readers exist.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from astrai_core.config import ModelConfig
from astrai_core.errors import CheckpointError
from astrai_core.model import Transformer
from astrai_core.tokenizer import Tokenizer


@dataclass
class LoadedModel:
    """What every loader returns: the one model class, its tokenizer and where it came from."""

    model: Transformer
    tokenizer: Tokenizer
    config: ModelConfig
    path: Path
    format: str  # "astrai", "hf" or "gguf"


def load_model(path: str | os.PathLike[str], dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> LoadedModel:
    """Load any supported checkpoint; the format is detected from the path."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "config.json").is_file():
        return _load_own(path, dtype, device)
    raise CheckpointError(f"{path}: not a recognised model folder or file")


def _load_own(path: Path, dtype: torch.dtype, device) -> LoadedModel:
    config = ModelConfig.from_json(path / "config.json")
    st = path / "model.safetensors"
    if not st.is_file():
        raise CheckpointError(f"{st}: weights file not found")
    with torch.device("meta"):
        model = Transformer(config)
    state = {}
    with safe_open(str(st), framework="pt", device=str(device)) as f:
        for key in f.keys():
            state[key] = f.get_tensor(key).to(dtype)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    model.load_state_dict(state, strict=not config.tie_word_embeddings, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.eval()
    return LoadedModel(model, Tokenizer.from_dir(path), config, path, "astrai")


def save_model(model: Transformer, tokenizer: Tokenizer, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` and ``tokenizer`` as an AstrAI model folder, atomically (temp folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.to_json(tmp / "config.json")
        tokenizer.save(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
