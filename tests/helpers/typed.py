"""A run-time check of a value against a TypedDict: what mypy promises about an XCom, verified on a real one."""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin, get_type_hints, is_typeddict


def payload_problems(value: Any, kind: Any, where: str = "value") -> list[str]:
    """Every way ``value`` differs from the type ``kind``: missing, unknown or wrongly typed keys, by path.

    Knows the types the DAG's payloads use: TypedDicts, str, int, float (an int passes, as for mypy),
    bool, None, unions, list[...], dict[..., ...] and Any. A bool is no int here: JSON tells them apart.
    """
    if kind is Any:
        return []
    if is_typeddict(kind):
        return _typed_dict_problems(value, kind, where)
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [payload_problems(value, option, where) for option in get_args(kind)]
        return [] if any(not found for found in options) else [f"{where}: {value!r} is not {_name(kind)}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        (item,) = get_args(kind)
        return [
            problem
            for index, entry in enumerate(value)
            for problem in payload_problems(entry, item, f"{where}[{index}]")
        ]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not a dict"]
        key_kind, value_kind = get_args(kind)
        return [
            problem
            for key, entry in value.items()
            for problem in payload_problems(key, key_kind, f"{where} key")
            + payload_problems(entry, value_kind, f"{where}[{key!r}]")
        ]
    if kind is type(None):
        return [] if value is None else [f"{where}: {value!r} is not None"]
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind in (str, bool):
        ok = isinstance(value, kind)
    else:
        raise TypeError(f"payload_problems does not know the type {kind!r} (at {where})")
    return [] if ok else [f"{where}: {value!r} is not {_name(kind)}"]


def _typed_dict_problems(value: Any, kind: Any, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: {value!r} is not a dict ({kind.__name__})"]
    hints = get_type_hints(kind)
    problems = [
        f"{where}: {key!r} is missing ({kind.__name__})" for key in sorted(kind.__required_keys__ - value.keys())
    ]
    problems += [f"{where}: {key!r} is not a key of {kind.__name__}" for key in sorted(value.keys() - hints.keys())]
    for key, hint in hints.items():
        if key in value:
            problems += payload_problems(value[key], hint, f"{where}[{key!r}]")
    return problems


def _name(kind: Any) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind)
