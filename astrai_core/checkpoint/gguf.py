"""GGUF files (``llama`` and ``qwen2`` architectures): metadata, dequantized weights, tokenizer.

The header is parsed here with ``struct`` (``gguf.GGUFReader`` builds one numpy view per array
element and takes seconds on a 49k-token vocabulary); tensor blocks are dequantized with
``gguf.quants.dequantize``, one tensor at a time, straight from a read-only memory map.

Layout facts handled at this boundary (checked against transformers' GGUF loader in the tests):

* llama.cpp's converter permutes the rows of ``attn_q``/``attn_k`` of **llama** models so that
  each head's rotary pairs are interleaved (GPT-J style). Our model rotates halves (HF/NEOX
  style), so those rows are permuted back on load.
* **qwen2** uses NEOX rotary in llama.cpp, so its q/k rows are stored unpermuted.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from astrai_core.config import ModelConfig
from astrai_core.errors import CheckpointError, ConfigError
from astrai_core.tokenizer import Tokenizer, TokenizerConfig

GGUF_MAGIC = b"GGUF"
SUPPORTED_ARCHS = ("llama", "qwen2")
# Tensor types we load (GGML type names as llama.cpp spells them); gguf.quants dequantizes each.
SUPPORTED_QUANTS = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")

# GGUF metadata value types -> struct format (scalars); 8 = string, 9 = array.
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
       7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # torch order (outermost first), i.e. GGUF dims reversed
    qtype: int
    offset: int  # absolute byte offset in the file
    nbytes: int


class _Cursor:
    """Bounds-checked little-endian reader over a buffer; running off the end is a CheckpointError."""

    def __init__(self, buf, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise CheckpointError(f"{self.path}: truncated GGUF header (needs byte {self.pos + n}, file has {len(self.buf)})")
        view = memoryview(self.buf)[self.pos:self.pos + n]
        self.pos += n
        return view

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = self.take(self.scalar("<Q"))
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{self.path}: corrupt GGUF header (string at byte {self.pos} is not UTF-8)") from None

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR:
            return self.scalar(_SCALAR[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, count = self.scalar("<I"), self.scalar("<Q")
            if etype in _NP:  # numeric arrays in one go
                width = np.dtype(_NP[etype]).itemsize
                return np.frombuffer(self.take(count * width), dtype=_NP[etype]).copy()
            if count * (8 if etype == 8 else 1) > len(self.buf) - self.pos:  # each string is >= 8 bytes
                raise CheckpointError(f"{self.path}: truncated or corrupt GGUF header (array of {count} items "
                                      f"at byte {self.pos} does not fit in the file)")
            return [self.value(etype) for _ in range(count)]
        raise CheckpointError(f"{self.path}: corrupt GGUF header (unknown value type {vtype} at byte {self.pos})")


class GGUFFile:
    """A parsed GGUF file: ``metadata`` (key -> value) and ``tensors`` (name -> :class:`GGUFTensor`).

    Use as a context manager; tensor data is read lazily from a memory map.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb")
        except FileNotFoundError:
            raise CheckpointError(f"{self.path}: no such file") from None
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot open ({exc.strerror})") from None
        try:
            if self._fh.read(4) != GGUF_MAGIC:
                raise CheckpointError(f"{self.path}: not a GGUF file (bad magic bytes)")
            self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
            self.metadata, self.tensors = self._parse()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        mm = getattr(self, "_mm", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a view is still alive (e.g. in a traceback); the GC unmaps it later
                pass
            self._mm = None
        self._fh.close()

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _parse(self) -> tuple[dict[str, Any], dict[str, GGUFTensor]]:
        import gguf  # imported here: only GGUF loading needs it

        cur = _Cursor(self._mm, self.path)
        cur.take(4)
        version = cur.scalar("<I")
        if version not in (2, 3):
            raise CheckpointError(f"{self.path}: unsupported GGUF version {version} (supported: 2, 3)")
        n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            meta[key] = cur.value(cur.scalar("<I"))
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.scalar("<I")
            if n_dims > 8:
                raise CheckpointError(f"{self.path}: corrupt GGUF tensor info for {name!r} ({n_dims} dimensions)")
            dims = [cur.scalar("<Q") for _ in range(n_dims)]
            infos.append((name, dims, cur.scalar("<I"), cur.scalar("<Q")))
        align = int(meta.get("general.alignment", 32))
        data_start = (cur.pos + align - 1) // align * align
        tensors = {}
        for name, dims, qtype, rel in infos:
            try:
                qname = gguf.GGMLQuantizationType(qtype).name
                block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
            except (ValueError, KeyError):
                raise CheckpointError(f"{self.path}: tensor {name!r} has unknown GGML type id {qtype}") from None
            if qname not in SUPPORTED_QUANTS:
                raise CheckpointError(
                    f"{self.path}: tensor {name!r} uses quantization type {qname}, which is not supported "
                    f"(supported: {', '.join(SUPPORTED_QUANTS)})")
            n = int(np.prod(dims)) if dims else 1
            if dims and dims[0] % block:
                raise CheckpointError(f"{self.path}: tensor {name!r} row length {dims[0]} is not a multiple of the {qname} block")
            nbytes = n // block * type_size
            offset = data_start + rel
            if offset + nbytes > len(self._mm):
                raise CheckpointError(
                    f"{self.path}: truncated GGUF file: tensor {name!r} needs bytes up to {offset + nbytes}, "
                    f"file has {len(self._mm)}")
            tensors[name] = GGUFTensor(name, tuple(reversed(dims)), qtype, offset, nbytes)
        return meta, tensors

    def dequantize(self, name: str) -> torch.Tensor:
        """The float32 tensor ``name`` in torch layout (outermost dimension first)."""
        import gguf

        t = self.tensors[name]
        raw = np.frombuffer(self._mm, dtype=np.uint8, count=t.nbytes, offset=t.offset)
        qtype = gguf.GGMLQuantizationType(t.qtype)
        if qtype == gguf.GGMLQuantizationType.F32:
            arr = raw.view(np.float32).copy()
        elif qtype == gguf.GGMLQuantizationType.F16:
            arr = raw.view(np.float16).astype(np.float32)
        else:
            arr = gguf.quants.dequantize(raw, qtype)
        return torch.from_numpy(np.ascontiguousarray(arr).reshape(t.shape))


# ---- config ------------------------------------------------------------------------------

def _int_field(meta: dict, key: str, path: Path, default: int | None = None) -> int:
    value = meta.get(key, default)
    if isinstance(value, np.ndarray):  # per-layer arrays: fine only if uniform
        if value.size and (value == value.flat[0]).all():
            value = int(value.flat[0])
        else:
            raise ConfigError(f"{path}: metadata {key} varies per layer ({value.tolist()[:8]}...), which is not supported")
    if value is None:
        raise ConfigError(f"{path}: GGUF metadata {key} is missing")
    return int(value)


def gguf_config(gf: GGUFFile) -> ModelConfig:
    """Translate GGUF metadata into a :class:`ModelConfig`; unsupported features raise."""
    meta, path = gf.metadata, gf.path
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise CheckpointError(f"{path}: unsupported GGUF architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHS)})")
    scaling_type = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling_type not in ("none", "linear"):
        raise CheckpointError(f"{path}: rope scaling {scaling_type!r} is not supported (only linear)")
    if "rope_freqs.weight" in gf.tensors:
        raise CheckpointError(f"{path}: per-frequency rope factors (rope_freqs.weight, Llama 3.1 style) are not supported")
    n_heads = _int_field(meta, f"{arch}.attention.head_count", path)
    hidden = _int_field(meta, f"{arch}.embedding_length", path)
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = meta.get(f"{arch}.vocab_size", len(tokens) if tokens is not None else None)
    if "token_embd.weight" in gf.tensors:  # the embedding is the ground truth for the vocabulary size
        vocab = gf.tensors["token_embd.weight"].shape[0]
    factor = meta.get(f"{arch}.rope.scaling.factor") if scaling_type == "linear" else None
    try:
        return ModelConfig(
            vocab_size=int(vocab) if vocab is not None else _int_field(meta, f"{arch}.vocab_size", path),
            hidden_size=hidden,
            num_layers=_int_field(meta, f"{arch}.block_count", path),
            num_heads=n_heads,
            num_kv_heads=_int_field(meta, f"{arch}.attention.head_count_kv", path, n_heads),
            head_dim=_int_field(meta, f"{arch}.attention.key_length", path, hidden // n_heads),
            intermediate_size=_int_field(meta, f"{arch}.feed_forward_length", path),
            max_position_embeddings=_int_field(meta, f"{arch}.context_length", path),
            rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
            rope_scaling=float(factor) if factor else None,
            norm_eps=float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
            qk_norm=False,
            attention_bias="blk.0.attn_q.bias" in gf.tensors,
            tie_word_embeddings="output.weight" not in gf.tensors,
        )
    except ConfigError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ConfigError(f"{path}: {exc}") from None


# ---- weights -----------------------------------------------------------------------------

_LAYER_MAP = {
    "attn_norm.weight": "input_norm.weight",
    "attn_q.weight": "attention.q_proj.weight",
    "attn_k.weight": "attention.k_proj.weight",
    "attn_v.weight": "attention.v_proj.weight",
    "attn_q.bias": "attention.q_proj.bias",
    "attn_k.bias": "attention.k_proj.bias",
    "attn_v.bias": "attention.v_proj.bias",
    "attn_output.weight": "attention.o_proj.weight",
    "ffn_norm.weight": "post_attention_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP_MAP = {"token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight", "output.weight": "lm_head.weight"}


def gguf_key(name: str) -> str | None:
    """Our parameter name for a GGUF tensor name (``None`` if unknown)."""
    if name in _TOP_MAP:
        return _TOP_MAP[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_MAP:
        return f"layers.{parts[1]}.{_LAYER_MAP[parts[2]]}"
    return None


def unpermute_rope(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (interleaved rotary pairs -> rotate-half halves).

    llama.cpp writes, per head, rows ``[0, d/2, 1, d/2+1, ...]``; we want ``[0..d/2) [d/2..d)``.
    Works for weights (rows, cols) and biases (rows,).
    """
    rows = w.shape[0]
    tail = w.shape[1:]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *tail).transpose(1, 2).reshape(rows, *tail)


def iter_gguf_state(gf: GGUFFile, config: ModelConfig, workers: int = 2) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(our_key, float32 tensor)`` for every GGUF tensor, q/k un-permuted for llama.

    numpy releases the GIL inside ``gguf.quants.dequantize``, so a small thread pool overlaps
    tensors; at most ``2 * workers`` dequantized tensors are in flight (bounded memory).
    """
    from concurrent.futures import ThreadPoolExecutor

    permuted = gf.metadata.get("general.architecture") == "llama"
    names = list(gf.tensors)
    for name in names:
        if gguf_key(name) is None:
            raise CheckpointError(f"{gf.path}: unexpected tensor {name!r} (not part of a llama/qwen2 model)")

    def convert(name: str) -> tuple[str, torch.Tensor]:
        key, t = gguf_key(name), gf.dequantize(name)
        if permuted and key.endswith(("q_proj.weight", "q_proj.bias")):
            t = unpermute_rope(t, config.num_heads)
        elif permuted and key.endswith(("k_proj.weight", "k_proj.bias")):
            t = unpermute_rope(t, config.num_kv_heads)
        return key, t

    window = 2 * workers
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(names), window):
            yield from pool.map(convert, names[start:start + window])


# ---- tokenizer ---------------------------------------------------------------------------

# Pre-tokenizer split patterns by ``tokenizer.ggml.pre`` (the regexes llama.cpp uses for them).
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_level_pretokenizer(pre: str):
    if pre == "smollm":  # digits one by one, then the GPT-2 split
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    split = {"llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT}.get(pre)
    if split is None:  # "gpt2", "default" and unknown names: the plain GPT-2 regex
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def _spm_merges(tokens: list[str], scores) -> list[tuple[str, str]]:
    """Merges implied by a SentencePiece BPE vocabulary: every split of a token into two vocabulary
    pieces, ranked by the merged token's score (higher merges first)."""
    vocab = set(tokens)
    ranked = []
    for tok, score in zip(tokens, scores):
        for i in range(1, len(tok)):
            left, right = tok[:i], tok[i:]
            if left in vocab and right in vocab:
                ranked.append((-float(score), tok, left, right))
    ranked.sort()
    return [(left, right) for _, _, left, right in ranked]


def gguf_tokenizer(gf: GGUFFile) -> Tokenizer:
    """Rebuild the model's tokenizer (vocab, merges, special tokens, chat template) from metadata."""
    meta, path = gf.metadata, gf.path
    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise CheckpointError(f"{path}: GGUF has no tokenizer (tokenizer.ggml.tokens missing)")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    types = meta.get("tokenizer.ggml.token_type")
    if kind == "gpt2":
        merges = [tuple(m.split(" ")) for m in meta.get("tokenizer.ggml.merges", [])]
        if any(len(m) != 2 for m in merges):
            raise CheckpointError(f"{path}: corrupt tokenizer.ggml.merges (an entry is not 'left right')")
        pre = meta.get("tokenizer.ggml.pre", "default")
        hf = HFTokenizer(models.BPE(vocab, merges, ignore_merges=pre in ("llama-bpe", "llama3")))
        hf.pre_tokenizer = _byte_level_pretokenizer(pre)
        hf.decoder = decoders.ByteLevel()
        default_bos = False
    elif kind == "llama":  # SentencePiece BPE with byte fallback (Llama 2, Mistral, TinyLlama ...)
        scores = meta.get("tokenizer.ggml.scores")
        if scores is None:
            raise CheckpointError(f"{path}: SentencePiece GGUF tokenizer has no tokenizer.ggml.scores")
        unk = meta.get("tokenizer.ggml.unknown_token_id")
        hf = HFTokenizer(models.BPE(vocab, _spm_merges(tokens, scores), byte_fallback=True, fuse_unk=True,
                                    unk_token=tokens[unk] if unk is not None else None))
        hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
        hf.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                        decoders.Fuse(), decoders.Strip(" ", 1, 0)])
        default_bos = True
    else:
        raise CheckpointError(f"{path}: unsupported GGUF tokenizer model {kind!r} (supported: gpt2, llama)")
    if types is not None:  # 3 = control (special), 4 = user-defined (matched whole, not special)
        special = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3]
        user = [AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == 4]
        hf.add_special_tokens(special)
        hf.add_tokens(user)

    def tok(key: str) -> str | None:
        idx = meta.get(f"tokenizer.ggml.{key}")
        return tokens[int(idx)] if idx is not None and 0 <= int(idx) < len(tokens) else None

    cfg = TokenizerConfig(
        bos_token=tok("bos_token_id"), eos_token=tok("eos_token_id"), pad_token=tok("padding_token_id"),
        unk_token=tok("unknown_token_id"), chat_template=meta.get("tokenizer.chat_template") or "chatml",
        add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", default_bos)),
    )
    return Tokenizer(hf, cfg)
