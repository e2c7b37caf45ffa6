"""A typed codec between nested dicts (TOML, JSON, `--set key=value`) and trees of dataclasses.

Why its own module: `config` says what a run is (the fields, their defaults and why, the checks between
them); this says how such a tree is read and written, for any dataclass tree. Tuples travel as lists,
ints are accepted for floats, `None` for `X | None` fields; anything else of the wrong type, and any
unknown key, is refused with one sentence naming where it came from.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from tumorgen.errors import TumorGenError, fail_on


def to_dict(cfg: Any) -> dict:
    """A JSON-ready nested dict (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def merge(base: Any, data: dict, *, prefix: str = "", source: str) -> Any:
    """`base` (a dataclass tree) with the values of `data` (a nested dict) put in, each checked against its
    field's type; an unknown key or a wrong type is refused naming `source`. Nothing else is checked."""
    if not isinstance(data, dict):
        raise fail_on(source, f"section '{prefix.rstrip('.') or 'top level'}' must be a table, got {data!r}")
    hints = typing.get_type_hints(type(base))
    names = [f.name for f in dataclasses.fields(base)]
    changes = {}
    for key, value in data.items():
        if key not in names:
            raise fail_on(source, f"unknown key '{prefix}{key}'; valid keys: {', '.join(prefix + n for n in names)}")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current):
            changes[key] = merge(current, value, prefix=f"{prefix}{key}.", source=source)
        else:
            changes[key] = coerce(value, hints[key], key=f"{prefix}{key}", source=source)
    return dataclasses.replace(base, **changes)


def optional_inner(hint: Any) -> Any:
    """`X` for a field typed `X | None`, else None."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


def coerce(value: Any, hint: Any, *, key: str, source: str) -> Any:
    """Check `value` against a field's type; accept lists for tuples, ints for floats, None for `X | None`."""
    inner = optional_inner(hint)
    if inner is not None:
        return None if value is None else coerce(value, inner, key=key, source=source)
    origin = typing.get_origin(hint)
    bad = fail_on(source, f"'{key}' must be {type_name(hint)}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise bad
        item_type = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            pass
        elif len(value) != len(args):
            raise bad
        return tuple(coerce(v, item_type, key=key, source=source) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"config field {key} has an unsupported type {hint}")


def type_name(hint: Any) -> str:
    inner = optional_inner(hint)
    if inner is not None:
        return f"{type_name(inner)} or none"
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        inner = type_name(args[0])
        return f"a list of {inner}s" if args[-1] is Ellipsis else f"a list of {len(args)} {inner}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]


def parse_text(text: str, hint: Any, *, key: str) -> Any:
    """Turn the text of an override into a value of the field's type ("none" clears an `X | None` field)."""
    inner = optional_inner(hint)
    if inner is not None:
        return None if text.strip().lower() in ("none", "null", "") else parse_text(text, inner, key=key)
    if typing.get_origin(hint) is tuple:
        inner = text.strip().strip("[]()").strip()
        items = [s.strip().strip("'\"") for s in inner.split(",")] if inner else []
        return [parse_text(s, typing.get_args(hint)[0], key=key) for s in items]
    if hint is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise TumorGenError(f"--set {key}={text}: '{key}' must be true or false")
    if hint in (int, float):
        try:
            return int(text) if hint is int else float(text)
        except ValueError:
            raise TumorGenError(f"--set {key}={text}: '{key}' must be {type_name(hint)}") from None
    return text
