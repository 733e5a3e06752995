"""The operators of the SOURCE_DESCRIPTION language: names, aliases, argument kinds and builders, in one table.

Each builder lives with its family (``ops_structure``, ``ops_logic``, ``ops_time``, ``ops_text``, ``ops_numbers``).
It receives the operator's name as written and its arguments prepared by the compiler (``SD`` ones compiled to
closures, ``RAW`` ones checked to be strings, ``JSON`` ones as given), checks what only it knows (a regex, a date
pattern, a literal's type) and raises ArgError for a bad argument. The closure it returns raises NoValue, and
nothing else, for data it cannot use. Meaning of each operator: FORMATS.md §4.4 and Amplitude's "Converter
configuration reference".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stream.imports.converter.ops_logic import (
    op_and,
    op_bool,
    op_condition,
    op_contains,
    op_equals,
    op_ifelse,
    op_not,
    op_or,
    op_sample_md5,
)
from stream.imports.converter.ops_numbers import op_add, op_divide, op_int, op_multiply, op_round, op_subtract
from stream.imports.converter.ops_structure import (
    op_any,
    op_array,
    op_dict,
    op_exclude_keys,
    op_flatten_dict,
    op_merge_dicts,
    op_parse_json_element,
    op_path,
    op_typeof,
    op_value,
)
from stream.imports.converter.ops_text import op_concat, op_lowercase, op_replace_with, op_split
from stream.imports.converter.ops_time import (
    op_int96_time_to_ms,
    op_iso_time_now,
    op_iso_time_to_ms,
    op_ms_time_now,
    op_ms_to_iso_time,
    op_parse_time_to_ms,
)
from stream.imports.converter.values import Fn

SD, RAW, JSON = "sd", "raw", "json"  # argument kinds: compiled source, literal string, literal JSON value

Builder = Callable[[str, list[Any]], Fn]


@dataclass(frozen=True)
class OpSpec:
    """An operator: its names, its arguments (fixed ones, then a tail repeated zero or more times), its builder."""

    name: str
    aliases: tuple[str, ...]
    fixed: tuple[str, ...]
    repeat: tuple[str, ...]
    syntax: str
    build: Builder

    def accepts(self, count: int) -> bool:
        if not self.repeat:
            return count == len(self.fixed)
        return count >= len(self.fixed) and (count - len(self.fixed)) % len(self.repeat) == 0

    def expected(self) -> str:
        fixed = len(self.fixed)
        if not self.repeat:
            return "no arguments" if fixed == 0 else f"{fixed} argument{'s' if fixed != 1 else ''}"
        if len(self.repeat) == 2:
            return f"an even number of arguments, at least {fixed}"
        return f"at least {fixed} argument{'s' if fixed != 1 else ''}"

    def kind(self, index: int) -> str:
        if index < len(self.fixed):
            return self.fixed[index]
        return self.repeat[(index - len(self.fixed)) % len(self.repeat)]


_SPECS = (
    OpSpec("path", (), (), (SD,), '["path", SOURCE_DESCRIPTION, ...]', op_path),
    OpSpec("any", (), (SD,), (SD,), '["any", SOURCE_DESCRIPTION, ...]', op_any),
    OpSpec("value", (), (JSON,), (), '["value", JSON_VALUE]', op_value),
    OpSpec("dict", (), (RAW, SD), (RAW, SD), '["dict", "key", SOURCE_DESCRIPTION, ...]', op_dict),
    OpSpec("array", (), (SD,), (SD,), '["array", SOURCE_DESCRIPTION, ...]', op_array),
    OpSpec("condition", ("cond",), (SD, SD), (SD, SD), '["cond", BOOLEAN_SOURCE, SOURCE_DESCRIPTION, ...]',
           op_condition),
    OpSpec("ifelse", (), (SD, SD, SD), (), '["ifelse", BOOLEAN_SOURCE, SOURCE_DESCRIPTION, SOURCE_DESCRIPTION]',
           op_ifelse),
    OpSpec("sample_md5", (), (SD, SD), (), '["sample_md5", PERCENT_SOURCE, KEY_SOURCE]', op_sample_md5),
    OpSpec("iso_time_to_ms", (), (SD,), (), '["iso_time_to_ms", SOURCE_DESCRIPTION]', op_iso_time_to_ms),
    OpSpec("ms_to_iso_time", (), (SD,), (), '["ms_to_iso_time", SOURCE_DESCRIPTION]', op_ms_to_iso_time),
    OpSpec("iso_time_now", (), (), (), '["iso_time_now"]', op_iso_time_now),
    OpSpec("ms_time_now", (), (), (), '["ms_time_now"]', op_ms_time_now),
    OpSpec("int96_time_to_ms", (), (SD,), (), '["int96_time_to_ms", SOURCE_DESCRIPTION]', op_int96_time_to_ms),
    OpSpec("parse_time_to_ms", (), (RAW, SD), (), '["parse_time_to_ms", "yyyy-MM-dd HH:mm:ss", SOURCE_DESCRIPTION]',
           op_parse_time_to_ms),
    OpSpec("parse_json_element", ("parse_json_object",), (SD,), (), '["parse_json_element", SOURCE_DESCRIPTION]',
           op_parse_json_element),
    OpSpec("merge_dicts", (), (SD,), (SD,), '["merge_dicts", SOURCE_DESCRIPTION, ...]', op_merge_dicts),
    OpSpec("flatten_dict", (), (RAW, SD, SD), (), '["flatten_dict", ".", ["int", 5], SOURCE_DESCRIPTION]',
           op_flatten_dict),
    OpSpec("exclude_keys", (), (SD,), (RAW,), '["exclude_keys", SOURCE_DESCRIPTION, "key", ...]', op_exclude_keys),
    OpSpec("concat", (), (SD,), (SD,), '["concat", SOURCE_DESCRIPTION, ...]', op_concat),
    OpSpec("replace_with", (), (RAW, RAW, SD), (), '["replace_with", "java regex", "replacement", SOURCE_DESCRIPTION]',
           op_replace_with),
    OpSpec("split", (), (RAW, SD), (), '["split", ",", SOURCE_DESCRIPTION]', op_split),
    OpSpec("lowercase", ("lower",), (SD,), (), '["lowercase", SOURCE_DESCRIPTION]', op_lowercase),
    OpSpec("typeof", (), (SD,), (), '["typeof", SOURCE_DESCRIPTION]', op_typeof),
    OpSpec("bool", (), (JSON,), (), '["bool", true]', op_bool),
    OpSpec("not", ("!",), (SD,), (), '["not", BOOLEAN_SOURCE]', op_not),
    OpSpec("and", ("&&",), (SD,), (SD,), '["and", BOOLEAN_SOURCE, ...]', op_and),
    OpSpec("or", ("||",), (SD,), (SD,), '["or", BOOLEAN_SOURCE, ...]', op_or),
    OpSpec("equals", ("eq", "="), (SD, SD), (), '["eq", SOURCE_DESCRIPTION, SOURCE_DESCRIPTION]', op_equals),
    OpSpec("contains", ("is_substring",), (RAW, SD), (), '["contains", "text", SOURCE_DESCRIPTION]', op_contains),
    OpSpec("int", (), (JSON,), (), '["int", 5]', op_int),
    OpSpec("round", (), (SD,), (), '["round", SOURCE_DESCRIPTION]', op_round),
    OpSpec("add", ("+",), (SD,), (SD,), '["add", SOURCE_DESCRIPTION, ...]', op_add),
    OpSpec("subtract", ("-",), (SD, SD), (), '["subtract", SOURCE_DESCRIPTION, SOURCE_DESCRIPTION]',
           op_subtract),
    OpSpec("multiply", ("*",), (SD,), (SD,), '["multiply", SOURCE_DESCRIPTION, ...]', op_multiply),
    OpSpec("divide", ("/",), (SD, SD), (), '["divide", SOURCE_DESCRIPTION, SOURCE_DESCRIPTION]',
           op_divide),
)

OPERATORS: dict[str, OpSpec] = {name: spec for spec in _SPECS for name in (spec.name, *spec.aliases)}
