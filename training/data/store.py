"""The memory-mapped token store: one raw ``<field>.bin`` per field plus ``header.json``.

``header.json``::

    {"format": "astrai-token-store", "version": 1, "kind": "pt" | "sft" | "dpo" | "rm",
     "fields": {"tokens": {"dtype": "uint16", "shape": [123456]}, ...},
     "meta": {...}}

Variable-length sequences ("ragged" fields) are stored as a flat ``<name>.bin`` and a
``<name>_offsets.bin`` (int64, ``n + 1`` entries starting at 0): sequence ``i`` is
``name[offsets[i]:offsets[i+1]]``. Token arrays use uint16 when the vocabulary fits, else uint32.

A store is written into a temporary sibling folder and renamed into place when complete, so a
crashed preparation never leaves a store that looks valid.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from training.data.text import DataError

FORMAT = "astrai-token-store"


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every token id."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


class StoreWriter:
    """Append-only writer; use as a context manager. Nothing is visible at ``path`` until ``close``."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        self.path = Path(path)
        self.kind = kind
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        self.dtypes: dict[str, np.dtype] = {}
        self.counts: dict[str, int] = {}
        self.files: dict[str, BinaryIO] = {}
        self.closed = False

    def add_field(self, name: str, dtype: np.dtype | str) -> None:
        """Declare a flat field ``<name>.bin``."""
        self.dtypes[name] = np.dtype(dtype)
        self.counts[name] = 0
        self.files[name] = open(self.tmp / f"{name}.bin", "wb")

    def append(self, name: str, values: np.ndarray | list[int]) -> None:
        arr = np.asarray(values, dtype=self.dtypes[name])
        self.files[name].write(arr.tobytes())
        self.counts[name] += arr.size

    def add_ragged(self, name: str, dtype: np.dtype | str) -> None:
        """Declare a ragged field: ``<name>.bin`` + ``<name>_offsets.bin``."""
        self.add_field(name, dtype)
        self.add_field(f"{name}_offsets", np.int64)
        self.append(f"{name}_offsets", [0])

    def append_seq(self, name: str, values: np.ndarray | list[int]) -> None:
        """Append one sequence to a ragged field."""
        self.append(name, values)
        self.append(f"{name}_offsets", [self.counts[name]])

    def close(self, meta: dict | None = None) -> Path:
        for fh in self.files.values():
            fh.close()
        header = {
            "format": FORMAT, "version": 1, "kind": self.kind,
            "fields": {n: {"dtype": self.dtypes[n].name, "shape": [self.counts[n]]} for n in self.dtypes},
            "meta": meta or {},
        }
        (self.tmp / "header.json").write_text(json.dumps(header, indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        self.closed = True
        return self.path

    def abort(self) -> None:
        for fh in self.files.values():
            fh.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.closed:
            self.close()


class TokenStore:
    """Read-only view of a store; arrays are ``np.memmap`` so nothing is loaded eagerly."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        hfile = self.path / "header.json"
        if not hfile.is_file():
            raise DataError(f"{self.path}: not a token store (header.json missing); run `astrai-train prepare`")
        try:
            header = json.loads(hfile.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{hfile}: not valid JSON ({exc})") from None
        if header.get("format") != FORMAT:
            raise DataError(f"{hfile}: format is {header.get('format')!r}, expected {FORMAT!r}")
        self.kind: str = header["kind"]
        self.meta: dict = header.get("meta", {})
        self.fields: dict[str, np.ndarray] = {}
        for name, spec in header["fields"].items():
            f = self.path / f"{name}.bin"
            shape = tuple(spec["shape"])
            dtype = np.dtype(spec["dtype"])
            if not f.is_file() or f.stat().st_size != int(np.prod(shape)) * dtype.itemsize:
                raise DataError(f"{f}: missing or truncated (expected shape {list(shape)} of {dtype.name})")
            # A zero-length memmap is an error in numpy; an empty array behaves the same for readers.
            self.fields[name] = (np.memmap(f, dtype=dtype, mode="r", shape=shape) if np.prod(shape)
                                 else np.zeros(shape, dtype=dtype))

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.fields:
            raise DataError(f"{self.path}: store of kind {self.kind!r} has no field {name!r}")
        return self.fields[name]

    def num_seqs(self, name: str) -> int:
        return len(self[f"{name}_offsets"]) - 1

    def seq(self, name: str, i: int) -> np.ndarray:
        off = self[f"{name}_offsets"]
        return self[name][off[i]:off[i + 1]]

    def require_kind(self, *kinds: str) -> "TokenStore":
        if self.kind not in kinds:
            raise DataError(f"{self.path}: store holds {self.kind!r} data, this stage needs {' or '.join(kinds)!r}")
        return self
