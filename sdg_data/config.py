"""Dataclass configs from YAML recipes: YAML gives values, CLI flags override, unknown keys fail.

Data stages use this small loader instead of trl's parser so that scoring or annotating never imports torch.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml


T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe or flag that does not fit its config dataclass."""


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The range a numeric setting must lie in, attached to its type (``Annotated[int, Bounds(ge=1)]``), so that
    ``--limit -1`` or ``ema_decay: 2`` is a one-line error instead of a run that does something else."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def why_not(self, value: float) -> str | None:
        """None when ``value`` is in range, else what it must be."""
        tests = ((self.ge, ">=", value >= (self.ge or 0)), (self.gt, ">", value > (self.gt or 0)))
        tests += ((self.le, "<=", value <= (self.le or 0)), (self.lt, "<", value < (self.lt or 0)))
        wanted = [f"{op} {bound:g}" for bound, op, ok in tests if bound is not None and not ok]
        return " and ".join(wanted) or None


# The ranges settings use; a numeric field without one is only checked to be finite.
Count = Annotated[int, Bounds(ge=0)]  # retries, seeds to skip: zero is a real choice
Positive = Annotated[int, Bounds(ge=1)]  # sizes, limits, steps, workers in flight
PositiveFloat = Annotated[float, Bounds(gt=0)]  # rates, epsilons, clip ranges
Seconds = PositiveFloat  # timeouts
NonNegative = Annotated[float, Bounds(ge=0)]  # prices, weights, scales
Fraction = Annotated[float, Bounds(ge=0, le=1)]  # shares, thresholds
Decay = Annotated[float, Bounds(ge=0, lt=1)]  # EMA decays, Adam betas (1 would freeze the average)
Importance = Annotated[int, Bounds(ge=1, le=100)]  # the answer schema's importance scale
Draws = Annotated[int, Bounds(ge=0, le=100_000)]  # bootstrap draws: each costs a pass over the images
BoxLimit = Annotated[int, Bounds(ge=1, le=1000)]  # boxes per image a scorer takes (1,000: a record's own limit)


def _bounds(hint: Any) -> tuple[Any, list[Bounds]]:
    """A type hint without its Annotated layer (also inside ``X | None``), and the Bounds it carried."""
    if typing.get_origin(hint) is Annotated:
        base, *extra = typing.get_args(hint)
        return base, [e for e in extra if isinstance(e, Bounds)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        parts = [_bounds(a) for a in typing.get_args(hint)]
        return typing.Union[tuple(p[0] for p in parts)], [b for p in parts for b in p[1]]  # noqa: UP007
    return hint, []


def check_value(where: str, value: Any, bounds: list[Bounds]) -> None:
    """Raise ConfigError when a number is not finite or is outside the given Bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value}")
    for b in bounds:
        if (why := b.why_not(value)) is not None:
            raise ConfigError(f"{where} must be {why}, got {value:g}")


def check_bounds(obj: Any) -> None:
    """Check every numeric field of a config dataclass instance (for configs that trl's parser builds: call it
    from ``__post_init__``; :func:`load_config` checks its own)."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        for i, v in enumerate(value if isinstance(value, list) else [value]):
            hint = hints[f.name]
            if isinstance(value, list):
                hint = (typing.get_args(_bounds(hint)[0]) or (Any,))[0]
            where = f"{type(obj).__name__}.{f.name}" + (f"[{i}]" if isinstance(value, list) else "")
            check_value(where, v, _bounds(hint)[1])


class _RecipeLoader(yaml.SafeLoader):
    """YAML for recipes: no aliases. A few hundred bytes of nested aliases expand to billions of nodes (the
    "billion laughs"); a recipe never needs one, so one is refused where it stands, in bounded time and memory."""

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.events.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConfigError(
                f"{mark.name}: line {mark.line + 1}: YAML aliases (*name) are not allowed in a recipe; write the value"
            )
        return super().compose_node(parent, index)


def load_yaml(text: str, name: str = "<recipe>") -> Any:
    """A recipe's YAML, parsed without aliases; a syntax error is one ConfigError line."""
    try:
        loader = _RecipeLoader(text)
        loader.name = name
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not valid YAML ({' '.join(str(exc).split())[:300]})") from None


def _short(value: Any) -> str:
    """A value for an error message, bounded in size however large or deep the value is."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlevel, r.maxlist, r.maxdict = 80, 80, 3, 6, 6
    return r.repr(value)


def _check(cls: type, name: str, value: Any, hint: Any, source: str) -> Any:
    hint, bounds = _bounds(hint)
    value = _check_type(cls, name, value, hint, source)
    if bounds or isinstance(value, float):
        try:
            check_value(f"{cls.__name__}.{name}", value, bounds)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return value


def _check_type(cls: type, name: str, value: Any, hint: Any, source: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(
                f"{source}: {cls.__name__}.{name} must be one of {typing.get_args(hint)}, got {_short(value)}"
            )
        return value
    if origin is list:
        if not isinstance(value, list):  # a bare string would be read letter by letter ("/" an allowed root)
            raise ConfigError(
                f"{source}: {cls.__name__}.{name} must be a list (YAML: [a, b] or one '- item' per line), "
                f"got {type(value).__name__} {_short(value)}"
            )
        (item,) = typing.get_args(hint) or (Any,)
        return [_check(cls, f"{name}[{i}]", v, item, source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {cls.__name__}.{name} must be a mapping, got {_short(value)}")
        _, item = typing.get_args(hint) or (str, Any)
        return {str(k): _check(cls, f"{name}[{k!r}]", v, item, source) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _check(cls, name, value, args[0], source) if len(args) == 1 else value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {cls.__name__}.{name} must be true or false, got {_short(value)}")
        return value
    if hint in (int, float):
        if hint is int and isinstance(value, float) and not math.isfinite(value):  # int(inf) would raise unnamed
            raise ConfigError(f"{source}: {cls.__name__}.{name} must be an int, got {_short(value)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and value != int(value)):
            kind = "an int" if hint is int else "a float"
            raise ConfigError(f"{source}: {cls.__name__}.{name} must be {kind}, got {_short(value)}")
        return hint(value)
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{source}: {cls.__name__}.{name} must be a string, got {_short(value)}")
    return value


def load_config(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` from a YAML file (optional) and overrides (None values are ignored); validate every key."""
    data: dict[str, Any] = {}
    source = str(path) if path else "flags"
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{p}: no such config file")
        loaded = load_yaml(p.read_text(encoding="utf-8"), str(p)) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{p}: must be a mapping of {cls.__name__} fields")
        data.update(loaded)
    hints = typing.get_type_hints(cls, include_extras=True)
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
