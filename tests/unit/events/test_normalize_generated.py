"""The fast path and the reference path of normalize, compared on generated events: they agree byte for byte.

Every input key of ``INPUT_FIELDS`` gets values of every JSON type (the right one, wrong ones, null, edge values
of its kind), the events are written in several JSON layouts, and each one goes through

- the fast path (``_fast``), where ``normalize_message`` tries it: when it takes the event, the reference path
  takes it too and returns the very same ``Normalized`` (row bytes, dedupe key, upload time, uuid, ids, clamped);
  so does the fast path given the origin's uuid (``uuid5_strs``: the ingest stage gives a poll's uuids);
- the fast path for decoded objects (``_fast_obj``, what ``normalize`` tries first: the S3 import's rows), on the
  object the reference path decodes: when it takes the event, the very same ``Normalized`` as the reference path;
- the reference path (``decode`` + ``_reference``): it accepts or names why not, and never raises;
- ``normalize_message`` and ``normalize``: always exactly the reference path's answer.

Objects a JSON text cannot hold (NaN, infinities, floats where integers go) are drawn as objects too
(``test_decoded_objects_with_values_no_json_text_holds``).
"""

from __future__ import annotations

import json
import math
import sys
import threading
import uuid

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from stream.events.depth import MAX_DEPTH, depth_over
from stream.events.fields import INPUT_FIELDS, INVALID_IDS, MAX_STRING, Kind, Where
from stream.events.ingest import IngestResult, ingest_records, project_of
from stream.events.batch import group
from stream.events import deadletter
from stream.events.normalize import (
    FAST_NESTING,
    MAX_TIME_MS,
    FastEvent,
    Normalized,
    Reason,
    Rejected,
    Rules,
    _fast,
    _fast_obj,
    _NotFast,
    _reference,
    decode,
    _fast_decode,
    _fast_row,
    fast_event_builder,
    fast_row_maker,
    fast_row_writer,
    normalize,
    normalize_fast_event,
    normalize_message,
    normalize_stamped,
    uuid5_many,
    uuid5_str,
    uuid5_strs,
    uuid5_texts,
    uuid5_two,
)

PROJECT = 424242
T = 1_710_000_000_123  # 2024-03-09 16:00:00.123 UTC: the record's timestamp
ORIGIN = "events.ingest/0/42"
SKEW = 300_000
RULES = Rules()

GENERATED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the three answers --------------------------------------------------------------------------------------

def reference(value, key, rules, timestamp_ms=T, now_ms=None):
    obj = decode(value, key, rules)
    if isinstance(obj, Rejected):
        return obj
    return _reference(obj, PROJECT, timestamp_ms, ORIGIN, rules, now_ms)


def fast_obj(obj, rules, timestamp_ms=T, now_ms=None):
    """The decoded objects' fast path's answer; None where it declines."""
    try:
        return _fast_obj(obj, PROJECT, timestamp_ms, ORIGIN, rules, now_ms)
    except (_NotFast, msgspec.ValidationError):
        return None


def agree_obj(obj: dict, rules: Rules = RULES, timestamp_ms: int = T, now_ms: int | None = None) -> bool:
    """The decoded object through ``normalize`` (its fast path first) and ``_reference``: the same answer. Returns
    whether the fast path took it."""
    ref = _reference(obj, PROJECT, timestamp_ms, ORIGIN, rules, now_ms)
    got = fast_obj(obj, rules, timestamp_ms, now_ms)
    if got is not None:
        assert type(got) is Normalized
        assert got._asdict() == ref._asdict()
    assert normalize(obj, PROJECT, timestamp_ms, ORIGIN, rules, now_ms) == ref
    return got is not None


def fast(value, key, rules, timestamp_ms=T, now_ms=None):
    """The fast path's answer where ``normalize_message`` tries it; None where it is not tried or declines. It
    checks no depth first: it declines an event nested past ``FAST_NESTING`` + 1 levels itself."""
    if not value or len(value) > rules.max_event_bytes:
        return None
    if key is not None:
        try:
            key.decode()
        except UnicodeDecodeError:
            return None
    try:
        got = _fast(value, PROJECT, timestamp_ms, ORIGIN, rules, now_ms)
    except (_NotFast, msgspec.MsgspecError, UnicodeDecodeError):
        got = None
    try:   # the ingest stage's loop: the origin's uuid given (uuid5_strs), no origin
        (text,), (raw,) = uuid5_strs(ORIGIN[:-2], [42])
        given = _fast_row(_fast_decode(value), PROJECT, timestamp_ms, "", rules, now_ms, text, None, raw)
    except (_NotFast, msgspec.MsgspecError, UnicodeDecodeError):
        given = None
    assert given == got
    if got is not None:
        assert depth_over(value) is None and _depth(msgspec.json.decode(value)) <= FAST_NESTING + 1
    return got


def agree(value: bytes, key: bytes | None = None, rules: Rules = RULES, timestamp_ms: int = T,
          now_ms: int | None = None) -> Normalized | Rejected:
    """Check that the three answers agree; return the reference path's."""
    ref = reference(value, key, rules, timestamp_ms, now_ms)
    assert type(ref) in (Normalized, Rejected)
    if type(ref) is Rejected:
        assert type(ref.reason) is Reason and ref.detail
    got = fast(value, key, rules, timestamp_ms, now_ms)
    if got is not None:
        assert type(got) is Normalized
        assert got._asdict() == ref._asdict()
    if currently_in_test_context():
        event("fast path" if got is not None else "reference path: accepted" if type(ref) is Normalized else
              f"reference path: {ref.reason.value}")  # the mix: pytest --hypothesis-show-statistics
    assert normalize_message(value, key, PROJECT, timestamp_ms, ORIGIN, rules, now_ms) == ref
    assert normalize_message(value, key, PROJECT, timestamp_ms, ORIGIN, rules, now_ms, uuid5_str(ORIGIN),
                             uuid.UUID(uuid5_str(ORIGIN)).bytes) == ref
    obj = decode(value, key, rules)
    if type(obj) is dict:
        agree_obj(obj, rules, timestamp_ms, now_ms)
    return ref


# --- values --------------------------------------------------------------------------------------------------

def repeated(*pairs: tuple[str, int]):
    """Long strings, drawn as (text, times) so that a failure shows how they were made."""
    return st.sampled_from(pairs).map(lambda p: p[0] * p[1])


at_limit = repeated(("a", MAX_STRING), ("\u00e9", MAX_STRING), ("\U0001f600", MAX_STRING))
over_limit = repeated(("a", MAX_STRING + 1), ("\u00e9", MAX_STRING + 1), ("\U0001f600", MAX_STRING + 1))
numeric_texts = st.sampled_from([
    "0", "12", "-12", " 12 ", "+12", "--12", "-", "1.5", "-1.5", "1e3", "1E3", "1_000", "0x10", "\u00b2",
    "-\u00b2", "\u0661\u0662", "\uff11\uff12", "nan", "NaN", "inf", "-Infinity", "1e999", " ", "1709968500000",
    "253402300799999", "253402300800000", "-1709968500000", "1.0", "\u0661.\u0665", "12abc"]) | repeated(
    ("1", 30), ("1", 4300), ("1", 4301), ("9", 5000)) | st.integers().map(str) | st.floats().map(repr)

huge_ints = st.sampled_from([2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30, -(10**30),
                             10**300, -1])
ints = st.integers(-1000, 1000) | st.integers(-(2**70), 2**70) | huge_ints
epoch_ms = st.integers(0, MAX_TIME_MS) | st.integers(T - 10**10, T + 10**10) | st.sampled_from([0, MAX_TIME_MS])
floats = st.floats(allow_nan=False, allow_infinity=False)
integral_floats = st.integers(-(2**60), 2**60).map(float) | st.sampled_from([1e16, 1e22, 1e300, -0.0, 1.7e12])
texts = st.text(max_size=12) | numeric_texts | at_limit
json_scalars = st.none() | st.booleans() | ints | floats | texts
keys = st.text(max_size=6) | st.sampled_from(["$price", "$quantity", "$revenue", "a", "b", "user_id", ""])
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(keys, inner, max_size=3), max_leaves=5)
objects = st.dictionaries(keys, json_values, max_size=4)


def nested(depth: int, arrays: bool) -> dict:
    """An object ``depth`` levels deep: ``{"a": {"a": ...}}``, or alternating with arrays."""
    v: object = 1
    for level in range(depth - 1):
        v = [v] if arrays and level % 2 else {"a": v}
    return v if isinstance(v, dict) else {"a": v}


# an object that, as the value of a top-level key, nests the event MAX_DEPTH - 1 to MAX_DEPTH + 3 levels deep
deep_objects = st.builds(nested, st.integers(MAX_DEPTH - 2, MAX_DEPTH + 2), st.booleans())
# and around the deepest the fast path decodes (FAST_NESTING levels for the value of an object field)
deep_objects |= st.builds(nested, st.integers(FAST_NESTING - 2, FAST_NESTING + 2), st.booleans())

RIGHT = {  # values of the right type, valid or not (times, lengths, ids, uuids)
    Kind.STR: st.text(max_size=20) | at_limit | st.sampled_from(["", " "]),
    Kind.INT: ints,
    Kind.NUM: ints | floats,
    Kind.DICT: objects | objects | deep_objects,
    Kind.BOOL: st.booleans(),
}
NEAR = {  # what a producer sends when it gets the type nearly right
    Kind.STR: ints | floats | st.booleans() | over_limit,
    Kind.INT: integral_floats | floats | numeric_texts,
    Kind.NUM: numeric_texts,
    Kind.DICT: st.lists(json_values, max_size=3) | st.sampled_from(["{}", "", "null"]),
    Kind.BOOL: st.sampled_from([0, 1, "true", "false", "True", ""]),
}
invalid_ids = st.sampled_from(sorted(INVALID_IDS)).flatmap(
    lambda s: st.sampled_from([s, s.upper(), s.title(), f" {s}"]))
ids = st.text(min_size=5, max_size=30) | st.sampled_from(["user-1", "dev-12345", "\u0130" * 5, "NULL "]) | at_limit
short_ids = st.text(max_size=7)
uuids = st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), st.uuids().map(lambda u: u.hex),
                  st.uuids().map(lambda u: "{" + str(u) + "}"), st.uuids().map(lambda u: u.urn))
invalid_uuids = st.one_of(
    st.uuids().map(lambda u: str(u)[:-1]), st.uuids().map(lambda u: " " + str(u)),
    st.uuids().map(lambda u: str(u).replace("-", "_")), st.text(max_size=40),
    st.sampled_from(["", "null", "nope", "00000000-0000-0000-0000-000000000000", "\u0661" * 32]))

TIME_KEYS = ("time", "server_received_time", "server_upload_time")
VALID = {k: RIGHT[kind] for k, (kind, _, _) in INPUT_FIELDS.items()}
VALID.update({"event_type": st.text(min_size=1, max_size=20) | st.sampled_from(["$identify", "Order Completed"]),
              "user_id": ids, "device_id": ids, "uuid": uuids, **dict.fromkeys(TIME_KEYS, epoch_ms)})
ODD = {k: NEAR[kind] | st.none() | json_values for k, (kind, _, _) in INPUT_FIELDS.items()}
ODD.update({"user_id": invalid_ids | short_ids | over_limit | st.none() | json_values,
            "uuid": invalid_uuids | json_values,
            **{k: ODD[k] | ints | st.sampled_from([-1, MAX_TIME_MS + 1, 2**64]) for k in TIME_KEYS}})
ODD["device_id"] = ODD["user_id"]
ODD["event_type"] |= st.just("")
unknown_keys = st.text(max_size=10).filter(lambda k: k not in INPUT_FIELDS) | st.sampled_from(
    ["skip_user_properties_sync", "Event_Type", "user_id ", "$price", "data", "app", "ip_address", "userId"])

rules = st.builds(Rules, max_event_bytes=st.sampled_from([1024 * 1024] * 5 + [300]),
                  min_id_length=st.sampled_from([5, 5, 0, 1, 8]), keep_unknown_fields=st.booleans(),
                  max_clock_skew_ms=st.sampled_from([SKEW, 0]))
# a record's timestamp: a producer may set any (-1: none), and it stamps the server times the event does not carry
timestamps = st.one_of(st.just(T), st.integers(0, MAX_TIME_MS), st.sampled_from([-1, MAX_TIME_MS + 1]))
clocks = st.one_of(st.none(), st.just(T), st.integers(T - 3_600_000, T + 3_600_000))


# --- layouts ------------------------------------------------------------------------------------------------

LAYOUTS = {
    "compact": msgspec.json.encode,                                                        # msgspec, orjson, JS
    "python": lambda obj: json.dumps(obj).encode(),                                        # ", " and ": "
    "indented": lambda obj: json.dumps(obj, indent=2, ensure_ascii=True).encode(),         # newlines, \\u escapes
    "unicode": lambda obj: json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode(),  # 1e+16 floats
}
layouts = st.sampled_from(sorted(LAYOUTS))
ALL_FIELDS = st.sampled_from(sorted(INPUT_FIELDS))
BASES = [{"event_type": "Order Completed", "user_id": "user-20391"},
         {"event_type": "x", "device_id": "dev-12345", "insert_id": "ord-1"}]


@st.composite
def events(draw, fields=ALL_FIELDS, unknown: bool = True, odd: bool = True) -> dict:
    """A valid event with valid values for a few fields, and often an odd value (a wrong type, null, an invalid
    id...) for one or two, and sometimes an unknown key; its keys in any order."""
    ev = dict(draw(st.sampled_from(BASES)))
    for k in draw(st.lists(fields, max_size=6, unique=True)):
        ev[k] = draw(VALID[k])
    for _ in range(draw(st.sampled_from([0, 0, 1, 2])) if odd else 0):
        k = draw(fields)
        ev[k] = draw(ODD[k])
    if unknown and draw(st.integers(0, 4)) == 0:
        ev[draw(unknown_keys)] = draw(json_values)
    return dict(draw(st.permutations(list(ev.items()))))


# --- tests ---------------------------------------------------------------------------------------------------

@GENERATED
@given(events(), layouts, rules, timestamps, clocks)
def test_every_field_with_values_of_every_json_type(ev, layout, rules, timestamp_ms, now_ms):
    agree(LAYOUTS[layout](ev), None, rules, timestamp_ms, now_ms)


def stamped_reference(value: bytes, rules: Rules, timestamp_ms: int, remote_ip: str | None):
    """What ``normalize_stamped`` answers, the slow way: the decoded object without its server times, its
    ``"ip": "$remote"`` replaced, through the reference path."""
    obj = decode(value, None, rules)
    if isinstance(obj, Rejected):
        return obj
    obj.pop("server_received_time", None)
    obj.pop("server_upload_time", None)
    if obj.get("ip") == "$remote":
        if remote_ip:
            obj["ip"] = remote_ip
        else:
            del obj["ip"]
    return _reference(obj, PROJECT, timestamp_ms, ORIGIN, rules)


remote_ips = st.sampled_from([None, "", "203.0.113.9", "2001:db8::1", "a" * MAX_STRING, "a" * (MAX_STRING + 1)])
stamped_events = events() | events(st.sampled_from(["ip", *TIME_KEYS, "event_type", "user_id", "uuid"]))


@GENERATED
@given(stamped_events, st.sampled_from(["$remote", None, "", "1.2.3.4", 5]), layouts, rules, timestamps, remote_ips)
def test_stamped_events_the_fast_way_and_the_slow_way(ev, ip, layout, rules, timestamp_ms, remote_ip):
    if ip is not None:
        ev["ip"] = ip
    value = LAYOUTS[layout](ev)
    if depth_over(value) is not None:   # the caller rejects those first
        return
    ref = stamped_reference(value, rules, timestamp_ms, remote_ip)
    got = normalize_stamped(value, PROJECT, timestamp_ms, ORIGIN, rules, remote_ip)
    assert type(got) is type(ref)
    assert got._asdict() == ref._asdict()


not_json = st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 1.0, 1e16, 1.7e12, True, False])
NUMBER_FIELDS = st.sampled_from(sorted(k for k, (kind, _, _) in INPUT_FIELDS.items() if kind in (Kind.INT, Kind.NUM)))


@GENERATED
@given(events() | events(odd=False, unknown=False), st.lists(st.tuples(NUMBER_FIELDS | ALL_FIELDS, not_json),
                                                             min_size=1, max_size=2), rules, timestamps, clocks)
def test_decoded_objects_with_values_no_json_text_holds(ev, odd, rules, timestamp_ms, now_ms):
    for k, v in odd:
        ev[k] = v
    agree_obj(ev, rules, timestamp_ms, now_ms)


def test_the_decoded_objects_fast_path_takes_an_imported_row():
    row = {"event_type": "Order Completed", "user_id": "user-20391", "device_id": "dev-12345", "time": T - 5000,
           "insert_id": "ord-1", "uuid": "5ba40637-3bde-4060-a429-e47906945ed5", "price": 9.5, "quantity": 2,
           "event_properties": {"sku": "A-1", "n": 3}}
    assert agree_obj(row)
    assert not agree_obj({**row, "price": float("nan")})
    assert agree_obj({**row, "uuid": "5BA40637-3BDE-4060-A429-E47906945ED5"})   # parsed, not kept as written
    assert normalize({**row, "uuid": "5BA40637-3BDE-4060-A429-E47906945ED5"}, PROJECT, T, ORIGIN, RULES).uuid.hex() \
        == "5ba406373bde4060a429e47906945ed5"
    assert normalize({**row, "price": float("nan")}, PROJECT, T, ORIGIN, RULES) == Rejected(
        Reason.INVALID_TYPE, "price", "price must be a number, got number")


@GENERATED
@given(events(st.sampled_from(["event_type", "user_id", "device_id", "insert_id"]), unknown=False),
       st.sampled_from([5, 0, 1, 3, 8]))
def test_ids_invalid_short_long_and_of_other_types(ev, min_id_length):
    out = agree(msgspec.json.encode(ev), rules=Rules(min_id_length=min_id_length))
    if type(out) is Normalized:
        user_id, device_id, insert_id = (ev.get(k) for k in ("user_id", "device_id", "insert_id"))
        assert out.user_id == (user_id if user_id is not None and len(user_id) >= min_id_length else None)
        assert out.device_id == (device_id if device_id is not None and len(device_id) >= min_id_length else None)
        assert out.dedupe_key == (b"%d\x00%s\x00%s" % (PROJECT, (out.device_id or "").encode(), insert_id.encode())
                                  if insert_id else b"")
        row = msgspec.json.decode(out.line)
        assert (row["user_id"], row["device_id"], row["$insert_id"]) == (out.user_id, out.device_id, insert_id or None)


@st.composite
def times_around(draw, now_ms: int, skew: int):
    """A time for a time key: just around the allowed skew of the ingest clock, or anywhere, or not an int."""
    edge = now_ms + skew + draw(st.sampled_from([-1, 0, 1, 2, -skew - 1, 3_600_000]))
    return draw(st.one_of(st.just(edge), st.just(edge), st.integers(-5, MAX_TIME_MS + 5),
                          st.sampled_from([0, -1, MAX_TIME_MS, MAX_TIME_MS + 1, 2**63, -(2**63)]),
                          st.just(float(edge)), st.just(edge + 0.5), st.just(str(edge)), NEAR[Kind.INT],
                          st.none()))


@st.composite
def timed(draw):
    now_ms = draw(st.integers(0, MAX_TIME_MS - 3_600_000 - SKEW) | st.just(T))
    skew = draw(st.sampled_from([SKEW, 0, 1]))
    ev = dict(draw(st.sampled_from(BASES)))
    for k in draw(st.lists(st.sampled_from(TIME_KEYS), max_size=3, unique=True)):
        ev[k] = draw(times_around(now_ms, skew))
    return ev, draw(st.one_of(st.none(), st.just(now_ms))), skew, draw(st.one_of(st.just(now_ms), timestamps))


@GENERATED
@given(timed())
def test_times_negative_past_9999_and_around_the_clock_skew(case):
    ev, now_ms, skew, timestamp_ms = case
    out = agree(msgspec.json.encode(ev), rules=Rules(max_clock_skew_ms=skew), timestamp_ms=timestamp_ms,
                now_ms=now_ms)
    if type(out) is Normalized and all(type(ev.get(k)) in (int, type(None)) for k in TIME_KEYS):
        def stamped(t: int) -> int:
            return now_ms if now_ms is not None and t > now_ms + skew else t
        received, uploaded = (timestamp_ms if ev.get(k) is None else ev[k] for k in TIME_KEYS[1:])
        assert out.upload_ms == stamped(uploaded)
        assert out.clamped == (stamped(received) != received or stamped(uploaded) != uploaded)


@GENERATED
@given(events(st.just("uuid"), unknown=False))
def test_uuids_valid_and_invalid(ev):
    out = agree(msgspec.json.encode(ev))
    u = ev.get("uuid")
    if type(out) is Normalized:
        expected = uuid.uuid5(uuid.UUID("6f1d2c3a-9b1e-5c7d-8e2f-3a4b5c6d7e8f"), ORIGIN) if u is None else uuid.UUID(u)
        assert out.uuid == expected.bytes
        assert msgspec.json.decode(out.line)["uuid"] == str(expected)
    elif type(u) is str and out.field == "uuid":
        assert out == Rejected(Reason.INVALID_VALUE, "uuid", f"uuid is {len(u)} characters long; the limit is "
                               f"{MAX_STRING}" if len(u) > MAX_STRING else f"uuid {u!r} is not a UUID")


DICT_KEYS = sorted(k for k, (kind, _, _) in INPUT_FIELDS.items() if kind is Kind.DICT)


@GENERATED
@given(st.dictionaries(st.sampled_from(DICT_KEYS + ["colour"]), deep_objects | objects, min_size=1, max_size=3),
       layouts, st.booleans())
def test_objects_nested_near_the_depth_limit(extra, layout, keep):
    ev = {"event_type": "x", "user_id": "user-1", **extra}
    out = agree(LAYOUTS[layout](ev), rules=Rules(keep_unknown_fields=keep))
    deepest = 1 + max(_depth(v) for v in extra.values())
    if deepest > MAX_DEPTH + 1:
        assert out == Rejected(Reason.INVALID_VALUE, None, f"the event nests objects and arrays more than "
                               f"{MAX_DEPTH} levels deep ({deepest} seen); Amplitude's limit is {MAX_DEPTH}: "
                               "flatten its properties")
    elif "colour" in extra and not keep:
        assert out == Rejected(Reason.UNKNOWN_FIELD, "colour", "'colour' is not an event field "
                               "(ingest.unknown_fields=keep stores such values under data)")
    else:
        row = msgspec.json.decode(out.line)
        for k, v in extra.items():
            assert (row[k] if k in row else row["data"][k]) == v


def _depth(v) -> int:
    if isinstance(v, dict):
        return 1 + max(map(_depth, v.values()), default=0)
    if isinstance(v, list):
        return 1 + max(map(_depth, v), default=0)
    return 0


@GENERATED
@given(st.dictionaries(unknown_keys, json_values, min_size=1, max_size=3), events(unknown=False, odd=False),
       st.booleans())
def test_unknown_keys_kept_in_data_or_rejected(unknown, ev, keep):
    ev = {**ev, **unknown}
    out = agree(msgspec.json.encode(ev), rules=Rules(keep_unknown_fields=keep))
    if type(out) is Rejected and out.reason is not Reason.UNKNOWN_FIELD:
        assert out.detail.startswith("the event nests objects and arrays more than")  # a deep object among ev
    elif not keep:
        first = next(iter(unknown))
        assert out == Rejected(Reason.UNKNOWN_FIELD, first, f"{first!r} is not an event field "
                               "(ingest.unknown_fields=keep stores such values under data)")
    else:
        data = msgspec.json.decode(out.line)["data"]
        assert list(data)[-len(unknown):] == list(unknown)  # after the known keys kept in data
        assert {k: data[k] for k in unknown} == unknown


REVENUE_KEYS = [k for k, (_, where, _) in INPUT_FIELDS.items() if where is Where.REVENUE]
EXACT_TYPES = {Kind.STR: (str,), Kind.INT: (int,), Kind.NUM: (int, float), Kind.BOOL: (bool,), Kind.DICT: (dict,)}


@GENERATED
@given(events(st.sampled_from(REVENUE_KEYS + ["event_properties", "$skip_user_properties_sync"]), unknown=False),
       layouts)
def test_revenue_keys_and_skip_user_properties_sync(ev, layout):
    out = agree(LAYOUTS[layout](ev))
    given = {k: v for k, v in ev.items() if k in REVENUE_KEYS and v is not None}
    if type(out) is Normalized and all(type(v) in EXACT_TYPES[INPUT_FIELDS[k][0]] for k, v in given.items()):
        row = msgspec.json.decode(out.line)
        revenue = {"$" + k: ev[k] for k in REVENUE_KEYS if k in given}  # in INPUT_FIELDS order, after the others
        props = ev.get("event_properties") or {}
        assert list(row["event_properties"].items()) == list({**props, **revenue}.items())
        skip = ev.get("$skip_user_properties_sync")
        assert row["data"] == ({} if skip is None else {"$skip_user_properties_sync": skip})


# raw JSON text that no encoder above writes: other spellings of the same numbers and strings, duplicate keys
RAW_NUMBERS = [b"1.50", b"1E2", b"1e+2", b"1e16", b"-0", b"-0.0", b"0.30000000000000001", b"1e400", b"-1e400",
               b"123456789012345678901234567890", b"1" * 4301, b"1709968500000", b"1709968500000.0", b"17099685e5"]
RAW_STRINGS = [b'"\\u0041"', b'"\\/"', b'"\\ud83d\\ude00"', b'"\\ud800"', b'"\\u0000"', b'"\xe2\x80\xa8"', b'"\xff"',
               b'"a\\"b"', b'"\\t"', b'"\\u00e9"', b'"\xc3\xa9"', b'"user-\\u0031"', b'"\\u006eull"']
SPACES = [b"", b"", b" ", b"\n  ", b"\t"]
raw_scalars = st.sampled_from(RAW_NUMBERS + RAW_STRINGS + [b"true", b"null"]) | json_scalars.map(msgspec.json.encode)


@st.composite
def raw_objects(draw, depth: int = 3) -> bytes:
    """An object as text: spaces anywhere between tokens, keys maybe twice, values spelled in any way."""
    members = []
    for _ in range(draw(st.integers(0, 3))):
        inner = (raw_objects(depth - 1) | raw_objects(depth - 1).map(lambda o: b"[" + o + b"]")) if depth \
            else st.nothing()
        v = draw(raw_scalars | inner)
        k = draw(st.sampled_from([b'"a"', b'"b"', b'"$price"', b'"\\u0061"']))
        members.append(draw(st.sampled_from(SPACES)) + k + draw(st.sampled_from([b":", b" : "])) + v
                       + draw(st.sampled_from(SPACES)))
    return b"{" + b",".join(members) + b"}"


def raw_values(kind: Kind):
    return {Kind.DICT: raw_objects(), Kind.BOOL: st.sampled_from([b"true", b"false", b" true "]),
            Kind.STR: st.sampled_from(RAW_STRINGS), Kind.INT: st.sampled_from(RAW_NUMBERS),
            Kind.NUM: st.sampled_from(RAW_NUMBERS)}[kind]


@st.composite
def raw_events(draw) -> bytes:
    """An event written by hand: keys (some twice) with values spelled in any way, spaces between tokens."""
    parts = [b'"event_type":"x"', b'"user_id":"user-1"']
    for _ in range(draw(st.integers(1, 4))):
        k = draw(st.sampled_from(sorted(INPUT_FIELDS)))
        v = draw(raw_values(INPUT_FIELDS[k][0]) | raw_scalars) if draw(st.integers(0, 5)) == 0 else \
            draw(raw_values(INPUT_FIELDS[k][0]))
        if draw(st.integers(0, 9)) == 0:
            k = draw(unknown_keys)
        parts.insert(draw(st.integers(0, len(parts))), msgspec.json.encode(k) + draw(st.sampled_from([b":", b" : "]))
                     + v)
    return b"{" + draw(st.sampled_from([b",", b", ", b",\n"])).join(parts) + b"}"


@GENERATED
@given(raw_events(), st.booleans())
def test_hand_written_json_text(value, keep):
    agree(value, rules=Rules(keep_unknown_fields=keep))


@GENERATED
@given(st.one_of(st.binary(max_size=40), json_values.map(msgspec.json.encode),
                 events().map(msgspec.json.encode).flatmap(
                     lambda b: st.integers(0, len(b)).map(lambda i: b[:i] + b"\xff" + b[i:]))),
       st.sampled_from([None, b"", b"dev-12345", "d\u00e9v-\U0001f600".encode(), b"\xff\xfe"]))
def test_any_bytes_and_keys(value, key):
    agree(value, key)


# --- what the generated tests found, kept as examples --------------------------------------------------------

def test_nested_objects_are_written_in_one_spelling_whatever_the_input_layout():
    spaced = agree(b'{"event_type": "x", "user_id": "user-1", "event_properties": {"a": [1.50, "\\u00e9"], '
                   b'"b": 1E2, "a": 2}, "plan": {"branch" : "main"}}')
    compact = agree(b'{"event_type":"x","user_id":"user-1","event_properties":{"a":2,"b":100.0},'
                    b'"plan":{"branch":"main"}}')
    assert spaced == compact
    assert b',"data":{"plan":{"branch":"main"}},' in spaced.line
    assert b',"event_properties":{"a":2,"b":100.0},' in spaced.line


def test_an_event_nested_past_the_limit_is_rejected_by_the_reference_path_too():
    deep = b'{"a":' * 3000 + b"1" + b"}" * 3000
    value = b'{"event_type":"x","user_id":"user-1","event_properties":' + deep + b"}"
    assert decode(value, None, RULES) == Rejected(
        Reason.INVALID_VALUE, None, "the event nests objects and arrays more than 40 levels deep (3001 seen); "
        "Amplitude's limit is 40: flatten its properties")
    agree(value)


def test_integer_strings_that_are_not_integers_are_invalid_types():
    for text in ("--5", "\u00b2", "-\u00b2"):
        value = msgspec.json.encode({"event_type": "x", "user_id": "user-1", "session_id": text})
        assert agree(value) == Rejected(Reason.INVALID_TYPE, "session_id",
                                        "session_id must be an integer, got string")
    out = agree(msgspec.json.encode({"event_type": "x", "user_id": "user-1", "session_id": "\u0661\u0662"}))
    assert b'"session_id":12,' in out.line


def test_an_integer_string_too_long_to_read_is_an_invalid_value():
    value = msgspec.json.encode({"event_type": "x", "user_id": "user-1", "event_id": "9" * 5000})
    assert agree(value) == Rejected(Reason.INVALID_VALUE, "event_id",
                                    "event_id has 5000 digits; the limit is 4300")


def test_rows_of_any_size_one_after_another_each_keep_their_own_bytes():
    """The fast path encodes each row into its thread's buffer and copies it out: a row over the buffer's size, a
    small one after it and a large one again each come out whole, and a row given out earlier is not changed by
    the ones after it."""
    big = {"event_type": "x", "user_id": "user-1", "event_properties": {f"k{i}": "\u00e9" * 1000 for i in range(8)}}
    small = {"event_type": "y", "device_id": "dev-12345"}
    outs = [(ev, normalize_message(msgspec.json.encode(ev), b"dev-12345", PROJECT, T, ORIGIN, RULES, T))
            for ev in (big, small, big, small)]
    for ev, out in outs:
        assert type(out.line) is bytes
        assert out == agree(msgspec.json.encode(ev), b"dev-12345", now_ms=T)
    assert len(outs[0][1].line) == len(outs[2][1].line) > 16_000
    assert outs[1][1].line == outs[3][1].line
    assert outs[1][1].line.startswith(b'{"$insert_id":null,"$schema":null,') and outs[1][1].line.endswith(
        b',"user_properties":{}}')



def test_threads_normalizing_at_once_each_get_their_own_rows():
    """Each thread encodes into a buffer of its own: four threads switching every microsecond give every event
    the row one thread alone gives it (with one buffer shared by all, some rows came out of another's event)."""
    values = [msgspec.json.encode({"event_type": "x" * (i % 7 + 1), "user_id": f"user-{i:06d}",
                                   "event_properties": {"n": "y" * (i % 300)}}) for i in range(3000)]
    want = [normalize_message(v, None, PROJECT, T, f"{ORIGIN}{i}", RULES) for i, v in enumerate(values)]
    wrong: list[int] = []

    def work() -> None:
        for i, v in enumerate(values):
            if normalize_message(v, None, PROJECT, T, f"{ORIGIN}{i}", RULES) != want[i]:
                wrong.append(i)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []

# --- the straight route: the fields of a known set of keys into the fast path's Struct -------------------------

MISSING = object()


def convert_or_none(obj: dict):
    """``msgspec.convert`` of the object into the fast path's Struct, None where ``_fast_obj`` declines it."""
    try:
        e = msgspec.convert(obj, FastEvent)
    except msgspec.ValidationError:
        return None
    for v in (e.location_lat, e.location_lng, e.price, e.revenue):
        if isinstance(v, float) and not math.isfinite(v):
            return None
    return e


@GENERATED
@given(events() | events(odd=False, unknown=False), st.lists(st.tuples(NUMBER_FIELDS | ALL_FIELDS, not_json),
                                                             max_size=2),
       st.lists(ALL_FIELDS, max_size=3, unique=True), rules, timestamps, clocks, st.uuids())
def test_the_fields_of_known_keys_built_into_the_fast_path_s_struct_as_msgspec_converts_them(
        ev, odd, absent, rules, timestamp_ms, now_ms, uid):
    for k, v in odd:
        ev[k] = v
    keys = tuple(ev) + tuple(k for k in absent if k not in ev)   # keys the builder knows, some absent from the event
    build = fast_event_builder(keys, MISSING)
    if any(k not in INPUT_FIELDS for k in keys):
        assert build is None
        return
    got = build(tuple(ev.get(k, MISSING) for k in keys))
    want = convert_or_none(ev)
    if got is None:   # the builder may decline more (integers beyond 64 bits), never less
        return
    assert want is not None and msgspec.structs.asdict(got) == msgspec.structs.asdict(want)
    uuid_s = str(uid)
    answer = normalize_fast_event(got, PROJECT, timestamp_ms, rules, now_ms, uuid_s)
    assert normalize_fast_event(got, PROJECT, timestamp_ms, rules, now_ms, uuid_s, fast_row_writer(keys)) == answer
    ref = _reference(ev if "uuid" in ev and ev["uuid"] is not None else {**ev, "uuid": uuid_s}, PROJECT, timestamp_ms,
                     ORIGIN, rules, now_ms)
    if answer is not None:
        assert type(ref) is Normalized and answer._asdict() == ref._asdict()


@GENERATED
@given(events() | events(odd=False, unknown=False), st.lists(ALL_FIELDS, max_size=3, unique=True),
       st.sampled_from([None, "", "ord-1", "\u00e9\"\\\n"]), st.none() | st.uuids().map(str),
       st.sampled_from([None, True, False]), rules, timestamps, clocks, st.uuids())
def test_the_row_writer_of_known_keys_writes_the_bytes_of_the_row_struct(
        ev, absent, insert_id, uuid_given, skip, rules, timestamp_ms, now_ms, uid):
    """``fast_row_writer(keys)`` writes, for any event the builder of the same keys gives (with the ids and sync flag
    a caller sets on it), the very bytes the export row's Struct is encoded to: the same ``Normalized``."""
    keys = tuple(k for k in ev if k in INPUT_FIELDS) + tuple(k for k in absent if k not in ev)
    build, write = fast_event_builder(keys, MISSING), fast_row_writer(keys)
    if not keys:
        assert build is None and write is None
        return
    e = build(tuple(ev.get(k, MISSING) for k in keys))
    if e is None:
        return
    if insert_id is not None:
        e.insert_id = insert_id
    if uuid_given is not None:
        e.uuid = uuid_given
    if skip is not None:
        e.skip_user_properties_sync = skip
    try:
        want = _fast_row(e, PROJECT, timestamp_ms, ORIGIN, rules, now_ms, str(uid))
    except _NotFast:
        with pytest.raises(_NotFast):
            _fast_row(e, PROJECT, timestamp_ms, ORIGIN, rules, now_ms, str(uid), write)
        return
    assert _fast_row(e, PROJECT, timestamp_ms, ORIGIN, rules, now_ms, str(uid), write)._asdict() == want._asdict()


def test_the_row_writer_writes_the_columns_a_converter_never_gives_once():
    write = fast_row_writer(("event_type", "user_id", "time", "event_properties"))
    consts = [c for c in write.__code__.co_consts if isinstance(c, bytes)]
    assert b',"$schema":null,"adid":null,"amplitude_attribution_ids":null,"app":' in consts
    assert b'","event_type":' in consts   # event_time then event_type, groups constant after it
    assert b',"groups":{},"idfa":null,"ip_address":null,"is_attribution_event":null,"language":null,"library":null,' \
           b'"location_lat":null,"location_lng":null,"os_name":null,"os_version":null,"platform":null,"region":null,' \
           b'"sample_rate":null,"server_received_time":"' in consts
    e = fast_event_builder(("event_type", "user_id", "time", "event_properties"), MISSING)(
        ("Play", "user-00001", T - 1, {"page": "/", "qty": 2}))
    e.insert_id = "ord-1"
    got = _fast_row(e, PROJECT, T, ORIGIN, RULES, T, "6f1d2c3a-9b1e-5c7d-8e2f-3a4b5c6d7e8f", write)
    assert got.line == _fast_row(e, PROJECT, T, ORIGIN, RULES, T, "6f1d2c3a-9b1e-5c7d-8e2f-3a4b5c6d7e8f").line
    assert got.line.startswith(b'{"$insert_id":"ord-1","$schema":null,"adid":null,"amplitude_attribution_ids":null,'
                               b'"app":424242,"city":null,"client_event_time":"2024-03-09 16:00:00.122000",'
                               b'"client_upload_time":"2024-03-09 16:00:00.123000","country":null,"data":{},')
    assert got.line.endswith(b'"user_creation_time":null,"user_properties":{}}')
    assert fast_row_writer(("event_type", "colour")) is None and fast_row_writer(()) is None


SYNC_EXCEPT = ("$identify", "$groupidentify")


@GENERATED
@given(events() | events(odd=False, unknown=False), st.lists(st.tuples(NUMBER_FIELDS | ALL_FIELDS, not_json),
                                                             max_size=2),
       st.lists(ALL_FIELDS, max_size=3, unique=True), st.booleans(), rules, timestamps, clocks, st.uuids(), st.uuids())
def test_the_row_maker_of_known_keys_gives_what_the_builder_and_the_fast_path_give(
        ev, odd, absent, sync, rules, timestamp_ms, now_ms, iid, uid):
    """``fast_row_maker(keys)``: the builder of the same keys, the ids and the sync flag set on its event, then
    ``normalize_fast_event``: the same ``Normalized``, or None where either gives None."""
    for k, v in odd:
        ev[k] = v
    callers = ("insert_id", "uuid", "$skip_user_properties_sync")
    keys = tuple(k for k in ev if k not in callers) + tuple(k for k in absent if k not in ev and k not in callers)
    make, build = fast_row_maker(keys, MISSING, SYNC_EXCEPT), fast_event_builder(keys, MISSING)
    if build is None or "event_type" not in keys:
        assert make is None
        return
    values = tuple(ev.get(k, MISSING) for k in keys)
    got = make(values, PROJECT, timestamp_ms, rules, now_ms, str(iid).encode(), str(uid).encode(), uid.bytes, sync)
    e, want = build(values), None
    if e is not None:
        e.insert_id = str(iid)
        if sync and e.event_type not in SYNC_EXCEPT:
            e.skip_user_properties_sync = True
        want = normalize_fast_event(e, PROJECT, timestamp_ms, rules, now_ms, str(uid))
    if currently_in_test_context():
        event("made" if got is not None else "declined")
    assert (got if got is None else got._asdict()) == (want if want is None else want._asdict())


def test_one_row_maker_called_on_many_rows_writes_each_row_s_own_times():
    """The maker keeps the received time's text from one call to the next and a client time's second from any
    call: rows one after another, their server times changing every few rows and their client times in the same
    second, other seconds, at 0, at the last millisecond of 9999 and past it, give what the builder's way gives."""
    import random
    rnd = random.Random(5)
    keys = ("event_type", "device_id", "time", "server_upload_time")
    make, build = fast_row_maker(keys, MISSING, SYNC_EXCEPT), fast_event_builder(keys, MISSING)
    received = T
    clients = [0, 999, 1000, 253_402_300_799_999, 253_402_300_800_000, T, T + 1, T - 1, T + 1000, MISSING]
    for i in range(3000):
        if i % 7 == 0:
            received = rnd.choice([T, T + rnd.randrange(-5000, 5000), rnd.randrange(0, 253_402_300_799_999)])
        client = rnd.choice(clients) if i % 3 else received + rnd.randrange(-3_600_000, 3_600_000)
        uploaded = rnd.choice([MISSING, MISSING, received, rnd.randrange(0, 4_000_000_000_000)])
        values = ("Play", f"device-{i:05d}", client, uploaded)
        iid, uid = f"ord-{i}", str(uuid.UUID(int=rnd.getrandbits(128)))
        got = make(values, PROJECT, received, RULES, None, iid.encode(), uid.encode(), uuid.UUID(uid).bytes, i % 2 == 0)
        e, want = build(values), None
        if e is not None:
            e.insert_id = iid
            if i % 2 == 0:
                e.skip_user_properties_sync = True
            want = normalize_fast_event(e, PROJECT, received, RULES, None, uid)
        assert (got if got is None else got._asdict()) == (want if want is None else want._asdict()), i


def test_the_row_maker_is_for_events_whose_ids_and_sync_flag_its_caller_gives():
    assert fast_row_maker(("event_type", "user_id"), MISSING, SYNC_EXCEPT) is not None
    for keys in [("event_type", "insert_id"), ("event_type", "uuid"), ("event_type", "$skip_user_properties_sync"),
                 ("user_id", "time"), ("event_type", "colour"), ("event_type", "event_type"), ()]:
        assert fast_row_maker(keys, MISSING, SYNC_EXCEPT) is None, keys
    make = fast_row_maker(("event_type", "user_id", "time"), MISSING, SYNC_EXCEPT)
    uid = "6f1d2c3a-9b1e-5c7d-8e2f-3a4b5c6d7e8f"
    ids = (b"ord-1", uid.encode(), uuid.UUID(uid).bytes)
    got = make(("Play", "user-00001", T - 1), PROJECT, T, RULES, T, *ids, True)
    assert got.dedupe_key == b"424242\x00\x00ord-1" and got.uuid == uuid.UUID(uid).bytes
    assert got.line.startswith(b'{"$insert_id":"ord-1","$schema":null,')
    assert b',"uuid":"6f1d2c3a-9b1e-5c7d-8e2f-3a4b5c6d7e8f","version_name":null,' in got.line
    assert b'"data":{"$skip_user_properties_sync":true}' in got.line
    assert b'"data":{}' in make(("$identify", "user-00001", T - 1), PROJECT, T, RULES, T, *ids, True).line
    assert make(("Play", "null", T - 1), PROJECT, T, RULES, T, *ids, True) is None   # an invalid id


def test_the_builder_declines_what_the_fast_path_declines_and_takes_the_rest():
    build = fast_event_builder(("event_type", "time", "location_lat", "event_properties", "$skip_user_properties_sync",
                                "user_id"), MISSING)
    assert build(("e", 5, 1.5, {"a": 1}, True, "user-1")).skip_user_properties_sync is True
    assert build(("e", MISSING, None, MISSING, MISSING, "user-1")) == FastEvent(event_type="e", user_id="user-1")
    for values in [("e", True, None, None, None, None), ("e", 5.0, None, None, None, None),
                   ("e", None, float("nan"), None, None, None), ("e", None, True, None, None, None),
                   ("e", None, None, {1: 2}, None, None), ("e", None, None, [], None, None),
                   ("e", None, None, None, 1, None), ("e" * (MAX_STRING + 1), None, None, None, None, None),
                   (5, None, None, None, None, None), ("e", 2**63, None, None, None, None)]:
        assert build(values) is None, values
    assert build(("\U0001f600" * MAX_STRING, -(2**63), 2**63 - 1, {}, False, None)) is not None
    assert fast_event_builder(("event_type", "colour"), MISSING) is None
    assert fast_event_builder(("event_type", "event_type"), MISSING) is None
    assert fast_event_builder((), MISSING) is None


def test_a_text_that_lowers_to_an_invalid_id_has_its_length():
    """The row maker looks an id up among the invalid ones only when its length is one of theirs: every character
    whose lowercase is ASCII lowers to exactly one character, and ids of every case and the Kelvin sign are refused."""
    from stream.events.normalize import _INVALID_LENGTHS
    assert [hex(i) for i in range(sys.maxunicode + 1) if not 0xD800 <= i <= 0xDFFF
            and chr(i).lower().isascii() and len(chr(i).lower()) != 1] == []
    assert _INVALID_LENGTHS == {len(x) for x in INVALID_IDS}
    make = fast_row_maker(("event_type", "user_id", "device_id"), MISSING, SYNC_EXCEPT)
    uid = "6f1d2c3a-9b1e-5c7d-8e2f-3a4b5c6d7e8f"
    ids = (b"ord-1", uid.encode(), uuid.UUID(uid).bytes)
    for bad in ["NULL", "Undefined", "UN\u212aNOWN", "00000000-0000-0000-0000-000000000000", "N/A"]:
        assert make(("Play", bad, "device-00001"), PROJECT, T, RULES, T, *ids, False) is None, bad
        assert make(("Play", "user-00001", bad), PROJECT, T, RULES, T, *ids, False) is None, bad
    assert make(("Play", "user-00001", "device-00001"), PROJECT, T, RULES, T, *ids, False) is not None


def test_an_id_of_a_length_whose_invalid_ids_have_no_letter_is_invalid_only_as_it_is():
    """_fast_row does not lower an id of a length whose invalid ids hold no letter (the zero uuid's 36, "0"'s 1,
    ""'s 0): no character but an ASCII one that is no letter lowers to such a character, so a text lowering to
    one of those ids is that id."""
    from stream.events.normalize import _CASED_LENGTHS
    assert [hex(i) for i in range(sys.maxunicode + 1) if not 0xD800 <= i <= 0xDFFF
            and len(chr(i).lower()) == 1 and chr(i).lower().isascii() and not chr(i).lower().isalpha()
            and chr(i).lower() != chr(i)] == []
    assert _CASED_LENGTHS == {2, 3, 4, 6, 7, 9}
    zero = "00000000-0000-0000-0000-000000000000"
    for field, ids in [("device_id", {"device_id": zero}), ("user_id", {"user_id": zero, "device_id": "device-00001"}),
                       ("user_id", {"user_id": "NULL", "device_id": "device-00001"}),
                       ("device_id", {"user_id": "user-00001", "device_id": "Un\u212anown"})]:
        out = normalize_message(msgspec.json.encode({"event_type": "Play", **ids}), None, PROJECT, T, "t/0/1", RULES, T)
        assert out == Rejected(Reason.INVALID_ID, field, f"{field} {ids[field]!r} is not a valid id"), ids
    one = zero.replace("0", "1")
    out = normalize_message(msgspec.json.encode({"event_type": "Play", "device_id": one}), None, PROJECT, T, "t/0/1",
                            RULES, T)
    assert type(out) is Normalized and out.device_id == one


NAMESPACE = uuid.UUID("6f1d2c3a-9b1e-5c7d-8e2f-3a4b5c6d7e8f")


@GENERATED
@given(st.text(max_size=80), st.lists(st.integers(-10**20, 10**20) | st.integers(1, 2_000_000), max_size=40))
def test_uuids_made_at_once_are_uuid5_of_the_prefix_and_each_number(prefix, numbers):
    """``uuid5_many`` and ``uuid5_texts``: for each number the text of ``uuid5(NAMESPACE, prefix + str(n))`` as
    bytes, and its 16 bytes, whatever the prefix's characters (its UTF-8 of 1 to 4 bytes a character and any length,
    so the number's digits start anywhere in SHA-1's blocks) and the numbers."""
    want = [uuid.uuid5(NAMESPACE, prefix + str(n)) for n in numbers]
    texts, raw = uuid5_many(prefix, numbers)
    assert texts == [str(u).encode() for u in want]
    assert raw == [u.bytes for u in want]
    assert uuid5_texts(prefix, numbers) == texts
    assert [t.decode() for t in texts] == [uuid5_str(prefix + str(n)) for n in numbers]
    assert uuid5_strs(prefix, numbers) == ([str(u) for u in want], raw)


def test_a_chunk_of_rows_ids_made_at_once():
    """The import's 2,000 rows of a chunk, numbered on from a file's millionth row; one number, and none."""
    prefix = "s3-import/clicks/d/1.json.gz#"
    numbers = list(range(999_001, 1_001_001))
    texts, raw = uuid5_many(prefix, numbers)
    assert texts == [str(uuid.uuid5(NAMESPACE, f"{prefix}{n}")).encode() for n in numbers]
    assert raw == [uuid.uuid5(NAMESPACE, f"{prefix}{n}").bytes for n in numbers]
    assert uuid5_many(prefix, [7]) == ([str(uuid.uuid5(NAMESPACE, prefix + "7")).encode()],
                                       [uuid.uuid5(NAMESPACE, prefix + "7").bytes])
    assert uuid5_many(prefix, []) == ([], []) and uuid5_texts(prefix, []) == []


@GENERATED
@given(st.text(max_size=40), st.text(max_size=40), st.lists(st.integers(1, 10**12), max_size=20))
def test_a_row_s_two_uuids_made_at_once_are_each_prefix_s_own(first, second, numbers):
    assert uuid5_two(first, second, numbers) == (uuid5_texts(first, numbers), *uuid5_many(second, numbers))
    assert uuid5_two(first, second, numbers)[0] == [str(uuid.uuid5(NAMESPACE, first + str(n))).encode()
                                                    for n in numbers]


# --- the fast path's bounded nesting and the ingest stage's loop over a poll ----------------------------------

deeper_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=2) |
                             st.dictionaries(keys, inner, max_size=2), max_leaves=14)


@GENERATED
@given(st.sampled_from(DICT_KEYS), deeper_values | deep_objects, st.booleans())
def test_the_fast_decoder_reads_an_object_field_as_the_untyped_decoder_does_up_to_its_nesting(field, value, nest):
    """``_fast_decode`` types the object fields to at most FAST_NESTING levels: within them it gives the values
    the untyped decoder gives (the same types too: 1, 1.0 and true), deeper it refuses (no RecursionError)."""
    obj = {"deep": value} if nest else {"a": value, "b": [value]}
    text = msgspec.json.encode({"event_type": "x", field: obj})
    want = msgspec.json.decode(text)[field]
    if _depth(obj) <= FAST_NESTING:
        got = getattr(_fast_decode(text), field if field != "$skip_user_properties_sync" else "")
        assert got == want and msgspec.json.encode(got) == msgspec.json.encode(want)
        assert json.dumps(got) == json.dumps(want)   # int against float against bool, at every level
    else:
        with pytest.raises(msgspec.ValidationError):
            _fast_decode(text)


def test_the_fast_path_takes_an_object_field_nested_to_its_limit_and_not_one_level_more():
    for field in DICT_KEYS:
        for arrays in (False, True):
            seen = set()
            for levels in range(FAST_NESTING - 1, FAST_NESTING + 4):
                obj = nested(levels, arrays)
                depth = _depth(obj)
                seen.add(depth)
                value = msgspec.json.encode({"event_type": "x", "user_id": "user-1", field: obj})
                assert (fast(value, None, RULES) is not None) == (depth <= FAST_NESTING), (field, arrays, depth)
                assert type(agree(value)) is Normalized
            assert {FAST_NESTING - arrays, FAST_NESTING + 1} <= seen   # with arrays: two levels a step


def test_the_fast_decoder_refuses_a_value_nested_thousands_of_levels_anywhere_without_recursing():
    deep = b"[" * 5000 + b"]" * 5000
    obj = b'{"a":' * 5000 + b"1" + b"}" * 5000
    for value in (deep, obj, b'{"event_type":' + deep + b"}", b'{"colour":' + obj + b"}",
                  *(b'{"%s":{"a":%s}}' % (k.encode(), v) for k in DICT_KEYS for v in (deep, obj))):
        with pytest.raises(msgspec.ValidationError):
            _fast_decode(value)
        agree(value)


def _origin_uuid(offset: int) -> bytes:
    return uuid.uuid5(NAMESPACE, f"events.ingest/3/{offset}").bytes


poll_values = st.one_of(
    events().map(msgspec.json.encode),
    events(unknown=False, odd=False).map(msgspec.json.encode),
    st.builds(lambda ev, u: msgspec.json.encode({**ev, "uuid": u}), events(unknown=False, odd=False), uuids),
    st.builds(lambda ev, d: msgspec.json.encode({**ev, "event_properties": d}), events(unknown=False, odd=False),
              deep_objects),
    st.sampled_from([b"", b"{", b"[]", b'{"event_type":"a","user_id":"\xff"}', b'{"event_type":"a"}', None]),
)
poll_keys = st.none() | st.sampled_from([b"dev-12345", b"\xff\xfe", "\u00e9".encode()])
poll_headers = st.sampled_from([(), (), (("project", b"7"),), (("project", b"5"),), (("project", b"x"),)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(poll_values, poll_keys, poll_headers, timestamps), max_size=12),
       st.integers(0, 10**12), st.sets(st.integers(0, 11)), clocks.filter(lambda c: c is not None),
       st.sampled_from([None, PROJECT]), rules)
def test_a_poll_gives_what_each_record_normalized_alone_gives(recs, first, clamped, now_ms, default, rules):
    """``ingest_records``, which makes a poll's uuids at once and tries the fast path inline, against each record
    through ``normalize_message`` with its origin (the code before): the same batches, byte for byte, the same dead
    letters, reasons, clamp counts and new clamps. Records with and without a uuid of their own, rejected ones
    among good ones, and a replay's recorded clamps."""
    from types import SimpleNamespace
    records = [SimpleNamespace(offset=first + i, value=v, key=k, headers=h, timestamp=ts)
               for i, (v, k, h, ts) in enumerate(recs)]
    clamps = {first + i: now_ms - 7_200_000 for i in clamped}
    projects = frozenset({PROJECT, 7})
    res = ingest_records(records, "events.ingest", 3, projects=projects, default_project=default, rules=rules,
                         partitions=4, max_events=5, now_ms=now_ms, clamps=clamps)
    want = IngestResult()
    good = []
    for r in records:
        project = project_of(r.headers, projects, default)
        out = project if type(project) is Rejected else normalize_message(
            r.value, r.key, project, r.timestamp, f"events.ingest/3/{r.offset}", rules, clamps.get(r.offset, now_ms))
        if type(out) is Normalized:
            good.append((r.offset, out))
            if not msgspec.json.decode(out.line).get("uuid") or b'"uuid"' not in (r.value or b""):
                assert out.uuid == _origin_uuid(r.offset)
            if out.clamped:
                want.clamped += 1
                if r.offset not in clamps:
                    want.new_clamps[r.offset] = now_ms
        else:
            want.reasons[out.reason.value] += 1
            want.dead.append((r.key, deadletter.encode(out, "events.ingest", 3, r.offset, r.timestamp, r.key, r.value,
                                                       now_ms, rules.max_event_bytes)))
    want.valid = len(good)
    want.batches = list(group(good, "events.ingest", 3, 4, 5))
    assert [(t, b.encode()) for t, b in res.batches] == [(t, b.encode()) for t, b in want.batches]
    assert (res.dead, res.reasons, res.valid, res.clamped, res.new_clamps) == (
        want.dead, want.reasons, want.valid, want.clamped, want.new_clamps)
