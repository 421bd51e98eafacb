"""The app's user settings: one validated dataclass, stored as key/value rows in the app database.

Validation runs on the GUI thread before anything is handed to a worker (Vorta's prepare/run split);
workers receive a finished :class:`AppSettings`, never a dict.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from astrai_core.errors import ConfigError

DTYPES = ("auto", "float32", "bfloat16")
QUANTIZE = ("none", "int8", "int4")
LANGUAGES = ("system", "en", "zh_CN")
THEMES = ("system", "light", "dark")

DEFAULT_SYSTEM_PROMPT = (
    "You are AstrAI, a helpful offline assistant. Answer in the language of the question. "
    "When passages from the user's documents are given, answer from them and cite them as [n]."
)


@dataclass
class AppSettings:
    """Everything the settings dialog edits. ``model_path`` and ``embedder`` empty = the shipped ones."""

    model_path: str = ""
    dtype: str = "auto"
    quantize: str = "none"
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 512
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    num_sources: int = 4
    embedder: str = ""
    language: str = "system"
    theme: str = "system"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid setting and its value."""
        _choice("dtype", self.dtype, DTYPES)
        _choice("quantize", self.quantize, QUANTIZE)
        _choice("language", self.language, LANGUAGES)
        _choice("theme", self.theme, THEMES)
        _number("temperature", self.temperature, 0.0, 2.0)
        _number("top_p", self.top_p, 0.0, 1.0, low_open=True)
        _integer("max_new_tokens", self.max_new_tokens, 1, 8192)
        _integer("num_sources", self.num_sources, 1, 20)
        for name in ("model_path", "embedder", "system_prompt"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"setting {name} must be text, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AppSettings":
        """Build from stored values; unknown keys (from other app versions) are ignored, bad values raise."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> "AppSettings":
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"setting {name} must be one of {', '.join(choices)}; got {value!r}")


def _number(name: str, value: Any, low: float, high: float, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        raise ConfigError(f"setting {name} must be a number in {'(' if low_open else '['}{low}, {high}]; got {value!r}")


def _integer(name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"setting {name} must be a whole number in [{low}, {high}]; got {value!r}")
