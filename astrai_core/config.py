"""Model configuration: one dataclass, strict JSON, named presets."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from astrai_core.errors import ConfigError


@dataclass
class ModelConfig:
    """Hyper-parameters of the decoder-only transformer in :mod:`astrai_core.model`.

    ``head_dim`` is derived from ``hidden_size // num_heads`` only when it is left unset.
    ``rope_scaling`` is a linear position-interpolation factor (``None`` = no scaling).
    """

    vocab_size: int = 32000
    hidden_size: int = 512
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int = 8
    head_dim: int | None = None
    intermediate_size: int = 1408
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    rope_scaling: float | None = None
    norm_eps: float = 1e-5
    qk_norm: bool = False
    attention_bias: bool = False
    tie_word_embeddings: bool = False
    model_type: str = "astrai"

    def __post_init__(self) -> None:
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ConfigError(
                    f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; set head_dim"
                )
            self.head_dim = self.hidden_size // self.num_heads
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first inconsistent field."""
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                     "intermediate_size", "max_position_embeddings", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if not (isinstance(self.rope_theta, (int, float)) and self.rope_theta > 0):
            raise ConfigError(f"rope_theta must be a positive number, got {self.rope_theta!r}")
        if self.rope_scaling is not None and not (
            isinstance(self.rope_scaling, (int, float)) and self.rope_scaling >= 1.0
        ):
            raise ConfigError(f"rope_scaling must be null or a factor >= 1, got {self.rope_scaling!r}")
        if not (isinstance(self.norm_eps, float) and 0 < self.norm_eps < 1):
            raise ConfigError(f"norm_eps must be a small positive float, got {self.norm_eps!r}")
        for name in ("qk_norm", "attention_bias", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "ModelConfig":
        """Build a config; unknown keys are an error naming the key and ``source``."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown config key(s) {unknown}; known keys are {sorted(known)}")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except TypeError as exc:  # e.g. a value of the wrong type reaching arithmetic
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> "ModelConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))

    def to_json(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def num_parameters(self) -> int:
        """Parameter count implied by the config (embedding and head counted once if tied)."""
        h, hd = self.hidden_size, self.head_dim
        attn = h * self.num_heads * hd + 2 * h * self.num_kv_heads * hd + self.num_heads * hd * h
        if self.attention_bias:
            attn += self.num_heads * hd + 2 * self.num_kv_heads * hd
        if self.qk_norm:
            attn += 2 * hd
        layer = attn + 3 * h * self.intermediate_size + 2 * h
        emb = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + emb + h


PRESETS: dict[str, ModelConfig] = {
    # The architecture of the published AstrAI 1B checkpoint.
    "astrai-1b": ModelConfig(
        vocab_size=32768, hidden_size=1536, num_layers=24, num_heads=24, num_kv_heads=4,
        intermediate_size=6912, max_position_embeddings=4096, rope_theta=1e6, norm_eps=1e-6,
        qk_norm=True, tie_word_embeddings=False,
    ),
    # A tiny model for tests: runs a forward pass in milliseconds.
    "tiny": ModelConfig(
        vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
        intermediate_size=160, max_position_embeddings=256, rope_theta=10000.0,
    ),
}


def preset(name: str) -> ModelConfig:
    """Return a fresh copy of a named preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
