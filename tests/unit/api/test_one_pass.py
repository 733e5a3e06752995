"""An Amplitude body read as ``stream api`` reads it (``parse``: the envelope in one msgspec pass; ``validate``
with the request's ``EventUuids``) against the same body read the long way (``parse_slowly``: an object of raw
values, then an array of raw events; then for each event ``depth_over`` and ``normalize_stamped``, itself compared
with the reference path in tests/unit/events): on generated requests, the very same answer: the same error, or the
same accepted ``Normalized`` (row bytes, dedupe key, upload time, uuid, ids) and the same rejections, with the same
raw events for the dead letters.

The events are those of ``tests/unit/events/test_normalize_generated.py`` (every input field with values of every
JSON type, odd values, unknown keys, objects nested near the depth limit, several JSON layouts), a few to a body,
in envelopes of several shapes.
"""

from __future__ import annotations

import json
import uuid

from hypothesis import given
from hypothesis import strategies as st

from stream.api import amplitude
from stream.api.amplitude import ApiError, EventUuids, Validated, parse, parse_slowly, validate
from stream.events.depth import MAX_DEPTH, depth_over
from stream.events.normalize import Normalized, Reason, Rules, normalize_stamped, too_deep
from tests.unit.events.test_normalize_generated import (
    GENERATED,
    LAYOUTS,
    MAX_STRING,
    T,
    events,
    layouts,
    nested,
    rules,
    stamped_events,
)

PROJECT = 424242
NONCE = "http/0123456789abcdef0123456789abcdef"
MAX_EVENTS = 2000

remote_ips = st.sampled_from([None, "203.0.113.9", "a" * (MAX_STRING + 1)])
options = st.sampled_from([None, {}, {"min_id_length": 1}, {"min_id_length": 8}, {"min_id_length": 0},
                           {"min_id_length": "5"}, {"min_id_length": True}, {"min_id_length": None}, "x", [1]])


@st.composite
def bodies(draw) -> bytes:
    """An Amplitude body: an API key (usually right), a few generated events in one JSON layout, maybe options,
    an unknown key or a repeated key, in any order; sometimes not an array, not an object, or empty."""
    layout = LAYOUTS[draw(layouts)]
    evs = draw(st.lists(stamped_events | events(), min_size=0, max_size=4))
    if draw(st.integers(0, 5)) == 0:
        evs.append({"event_type": "e", "user_id": "user-1", "price": 1,
                    "event_properties": {"$price": nested(MAX_DEPTH + 2, False)}})
    parts = [b'"api_key":' + layout(draw(st.sampled_from(["bench-key"] * 4 + ["", None, 5, ["k"]])))]
    shape = draw(st.sampled_from(["array"] * 6 + ["null", "object", "number", "missing"]))
    if shape == "array":
        parts.append(b'"events":[' + b",".join(layout(e) for e in evs) + b"]")
    elif shape != "missing":
        parts.append(b'"events":' + {"null": b"null", "object": b"{}", "number": b"1"}[shape])
    opts = draw(options)
    if opts is not None or draw(st.booleans()):
        parts.append(b'"options":' + layout(opts))
    if draw(st.integers(0, 4)) == 0:
        parts.append(draw(st.sampled_from([b'"client":"x"', b'"api_key":"bench-key"', b'"events":[]'])))
    order = draw(st.permutations(range(len(parts))))
    return b"{" + b",".join(parts[i] for i in order) + b"}"


def long_way(body: bytes, rules_: Rules, remote_ip: str | None) -> tuple[ApiError | Validated, list]:
    req = parse_slowly(body, MAX_EVENTS)
    if isinstance(req, ApiError):
        return req, []
    r = rules_ if req.min_id_length is None else rules_._replace(min_id_length=req.min_id_length)
    out, uuids = Validated([], []), EventUuids(NONCE)
    for i, raw in enumerate(req.events):
        value = bytes(raw)
        if (depth := depth_over(value)) is not None:
            out.rejected.append((i, too_deep(depth)))
            continue
        res = normalize_stamped(value, PROJECT, T, "", r, remote_ip, uuids(i))
        if type(res) is Normalized:
            out.accepted.append(res)
        else:
            out.rejected.append((i, res))
    return out, req.events


def as_served(body: bytes, rules_: Rules, remote_ip: str | None) -> tuple[ApiError | Validated, list]:
    req = parse(body, MAX_EVENTS)
    if isinstance(req, ApiError):
        return req, []
    r = rules_ if req.min_id_length is None else rules_._replace(min_id_length=req.min_id_length)
    return validate(req.events, PROJECT, T, NONCE, r, remote_ip), req.events


def same(a: tuple, b: tuple) -> None:
    (got, raw_got), (want, raw_want) = a, b
    assert type(got) is type(want)
    if isinstance(want, ApiError):
        assert got == want
        return
    assert [n._asdict() for n in got.accepted] == [n._asdict() for n in want.accepted]
    assert got.rejected == want.rejected
    assert [bytes(r) for r in raw_got] == [bytes(r) for r in raw_want]   # what the dead letters carry


@GENERATED
@given(bodies(), rules, remote_ips)
def test_a_body_read_as_served_answers_as_read_the_long_way(body, rules_, remote_ip):
    same(as_served(body, rules_, remote_ip), long_way(body, rules_, remote_ip))


def body_of(*evs: dict, **envelope) -> bytes:
    return json.dumps({"api_key": "bench-key", "events": list(evs), **envelope}).encode()


EV = {"event_type": "Order Completed", "user_id": "user-20391", "event_properties": {"sku": "A-1"}}


def test_a_common_body_is_read_in_one_pass(monkeypatch):
    body = body_of(EV, {**EV, "uuid": "5ba40637-3bde-4060-a429-e47906945ed5"}, options={"min_id_length": 3})
    slow = []
    monkeypatch.setattr(amplitude, "parse_slowly", lambda *a: slow.append(a))
    req = parse(body, MAX_EVENTS)
    assert (req.api_key, [bytes(e) for e in req.events], req.min_id_length) == (
        "bench-key", [json.dumps(EV).encode(), json.dumps({**EV, "uuid": "5ba40637-3bde-4060-a429-e47906945ed5"})
                      .encode()], 3)
    checked = validate(req.events, PROJECT, T, NONCE, Rules())
    assert slow == [] and checked.rejected == []
    assert [n.uuid for n in checked.accepted] == [uuid.UUID(EventUuids(NONCE)(0)).bytes,
                                                  uuid.UUID("5ba40637-3bde-4060-a429-e47906945ed5").bytes]
    monkeypatch.undo()
    same(as_served(body, Rules(), None), long_way(body, Rules(), None))


def test_events_refused_or_nested_deep_are_answered_as_the_long_way_does():
    too_deep_ = {**EV, "event_properties": nested(MAX_DEPTH + 2, False)}   # 42 levels with the event
    hidden = {**EV, "event_properties": {"$price": nested(MAX_DEPTH + 2, True)}, "price": 2.5}
    for bad, reason in ((too_deep_, Reason.INVALID_VALUE), (hidden, Reason.INVALID_VALUE),
                        ({**EV, "user_id": "null"}, Reason.INVALID_ID), ({**EV, "time": "x"}, Reason.INVALID_TYPE)):
        body = body_of(EV, bad)
        checked = validate(parse(body, MAX_EVENTS).events, PROJECT, T, NONCE, Rules())
        assert [(i, r.reason) for i, r in checked.rejected] == [(1, reason)]
        same(as_served(body, Rules(), None), long_way(body, Rules(), None))


def test_an_event_of_more_brackets_than_the_limit_but_within_it_is_accepted():
    # MAX_DEPTH + 1 levels with the event, allowed, and more brackets than that beside them
    within = {**EV, "event_properties": nested(MAX_DEPTH + 1, False), "user_properties": {"b": {}}}
    (raw,) = parse(body_of(within), MAX_EVENTS).events
    assert bytes(raw).count(b"{") > MAX_DEPTH + 1   # so depth_over read it
    (n,) = validate([raw], PROJECT, T, NONCE, Rules()).accepted
    assert type(n) is Normalized
    same(as_served(body_of(within), Rules(), None), long_way(body_of(within), Rules(), None))


def test_an_event_larger_than_the_limit_is_too_large():
    body = body_of(EV, {**EV, "event_properties": {"a": "x" * 400}})
    checked = validate(parse(body, MAX_EVENTS).events, PROJECT, T, NONCE, Rules(max_event_bytes=300))
    assert [(i, r.reason) for i, r in checked.rejected] == [(1, Reason.TOO_LARGE)]
    same(as_served(body, Rules(max_event_bytes=300), None), long_way(body, Rules(max_event_bytes=300), None))


def test_event_uuids_are_version_4_distinct_within_a_request_and_fresh_per_nonce():
    a, b = EventUuids("http/a"), EventUuids("http/b")
    ids = [a(i) for i in range(2000)] + [b(i) for i in range(2000)]
    assert len(set(ids)) == 4000
    assert all(str(uuid.UUID(u)) == u and uuid.UUID(u).version == 4 and uuid.UUID(u).variant == uuid.RFC_4122
               for u in ids)
    assert EventUuids("http/a")(7) == a(7)
    a.tail = (1 << 48) - 1   # the last 48 bits wrap within the request's head
    assert (a(0)[-12:], a(1)[-12:], a(1)[:24]) == ("ffffffffffff", "000000000000", a(0)[:24])


def test_a_refused_body_gives_the_same_error_either_way():
    for body in (b"", b"  ", b"[]", b"{", b'{"api_key":"bench-key"}', b'{"api_key":"","events":[{}]}',
                 b'{"api_key":"bench-key","events":[]}', b'{"api_key":"bench-key","events":[1],"options":5}',
                 b'{"api_key":"bench-key","events":[1],"options":{"min_id_length":0}}', b"\xff", body_of(*[EV] * 3),
                 b"[" * 5000 + b"]" * 5000,
                 b'{"api_key":"bench-key","x":' + b"[" * 5000 + b"]" * 5000 + b',"events":[]}'):
        got = parse(body, 2)
        assert got == parse_slowly(body, 2)
        assert isinstance(got, ApiError)


@GENERATED
@given(st.lists(bodies(), min_size=1, max_size=4), rules, remote_ips, st.integers(1, 5))
def test_a_request_validated_slice_after_slice_answers_as_validated_at_once(bodies_, rules_, remote_ip, size):
    """The service validates a large request a slice at a time (stream.api.service.SLICE_EVENTS), its slices into
    one Validated: the same accepted rows (uuids by the index in the request) and rejections, at their indexes."""
    raws = [e for b in bodies_ if not isinstance(req := parse(b, MAX_EVENTS), ApiError) for e in req.events]
    whole = validate(raws, PROJECT, T, NONCE, rules_, remote_ip)
    sliced = validate(raws, PROJECT, T, NONCE, rules_, remote_ip, stop=size)
    for start in range(size, len(raws), size):
        assert validate(raws, PROJECT, T, NONCE, rules_, remote_ip, start=start, stop=start + size,
                        into=sliced) is sliced
    same((sliced, raws), (whole, raws))


def test_only_the_events_the_fast_path_declines_have_their_depth_checked_and_a_too_deep_one_is_still_named_so():
    """``validate`` tries the fast path before any depth check (an event it takes nests within the limit): an event
    nested past the fast path's types but within MAX_DEPTH is accepted by the reference path, one past MAX_DEPTH
    is rejected as too deep even when it is also too large (the depth is checked first, as before)."""
    from stream.events.normalize import FAST_NESTING
    from tests.unit.events.test_normalize_generated import _depth, nested
    within = {**EV, "event_properties": nested(FAST_NESTING + 3, False)}
    past = {**EV, "event_properties": nested(MAX_DEPTH + 2, True), "city": "x" * 400}
    body = body_of(EV, within, past)
    for rules_ in (Rules(), Rules(max_event_bytes=300)):
        got = as_served(body, rules_, None)
        same(got, long_way(body, rules_, None))
        checked = got[0]
        assert len(checked.accepted) == 2
        assert checked.rejected == [(2, too_deep(depth_over(json.dumps(past).encode())))]
    assert _depth(within["event_properties"]) > FAST_NESTING and len(json.dumps(past)) > 300
