"""String operators: concat, replace_with (Java regex), split, lowercase."""

from __future__ import annotations

from typing import Any

from stream.imports.converter.errors import ArgError
from stream.imports.converter.javaregex import RegexError, compile_java_regex, compile_java_replacement
from stream.imports.converter.values import Fn, as_text


def op_concat(name: str, args: list[Any]) -> Fn:
    sources: tuple[Fn, ...] = tuple(args)
    return lambda row, ctx: "".join(as_text(source(row, ctx), name) for source in sources)


def op_replace_with(name: str, args: list[Any]) -> Fn:
    pattern, replacement, source = args
    try:
        regex = compile_java_regex(pattern)
    except RegexError as exc:
        raise ArgError(0, str(exc)) from None
    try:
        template = compile_java_replacement(replacement, regex)
    except RegexError as exc:
        raise ArgError(1, str(exc)) from None
    return lambda row, ctx: regex.sub(template, as_text(source(row, ctx), name))


def op_split(name: str, args: list[Any]) -> Fn:
    separator, source = args
    if not separator:
        raise ArgError(0, f"the separator is empty; write [\"{name}\", \",\", SOURCE_DESCRIPTION]")
    return lambda row, ctx: as_text(source(row, ctx), name).split(separator)


def op_lowercase(name: str, args: list[Any]) -> Fn:
    (source,) = args
    return lambda row, ctx: as_text(source(row, ctx), name).lower()
