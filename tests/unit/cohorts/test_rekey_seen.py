"""The rekey step reading a row's fields from what the identity stage's device side read of it
(``stream.identity.device.Seen``, ``Rekeyer.take(..., seen)``) gives the records of the rekey step reading the rows the
device side sent, byte for byte, on generated batches: rows from ``normalize_message`` with user properties set,
shown ($skip_user_properties_sync) and identified, event times and upload times of every shape, another app, no or
an empty event_type, identity columns already filled (rows the device side re-encodes), and user_properties that are
not an object; for cohorts whose filters read user_properties alone (read from ``seen``) and others (read here)."""

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.cohorts.rules import parse_cohorts, parse_day
from stream.cohorts.stage import Rekeyer
from stream.events.batch import EventBatch, Origin, Source
from stream.events.normalize import Rules, normalize_message
from stream.identity.device import resolve_batch

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
P = 424242
T = 1_733_000_000_000     # 2024-11-30 20:53 UTC

SEEABLE = parse_cohorts([
    {"id": "buyers", "project": P, "name": "Buyers", "rule": {"and": [
        {"performed": "purchase", "within_days": 7}, {"user_property": "plan", "op": "=", "value": "pro"}]}},
    {"id": "viewers", "project": P, "name": "Viewers", "rule": {"performed": "view", "within_days": 3, "where": [
        {"property": "user_properties.tier", "op": "=", "value": "gold"}]}},
], keep_properties=["lifetime_value"])
FILTERED = parse_cohorts([
    {"id": "carts", "project": P, "name": "Carts", "rule": {"performed": "view", "within_days": 3, "where": [
        {"property": "event_properties.page", "op": "=", "value": "/cart"},
        {"property": "country", "op": "!=", "value": "France"}]}},
    {"id": "buyers", "project": P, "name": "Buyers", "rule": {"and": [
        {"performed": "purchase", "within_days": 7}, {"user_property": "plan", "op": "=", "value": "pro"}]}},
])

values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["pro", "gold", "", "x"]),
                   st.floats(allow_nan=False, allow_infinity=False, width=32), st.lists(st.integers(0, 2), max_size=2),
                   st.dictionaries(st.sampled_from(["a", "plan"]), st.integers(0, 2), max_size=2))
props = st.dictionaries(st.sampled_from(["plan", "tier", "lifetime_value", "other", "$set"]), values, max_size=4)
times = st.sampled_from([None, "2024-11-29 10:00:00.000000", "2024-12-25 00:00:00", "2024-13-40 00:00:00", "x",
                         "2024-11-30"])
event = st.fixed_dictionaries({
    "event_type": st.sampled_from(["purchase", "view", "other", "$identify"]),
    "device_id": st.sampled_from(["dev-aaaa1", "dev-bbbb2", "dev-cccc3"]),
    "user_id": st.sampled_from([None, "user-1", "user-2"]),
    "user_properties": props,
    "time": st.sampled_from([None, T - 86_400_000, T + 40 * 86_400_000]),
    "$skip_user_properties_sync": st.sampled_from([None, True, False]),
    "event_properties": st.dictionaries(st.sampled_from(["page", "$revenue"]), st.sampled_from(["/cart", 3]),
                                        max_size=2),
})
# how a normalized row is changed before the device side reads it: kept as it is, its event_type dropped or
# empty, its event_time or server_upload_time or app or country replaced, its identity columns filled (re-encoded by
# the device side), its user_properties not an object (rejected by the device side)
PARSED = (None, "2024-11-29 10:00:00.000000", "2024-12-25 00:00:00")
change = st.sampled_from(["none", "none", "none", "no type", "empty type", "event_time", "upload", "app", "country",
                          "filled", "props"])


def row(e: dict, how: str, other: object) -> bytes:
    e = {k: v for k, v in e.items() if v is not None}
    if e.get("event_type") == "$identify":
        e["user_properties"] = {"$set": {k: v for k, v in e["user_properties"].items() if not k.startswith("$")}}
    else:
        e["user_properties"] = {k: v for k, v in e["user_properties"].items() if not k.startswith("$")}
    r = orjson.loads(normalize_message(orjson.dumps(e), None, P, T, "in/0/0", Rules()).line)
    if how == "no type":
        r.pop("event_type", None)
    elif how == "empty type":
        r["event_type"] = ""
    elif how == "event_time":       # a link's time is read by the device side: None or of its format
        r["event_time"] = other if other in PARSED or "user_id" not in e else "2024-12-25 00:00:00"
    elif how == "upload":
        r["event_time"], r["server_upload_time"] = None, other
    elif how == "app":
        r["app"] = 7 if other is None else str(other)
    elif how == "country":
        r["country"] = "France" if other is None else other
    elif how == "filled":
        r["amplitude_id"], r["paying"], r["start_version"] = 12, True, "1.0"
    elif how == "props":
        r["user_properties"] = 3
    return orjson.dumps(r)


class Counting:
    def __init__(self, read):
        self.read, self.calls = read, 0

    def __call__(self, line):
        self.calls += 1
        return self.read(line)


@FAST
@given(st.lists(st.lists(st.tuples(event, change, times), min_size=1, max_size=8), min_size=1, max_size=4))
def test_records_from_what_the_device_side_read_are_those_of_the_rows_it_sent(batches):
    for cohorts in (SEEABLE, FILTERED):
        db: dict[bytes, bytes | None] = {}
        seen_rekeyer, read_rekeyer = Rekeyer(cohorts, 4), Rekeyer(cohorts, 4)
        taken, seen_of, reads = [], [], Counting(seen_rekeyer.reader.read)
        seen_rekeyer.reader.read = reads
        rows = 0
        for at, events in enumerate(batches):
            lines = [row(e, how, other) for e, how, other in events]
            res = resolve_batch(lines, [T + i for i in range(len(lines))], P, 1, "2024-11-30 21:00:00.000000",
                                lambda keys: [db.get(k) for k in keys])
            for k, v in res.writes.items():
                db[k] = v
            kept = [i for i, k in enumerate(res.keep) if k]
            b = EventBatch(P, T, Origin("events.valid", 1, at), offsets=[10 * at + i for i in kept],
                           keys=[b"k"] * len(kept), times=[T + i for i in kept], uuids=[b"u" * 16] * len(kept),
                           lines=res.lines, source=Source("events.ingest", 0))
            assert len(res.seen) == len(res.lines)
            taken.append((1, b))
            seen_of.append(res.seen)
            rows += len(res.lines)
        assert seen_rekeyer.take(taken, seen_of) == read_rekeyer.take(taken)
        # what the rekey step read again: the rows the device side re-encoded or read an empty event_type or an
        # event_time without a day of, and
        # with cohorts whose filters read more than user_properties, every row
        again = sum(s is None or not s.event_type or s.event_time is None or parse_day(s.event_time[:10]) is None
                    for seen in seen_of for s in seen)
        assert reads.calls == (rows if cohorts is FILTERED else again)


def test_a_row_read_from_what_the_device_side_read_is_the_row_read_from_its_bytes():
    r = Rekeyer(SEEABLE, 4)
    line = row({"event_type": "purchase", "device_id": "dev-aaaa1", "user_id": "user-1",
                "user_properties": {"plan": "pro", "tier": [1], "other": 2}}, "none", None)
    res = resolve_batch([line], [T], P, 1, "2024-11-30 21:00:00.000000", lambda keys: [None] * len(keys))
    (s,) = res.seen
    assert (s.out_amplitude_id, s.out_user_properties) == (1025, b'{"plan":"pro","tier":[1],"other":2}')
    from_seen = r.reader.of_seen(s, r.reader.read_props(s.out_user_properties))
    read = msgspec.structs.asdict(r.reader.read(res.lines[0]))
    assert read["event_time"] is not None and read["server_upload_time"] is not None
    # the upload time, which a row whose event_time has a day does not read, is not taken from the device side
    assert msgspec.structs.asdict(from_seen) == {**read, "server_upload_time": None}
    assert r.reader.seeable and not Rekeyer(FILTERED, 4).reader.seeable
