"""Corpus preparation: raw JSONL/TXT -> token store (see :mod:`training.data.store`).

Kinds and input records (one JSON object per line; ``.txt`` = one PT document per line):

- ``pt``  ``{"text": str}``. Documents are concatenated, each followed by ``<|endoftext|>``;
  ``tokens_offsets`` keeps the document boundaries.
- ``sft`` ``{"messages": [{"role", "content"}, ...]}`` in ChatML. ``loss_mask`` is 1 exactly on
  the assistant tokens: the reply and its closing ``<|im_end|>``, never the ``<|im_start|>assistant\\n``
  header, the newline after ``<|im_end|>``, or any system/user token.
- ``dpo`` / ``rm`` ``{"prompt": str | messages, "chosen": str, "rejected": str}``. The prompt is
  rendered as ChatML ending in an open assistant turn; each completion ends with ``<|im_end|>``.

Input is streamed line by line and written incrementally, with a progress line on stderr.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from astrai_core.tokenizer import CHAT_ROLES, IM_END, IM_START, Tokenizer
from training.data.store import StoreWriter, TokenStore, token_dtype
from training.data.text import DataError, iter_records
from training.data.tokenizer_train import ENDOFTEXT
from training.progress import Progress

KINDS = ("pt", "sft", "dpo", "rm")
PT_BATCH = 512


def encode_conversation(tokenizer: Tokenizer, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
    """ChatML token ids of a whole conversation and the loss mask (1 = assistant token)."""
    segments: list[tuple[str, int]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in CHAT_ROLES or not isinstance(msg.get("content"), str):
            raise DataError(f"message {i} must be {{'role': one of {CHAT_ROLES}, 'content': str}}, got {msg!r}")
        trained = int(msg["role"] == "assistant")
        segments += [(f"{IM_START}{msg['role']}\n", 0), (msg["content"] + IM_END, trained), ("\n", 0)]
    return _encode_segments(tokenizer, segments)


def encode_prompt(tokenizer: Tokenizer, prompt: str | Sequence[dict]) -> list[int]:
    """A DPO/RM prompt: a string is one user turn; either way it ends with an open assistant turn."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    ids, _ = encode_conversation(tokenizer, messages)
    return ids + tokenizer.encode(f"{IM_START}assistant\n")


def encode_completion(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text + IM_END)


def _encode_segments(tokenizer: Tokenizer, segments: list[tuple[str, int]]) -> tuple[list[int], list[int]]:
    # Encoding per segment fixes the mask boundaries exactly; ChatML's special tokens and newlines
    # are pre-tokenizer boundaries anyway, so this matches encoding the rendered string.
    encs = tokenizer.tok.encode_batch([s for s, _ in segments], add_special_tokens=False)
    ids: list[int] = []
    mask: list[int] = []
    for enc, (_, m) in zip(encs, segments):
        ids += enc.ids
        mask += [m] * len(enc.ids)
    return ids, mask


def prepare(kind: str, inputs: Iterable[str | os.PathLike[str]], tokenizer: Tokenizer,
            out_dir: str | os.PathLike[str], text_field: str = "text", show_progress: bool = True) -> TokenStore:
    """Tokenize ``inputs`` into a token store of ``kind`` at ``out_dir`` and return it."""
    if kind not in KINDS:
        raise DataError(f"unknown data kind {kind!r}; expected one of {KINDS}")
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: input file not found")
    total = sum(p.stat().st_size for p in paths)
    dt = token_dtype(tokenizer.vocab_size)
    progress = Progress(total, f"prepare {kind}", enabled=show_progress)
    writer = StoreWriter(out_dir, kind)
    n_records = n_tokens = n_trained = 0
    done_bytes = 0
    with writer:
        if kind == "pt":
            writer.add_ragged("tokens", dt)
        elif kind == "sft":
            writer.add_ragged("tokens", dt)
            writer.add_field("loss_mask", np.uint8)
        else:
            for name in ("prompt", "chosen", "rejected"):
                writer.add_ragged(name, dt)
        eot = [] if tokenizer.token_to_id(ENDOFTEXT) is None else [tokenizer.token_to_id(ENDOFTEXT)]
        pending: list[str] = []  # PT documents are encoded in batches (the Rust tokenizer runs them in parallel)

        def flush_pt() -> int:
            count = 0
            for enc in tokenizer.tok.encode_batch(pending, add_special_tokens=False):
                writer.append_seq("tokens", enc.ids + eot)
                count += len(enc.ids) + len(eot)
            pending.clear()
            return count
        for p in paths:
            for lineno, (rec, read) in enumerate(iter_records(p), 1):
                where = f"{p}: record {lineno}"
                if kind == "pt":
                    text = rec.get(text_field)
                    if not isinstance(text, str):
                        raise DataError(f"{where}: no string field {text_field!r}")
                    pending.append(text)
                    if len(pending) >= PT_BATCH:
                        n_tokens += flush_pt()
                elif kind == "sft":
                    msgs = rec.get("messages")
                    if isinstance(rec.get("text"), str) and msgs is None:
                        # Replay: plain text trained on every token, so fine-tuning keeps the
                        # language model it started from (see docs/training.md).
                        ids = tokenizer.tok.encode(rec["text"], add_special_tokens=False).ids + eot
                        mask = [1] * len(ids)
                    elif not isinstance(msgs, list) or not msgs:
                        raise DataError(f"{where}: expected a non-empty 'messages' list (or a 'text' string)")
                    else:
                        try:
                            ids, mask = encode_conversation(tokenizer, msgs)
                        except DataError as exc:
                            raise DataError(f"{where}: {exc}") from None
                    writer.append_seq("tokens", ids)
                    writer.append("loss_mask", mask)
                    n_tokens += len(ids)
                    n_trained += sum(mask)
                else:
                    for key in ("chosen", "rejected"):
                        if not isinstance(rec.get(key), str):
                            raise DataError(f"{where}: expected a string field {key!r}")
                    prompt = rec.get("prompt")
                    if not isinstance(prompt, (str, list)):
                        raise DataError(f"{where}: 'prompt' must be a string or a messages list")
                    try:
                        p_ids = encode_prompt(tokenizer, prompt)
                    except DataError as exc:
                        raise DataError(f"{where}: {exc}") from None
                    writer.append_seq("prompt", p_ids)
                    c_ids = encode_completion(tokenizer, rec["chosen"])
                    r_ids = encode_completion(tokenizer, rec["rejected"])
                    writer.append_seq("chosen", c_ids)
                    writer.append_seq("rejected", r_ids)
                    n_tokens += len(p_ids) + len(c_ids) + len(r_ids)
                n_records += 1
                progress.update(done_bytes + read, records=n_records, tokens=n_tokens)
            if pending:
                n_tokens += flush_pt()
            done_bytes += p.stat().st_size
        if n_records == 0:
            raise DataError(f"no records found in {[str(p) for p in paths]}")
        meta = {"records": n_records, "tokens": n_tokens, "vocab_size": tokenizer.vocab_size,
                "sources": [str(p) for p in paths]}
        if kind == "sft":
            meta["trained_tokens"] = n_trained
        writer.close(meta)
    progress.close(done_bytes, records=n_records, tokens=n_tokens)
    return TokenStore(out_dir)
