"""A dict row goes through the converter's generated function: the same output, key order, values and field errors
as the entry-by-entry evaluation, on generated converters and rows."""

import math
from types import MappingProxyType

from hypothesis import given
from hypothesis import strategies as st

from stream.imports.converter import Converter, Ctx, NoValue
from stream.imports.converter.converter import MISSING, _evaluate
from tests.unit.imports.converter.test_generated import FAST, FIELDS, any_rows, descriptions, json_rows

ODD_KEYS = ["event_type", "a'b", 'q"uote', "back\\slash", "new\nline", "ü€", "{x}", "1", ""]
output_keys = st.sampled_from(FIELDS + ODD_KEYS)
outputs = st.recursive(descriptions, lambda inner: st.dictionaries(output_keys, inner, min_size=1, max_size=3),
                       max_leaves=10)
funcs = st.dictionaries(output_keys, outputs, min_size=1, max_size=6)


def same(a, b):
    """Equal values of the same types, objects with their keys in the same order (NaN equal to itself)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def reference(convert, row, now_ms):
    errors = []
    return _evaluate(convert._entries, row, Ctx(now_ms), errors), errors


@FAST
@given(funcs, st.lists(st.one_of(json_rows, any_rows), min_size=1, max_size=4), st.integers(0, 2**45))
def test_a_dict_row_converts_as_the_entries_evaluate_it(func, rows, now_ms):
    convert = Converter(func)
    for row in rows:
        try:
            want = reference(convert, row, now_ms)
        except Exception as exc:   # an operator that raises (not NoValue) raises the same in both
            try:
                convert(row, now_ms)
            except type(exc):
                continue
            raise AssertionError(f"{func}: {row} raised {exc!r} only in the reference")
        got = convert(row, now_ms)
        assert same(got[0], want[0]) and got[1] == want[1], (func, row)
        values, errors = convert.values(row, now_ms)   # the top-level values in the order of fields, MISSING if out
        assert same(list(values), [want[0].get(k, MISSING) for k in convert.fields]) and errors == want[1], (func, row)


def test_a_converter_of_columns_and_operators_gives_the_reference_output_in_order():
    func = {"event_type": "event", "user_id": ["lowercase", "user"], "p": {"b": "missing", "a": "x", "c": {"d": "y"}},
            "a'b": "x", "time": "ts"}
    convert = Converter(func)
    row = {"event": "Play", "user": "ANN", "x": 1, "ts": 5}
    out, errors = convert(row, 0)
    assert list(out.items()) == [("event_type", "Play"), ("user_id", "ann"), ("p", {"a": 1, "c": {}}), ("a'b", 1),
                                 ("time", 5)]
    assert [(e.field, e.message) for e in errors] == [("p.b", "no field 'missing'"), ("p.c.d", "no field 'y'")]
    assert (out, errors) == reference(convert, row, 0)
    assert isinstance(NoValue("x"), Exception)
    assert convert.values(row, 0) == (("Play", "ann", {"a": 1, "c": {}}, 1, 5), errors)
    assert convert.values(MappingProxyType(row), 0) == (("Play", "ann", {"a": 1, "c": {}}, 1, 5), errors)   # not a dict
    assert convert.values({"event": "Play"}, 0)[0] == ("Play", MISSING, {"c": {}}, MISSING, MISSING)


column_outputs = st.recursive(st.sampled_from(FIELDS + ["a.b", "x y"]),
                              lambda inner: st.dictionaries(output_keys, inner, max_size=3), max_leaves=10)


@FAST
@given(st.dictionaries(output_keys, column_outputs, min_size=1, max_size=6),
       st.lists(st.dictionaries(st.sampled_from(FIELDS + ["a.b", "x y"]), st.one_of(json_rows, st.none(), st.just(1)),
                                max_size=12), min_size=1, max_size=4),
       st.integers(0, 11))
def test_a_row_holding_every_column_of_a_converter_of_columns_converts_as_the_entries_evaluate_it(func, rows, drop):
    """A converter whose every leaf is a column reads a row that holds them all in one expression: the same output,
    key order and values as the entries' evaluation; a row missing one (KeyError) goes the entry-by-entry code."""
    convert = Converter(func)
    columns = set()

    def collect(d):
        for v in d.values():
            collect(v) if isinstance(v, dict) else columns.add(v)
    collect(func)
    for row in rows:
        full = {**{c: f"v-{c}" for c in sorted(columns)}, **row}
        for r in (full, {k: v for i, (k, v) in enumerate(full.items()) if i != drop}):
            want = reference(convert, r, 0)
            got = convert(r, 0)
            assert same(got[0], want[0]) and got[1] == want[1], (func, r)
            values, errors = convert.values(r, 0)
            assert same(list(values), [want[0].get(k, MISSING) for k in convert.fields]) and errors == want[1]


def test_a_converter_of_columns_reads_a_row_holding_them_all_at_once():
    convert = Converter({"event_type": "e", "p": {"b": "x", "a": "y", "c": {}}, "user_id": "u"})
    row = {"u": "ann", "y": 2, "x": 1, "e": "Play"}
    assert convert(row, 0) == ({"event_type": "Play", "p": {"b": 1, "a": 2, "c": {}}, "user_id": "ann"}, [])
    assert list(convert(row, 0)[0]["p"]) == ["b", "a", "c"]
    assert convert.values(row, 0) == (("Play", {"b": 1, "a": 2, "c": {}}, "ann"), [])
    out, errors = convert({"u": "ann", "e": "Play", "x": 1}, 0)
    assert out == {"event_type": "Play", "p": {"b": 1, "c": {}}, "user_id": "ann"}
    assert [(e.field, e.message) for e in errors] == [("p.a", "no field 'y'")]


def test_the_objects_of_the_output_are_the_fields_built_of_the_converter_s_own_text_keys():
    class Text(str):
        pass
    convert = Converter({"event_type": "e", "p": {"b": "x", "c": {}}, "q": ["lowercase", "y"], "r": {Text("k"): "x"},
                         "s": {}})
    assert convert.objects() == frozenset({"p", "s"})
    assert convert.columns_read() is None   # q is an operator
    assert Converter({"a": "x", "p": {"b": "y", "c": {}}}).columns_read() == "(row['x'], {'b': row['y'], 'c': {}}, )"
