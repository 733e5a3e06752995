"""A request body read in one pass (``parse`` given ``max_event_bytes``, then ``validate_request``) against the
same body read the long way (``parse`` of the envelope, then ``validate`` of each raw event): on generated
requests, the very same answer: the same error, or the same accepted ``Normalized`` (row bytes, dedupe key, upload
time, uuid, ids) and the same rejections with the same raw events for the dead letters.

The events are those of ``tests/unit/events/test_normalize_generated.py`` (every input field with values of every
JSON type, odd values, unknown keys, objects nested near the depth limit, several JSON layouts), a few to a body,
in envelopes of several shapes.
"""

from __future__ import annotations

import json
import uuid

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from stream.api import amplitude
from stream.api.amplitude import ApiError, EventUuids, parse, validate, validate_request
from stream.events.depth import MAX_DEPTH
from stream.events.normalize import Normalized, Reason, Rejected, Rules
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


def long_way(body: bytes, rules_: Rules, remote_ip: str | None) -> tuple[ApiError | amplitude.Validated, list]:
    req = parse(body, MAX_EVENTS)
    if isinstance(req, ApiError):
        return req, []
    r = rules_ if req.min_id_length is None else rules_._replace(min_id_length=req.min_id_length)
    return validate(req.events, PROJECT, T, NONCE, r, remote_ip), req.events


def one_pass(body: bytes, rules_: Rules, remote_ip: str | None) -> tuple[ApiError | amplitude.Validated, list]:
    req = parse(body, MAX_EVENTS, rules_.max_event_bytes)
    if isinstance(req, ApiError):
        return req, []
    r = rules_ if req.min_id_length is None else rules_._replace(min_id_length=req.min_id_length)
    return validate_request(req, PROJECT, T, NONCE, r, remote_ip)


def same(a: tuple, b: tuple) -> None:
    (got, raw_got), (want, raw_want) = a, b
    assert type(got) is type(want)
    if isinstance(want, ApiError):
        assert got == want
        return
    assert [n._asdict() for n in got.accepted] == [n._asdict() for n in want.accepted]
    assert got.rejected == want.rejected
    if want.rejected:   # the dead letters carry the raw events
        assert [bytes(raw_got[i]) for i, _ in got.rejected] == [bytes(raw_want[i]) for i, _ in want.rejected]


@GENERATED
@given(bodies(), rules, remote_ips)
def test_a_body_read_in_one_pass_answers_as_read_the_long_way(body, rules_, remote_ip):
    same(one_pass(body, rules_, remote_ip), long_way(body, rules_, remote_ip))


def body_of(*evs: dict, **envelope) -> bytes:
    return json.dumps({"api_key": "bench-key", "events": list(evs), **envelope}).encode()


EV = {"event_type": "Order Completed", "user_id": "user-20391", "event_properties": {"sku": "A-1"}}


def test_a_common_body_is_decoded_in_one_pass_and_every_event_taken_from_it():
    body = body_of(EV, {**EV, "uuid": "5ba40637-3bde-4060-a429-e47906945ed5"}, options={"min_id_length": 3})
    req = parse(body, MAX_EVENTS, Rules().max_event_bytes)
    assert (req.api_key, req.events, req.min_id_length, req.count, len(req.decoded)) == ("bench-key", [], 3, 2, 2)
    checked, raw = validate_request(req, PROJECT, T, NONCE, Rules())
    assert raw == [] and checked.rejected == []
    uuids = EventUuids(NONCE)
    assert [n.uuid for n in checked.accepted] == [uuid.UUID(uuids(0)).bytes,
                                                  uuid.UUID("5ba40637-3bde-4060-a429-e47906945ed5").bytes]
    same((checked, raw), long_way(body, Rules(), None))


def test_a_body_larger_than_an_event_may_be_is_read_the_long_way():
    body = body_of(EV, EV)
    assert parse(body, MAX_EVENTS, len(body)).decoded is not None
    req = parse(body, MAX_EVENTS, len(body) - 1)
    assert req.decoded is None and len(req.events) == 2


def test_events_the_one_pass_does_not_take_are_answered_from_the_raw_events():
    too_deep = {**EV, "event_properties": nested(MAX_DEPTH + 2, False)}   # 42 levels with the event
    hidden = {**EV, "event_properties": {"$price": nested(MAX_DEPTH + 2, True)}, "price": 2.5}
    for bad, reason in ((too_deep, Reason.INVALID_VALUE), (hidden, Reason.INVALID_VALUE),
                        ({**EV, "user_id": "null"}, Reason.INVALID_ID)):
        body = body_of(EV, bad)
        req = parse(body, MAX_EVENTS, Rules().max_event_bytes)
        assert req.decoded is not None
        checked, raw = validate_request(req, PROJECT, T, NONCE, Rules())
        assert [(i, r.reason) for i, r in checked.rejected] == [(1, reason)]
        assert bytes(raw[1]) == json.dumps(bad).encode()
        same((checked, raw), long_way(body, Rules(), None))


def test_an_event_of_fewer_brackets_than_the_limit_nests_no_deeper_and_more_are_read_the_long_way():
    within = {**EV, "event_properties": nested(MAX_DEPTH + 1, False)}   # MAX_DEPTH + 1 levels with the event: allowed
    checked, raw = validate_request(parse(body_of(within), MAX_EVENTS, 1 << 20), PROJECT, T, NONCE, Rules())
    (n,) = checked.accepted
    assert type(n) is Normalized and checked.rejected == [] and len(raw) == 1
    assert n.line.count(b"{") > MAX_DEPTH + 1   # so it went the long way, accepted there
    same(one_pass(body_of(within), Rules(), None), long_way(body_of(within), Rules(), None))


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
    for body in (b"", b"[]", b'{"api_key":"bench-key"}', b'{"api_key":"","events":[{}]}',
                 b'{"api_key":"bench-key","events":[]}', b'{"api_key":"bench-key","events":[1],"options":5}',
                 body_of(*[EV] * 3)):
        got = parse(body, 2, 1 << 20)
        want = parse(body, 2)
        assert got == want
        assert isinstance(got, ApiError)


def test_the_raw_events_of_a_body_read_in_one_pass_are_its_events_array():
    body = b'{"events":[{"a":1}],"api_key":"k","events":[{"event_type":"e", "user_id":"user-1"}, {"x":[]}]}'
    assert [bytes(r) for r in amplitude._raw_events(body)] == [b'{"event_type":"e", "user_id":"user-1"}',
                                                               b'{"x":[]}']
    assert msgspec.json.decode(body)["events"][1] == {"x": []}
