"""Time operators: ISO strings, epoch ms, the current time, parquet INT96 and Java date patterns."""

from __future__ import annotations

from typing import Any

from stream.imports.converter.errors import ArgError, NoValue
from stream.imports.converter.isotime import int96_to_ms, iso_to_ms, ms_to_iso
from stream.imports.converter.javatime import compile_java_time
from stream.imports.converter.values import Ctx, Fn, Row, as_int, show


def op_iso_time_to_ms(name: str, args: list[Any]) -> Fn:
    (source,) = args

    def run(row: Row, ctx: Ctx) -> int:
        value = source(row, ctx)
        if isinstance(value, str):
            try:
                return iso_to_ms(value)
            except ValueError:
                pass
        raise NoValue(f"{name}: {show(value)} is not an ISO time (YYYY-MM-DDTHH:MM:SS)")

    return run


def op_ms_to_iso_time(name: str, args: list[Any]) -> Fn:
    (source,) = args

    def run(row: Row, ctx: Ctx) -> str:
        value = source(row, ctx)
        if value is None:
            raise NoValue(f"{name}: the time is null")
        try:
            return ms_to_iso(as_int(value, name))
        except ValueError:
            raise NoValue(f"{name}: {show(value)} ms is outside years 1-9999") from None

    return run


def op_iso_time_now(name: str, args: list[Any]) -> Fn:
    def run(row: Row, ctx: Ctx) -> str:
        try:
            return ms_to_iso(ctx.now_ms)
        except ValueError:
            raise NoValue(f"{name}: the time {ctx.now_ms} ms is outside years 1-9999") from None

    return run


def op_ms_time_now(name: str, args: list[Any]) -> Fn:
    return lambda row, ctx: ctx.now_ms


def op_int96_time_to_ms(name: str, args: list[Any]) -> Fn:
    (source,) = args

    def run(row: Row, ctx: Ctx) -> int:
        value = source(row, ctx)
        if not isinstance(value, str):
            raise NoValue(f"{name}: {show(value)} is not a base64 string")
        try:
            return int96_to_ms(value)
        except ValueError as exc:
            raise NoValue(f"{name}: {show(value)} is not a base64 INT96 ({exc})") from None

    return run


def op_parse_time_to_ms(name: str, args: list[Any]) -> Fn:
    pattern, source = args
    try:
        parse = compile_java_time(pattern)
    except ValueError as exc:
        raise ArgError(0, str(exc)) from None

    def run(row: Row, ctx: Ctx) -> int:
        value = source(row, ctx)
        if not isinstance(value, str):
            raise NoValue(f"{name}: {show(value)} is not a string")
        try:
            return parse(value)
        except ValueError as exc:
            raise NoValue(f"{name}: {show(value)} {exc}") from None

    return run
