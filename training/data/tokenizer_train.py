"""Train the bilingual byte-level BPE tokenizer.

Special tokens sit at fixed ids so every checkpoint agrees on them:

====  =====================
id    token
====  =====================
0     ``<|endoftext|>`` (document boundary; also BOS and padding)
1     ``<|im_start|>``
2     ``<|im_end|>`` (EOS: ends an assistant turn)
3..   ``<|reserved_0|>`` ... ``<|reserved_{n-1}|>`` (kept free for later control tokens)
====  =====================

Byte-level BPE needs no unknown token and round-trips any UTF-8 text (Chinese included) exactly,
because no normaliser is applied.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from astrai_core.errors import ConfigError
from astrai_core.tokenizer import IM_END, IM_START, Tokenizer, TokenizerConfig
from training.data.text import iter_texts

ENDOFTEXT = "<|endoftext|>"


def special_tokens(num_reserved: int) -> list[str]:
    """The special tokens in id order: control, ChatML, then the reserved block."""
    return [ENDOFTEXT, IM_START, IM_END] + [f"<|reserved_{i}|>" for i in range(num_reserved)]


def train_tokenizer_from_iterator(
    texts: Iterable[str],
    vocab_size: int,
    num_reserved: int = 64,
    min_frequency: int = 2,
    show_progress: bool = False,
) -> Tokenizer:
    """Train byte-level BPE on ``texts`` and return it wrapped with the ChatML tokenizer config."""
    specials = special_tokens(num_reserved)
    min_vocab = len(specials) + 256  # every byte must be representable
    if vocab_size < min_vocab:
        raise ConfigError(f"vocab_size={vocab_size} is too small: need at least {min_vocab} "
                          f"(256 bytes + {len(specials)} special tokens)")
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    hf.train_from_iterator(texts, trainer)
    for i, tok in enumerate(specials):  # the trainer assigns specials first; check rather than assume
        assert hf.token_to_id(tok) == i, (tok, hf.token_to_id(tok))
    config = TokenizerConfig(bos_token=ENDOFTEXT, eos_token=IM_END, pad_token=ENDOFTEXT, unk_token=None,
                             chat_template="chatml", add_bos_token=False)
    return Tokenizer(hf, config)


def train_tokenizer(
    files: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    vocab_size: int,
    num_reserved: int = 64,
    min_frequency: int = 2,
    text_field: str = "text",
    show_progress: bool = True,
) -> Tokenizer:
    """Train on ``.txt`` / ``.jsonl`` files (streamed) and save ``tokenizer.json`` + ``tokenizer_config.json``."""
    paths = [Path(f) for f in files]
    if not paths:
        raise ConfigError("tokenizer training needs at least one input file")
    tok = train_tokenizer_from_iterator(_all_texts(paths, text_field), vocab_size, num_reserved,
                                        min_frequency, show_progress)
    tok.save(out_dir)
    return tok


def _all_texts(paths: list[Path], text_field: str) -> Iterator[str]:
    for p in paths:
        yield from iter_texts(p, text_field)
