"""Job configs: YAML file + command-line overrides -> a validated dataclass.

Unknown keys are errors (they are almost always typos); values are coerced to the field's type so
``lr: 1e-3`` (a string to PyYAML) and ``--lr 1e-3`` both become floats.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from astrai_core.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(value: Any, hint: Any, name: str) -> Any:
    """Convert ``value`` to ``hint`` (int, float, bool, str, dict, list[str] and ``X | None``)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            return None
        return coerce(value, args[0], name)
    if origin is list:
        (item,) = typing.get_args(hint) or (str,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return [coerce(v, item, name) for v in value]
    if hint is dict or origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            number = float(value) if hint is float else _to_int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected {hint.__name__}, got {value!r}") from None
        return number
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return str(value)
    return value


def _to_int(value: Any) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)


def build_config(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Instantiate dataclass ``cls`` from ``data``; unknown keys and bad values raise :class:`ConfigError`."""
    hints = field_types(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; known keys are {sorted(hints)}")
    values = {k: coerce(v, hints[k], f"{source}: {k}") for k, v in data.items()}
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               and f.name not in values]
    if missing:
        raise ConfigError(f"{source}: missing required key(s) {missing}")
    cfg = cls(**values)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False, allow_unicode=True)
