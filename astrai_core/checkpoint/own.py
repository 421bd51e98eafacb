"""The project's own model folder format (the published AstrAI layout), and saving.

A folder holds ``config.json`` (:class:`ModelConfig`, strict keys), ``model.safetensors`` or
shards listed in ``model.safetensors.index.json``, ``tokenizer.json`` and ``tokenizer_config.json``.
Hugging Face folders share the safetensors/index layout, so :func:`safetensors_files` serves both.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import save_file

from astrai_core.checkpoint.common import read_safetensors, swap_in_dir
from astrai_core.errors import CheckpointError
from astrai_core.model import Transformer
from astrai_core.tokenizer import Tokenizer

INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "model.safetensors"


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a folder: ``model.safetensors`` or the shards its index names."""
    single, index = folder / WEIGHTS_NAME, folder / INDEX_NAME
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index}: corrupt safetensors index ({exc!r})") from None
        files = [folder / name for name in shards]
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{f}: shard listed in {index.name} is missing")
        return files
    if any(folder.glob("*.bin")) or (folder / "pytorch_model.bin").exists():
        raise CheckpointError(f"{folder}: only .safetensors weights are supported (found PyTorch .bin files)")
    raise CheckpointError(f"{folder}: weights file {WEIGHTS_NAME} (or {INDEX_NAME}) not found")


def iter_folder_tensors(folder: Path, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of every weight file in the folder, one at a time (converted to ``dtype`` if set)."""
    for f in safetensors_files(folder):
        yield from read_safetensors(f, dtype)


def save_model(model: Transformer, tokenizer: Tokenizer, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` and ``tokenizer`` as an AstrAI model folder, atomically (temp folder + rename).

    An existing folder at ``path`` is replaced only after the new one is completely written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        model.config.to_json(tmp / "config.json")
        tokenizer.save(tmp)
        swap_in_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
