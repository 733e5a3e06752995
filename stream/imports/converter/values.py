"""JSON values at run time: the evaluation context and the coercions operators share; none of them raise but NoValue."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stream.imports.converter.errors import NoValue

Row = Any  # a row is a mapping of column -> value; inside ``path`` the current element may be any JSON value


@dataclass(frozen=True, slots=True)
class Ctx:
    """What a row's evaluation may depend on besides the row: the clock, read once per row by the caller."""

    now_ms: int


Fn = Callable[[Row, Ctx], Any]

# Java's Integer/Double parsing, not Python's: no surrounding spaces, no "1_000", no "nan"/"inf".
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SHOW_LIMIT = 60


def show(value: Any) -> str:
    """A short printable form of a value for messages: strings quoted, JSON for the rest, cut at 60 characters."""
    try:
        if isinstance(value, str):
            text = repr(value[: _SHOW_LIMIT])
        else:
            text = json.dumps(value, ensure_ascii=False, allow_nan=True, default=repr)
    except (ValueError, TypeError, RecursionError):  # unprintable: a 5000-digit integer, a cycle
        text = f"a {type(value).__name__}"
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."


def is_json(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is a JSON value as ``json.loads`` gives them (finite numbers, string keys)."""
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if depth > 100:
        return False
    if isinstance(value, list):
        return all(is_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json(v, depth + 1) for k, v in value.items())
    return False


def type_name(value: Any) -> str | None:
    """Amplitude's ``typeof`` names: string, list, dict, bool, number, null; None for a non-JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int in Python
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "dict"
    return None


def number_text(value: int | float) -> str:
    """A number as JSON writes it (``12.6``, ``3``, ``1e+16``)."""
    return json.dumps(value) if isinstance(value, float) and math.isfinite(value) else str(value)


def as_text(value: Any, op: str) -> str:
    """A JSON primitive read as a string (numbers and booleans as their JSON text); null, lists and objects fail."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        try:
            return number_text(value)
        except ValueError:  # Python refuses to print integers of more than 4300 digits
            raise NoValue(f"{op}: the number is too long to print") from None
    raise NoValue(f"{op}: {show(value)} is not a string")


def as_number(value: Any, op: str) -> int | float:
    """A value read as a number: numbers as they are, numeric strings parsed, null as 0; anything else fails."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise NoValue(f"{op}: {show(value)} is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NoValue(f"{op}: {show(value)} is not a finite number")
        return value
    if isinstance(value, str):
        try:
            if _INT_TEXT.fullmatch(value):
                return int(value)
            if _FLOAT_TEXT.fullmatch(value):
                number = float(value)
                if math.isfinite(number):
                    return number
        except ValueError:  # more than 4300 digits
            pass
    raise NoValue(f"{op}: {show(value)} is not a number")


def as_int(value: Any, op: str) -> int:
    """A value read as an integer: as ``as_number``, and a float must be whole."""
    number = as_number(value, op)
    if isinstance(number, float):
        if not number.is_integer():
            raise NoValue(f"{op}: {show(value)} is not an integer")
        return int(number)
    return number


def truthy(value: Any) -> bool:
    """A value in a boolean context, as Gson's getAsBoolean reads it: true, or a string "true" in any case."""
    if value is True:
        return True
    return isinstance(value, str) and value.lower() == "true"


def json_equal(a: Any, b: Any) -> bool:
    """Strict JSON equality: same JSON type, numbers by value (1 == 1.0), a number never equals a string."""
    try:
        return _equal(a, b)
    except RecursionError:
        raise NoValue("equals: values nested too deeply to compare") from None


def _equal(a: Any, b: Any) -> bool:
    ta, tb = type_name(a), type_name(b)
    if ta is None or tb is None:
        return a is b
    if ta != tb:
        return False
    if ta == "list":
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if ta == "dict":
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)
