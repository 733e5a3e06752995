"""Operators that look up and shape values: paths, any, value, dict, array, JSON parsing, merging, flattening."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from typing import Any

from stream.imports.converter.errors import ArgError, NoValue
from stream.imports.converter.values import Ctx, Fn, Row, as_int, as_text, show, type_name

_MISSING = object()


def basic_path(name: str) -> Fn:
    """A field of the current element: a key of an object, or a decimal index ("1") into a list."""
    index = int(name) if name.isascii() and name.isdigit() else None

    def get(cur: Row, ctx: Ctx) -> Any:
        if type(cur) is dict:   # a row as the reader gives it: the common case, without the ABC check
            value = cur.get(name, _MISSING)
            if value is _MISSING:
                raise NoValue(f"no field {name!r}")
            return value
        if isinstance(cur, Mapping):
            try:
                return cur[name]
            except KeyError:
                raise NoValue(f"no field {name!r}") from None
        if index is not None and isinstance(cur, (list, tuple)):
            if index < len(cur):
                return cur[index]
            raise NoValue(f"no index {name} in a list of {len(cur)}")
        raise NoValue(f"no field {name!r} in {show(cur)}")

    return get


def op_path(name: str, args: list[Any]) -> Fn:
    steps: tuple[Fn, ...] = tuple(args)

    def run(cur: Row, ctx: Ctx) -> Any:
        for step in steps:  # each step reads the element the previous one returned
            cur = step(cur, ctx)
        return cur

    return run


def op_any(name: str, args: list[Any]) -> Fn:
    sources: tuple[Fn, ...] = tuple(args)

    def run(row: Row, ctx: Ctx) -> Any:
        for source in sources:
            try:
                value = source(row, ctx)
            except NoValue:
                continue
            if value is not None:
                return value
        raise NoValue(f"{name}: none of its {len(sources)} sources has a value")

    return run


def op_value(name: str, args: list[Any]) -> Fn:
    literal = args[0]
    if isinstance(literal, (dict, list)):
        # a fresh copy per row: a caller may change the result without changing the configuration
        return lambda row, ctx: copy.deepcopy(literal)
    return lambda row, ctx: literal


def op_dict(name: str, args: list[Any]) -> Fn:
    check_unique_keys(args[0::2])
    pairs: tuple[tuple[str, Fn], ...] = tuple(zip(args[0::2], args[1::2]))

    def run(row: Row, ctx: Ctx) -> dict[str, Any]:
        return {key: source(row, ctx) for key, source in pairs}

    return run


def check_unique_keys(keys: list[str]) -> None:
    seen: set[str] = set()
    for i, key in enumerate(keys):
        if key in seen:
            raise ArgError(2 * i, f"key {key!r} is given twice; keep one")
        seen.add(key)


def op_array(name: str, args: list[Any]) -> Fn:
    sources: tuple[Fn, ...] = tuple(args)

    def run(row: Row, ctx: Ctx) -> list[Any]:
        out = []
        for source in sources:
            try:
                out.append(source(row, ctx))
            except NoValue:
                continue  # Amplitude: "If a SOURCE_DESCRIPTION fails to evaluate, it will be skipped"
        return out

    return run


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def op_parse_json_element(name: str, args: list[Any]) -> Fn:
    (source,) = args

    def run(row: Row, ctx: Ctx) -> Any:
        text = as_text(source(row, ctx), name)
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise NoValue(f"{name}: {show(text)} is not JSON") from None

    return run


def _object(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise NoValue(f"{name}: {show(value)} is not an object")
    return value


def op_merge_dicts(name: str, args: list[Any]) -> Fn:
    sources: tuple[Fn, ...] = tuple(args)

    def run(row: Row, ctx: Ctx) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for source in sources:
            merged.update(_object(source(row, ctx), name))  # later objects win
        return merged

    return run


def op_flatten_dict(name: str, args: list[Any]) -> Fn:
    separator, depth_source, source = args

    def run(row: Row, ctx: Ctx) -> dict[str, Any]:
        depth = as_int(depth_source(row, ctx), name)
        if depth < 1:
            raise NoValue(f"{name}: the depth must be 1 or more, got {depth}")
        return flatten(_object(source(row, ctx), name), separator, depth)

    return run


def flatten(obj: Mapping[str, Any], separator: str, depth: int) -> dict[str, Any]:
    """Nested objects lifted into one level: keys joined with ``separator``, at most ``depth`` keys per name.

    A value below ``depth`` levels stays as it is under its joined name; an empty object stays a value; keys
    keep their document order. Iterative, so data nested deeper than the recursion limit cannot break it.
    """
    out: dict[str, Any] = {}
    stack: list[tuple[str | None, Iterator[tuple[str, Any]], int]] = [(None, iter(obj.items()), 1)]
    while stack:
        prefix, items, level = stack[-1]
        for key, value in items:
            joined = key if prefix is None else f"{prefix}{separator}{key}"
            if isinstance(value, Mapping) and value and level < depth:
                stack.append((joined, iter(value.items()), level + 1))
                break
            out[joined] = value
        else:
            stack.pop()
    return out


def op_exclude_keys(name: str, args: list[Any]) -> Fn:
    source, excluded = args[0], frozenset(args[1:])

    def run(row: Row, ctx: Ctx) -> dict[str, Any]:
        return {k: v for k, v in _object(source(row, ctx), name).items() if k not in excluded}

    return run


def op_typeof(name: str, args: list[Any]) -> Fn:
    (source,) = args

    def run(row: Row, ctx: Ctx) -> str:
        value = source(row, ctx)
        kind = type_name(value)
        if kind is None:
            raise NoValue(f"{name}: a {type(value).__name__} is not a JSON value")
        return kind

    return run
