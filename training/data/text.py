"""Streaming readers for raw corpora: ``.txt`` (one document per line) and ``.jsonl`` (one record
per line). Files are read line by line, so corpora larger than RAM work."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from astrai_core.errors import ConfigError


class DataError(ConfigError):
    """An input corpus file is missing or holds a malformed record (message names file and line)."""


def iter_records(path: str | os.PathLike[str]) -> Iterator[tuple[dict, int]]:
    """Yield ``(record, bytes_read_so_far)`` from a JSONL file; ``.txt`` lines become ``{"text": line}``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    is_jsonl = path.suffix in (".jsonl", ".json")
    read = 0
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            read += len(raw)
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 ({exc})") from None
            if not line.strip():
                continue
            if not is_jsonl:
                yield {"text": line}, read
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            yield rec, read


def iter_texts(path: str | os.PathLike[str], text_field: str = "text") -> Iterator[str]:
    """Yield the text of each document in ``path``."""
    for lineno, (rec, _) in enumerate(iter_records(path), 1):
        text = rec.get(text_field)
        if not isinstance(text, str):
            raise DataError(f"{path}: record {lineno} has no string field {text_field!r}")
        yield text
