"""Tokenizer wrapper over Hugging Face ``tokenizers``: encode/decode, special tokens,
the ChatML chat template, and an incremental detokenizer for streaming.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import Tokenizer as HFTokenizer

from astrai_core.errors import TokenizerError

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
CHAT_ROLES = ("system", "user", "assistant")


@dataclass
class TokenizerConfig:
    """Contents of ``tokenizer_config.json``: special tokens and the chat template.

    ``chat_template`` keeps the model's own template (a Jinja string from a HF folder or GGUF) for
    reference; prompts are always rendered in ChatML by :meth:`Tokenizer.render_chat`, the format
    the AstrAI models (and SmolLM2, Qwen2) are trained on.
    """

    bos_token: str | None = None
    eos_token: str | None = IM_END
    pad_token: str | None = None
    unk_token: str | None = None
    chat_template: str = "chatml"
    add_bos_token: bool = False
    extra: dict = field(default_factory=dict)  # other keys are kept verbatim (HF folders carry many)

    @classmethod
    def from_dict(cls, data: dict) -> "TokenizerConfig":
        def tok(value):  # HF writes special tokens either as strings or as {"content": ...}
            if isinstance(value, dict):
                return value.get("content")
            return value

        known = {"bos_token", "eos_token", "pad_token", "unk_token", "chat_template", "add_bos_token"}
        return cls(
            bos_token=tok(data.get("bos_token")),
            eos_token=tok(data.get("eos_token", IM_END)),
            pad_token=tok(data.get("pad_token")),
            unk_token=tok(data.get("unk_token")),
            chat_template=data.get("chat_template") or "chatml",
            add_bos_token=bool(data.get("add_bos_token", False)),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_dict(self) -> dict:
        out = dict(self.extra)
        out.update(bos_token=self.bos_token, eos_token=self.eos_token, pad_token=self.pad_token,
                   unk_token=self.unk_token, chat_template=self.chat_template, add_bos_token=self.add_bos_token)
        return out


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus the special tokens and chat template a model needs."""

    def __init__(self, tokenizer: HFTokenizer, config: TokenizerConfig | None = None) -> None:
        self.tok = tokenizer
        self.config = config or TokenizerConfig()

    # ---- loading / saving ---------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: str | os.PathLike[str]) -> "Tokenizer":
        path = Path(path)
        tok_file = path / "tokenizer.json"
        if not tok_file.is_file():
            raise TokenizerError(f"{tok_file}: tokenizer file not found")
        try:
            hf = HFTokenizer.from_file(str(tok_file))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise TokenizerError(f"{tok_file}: cannot read tokenizer ({exc})") from None
        cfg_file = path / "tokenizer_config.json"
        cfg = TokenizerConfig()
        if cfg_file.is_file():
            try:
                cfg = TokenizerConfig.from_dict(json.loads(cfg_file.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise TokenizerError(f"{cfg_file}: not valid JSON ({exc})") from None
        return cls(hf, cfg)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(path / "tokenizer.json"))
        (path / "tokenizer_config.json").write_text(
            json.dumps(self.config.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    # ---- basic API ----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def _special_id(self, token: str | None) -> int | None:
        return None if token is None else self.tok.token_to_id(token)

    @property
    def bos_id(self) -> int | None:
        return self._special_id(self.config.bos_token)

    @property
    def eos_id(self) -> int | None:
        return self._special_id(self.config.eos_token)

    @property
    def pad_id(self) -> int | None:
        pid = self._special_id(self.config.pad_token)
        return pid if pid is not None else self.eos_id

    @property
    def stop_ids(self) -> set[int]:
        """Token ids that end an assistant turn: EOS, ``<|im_end|>`` and ``<|endoftext|>`` where present."""
        ids = {self.eos_id, self.tok.token_to_id(IM_END), self.tok.token_to_id(ENDOFTEXT)}
        return {i for i in ids if i is not None}

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Encode text; special-token strings inside ``text`` become their ids."""
        ids = self.tok.encode(text, add_special_tokens=False).ids
        if add_bos and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special)

    # ---- chat ---------------------------------------------------------------------------
    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """Render messages ``[{"role", "content"}, ...]`` in ChatML, ending with an open assistant turn.

        ChatML is used whatever ``config.chat_template`` says (see :class:`TokenizerConfig`); no
        default system prompt is injected. With ``add_generation_prompt=False`` the text ends after
        the last ``<|im_end|>\n``.
        """
        parts = []
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
                raise TokenizerError(f"message {i} must be a dict with 'role' and 'content', got {msg!r}")
            role, content = msg["role"], msg["content"]
            if role not in CHAT_ROLES:
                raise TokenizerError(f"message {i} has unknown role {role!r}; expected one of {CHAT_ROLES}")
            if not isinstance(content, str):
                raise TokenizerError(f"message {i} content must be a string, got {type(content).__name__}")
            parts.append(f"{IM_START}{role}\n{content}{IM_END}\n")
        if add_generation_prompt:
            parts.append(f"{IM_START}assistant\n")
        text = "".join(parts)
        if self.config.add_bos_token and self.config.bos_token:
            text = self.config.bos_token + text
        return text

    def encode_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> list[int]:
        return self.encode(self.render_chat(messages, add_generation_prompt))


class StreamDecoder:
    """Incremental detokenizer: feed token ids, get text deltas that never split a character.

    Byte-level BPE tokens can end in the middle of a UTF-8 sequence (a CJK character is three
    bytes, an emoji four); the pending tail decodes to U+FFFD and is held back until it completes.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self.ids: list[int] = []
        self.prefix_offset = 0  # start of the window re-decoded for context
        self.read_offset = 0  # tokens before this were already emitted

    def put(self, token_id: int) -> str:
        """Add one token; return the newly completed text (possibly empty)."""
        self.ids.append(token_id)
        dec = self.tokenizer.decode
        prefix = dec(self.ids[self.prefix_offset:self.read_offset], self.skip_special)
        full = dec(self.ids[self.prefix_offset:], self.skip_special)
        if full.endswith("\ufffd") or len(full) <= len(prefix):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return full[len(prefix):]

    def flush(self) -> str:
        """Emit whatever is still held back (at the end of generation)."""
        dec = self.tokenizer.decode
        prefix = dec(self.ids[self.prefix_offset:self.read_offset], self.skip_special)
        full = dec(self.ids[self.prefix_offset:], self.skip_special)
        self.prefix_offset = self.read_offset = len(self.ids)
        return full[len(prefix):] if len(full) > len(prefix) else ""


def iter_decode(tokenizer: Tokenizer, ids: Iterable[int]) -> Iterable[str]:
    """Stream-decode a sequence of ids (convenience for tests and the CLI)."""
    sd = StreamDecoder(tokenizer)
    for i in ids:
        piece = sd.put(i)
        if piece:
            yield piece
    tail = sd.flush()
    if tail:
        yield tail
