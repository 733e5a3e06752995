"""The compiled ``convertToAmplitudeFunc``: row -> (output, field errors); a field that fails is left out, never raised.

The output's own objects -- the mapping itself and every object nested directly in it, such as
``"event_properties": {"sku": "sku", "price": "price"}`` -- are evaluated entry by entry: an entry that has no
value is left out and reported at its output path (``event_properties.price``) while its siblings stay.
Below an operator, an object is an ordinary value and fails as a whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stream.imports.converter.compile import MAX_DEPTH, compile_source, dict_entries
from stream.imports.converter.errors import ConverterError, FieldError, NoValue
from stream.imports.converter.values import Ctx, Fn


_MISSING = object()
MISSING = _MISSING
"""``Converter.values``'s value of an output field left out."""


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    field: str  # output path, for FieldError
    source: Fn | None  # set for a leaf
    children: tuple[_Entry, ...]  # set for an object of the output
    column: str | None = None  # a leaf that is a field name: looked up inline in a dict row (its source otherwise)


class Converter:
    """Amplitude's ``convertToAmplitudeFunc`` compiled once; call it with a row and the current time."""

    __slots__ = ("fields", "_entries", "_dict_row", "_dict_values", "_ctx")

    def __init__(self, func: Mapping[str, Any], path: str = "convertToAmplitudeFunc") -> None:
        if not isinstance(func, Mapping):
            raise ConverterError(path, None, 'must be an object of output fields, e.g. {"event_type": "action"}')
        if not func:
            raise ConverterError(path, None, 'maps no field; write at least {"event_type": ..., "user_id": ...}')
        self._entries = _compile_object(func, path, "", 0)
        self._dict_row = _generate(self._entries)
        self._dict_values = _generate(self._entries, as_values=True)
        self.fields: tuple[str, ...] = tuple(entry.key for entry in self._entries)
        self._ctx = Ctx(0)

    def __call__(self, row: Mapping[str, Any], now_ms: int) -> tuple[dict[str, Any], list[FieldError]]:
        """The output built from ``row`` and one FieldError per field left out; ``now_ms`` feeds the *_now operators."""
        errors: list[FieldError] = []
        ctx = self._ctx
        if ctx.now_ms != now_ms:   # the rows of a chunk share their clock: one Ctx (frozen) for them all
            ctx = self._ctx = Ctx(now_ms)
        if type(row) is dict:
            return self._dict_row(row, ctx, errors), errors
        return _evaluate(self._entries, row, ctx, errors), errors

    def values(self, row: Mapping[str, Any], now_ms: int) -> tuple[tuple[Any, ...], list[FieldError]]:
        """``self(row, now_ms)`` as a tuple of the output's top-level values in the order of ``fields``, ``MISSING``
        for a field left out: the same values and errors, without the output's own dict (for a caller that takes
        the fields one by one, such as the import's straight route into normalize's Struct)."""
        errors: list[FieldError] = []
        ctx = self._ctx
        if ctx.now_ms != now_ms:
            ctx = self._ctx = Ctx(now_ms)
        if type(row) is dict:
            return self._dict_values(row, ctx, errors), errors
        out = _evaluate(self._entries, row, ctx, errors)
        return tuple(out.get(key, _MISSING) for key in self.fields), errors

    def columns_read(self) -> str | None:
        """Where every leaf of the output is a column: the expression of a dict row ``row`` that gives what
        ``values`` gives of a row holding all those columns (the top-level values as a tuple, in the order of
        ``fields``) and raises KeyError for a row without one of them (whose errors ``values`` gives); None for a
        converter with an operator or a literal. For a caller that writes the converter into code of its own (the
        import's loop over a chunk's rows)."""
        return _by_columns(self._entries, True)

    def objects(self) -> frozenset[str]:
        """The output's fields that are objects of the output whose keys are all ``str`` (the converter's own keys,
        not a subclass): a dict row's value of such a field is a dict of those keys."""
        return frozenset(entry.key for entry in self._entries
                         if entry.source is None and all(type(child.key) is str for child in entry.children))

    def __repr__(self) -> str:
        return f"Converter(fields={self.fields!r})"


def _compile_object(sd: Any, path: str, field: str, depth: int) -> tuple[_Entry, ...]:
    if depth > MAX_DEPTH:
        raise ConverterError(path, None, f"objects nested more than {MAX_DEPTH} levels deep; flatten the output")
    compiled = []
    for key, description, entry_path in dict_entries(sd, path) or ():
        entry_field = f"{field}.{key}" if field else key
        if dict_entries(description, entry_path) is not None:
            children = _compile_object(description, entry_path, entry_field, depth + 1)
            compiled.append(_Entry(key, entry_field, None, children))
        else:
            column = description if isinstance(description, str) else None
            compiled.append(_Entry(key, entry_field, compile_source(description, entry_path), (), column))
    return tuple(compiled)


def _evaluate(entries: tuple[_Entry, ...], row: Any, ctx: Ctx, errors: list[FieldError]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    is_dict = type(row) is dict
    for entry in entries:
        if entry.source is None:
            out[entry.key] = _evaluate(entry.children, row, ctx, errors)
            continue
        if is_dict and entry.column is not None:   # a field name: what basic_path reads, without its call
            value = row.get(entry.column, _MISSING)
            if value is not _MISSING:
                out[entry.key] = value
                continue
        try:
            out[entry.key] = entry.source(row, ctx)
        except NoValue as exc:
            errors.append(FieldError(entry.field, str(exc)))
    return out


def _by_columns(entries: tuple[_Entry, ...], as_tuple: bool) -> str | None:
    """The output of a dict row holding every column the entries read as one expression of ``row[...]`` (a tuple
    of the top-level values with ``as_tuple``), which raises KeyError for a row without one of them; None when an
    entry is no column (an operator or a literal), whose value could be missing for a row that has every column."""
    values = []
    for entry in entries:
        if entry.source is None:
            value = _by_columns(entry.children, False)
        else:
            value = None if entry.column is None else f"row[{entry.column!r}]"
        if value is None:
            return None
        values.append(value)
    if as_tuple:
        return f"({''.join(f'{v}, ' for v in values)})"
    return "{" + ", ".join(f"{entry.key!r}: {v}" for entry, v in zip(entries, values)) + "}"


def _generate(entries: tuple[_Entry, ...], as_values: bool = False) -> Callable[[dict[str, Any], Ctx, list[FieldError]],
                                                                              Any]:
    """``_evaluate`` of a dict row as one generated function: the output built by straight-line code, a column
    read inline (its compiled lookup called only when the column is missing, for its error), an operator called
    directly; the same output (keys in the same order) and errors as ``_evaluate``, without its loop. With
    ``as_values``, the output's top-level values as a tuple in the order of ``entries`` (``_MISSING`` for one left
    out) instead of the output dict."""
    lines = ["def convert(row, ctx, errors):"]
    whole = _by_columns(entries, as_values)
    if whole is not None:   # every leaf a column: a row holding them all is read in one expression
        lines.extend(["    try:", f"        return {whole}", "    except KeyError:", "        pass"])
    lines.append("    get = row.get")
    env: dict[str, Any] = {"_M": _MISSING, "NoValue": NoValue, "FieldError": FieldError}
    counter = iter(range(1 << 30))

    def emit(entries: tuple[_Entry, ...], out: str, top: bool = False) -> None:
        if top and as_values:
            lines.extend(f"    t{i} = _M" for i in range(len(entries)))
        else:
            lines.append(f"    {out} = {{}}")
        for i, entry in enumerate(entries):
            key, where = repr(entry.key), repr(entry.field)
            target = f"t{i}" if top and as_values else f"{out}[{key}]"
            if entry.source is None:
                inner = f"o{next(counter)}"
                emit(entry.children, inner)
                lines.append(f"    {target} = {inner}")
                continue
            fn = f"s{next(counter)}"
            env[fn] = entry.source
            call = [f"    try:", f"        {target} = {fn}(row, ctx)", "    except NoValue as exc:",
                    f"        errors.append(FieldError({where}, str(exc)))"]
            if entry.column is None:
                lines.extend(call)
                continue
            lines.append(f"    v = get({entry.column!r}, _M)")
            lines.append("    if v is not _M:")
            lines.append(f"        {target} = v")
            lines.append("    else:")
            lines.extend("    " + line for line in call)

    emit(entries, "out", top=True)
    lines.append(f"    return ({''.join(f't{i}, ' for i in range(len(entries)))})" if as_values else "    return out")
    exec(compile("\n".join(lines), "<converter>", "exec"), env)   # noqa: S102 -- our own code, keys as repr()
    return env["convert"]
