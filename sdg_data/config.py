"""Dataclass configs from YAML recipes: YAML gives values, CLI flags override, unknown keys fail.

Data stages use this small loader instead of trl's parser so that scoring or annotating never imports torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml


T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe or flag that does not fit its config dataclass."""


def _check(cls: type, name: str, value: Any, hint: Any, source: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{source}: {cls.__name__}.{name} must be one of {typing.get_args(hint)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _check(cls, name, value, args[0], source) if len(args) == 1 else value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {cls.__name__}.{name} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and value != int(value)):
            raise ConfigError(f"{source}: {cls.__name__}.{name} must be a {hint.__name__}, got {value!r}")
        return hint(value)
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{source}: {cls.__name__}.{name} must be a string, got {value!r}")
    return value


def load_config(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` from a YAML file (optional) and overrides (None values are ignored); validate every key."""
    data: dict[str, Any] = {}
    source = str(path) if path else "flags"
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{p}: no such config file")
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{p}: must be a mapping of {cls.__name__} fields")
        data.update(loaded)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    for key, value in (overrides or {}).items():
        if value is not None:
            if key not in names:
                raise ConfigError(f"flags: unknown option {key!r} for {cls.__name__}")
            data[key] = value
    checked = {
        k: _check(cls, k, v, hints[k], source if k in (overrides or {}) else str(path)) for k, v in data.items()
    }
    return cls(**checked)
