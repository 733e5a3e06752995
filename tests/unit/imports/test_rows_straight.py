"""An event source's rows straight from the converter's values into normalize's fast path, against the dict's way.

``rows.convert`` takes a row whose converted fields the fast path takes straight there (``Converter.values``,
``fast_event_builder``, ``normalize_fast_event``) and every other row the dict's way (converter output, ``shape``,
ids, ``normalize``). Both must give the same events, dead letters and counts: compared on generated converters (the
event's input fields, and a field that is not one, as columns, operators, literals and objects of the output) and
rows whose columns carry values of every JSON type (valid ones, and the odd ones of
``tests/unit/events/test_normalize_generated.py``), for every data type and sync setting.
"""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.events import deadletter
from stream.events.fields import INPUT_FIELDS, Kind
from stream.events.normalize import Rules, uuid5_many, uuid5_str, uuid5_texts
from stream.imports import rows as rows_module
from stream.imports.files import ROW_SLOTS, ImportFile
from stream.imports.reader import Row, RowError, RowErrorReason
from stream.imports.rows import FileContext, convert
from stream.settings import SourceSettings
from tests.unit.events.test_normalize_generated import MAX_TIME_MS, ODD, VALID, json_values, not_json, rules

GENERATED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILE = ImportFile("clicks", "bkt", "d/1.json.gz", 1_700_000_000_000, "sqs", size=10, etag="abc")
T = 1_710_000_000_123
KEYS = sorted(INPUT_FIELDS) + ["colour"]
FORMS = ["column", "column", "column", "lowercase", "literal", "object"]


def values_of(key: str):
    if key not in INPUT_FIELDS:
        return json_values
    return VALID[key] | VALID[key] | ODD[key] | not_json


@st.composite
def converters_and_rows(draw):
    """(converter description, rows): every output field read from a column of its own (``c_<field>``), or an
    operator, a literal or an object of the output over it; rows with or without each column."""
    func: dict = {"event_type": "c_event_type", "user_id": "c_user_id"}
    columns = {"c_event_type": values_of("event_type"), "c_user_id": values_of("user_id")}
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=7, unique=True)):
        column = f"c_{key}"
        form = draw(st.sampled_from(FORMS))
        if form == "column":
            func[key] = column
            columns[column] = values_of(key)
        elif form == "lowercase":   # a field left out when its column is not text
            func[key] = ["lowercase", column]
            columns[column] = values_of(key)
        elif form == "literal":
            func[key] = ["value", draw(json_values)]
        else:                       # an object of the output: an entry missing from the row is left out
            func[key] = {"a": column, "b": "c_nowhere", "n": {"x": "c_user_id"}}
            columns[column] = json_values | not_json
    rows = []
    for n in range(1, draw(st.integers(1, 4)) + 1):
        row = {c: draw(v) for c, v in columns.items() if draw(st.integers(0, 5))}
        rows.append(Row(n, row))
    if draw(st.booleans()):
        rows.insert(0, RowError(len(rows) + 1, RowErrorReason.MALFORMED_JSON, "line 9 is bad"))
    return func, rows


def source(func, **kw) -> SourceSettings:
    return SourceSettings(name="clicks", project=7, bucket="bkt",
                          converter={"converterConfig": {"convertToAmplitudeFunc": func}}, **kw)


def context(src: SourceSettings, rules: Rules, server_ms: int = T) -> FileContext:
    return FileContext(src, FILE, 5, server_ms, rules, record="imports.files/1/5")


def same(a, b) -> None:
    assert a.events == b.events
    assert a.dead == b.dead
    assert (a.rows, a.fields_left_out, dict(a.reasons), a.mutations) == (b.rows, b.fields_left_out, dict(b.reasons),
                                                                        b.mutations)


@GENERATED
@given(converters_and_rows(), st.sampled_from(["event", "event", "event", "user_properties", "group_properties"]),
       st.booleans(), rules, st.sampled_from([T, T - 10**9, 0, MAX_TIME_MS]),
       st.integers(T - 3_600_000, T + 3_600_000))
def test_generated_converters_and_rows_give_the_dict_way_s_events_dead_letters_and_counts(
        case, data_type, skip_sync, rules, server_ms, now_ms):
    func, items = case
    src = source(func, data_type=data_type, skip_user_properties_sync=skip_sync)
    ctx = context(src, rules, server_ms)
    same(convert(ctx, items, now_ms), convert(ctx, items, now_ms, straight=False))


BENCH = {"event_type": "event", "user_id": "user", "device_id": "device", "time": "ts",
         "event_properties": {k: k for k in ("page", "plan", "price", "qty", "campaign", "file")}}


def bench_row(n: int, **v) -> Row:
    return Row(n, {"event": "Play", "user": f"user-{n:06d}", "device": f"device-{n:07d}", "ts": T - 5000 - n,
                   "page": "/", "plan": "pro", "price": 9.5, "qty": 2, "campaign": "brand", "file": "t000", **v})


def test_a_source_of_column_renames_takes_the_straight_route_with_the_same_ids(monkeypatch):
    src = source(BENCH)
    items = [bench_row(n) for n in range(1, 6)] + [bench_row(6, insert_id="own", uuid="x")]
    want = convert(context(src, Rules()), items, T, straight=False)

    def no_dicts(*args, **kw):
        raise AssertionError("the dict's way was taken")
    monkeypatch.setattr(rows_module, "normalize", no_dicts)
    got = convert(context(src, Rules()), items[:5], T)
    same(got, type(want)(events=want.events[:5], rows=5))
    line = orjson.loads(got.events[0][1].line)
    assert line["$insert_id"] == uuid5_str("s3-import/clicks/d/1.json.gz#1")
    assert line["uuid"] == uuid5_str("imports.files/1/5#1") and got.events[0][1].uuid.hex() == line["uuid"].replace(
        "-", "")
    assert line["data"] == {"$skip_user_properties_sync": True}
    assert [offset - 5 * ROW_SLOTS for offset, _ in got.events] == [1, 2, 3, 4, 5]


def test_rows_the_fast_path_refuses_go_the_dict_way_to_its_answer():
    src = source({**BENCH, "uuid": "u", "session_id": "s", "location_lat": "lat"})
    items = [bench_row(1), bench_row(2, u="not a uuid"), bench_row(3, s="12"), bench_row(4, lat=math.nan),
             bench_row(5, user="null", device="nil"), bench_row(6, event=""), bench_row(7, s=2**64),
             bench_row(8, u="5BA40637-3BDE-4060-A429-E47906945ED5"), bench_row(9, ts=-1)]
    got = convert(context(src, Rules()), items, T)
    same(got, convert(context(src, Rules()), items, T, straight=False))
    assert [offset - 5 * ROW_SLOTS for offset, _ in got.events] == [1, 3, 7, 8]
    assert dict(got.reasons) == {"invalid_value": 2, "invalid_type": 1, "invalid_id": 1, "missing_event_type": 1}


def test_a_row_over_the_size_limit_is_dead_lettered_as_the_dict_way_does():
    src = source(BENCH)
    items = [bench_row(1), bench_row(2, page="p" * 1000)]
    got = convert(context(src, Rules(max_event_bytes=2000)), items, T)
    same(got, convert(context(src, Rules(max_event_bytes=2000)), items, T, straight=False))
    assert dict(got.reasons) == {"too_large": 1} and len(got.events) == 1


@pytest.mark.parametrize("func", [{**BENCH, "colour": "event"}, {"event_type": ["value", "x"], "user_id": "user"}])
def test_a_converter_field_that_is_no_event_field_sends_every_row_the_dict_way(func):
    src = source(func)
    straight = rows_module._straight(src)
    assert (straight is None) == ("colour" in func)
    items = [bench_row(1), bench_row(2)]
    same(convert(context(src, Rules()), items, T), convert(context(src, Rules()), items, T, straight=False))


non_text_keys = st.dictionaries(st.integers(0, 3) | st.sampled_from([1.5, None, True]), json_values, min_size=1,
                                max_size=3)   # convert takes any row; the readers give text keys


@st.composite
def column_converters_and_rows(draw):
    """(converter description, rows): every output field a column of its own (``c_<field>``), or an object of
    columns; rows holding every column but now and then one, with values valid and odd, and now and then an item that
    is no dict row."""
    func: dict = {"event_type": "c_event_type", "user_id": "c_user_id"}
    columns = {"c_event_type": values_of("event_type"), "c_user_id": values_of("user_id")}
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=7, unique=True)):
        column = f"c_{key}"
        if draw(st.integers(0, 4)):
            func[key] = column
            columns[column] = values_of(key) | (non_text_keys if key in INPUT_FIELDS and
                                                INPUT_FIELDS[key][0] is Kind.DICT else st.nothing())
        else:
            func[key] = {"a": column, "n": {"x": "c_user_id"}}
            columns[column] = json_values | not_json
    rows: list = []
    for n in range(1, draw(st.integers(1, 6)) + 1):
        row = {c: draw(v) for c, v in columns.items()}
        if not draw(st.integers(0, 4)):
            del row[draw(st.sampled_from(sorted(row)))]
        rows.append(Row(n, row) if draw(st.integers(0, 9)) else
                    draw(st.sampled_from([RowError(n, RowErrorReason.MALFORMED_JSON, "bad"), Row(n, [1])])))
    return func, rows


@GENERATED
@given(column_converters_and_rows(), st.booleans(), rules, st.sampled_from([T, T - 10**9, 0, MAX_TIME_MS]),
       st.integers(T - 3_600_000, T + 3_600_000))
def test_a_converter_of_columns_runs_a_chunk_in_one_loop_to_the_dict_way_s_answer(case, skip_sync, rules, server_ms,
                                                                                    now_ms):
    """``_Straight.run``: a chunk's rows read, checked and made in one loop, the rows it declines going their own
    way one by one, give what the dict's way gives and what the row-by-row straight route gives."""
    func, items = case
    src = source(func, skip_user_properties_sync=skip_sync)
    ctx = context(src, rules, server_ms)
    got = convert(ctx, items, now_ms)
    same(got, convert(ctx, items, now_ms, straight=False))
    straight = rows_module._straight(src)
    if straight is not None and straight.make is not None:
        assert straight.run is not None
        rows_module._STRAIGHT[(id(src.compiled.convert), "event", skip_sync)] = (
            src.compiled.convert, rows_module._Straight(*[getattr(straight, k) for k in
                                                          ("build", "write", "make", "skip_at", "adds_skip")]))
        try:
            same(got, convert(ctx, items, now_ms))   # row by row
        finally:
            rows_module._STRAIGHT.clear()


def test_the_loop_of_a_chunk_takes_the_rows_it_can_and_hands_each_other_item_its_own_way(monkeypatch):
    src = source(BENCH)
    straight = rows_module._straight(src)
    assert straight.run is not None
    assert rows_module._straight(source({**BENCH, "user_id": ["lowercase", "user"]})).run is None   # an operator
    assert rows_module._straight(source({**BENCH, "insert_id": "i"})).run is None   # no maker
    big = bench_row(4, page="p" * 3000)
    missing_ts = bench_row(5)
    del missing_ts.value["ts"]
    items = [bench_row(1), RowError(2, RowErrorReason.MALFORMED_JSON, "bad"), Row(3, [1]), big, missing_ts,
             bench_row(6, user="null", device="nil"), bench_row(7, price=math.inf), bench_row(8)]
    ctx = context(src, Rules(max_event_bytes=2500))
    taken = []

    def spy(at, item):
        taken.append(item.number)
    want = convert(ctx, items, T, straight=False)
    got = convert(ctx, items, T)
    same(got, want)
    assert [offset - 5 * ROW_SLOTS for offset, _ in got.events] == [1, 5, 7, 8]
    assert dict(got.reasons) == {"malformed_json": 1, "missing_event_type": 1, "too_large": 1, "invalid_id": 1}
    numbers = range(1, 9)
    events: list = []
    made = straight.run(items, uuid5_texts("i", numbers), *uuid5_many("u", numbers), 7, T, Rules(max_event_bytes=2500),
                        T, True, 100, 2500, events, spy)
    assert made == 3 and taken == [2, 3, 4, 5, 6]   # 1, 7 (a price among the properties) and 8 made in the loop
    assert [offset for offset, _ in events] == [101, 107, 108]


def test_an_object_with_keys_that_are_not_text_from_a_column_goes_the_dict_way():
    """The loop leaves the check of an object's keys out only for the converter's own objects of the output."""
    src = source({**BENCH, "event_properties": "props", "groups": {"g": "plan"}})
    items = [bench_row(1, props={"a": 1}), bench_row(2, props={1: "x"}), bench_row(3, props={"a": {2: 3}})]
    got = convert(context(src, Rules()), items, T)
    same(got, convert(context(src, Rules()), items, T, straight=False))
    assert rows_module._straight(src).run is not None and src.compiled.convert.objects() == {"groups"}


def test_a_chunk_with_a_row_number_past_the_slots_raises_as_row_by_row():
    src = source(BENCH)
    for n in (ROW_SLOTS, 0):
        with pytest.raises(ValueError, match="rows one file may hold"):
            convert(context(src, Rules()), [bench_row(1), bench_row(n)], T)
    last = convert(context(src, Rules()), [bench_row(ROW_SLOTS - 1)], T)
    assert [offset for offset, _ in last.events] == [5 * ROW_SLOTS + ROW_SLOTS - 1]


@pytest.mark.parametrize("props", [{None: 1}, {"a": {None: 1}}, {"a": [{None: 1}]}])
def test_a_row_whose_properties_hold_a_key_json_cannot_write_is_dead_lettered_on_every_route(props):
    """An object key JSON has no text for (the readers give text keys; ``convert`` takes any row): the chunk's loop,
    the row-by-row route and the dict's way each dead-letter the row with its field, and take the rows around it."""
    src = source({**BENCH, "user_properties": "props"})
    items = [bench_row(1), bench_row(2, props=props), bench_row(3, props={"ok": 1})]
    want = convert(context(src, Rules()), items, T, straight=False)
    assert [offset % ROW_SLOTS for offset, _ in want.events] == [1, 3]
    assert [(d["reason"], d["field"], d["detail"]) for d in (deadletter.decode(v) for _, v in want.dead)] == [
        ("invalid_value", "user_properties",
         "user_properties holds an object whose key is neither text nor a number: give its keys as text")]
    same(convert(context(src, Rules()), items, T), want)   # the chunk's loop
    straight = rows_module._straight(src)
    assert straight.run is not None
    rows_module._STRAIGHT[(id(src.compiled.convert), "event", False)] = (
        src.compiled.convert, rows_module._Straight(*[getattr(straight, k) for k in
                                                      ("build", "write", "make", "skip_at", "adds_skip")]))
    try:
        same(convert(context(src, Rules()), items, T), want)   # row by row
    finally:
        rows_module._STRAIGHT.clear()
