"""The SOURCE_DESCRIPTION grammar compiled once into closures; every mistake is a ConverterError with its path.

    SOURCE_DESCRIPTION := BASIC_PATH | LIST_OPERATOR | JSON_OBJECT
    BASIC_PATH         := "fieldName"                  a field of the row (inside "path": of the current element)
    LIST_OPERATOR      := ["opName", arg1, arg2, ...]  the first element names the operator
    JSON_OBJECT        := {"k1": SD, "k2": SD, ...}    sugar for ["dict", "k1", SD, "k2", SD, ...]

Nothing of the JSON is looked at when rows are evaluated: the result is a tree of closures ``(row, ctx) -> value``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

from stream.imports.converter.errors import ArgError, ConverterError, child_path
from stream.imports.converter.operators import JSON, OPERATORS, RAW, SD
from stream.imports.converter.ops_structure import basic_path, check_unique_keys
from stream.imports.converter.values import Fn, is_json, show

MAX_DEPTH = 64  # far beyond any real converter; keeps compiling and evaluating clear of the recursion limit
_HINTS = {  # names people reach for that the language spells otherwise
    "coalesce": "write 'any': it returns the first source that has a value",
    "addf": "write 'add': it returns a float when an operand is not an integer",
}
_FORMS = 'a field name ("user"), an operator list (["lowercase", "user"]) or an object ({"key": "user"})'


def compile_source(sd: Any, path: str = "") -> Fn:
    """Compile one SOURCE_DESCRIPTION; ``path`` (where it sits in the document) prefixes error paths."""
    return _compile(sd, path, None, 0)


def dict_entries(sd: Any, path: str) -> list[tuple[str, Any, str]] | None:
    """(key, description, path) of each entry if ``sd`` builds an object (JSON object or ``dict``), else None.

    The converter uses this to treat objects of its output specially (an entry that fails is left out).
    """
    if isinstance(sd, Mapping):
        entries = []
        for key, value in sd.items():
            if not isinstance(key, str):
                raise ConverterError(path, None, f"object keys must be strings, got {show(key)}")
            entries.append((key, value, child_path(path, key)))
        return entries
    if isinstance(sd, (list, tuple)) and sd and sd[0] == "dict":
        args = list(sd[1:])
        _check_arity("dict", args, path)
        keys = []
        for i in range(0, len(args), 2):
            keys.append(_raw_string("dict", args[i], child_path(path, i + 1)))
        try:
            check_unique_keys(keys)
        except ArgError as exc:
            raise ConverterError(child_path(path, exc.index + 1), "dict", exc.message) from None
        return [(keys[i // 2], args[i + 1], child_path(path, i + 2)) for i in range(0, len(args), 2)]
    return None


def _compile(sd: Any, path: str, parent: str | None, depth: int) -> Fn:
    if depth > MAX_DEPTH:
        raise ConverterError(path, parent, f"nested more than {MAX_DEPTH} levels deep; simplify the description")
    if isinstance(sd, str):
        if not sd:
            raise ConverterError(path, parent, 'an empty field name; write the name of a column, such as "user"')
        return basic_path(sd)
    if isinstance(sd, Mapping):
        prepared: list[Any] = []
        for key, value, entry_path in dict_entries(sd, path) or ():
            prepared += [key, _compile(value, entry_path, "dict", depth + 1)]
        return _build("dict", prepared, path)
    if isinstance(sd, (list, tuple)):
        return _compile_operator(sd, path, parent, depth)
    literal = json.dumps(sd) if is_json(sd) else "..."
    raise ConverterError(path, parent, f"{show(sd)} is not a SOURCE_DESCRIPTION; write {_FORMS}, "
                                       f'or ["value", {literal}] for a literal')


def _compile_operator(sd: list[Any] | tuple[Any, ...], path: str, parent: str | None, depth: int) -> Fn:
    if not sd:
        raise ConverterError(path, parent, f"an empty list is not a SOURCE_DESCRIPTION; write {_FORMS}")
    name = sd[0]
    if not isinstance(name, str):
        raise ConverterError(child_path(path, 0), parent,
                             f'the first element of a list names the operator, got {show(name)}; write ["value", ...] '
                             "for a literal list")
    spec = OPERATORS.get(name)
    if spec is None:
        raise ConverterError(path, name, _unknown_operator(name))
    args = list(sd[1:])
    _check_arity(name, args, path)
    prepared: list[Any] = []
    for i, arg in enumerate(args):
        arg_path = child_path(path, i + 1)
        kind = spec.kind(i)
        if kind == SD:
            prepared.append(_compile(arg, arg_path, name, depth + 1))
        elif kind == RAW:
            prepared.append(_raw_string(name, arg, arg_path))
        else:
            assert kind == JSON
            if not is_json(arg):
                raise ConverterError(arg_path, name, f"{show(arg)} is not a JSON value")
            prepared.append(arg)
    return _build(name, prepared, path)


def _build(name: str, prepared: list[Any], path: str) -> Fn:
    try:
        return OPERATORS[name].build(name, prepared)
    except ArgError as exc:
        raise ConverterError(child_path(path, exc.index + 1), name, exc.message) from None


def _check_arity(name: str, args: list[Any], path: str) -> None:
    spec = OPERATORS[name]
    if not spec.accepts(len(args)):
        raise ConverterError(path, name, f"takes {spec.expected()}, got {len(args)}; write {spec.syntax}")


def _raw_string(name: str, arg: Any, path: str) -> str:
    if not isinstance(arg, str):
        raise ConverterError(path, name, f"needs a literal string here (it is not read from the row), "
                                         f"got {show(arg)}; write {OPERATORS[name].syntax}")
    return arg


def _unknown_operator(name: str) -> str:
    if name in _HINTS:
        return f"unknown operator {name!r}; {_HINTS[name]}"
    close = difflib.get_close_matches(name, list(OPERATORS), n=1, cutoff=0.6)
    if close:
        return f"unknown operator {name!r}; did you mean {close[0]!r}?"
    names = ", ".join(sorted({spec.name for spec in OPERATORS.values()}))
    return f'unknown operator {name!r}; write one of {names} (a literal list is ["value", [...]])'
