"""Whether an object made from JSON has the types its dataclass annotations say.

A dataclass built from a hand-edited ``config.json`` takes whatever JSON holds (a string where a
number belongs, ``null`` for a file name); :func:`mistyped` finds the first such field so that it
is refused when read, with its path, not met later as a TypeError far from the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

_UNIONS = (typing.Union, types.UnionType)
_SCALARS: dict[Any, Callable[[Any], bool]] = {
    float: lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    int: lambda value: isinstance(value, int) and not isinstance(value, bool),
}


def mistyped(value: Any, hint: Any, where: str = "") -> str | None:
    """The first part of ``value`` whose type is not ``hint`` (dataclasses, tuples, unions,
    literals and scalars are looked into), as ``"path: expected ..., got ..."``; None if all fit."""
    inner = _without_none(value, hint)
    if inner is None:
        return None
    parts = _parts(value, inner, where)
    if parts is None:
        return None if _fits(value, inner) else f"{where}: expected {_type_name(inner)}, got {value!r}"
    return next((found for part in parts if (found := mistyped(*part)) is not None), None)


def _without_none(value: Any, hint: Any) -> Any:
    """``X`` for ``X | None`` (None where the value is None), else ``hint`` itself."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) not in _UNIONS:
        return hint
    if value is None and type(None) in args:
        return None
    others = [arg for arg in args if arg is not type(None)]
    return others[0] if len(others) == 1 else hint


def _parts(value: Any, hint: Any, where: str) -> list[tuple[Any, Any, str]] | None:
    """The fields of a dataclass or the items of a tuple with their types; None for anything else."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, hint):
        hints = typing.get_type_hints(hint)
        return [
            (getattr(value, item.name), hints[item.name], f"{where}.{item.name}" if where else item.name)
            for item in dataclasses.fields(hint)
        ]
    args = typing.get_args(hint)
    if typing.get_origin(hint) is not tuple or not isinstance(value, tuple):
        return None
    items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
    if len(items) != len(value):
        return None
    return [
        (item, item_hint, f"{where}[{index}]")
        for index, (item, item_hint) in enumerate(zip(value, items, strict=True))
    ]


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value in args
    if origin in _UNIONS:
        return any(_fits(value, arg) for arg in args)
    if origin is tuple or dataclasses.is_dataclass(hint):
        return False  # one that fits was looked into by _parts
    check = _SCALARS.get(hint)
    return hint is Any or (check(value) if check else isinstance(value, origin or hint))


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return "a list"
    if typing.get_origin(hint) is Literal:
        return " or ".join(repr(arg) for arg in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
