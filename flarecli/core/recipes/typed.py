"""Typed views over JSON: build frozen dataclasses from parsed JSON, validating as they go.

``parse(cls, data, path)`` walks a dataclass's type hints and checks every value: unknown
fields (with a "did you mean"), missing required fields, wrong types, values outside a
``Literal``; a dataclass may add its own checks in ``__post_init__`` by raising ValueError.
Every error is one :class:`RecipeError` naming the dotted path of the offending field.

Supported hints: ``int``, ``float`` (an int is accepted), ``bool``, ``str``, ``Any``,
``Literal[...]``, ``X | None``, ``tuple[X, ...]``, ``tuple[X, Y, Z]``, ``list[X]``,
``dict[str, X]``, dataclasses, and unions of them. A union of dataclasses is discriminated by
the class variable ``TAG`` against the value of the field named by ``TAG_FIELD``.

``to_json(obj)`` turns such a dataclass back into plain JSON (tuples become lists).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal, Union

from flarecli.core.errors import ModelError, did_you_mean


class RecipeError(ModelError):
    """An invalid recipe, preset, override or bundle field (exit code 5)."""

    def __init__(self, path: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message, hint=hint)
        self.path = path


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is type(None):
        return "null"
    if hint in (int, float, bool, str):
        return {int: "an integer", float: "a number", bool: "true or false",
                str: "a string"}[hint]
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "an object"
    return str(hint)


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 60 else text[:57] + "..."


def parse_value(hint: Any, value: Any, path: str) -> Any:
    """Check ``value`` against a type hint and convert it (lists to tuples, dicts to
    dataclasses). Raises RecipeError naming ``path``."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return _parse_union(hint, value, path)
    if origin is Literal:
        choices = typing.get_args(hint)
        if not any(value == c and type(value) is type(c) for c in choices):
            names = [str(c) for c in choices]
            hint_text = did_you_mean(str(value), names) if isinstance(value, str) else None
            raise RecipeError(path, f"{_shown(value)} is not {_describe(hint)}",
                              hint=hint_text)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(path, f"expected true or false, got {_shown(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(path, f"expected an integer, got {_shown(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecipeError(path, f"expected a number, got {_shown(value)}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise RecipeError(path, f"expected a finite number, got {value}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(path, f"expected a string, got {_shown(value)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise RecipeError(path, f"expected a list, got {_shown(value)}")
        args = typing.get_args(hint)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise RecipeError(path, f"expected {len(args)} values, got {len(value)}")
            items = [parse_value(a, v, _join(path, i)) for i, (a, v) in
                     enumerate(zip(args, value, strict=True))]
        else:
            items = [parse_value(args[0], v, _join(path, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(path, f"expected an object, got {_shown(value)}")
        key_hint, value_hint = typing.get_args(hint)
        return {str(k): parse_value(value_hint, v, _join(path, str(k)))
                for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, path)
    raise TypeError(f"unsupported type hint {hint}")  # a bug in a spec, not user input


def _parse_union(hint: Any, value: Any, path: str) -> Any:
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise RecipeError(path, f"expected {_describe(hint)}, got null")
    options = [a for a in args if a is not type(None)]
    tagged = [a for a in options if dataclasses.is_dataclass(a) and hasattr(a, "TAG")]
    if tagged and isinstance(value, dict):
        field = tagged[0].TAG_FIELD
        tags = {a.TAG: a for a in tagged}
        tag = value.get(field)
        if tag not in tags:
            raise RecipeError(_join(path, field), f"{_shown(tag)} is not one of "
                              + ", ".join(repr(t) for t in tags),
                              hint=did_you_mean(str(tag), list(tags)))
        return parse(tags[tag], value, path)
    if len(options) == 1:
        return parse_value(options[0], value, path)
    for option in options:  # the first that fits, plain types before containers
        if _fits(option, value):
            return parse_value(option, value, path)
    raise RecipeError(path, f"expected {_describe(hint)}, got {_shown(value)}")


def _fits(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int,):
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str or origin is Literal:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, list | tuple)
    return isinstance(value, dict)


def parse(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a JSON object, validating every field."""
    if not isinstance(data, dict):
        raise RecipeError(path, f"expected an object, got {_shown(data)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    tag_field = getattr(cls, "TAG_FIELD", None)
    for key in data:
        if key not in fields and key != tag_field:
            raise RecipeError(_join(path, key), "unknown field",
                              hint=did_you_mean(str(key), list(fields))
                              or f"fields: {', '.join(fields)}")
    if tag_field and tag_field in data and data[tag_field] != cls.TAG:
        raise RecipeError(_join(path, tag_field), f"expected '{cls.TAG}'")
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = parse_value(hints[name], data[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(_join(path, name), "required field missing")
    try:
        return cls(**values)
    except ValueError as e:
        raise RecipeError(path, str(e)) from None


def to_json(obj: Any) -> Any:
    """Plain JSON of a parsed dataclass (tuples as lists, the tag field included)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        tag_field = getattr(obj, "TAG_FIELD", None)
        if tag_field:
            out[tag_field] = obj.TAG
        for f in dataclasses.fields(obj):
            out[f.name] = to_json(getattr(obj, f.name))
        return out
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    return obj
