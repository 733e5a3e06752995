"""Boolean operators and branches: cond, ifelse, bool, not, and, or, equals, contains, sample_md5."""

from __future__ import annotations

import hashlib
from typing import Any

from stream.imports.converter.errors import ArgError, NoValue
from stream.imports.converter.values import Ctx, Fn, Row, as_number, as_text, json_equal, show, truthy


def holds(source: Fn, row: Row, ctx: Ctx) -> bool:
    """A source read in a boolean context; one that has no value reads as null, that is false."""
    try:
        return truthy(source(row, ctx))
    except NoValue:
        return False


def op_condition(name: str, args: list[Any]) -> Fn:
    branches: tuple[tuple[Fn, Fn], ...] = tuple(zip(args[0::2], args[1::2]))

    def run(row: Row, ctx: Ctx) -> Any:
        for condition, source in branches:
            if holds(condition, row, ctx):
                return source(row, ctx)
        raise NoValue(f"{name}: no test is true")

    return run


def op_ifelse(name: str, args: list[Any]) -> Fn:
    condition, then, otherwise = args
    return lambda row, ctx: then(row, ctx) if holds(condition, row, ctx) else otherwise(row, ctx)


def op_bool(name: str, args: list[Any]) -> Fn:
    literal = args[0]
    if not isinstance(literal, bool):
        raise ArgError(0, f"needs true or false, got {show(literal)}; write [\"{name}\", true]")
    return lambda row, ctx: literal


def op_not(name: str, args: list[Any]) -> Fn:
    (source,) = args
    return lambda row, ctx: not holds(source, row, ctx)


def op_and(name: str, args: list[Any]) -> Fn:
    sources: tuple[Fn, ...] = tuple(args)
    return lambda row, ctx: all(holds(source, row, ctx) for source in sources)


def op_or(name: str, args: list[Any]) -> Fn:
    sources: tuple[Fn, ...] = tuple(args)
    return lambda row, ctx: any(holds(source, row, ctx) for source in sources)


def op_equals(name: str, args: list[Any]) -> Fn:
    left, right = args
    return lambda row, ctx: json_equal(left(row, ctx), right(row, ctx))


def op_contains(name: str, args: list[Any]) -> Fn:
    needle, source = args

    def run(row: Row, ctx: Ctx) -> bool:
        value = source(row, ctx)
        return value is not None and needle in as_text(value, name)

    return run


def op_sample_md5(name: str, args: list[Any]) -> Fn:
    percent_source, key_source = args

    def run(row: Row, ctx: Ctx) -> bool:
        percent = as_number(percent_source(row, ctx), name)
        key = as_text(key_source(row, ctx), name)
        digest = hashlib.md5(key.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()
        return int(digest, 16) % 100 < percent

    return run
