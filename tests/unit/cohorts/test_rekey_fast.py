"""The rekey step's fast read of a row (``RowReader``: only the fields and property names its cohorts read) gives the
records of the reference read (``row_decoder``, each object whole), byte for byte, or the same error, on generated
rows: figure B's sample events, and rows with fields missing, null, of other types, duplicated, or not JSON."""

import sys
from pathlib import Path

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.cohorts.rules import parse_cohorts
from stream.cohorts.stage import Rekeyer, RowReader
from stream.events.batch import EventBatch, Origin

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
P = 424242
UPLOADED = 1_733_000_000_000     # 2024-11-30 20:53 UTC

COHORTS = parse_cohorts([
    {"id": "buyers", "project": P, "name": "Buyers", "rule": {"and": [
        {"performed": "purchase", "within_days": 7},
        {"user_property": "plan", "op": "=", "value": "pro"}]}},
    {"id": "carts", "project": P, "name": "Carts", "rule": {"performed": "Product Added", "within_days": 3, "where": [
        {"property": "event_properties.page", "op": "=", "value": "/cart"},
        {"property": "country", "op": "!=", "value": "France"}]}},
    {"id": "fans", "project": P, "name": "Fans", "rule": {"or": [
        {"performed": "view", "within_days": 2},
        {"not": {"performed": "refund", "count": {"op": "at_least", "n": 2}, "within_days": 30}},
        {"user_property": "utm source", "op": "is_set"}]}},
    {"id": "others", "project": 7, "name": "Another project's", "rule": {"and": [
        {"performed": "purchase", "within_days": 1}, {"user_property": "tier", "op": "=", "value": "gold"}]}},
], keep_properties=["lifetime_value"])


def reference(rekeyer: Rekeyer) -> Rekeyer:
    rekeyer.reader.usable = False
    return rekeyer


def batch_of(lines: list[bytes]) -> EventBatch:
    n = len(lines)
    return EventBatch(P, 0, Origin("events.valid", 0, 100), list(range(100, 100 + n)), [b"k"] * n,
                      [UPLOADED + i * 997 for i in range(n)], [b"u"] * n, lines)


def records(rekeyer: Rekeyer, lines: list[bytes]):
    """Each line's record alone (its encoded bytes, None when it makes none), or the error's type."""
    out = []
    for i, line in enumerate(lines):
        try:
            sends = rekeyer.batch(i % 4, batch_of([line]))
        except Exception as exc:     # the reference's error, raised the same by both
            out.append(type(exc).__name__)
        else:
            out.append(sends)
    return out


def test_the_fast_read_is_used_and_gives_the_reference_records_on_figure_b_events():
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
    import workload
    w = workload.generate(3000, 4, seed=11, now_ms=UPLOADED)
    lines = []
    for part, data, _ in workload.batches(w, "events.ingest", P, 4):
        for i, line in enumerate(EventBatch.decode(data).lines):
            row = orjson.loads(line)
            row["amplitude_id"] = 1000 + i % 37
            if i % 5 == 0:
                row["event_type"] = "purchase"
            if i % 7 == 0:
                row["user_properties"]["plan"] = "pro"
            lines.append(orjson.dumps(row))
    fast, ref = Rekeyer(COHORTS, 4), reference(Rekeyer(COHORTS, 4))
    assert fast.reader.usable and fast.reader.filtered
    calls = []
    read = fast.reader.read
    fast.reader.read = lambda line: calls.append(1) or read(line)
    for k in range(0, len(lines), 50):
        b = batch_of(lines[k:k + 50])
        assert fast.batch(k % 4, b) == ref.batch(k % 4, b)
    assert len(calls) == len(lines)
    # what the records hold: some match each cohort's conditions, with the kept properties
    recs = [r for _, _, v in Rekeyer(COHORTS, 4).batch(0, batch_of(lines)) for r in msgspec.msgpack.decode(v)]
    assert len(recs) == len(lines)
    found = {k for r in recs for k in r[8]}
    assert found == {c.key for c in COHORTS.conditions.values()
                     if c.project == P and c.event_type in ("purchase", "Product Added")}
    assert {tuple(sorted(orjson.loads(r[10]))) for r in recs if r[10]} <= {
        ("lifetime_value", "plan"), ("lifetime_value",), ("plan",), ()}


ints = st.integers(-2**63, 2**64 - 1)      # what JSON rows hold (orjson writes no larger)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**63 - 1), st.floats(allow_nan=False),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)
times = st.one_of(st.none(), ints, st.sampled_from([
    "2024-11-29 10:00:00.000000", "2024-12-03 10:00:00.000000", "2024-11-30", "2024-02-30 00:00:00", "yesterday",
    "", "2024-11-3"]))
props = st.one_of(values, st.fixed_dictionaries({}, optional={
    "plan": st.one_of(st.sampled_from(["pro", "free"]), values), "tier": st.sampled_from(["gold", "tin"]),
    "utm source": values, "lifetime_value": st.one_of(st.floats(allow_nan=False), st.none()),
    "cohorts": values, "x": values}))
rows = st.fixed_dictionaries({}, optional={
    "amplitude_id": st.one_of(st.integers(-3, 2**63 - 1), st.booleans(), st.none(), st.text(max_size=3)),
    "app": st.one_of(st.sampled_from([P, 7, 8]), st.booleans(), st.none(), st.text(max_size=3)),
    "event_type": st.one_of(st.sampled_from(["purchase", "Product Added", "view", "refund", "other"]), st.none(), ints),
    "event_time": times, "server_upload_time": times,
    "user_id": st.one_of(st.none(), st.text(max_size=5), ints),
    "user_properties": props,
    "event_properties": st.one_of(values, st.fixed_dictionaries({}, optional={
        "page": st.sampled_from(["/cart", "/home", None]), "other": values})),
    "country": st.one_of(st.sampled_from(["France", "Germany"]), values),
    "data": values,
})


def line_of(row, extra):
    """The row as JSON, a few ways: as is, with a field repeated (the last one counts), with whitespace, or spoilt."""
    raw = orjson.dumps(row)
    kind, key, value = extra
    if kind == "dup":
        return raw[:-1] + (b"," if len(raw) > 2 else b"") + orjson.dumps({key: value})[1:]
    if kind == "spaces":
        return orjson.dumps(row, option=orjson.OPT_INDENT_2)
    if kind == "broken":
        return raw[: len(raw) // 2]
    if kind == "array":
        return orjson.dumps([row])
    return raw


extras = st.tuples(st.sampled_from(["plain", "plain", "dup", "spaces", "broken", "array"]),
                   st.sampled_from(["user_properties", "amplitude_id", "event_type", "event_properties", "app"]),
                   values)


@FAST
@given(st.lists(st.tuples(rows, extras), min_size=1, max_size=8))
def test_the_fast_read_gives_the_reference_records_on_generated_rows(generated):
    lines = [line_of(row, extra) for row, extra in generated]
    assert records(Rekeyer(COHORTS, 4), lines) == records(reference(Rekeyer(COHORTS, 4)), lines)
    # and a batch of them at once, where none fails
    good = [line for line, r in zip(lines, records(Rekeyer(COHORTS, 4), lines)) if not isinstance(r, str)]
    assert Rekeyer(COHORTS, 4).batch(1, batch_of(good)) == reference(Rekeyer(COHORTS, 4)).batch(1, batch_of(good))


def test_a_filter_on_a_field_also_holding_a_property_read_takes_the_reference_path():
    both = parse_cohorts([{"id": "odd", "project": P, "name": "Odd", "rule": {
        "performed": "purchase", "within_days": 1,
        "where": [{"property": "user_properties", "op": "is_set"}]}}])
    reader = RowReader(both)
    assert not reader.usable
    line = orjson.dumps({"amplitude_id": 5, "app": P, "event_type": "purchase", "user_properties": {"a": 1},
                         "event_time": "2024-11-30 10:00:00.000000"})
    assert Rekeyer(both, 4).batch(0, batch_of([line])) == reference(Rekeyer(both, 4)).batch(0, batch_of([line]))


def test_a_holder_that_is_not_an_object_is_read_by_the_reference_path():
    reader = RowReader(COHORTS)
    with pytest.raises(msgspec.ValidationError):
        reader.read(b'{"amplitude_id": 5, "user_properties": "pro"}')
    line = b'{"amplitude_id": 5, "app": 424242, "event_type": "purchase", "user_properties": ["pro"]}'
    (sends,) = [Rekeyer(COHORTS, 4).batch(0, batch_of([line]))]
    assert sends == reference(Rekeyer(COHORTS, 4)).batch(0, batch_of([line]))
    assert msgspec.msgpack.decode(sends[0][2])[0][10] is None


def test_a_take_of_batches_sends_each_partition_the_records_of_its_batches_in_order_in_one_message():
    """``Rekeyer.take``: one message per cohorts partition for several batches, holding the records ``batch`` of
    each in turn sends it, in the same order; the state applied from either is the same, byte for byte."""
    from stream.cohorts.stage import LocalStage, decode_all
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
    import workload
    w = workload.generate(2000, 4, seed=5, now_ms=UPLOADED)
    batches = []
    for part, data, _ in workload.batches(w, "events.ingest", P, 4):
        b = EventBatch.decode(data)
        rows = [orjson.loads(line) for line in b.lines]
        for i, r in enumerate(rows):
            r["amplitude_id"], r["app"] = 1000 + (len(batches) * 7 + i) % 41, P
            if i % 3 == 0:
                r["event_type"] = "purchase"
        b.lines = [orjson.dumps(r) for r in rows]
        batches.append((part, b))
    one, each = Rekeyer(COHORTS, 4), Rekeyer(COHORTS, 4)
    for k in range(0, len(batches), 5):
        take = batches[k:k + 5]
        sent = one.take(take)
        apart = [m for part, b in take for m in each.batch(part, b)]
        assert [q for q, _, _ in sent] == sorted({q for q, _, _ in apart})
        for q, key, value in sent:
            theirs = [r for p, _, v in apart if p == q for r in decode_all(v)]
            assert decode_all(value) == theirs and key == next(k for p, k, _ in apart if p == q)
    assert one.progress.read == each.progress.read
    assert len(batches) > 10 and one.take([]) == []
    # the state: a take's messages against a message per batch
    by_take, by_batch = LocalStage(COHORTS, 4, 30), LocalStage(COHORTS, 4, 30)
    for k in range(0, len(batches), 5):
        by_take.deliver(by_take.rekeyer.take(batches[k:k + 5]))
        for part, b in batches[k:k + 5]:
            by_batch.accepted(part, b)
    assert {q: s.data for q, s in by_take.stores.items()} == {q: s.data for q, s in by_batch.stores.items()}
    assert by_take.totals.applied == by_batch.totals.applied == sum(len(b.lines) for _, b in batches)


def test_the_stages_per_event_structs_are_not_tracked_by_the_garbage_collector():
    """A row's Struct, its user_properties', a cohorts-topic record and a user's state hold JSON values and other
    Structs alone, never a cycle: the collector does not track them (each would count towards its next run)."""
    import gc

    from stream.cohorts.stage import StoredUser, decode_all, decode_user, encode_user
    reader = RowReader(COHORTS)
    r = reader.read(b'{"amplitude_id": 5, "app": 424242, "event_type": "purchase", "user_properties": {"plan": "pro"},'
                    b' "event_properties": {"page": "/cart"}}')
    ((_, _, value),) = Rekeyer(COHORTS, 1).batch(0, batch_of([orjson.dumps({
        "amplitude_id": 5, "app": P, "event_type": "purchase", "user_properties": {"plan": "pro"}})]))
    state = decode_user(encode_user(StoredUser(project=P, keys=["k"], counts={0: {1: 2}})))
    assert [gc.is_tracked(x) for x in (r, r.user_properties, decode_all(value)[0], state)] == [False] * 4


def test_the_days_of_dates_read_once_are_those_of_each_row_and_their_memo_is_bounded(monkeypatch):
    import stream.cohorts.stage as stage
    monkeypatch.setattr(stage, "DAYS_KEPT", 3)
    dates = ["2024-11-30 10:00:00", "2024-11-29", "2024-02-30 00:00:00", "2024-11-30 23:59:59.999", "20241130",
             "1969-12-31 00:00:00", "2024-11-28 01:00:00", "2024-11-30T10:00:00Z", "2024-11-29 00:00:00"] * 3
    lines = [orjson.dumps({"amplitude_id": 5, "app": P, "event_type": "purchase", "event_time": d,
                           "server_upload_time": dates[-1 - i]}) for i, d in enumerate(dates)]
    fast = Rekeyer(COHORTS, 4)
    got = records(fast, lines)
    assert got == records(reference(Rekeyer(COHORTS, 4)), lines)
    assert [msgspec.msgpack.decode(s[0][2])[0][7] for s in got[:3]] == [20057, 20056, 20055]
    assert 0 < len(fast._days) <= 3
