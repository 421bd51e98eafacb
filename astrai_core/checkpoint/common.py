"""Pieces every checkpoint reader shares: the result type, a streaming safetensors reader, and
building the one model class from ``(key, tensor)`` pairs on the meta device.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch.overrides import TorchFunctionMode

from astrai_core.config import ModelConfig
from astrai_core.errors import CheckpointError
from astrai_core.model import Transformer
from astrai_core.tokenizer import Tokenizer

_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


class _SkipInit(TorchFunctionMode):
    """Make in-place random/constant initialisers no-ops while a model is built on ``meta``.

    Meta tensors hold no data, yet ``normal_`` on them is routed through ``torch._refs``, whose
    first use imports ``torch._dynamo`` (seconds of start-up for nothing).
    """

    _INITS = frozenset({"normal_", "uniform_", "fill_", "zero_", "trunc_normal_", "kaiming_uniform_"})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self._INITS:
            return args[0] if args else (kwargs or {}).get("tensor")
        return func(*args, **(kwargs or {}))


def meta_model(config: ModelConfig) -> Transformer:
    """The model's module tree on the meta device: shapes only, no memory, no initialisation."""
    with torch.device("meta"), _SkipInit():
        return Transformer(config)


@dataclass
class LoadedModel:
    """What every loader returns: the one model class, its tokenizer and where it came from."""

    model: Transformer
    tokenizer: Tokenizer
    config: ModelConfig
    path: Path
    format: str  # "astrai", "hf" or "gguf"


def read_safetensors(path: Path, out_dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` from a ``.safetensors`` file, one freshly read tensor at a time.

    Tensors are read with ``readinto`` into their own buffers rather than through a memory map,
    so the process holds each weight once (mapped file pages would count in RSS next to the copy).
    With ``out_dtype`` set, a tensor stored in another dtype is read into one reused scratch buffer
    and converted into its final buffer, so conversion leaves no freed temporaries behind
    (those fragment the heap and raise peak RSS). Every header inconsistency raises
    :class:`CheckpointError` naming the file.
    """
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: weights file not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot open ({exc.strerror})") from None
    with fh:
        size = path.stat().st_size
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (hlen,) = struct.unpack("<Q", head)
        if hlen > size - 8 or hlen > 100_000_000:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors header (declares {hlen} header bytes, file has {size})")
        try:
            header = json.loads(fh.read(hlen))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
        header.pop("__metadata__", None)
        base = 8 + hlen
        scratch = torch.empty(0, dtype=torch.uint8)
        for name, info in header.items():
            if not isinstance(info, dict) or info.get("dtype") not in _ST_DTYPES:
                what = info.get("dtype") if isinstance(info, dict) else info
                raise CheckpointError(f"{path}: tensor {name!r} has unsupported or missing dtype {what!r}")
            try:
                file_dtype = _ST_DTYPES[info["dtype"]]
                shape = [int(d) for d in info["shape"]]
                begin, end = (int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{path}: corrupt safetensors header entry for {name!r}") from None
            numel = 1
            for d in shape:
                numel *= d
            nbytes = numel * file_dtype.itemsize
            if end - begin != nbytes or begin < 0:
                raise CheckpointError(f"{path}: tensor {name!r} declares {end - begin} bytes but shape {shape} needs {nbytes}")
            if base + end > size:
                raise CheckpointError(f"{path}: truncated safetensors file: tensor {name!r} ends at byte {base + end}, file has {size}")
            convert = out_dtype is not None and out_dtype != file_dtype
            if convert:
                if scratch.numel() < nbytes:
                    scratch = torch.empty(nbytes, dtype=torch.uint8)
                raw = scratch[:nbytes]
            else:
                tensor = torch.empty(shape, dtype=file_dtype)
                raw = tensor.view(-1).view(torch.uint8)
            fh.seek(base + begin)
            if nbytes and fh.readinto(memoryview(raw.numpy())) != nbytes:
                raise CheckpointError(f"{path}: short read for tensor {name!r}")
            if convert:
                tensor = torch.empty(shape, dtype=out_dtype)
                tensor.copy_(raw.view(file_dtype).view(shape))
            yield name, tensor


def build_model(
    config: ModelConfig,
    tensors: Iterable[tuple[str, torch.Tensor]],
    source: Path | str,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    rename: Callable[[str], str | None] = lambda k: k,
) -> Transformer:
    """Build :class:`Transformer` on the meta device and fill it from ``tensors``.

    Each tensor is renamed (``None`` = ignore), checked against the expected shape and converted
    to ``dtype``/``device`` as it arrives, so at most one extra tensor exists at a time. Missing,
    unexpected or misshapen weights raise :class:`CheckpointError` naming ``source``; no partially
    loaded model is ever returned.
    """
    model = meta_model(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
    state: dict[str, torch.Tensor] = {}
    for name, tensor in tensors:
        key = rename(name)
        if key is None:
            continue
        if key not in expected:
            raise CheckpointError(f"{source}: unexpected weight {name!r} (not part of this model)")
        if tuple(tensor.shape) != expected[key]:
            raise CheckpointError(
                f"{source}: weight {name!r} has shape {list(tensor.shape)}, config implies {list(expected[key])}")
        state[key] = tensor.to(device=device, dtype=dtype)
        del tensor
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # one shared matrix; the embedding is authoritative
        if "embed_tokens.weight" in state:
            state["lm_head.weight"] = state["embed_tokens.weight"]
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"{source}: missing weight(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    return model.eval()


def swap_in_dir(tmp: Path, final: Path) -> None:
    """Atomically put the fully written folder ``tmp`` at ``final``, replacing any folder there.

    A reader sees either the old folder or the new one: the old one is renamed aside first, the new
    one renamed into place, then the old one deleted. Both must be on the same filesystem.
    """
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
