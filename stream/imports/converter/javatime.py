"""Java date patterns (``M/d/yyyy H:mm:ss``) compiled once into a parser text -> epoch ms; ValueError on bad input.

Supported letters: ``y M d H h m s S a E Z X z`` and ``'...'`` for literal text (``''`` is one quote); any other
ASCII letter is reserved by Java and rejected when the pattern is compiled. The exact reading of each letter is
listed in the package docstring (its "Unverified choices").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from stream.imports.converter.isotime import civil_to_ms

SUPPORTED = "y M d H h m s S a E Z X z"
_KIND = {"y": "year", "M": "month", "d": "day", "H": "hour", "h": "hour", "m": "minute", "s": "second",
         "S": "fraction", "a": "ampm", "E": "weekday", "Z": "zone", "X": "zone", "z": "zone"}
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTH_NUMBER = {name: i + 1 for i, name in enumerate(_MONTHS)} | {name[:3]: i + 1 for i, name in enumerate(_MONTHS)}
_DAY_NAMES = frozenset(_DAYS) | {name[:3] for name in _DAYS}
# Z, X and z all read one offset syntax: Z, ±hh, ±hhmm, ±hh:mm, or UTC/GMT/UT with an optional offset.
_ZONE = r"Z|[+-][0-9]{2}(?::?[0-9]{2})?|(?:GMT|UTC|UT)(?:[+-][0-9]{1,2}(?::?[0-9]{2})?)?"


@dataclass(frozen=True)
class _Field:
    letter: str
    count: int

    @property
    def kind(self) -> str:
        return _KIND[self.letter]

    @property
    def numeric(self) -> bool:
        return self.letter in "ydHhmsS" or (self.letter == "M" and self.count <= 2)


def _tokens(pattern: str) -> list[_Field | str]:
    """The pattern split into fields and literal strings."""
    tokens: list[_Field | str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "'":
            if pattern.startswith("''", i):
                tokens.append("'")
                i += 2
                continue
            literal, i = [], i + 1
            while True:
                if i >= n:
                    raise ValueError(f"date pattern {pattern!r}: a quote ' is not closed; write '' for a quote")
                if pattern.startswith("''", i):
                    literal.append("'")
                    i += 2
                elif pattern[i] == "'":
                    i += 1
                    break
                else:
                    literal.append(pattern[i])
                    i += 1
            tokens.append("".join(literal))
        elif ("a" <= ch <= "z") or ("A" <= ch <= "Z"):
            if ch not in _KIND:
                raise ValueError(f"date pattern {pattern!r}: letter {ch!r} is not supported; use {SUPPORTED}, "
                                 "and quote literal letters as 'T'")
            j = i
            while j < n and pattern[j] == ch:
                j += 1
            tokens.append(_Field(ch, j - i))
            i = j
        else:
            tokens.append(ch)
            i += 1
    return tokens


def _field_regex(field: _Field, abutting: bool) -> str:
    letter, count = field.letter, field.count
    if field.numeric:
        if abutting:  # yyyyMMdd: without a separator each field takes exactly its width
            return f"[0-9]{{{count}}}"
        if letter == "y":
            return "[0-9]{2}" if count == 2 else f"[0-9]{{{count},9}}"
        if letter == "S":
            return "[0-9]{1,9}"
        return f"[0-9]{{{count},{max(count, 2)}}}"
    if letter == "M" or letter == "E":
        return "[A-Za-z]{3}" if count <= 3 else "[A-Za-z]+"
    if letter == "a":
        return "[AaPp][Mm]"
    return _ZONE


def compile_java_time(pattern: str) -> Callable[[str], int]:
    """A parser for ``pattern``: the whole text must match; fields left out default to 1970-01-01 00:00:00 UTC."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("the date pattern is empty; write one such as 'yyyy-MM-dd HH:mm:ss'")
    tokens = _tokens(pattern)
    fields: list[_Field] = []
    parts: list[str] = []
    for i, token in enumerate(tokens):
        if isinstance(token, str):
            parts.append(re.escape(token))
            continue
        if token.kind in {f.kind for f in fields}:
            raise ValueError(f"date pattern {pattern!r}: the {token.kind} appears twice")
        if token.letter == "S" and token.count > 9:
            raise ValueError(f"date pattern {pattern!r}: at most 9 S (nanoseconds)")
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        abutting = token.numeric and isinstance(following, _Field) and following.numeric
        parts.append(f"({_field_regex(token, abutting)})")
        fields.append(token)
    if not fields:
        raise ValueError(f"date pattern {pattern!r} has no date or time letter; write one such as 'yyyy-MM-dd'")
    regex = re.compile("".join(parts), re.ASCII)
    letters = tuple(f.letter for f in fields)

    def parse(text: str) -> int:
        m = regex.fullmatch(text)
        if m is None:
            raise ValueError(f"does not match {pattern!r}")
        values = dict(zip(letters, m.groups()))
        return _to_ms(values)

    return parse


def _to_ms(values: dict[str, str]) -> int:
    year = int(values.get("y", "1970"))
    if "y" in values and len(values["y"]) == 2:
        year += 2000  # yy: a fixed century, since the pivot of Java's 80/20 window would depend on the clock
    month_text = values.get("M", "1")
    month = int(month_text) if month_text.isdigit() else _MONTH_NUMBER.get(month_text.lower(), 0)
    if not 1 <= month <= 12:
        raise ValueError(f"no month {month_text!r}")
    if "E" in values and values["E"].lower() not in _DAY_NAMES:
        raise ValueError(f"no day of the week {values['E']!r}")
    hour = _hour(values)
    fraction = values.get("S", "")
    millis = int(fraction[:3].ljust(3, "0")) if fraction else 0
    zone = next((values[letter] for letter in "ZXz" if letter in values), None)  # one zone field at most
    offset = _offset_ms(zone) if zone is not None else 0
    ms = civil_to_ms(year, month, int(values.get("d", "1")), hour, int(values.get("m", "0")),
                     int(values.get("s", "0")), millis)
    return ms - offset


def _hour(values: dict[str, str]) -> int:
    if "H" in values:
        return int(values["H"])  # range checked by civil_to_ms; an 'a' beside H is ignored, as Java does
    if "h" not in values:
        return 0
    clock = int(values["h"])
    if not 1 <= clock <= 12:
        raise ValueError(f"hour {clock} is not 1-12")
    pm = values.get("a", "AM").upper() == "PM"
    return clock % 12 + (12 if pm else 0)


def _offset_ms(zone: str) -> int:
    """An offset east of UTC in ms, from the text _ZONE matched."""
    if zone == "Z":
        return 0
    for prefix in ("GMT", "UTC", "UT"):
        if zone.startswith(prefix):
            zone = zone[len(prefix):]
            break
    if not zone:
        return 0
    sign, body = zone[0], zone[1:].replace(":", "")
    hours, minutes = (int(body), 0) if len(body) <= 2 else (int(body[:-2]), int(body[-2:]))
    if hours > 18 or minutes > 59 or (hours == 18 and minutes):
        raise ValueError(f"zone offset {zone!r} out of range")
    offset = (hours * 60 + minutes) * 60_000
    return -offset if sign == "-" else offset
