"""Number operators: int, round, add, subtract, multiply, divide; results stay within Java's ranges."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from stream.imports.converter.errors import ArgError, NoValue
from stream.imports.converter.values import Ctx, Fn, Row, as_number, show


def op_int(name: str, args: list[Any]) -> Fn:
    literal = args[0]
    if isinstance(literal, bool) or not isinstance(literal, int):
        raise ArgError(0, f"needs an integer, got {show(literal)}; write [\"{name}\", 5]")
    return lambda row, ctx: literal


_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def finite(result: int | float, name: str) -> int | float:
    """The result of arithmetic, failing when it leaves Java's long or double range rather than growing unbounded."""
    if isinstance(result, float) and not math.isfinite(result):
        raise NoValue(f"{name}: the result is too large")
    if isinstance(result, int) and not _LONG_MIN <= result <= _LONG_MAX:
        raise NoValue(f"{name}: the result does not fit 64 bits")
    return result


def op_round(name: str, args: list[Any]) -> Fn:
    (source,) = args

    def run(row: Row, ctx: Ctx) -> int:
        number = as_number(source(row, ctx), name)
        if isinstance(number, int):
            return number
        floor = math.floor(number)
        return int(finite(floor + 1 if number - floor >= 0.5 else floor, name))  # half up, as Java's Math.round

    return run


def _arithmetic(combine: Callable[[Any, Any], Any]) -> Callable[[str, list[Any]], Fn]:
    def build(name: str, args: list[Any]) -> Fn:
        sources: tuple[Fn, ...] = tuple(args)

        def run(row: Row, ctx: Ctx) -> int | float:
            total = as_number(sources[0](row, ctx), name)
            try:
                for source in sources[1:]:
                    total = combine(total, as_number(source(row, ctx), name))
            except (OverflowError, ZeroDivisionError) as exc:
                raise NoValue(f"{name}: {exc}") from None
            return finite(total, name)

        return run

    return build


def _divide(a: int | float, b: int | float) -> int | float:
    if b == 0:
        raise ZeroDivisionError("division by zero")
    if isinstance(a, int) and isinstance(b, int) and a % b == 0:
        return a // b  # exact integer quotients stay integers (and exact beyond 2**53)
    return a / b


op_add = _arithmetic(operator.add)
op_subtract = _arithmetic(operator.sub)
op_multiply = _arithmetic(operator.mul)
op_divide = _arithmetic(_divide)
