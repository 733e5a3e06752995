"""Segment requests: the write key, the body, Segment's limits, the bodies answered."""

import base64
import itertools

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.api import segment
from stream.api.amplitude import ApiError
from stream.events.normalize import Reason, Rejected

T = 1709968500000


def basic(user):
    return "Basic " + base64.b64encode(user.encode()).decode()


def test_the_write_key_is_the_basic_user_name():
    assert segment.write_key_from_header(basic("abc123:")) == "abc123"
    assert segment.write_key_from_header("Basic YWJjMTIzOg==") == "abc123"   # FORMATS.md §3.1's example
    assert segment.write_key_from_header(basic("abc123")) == "abc123"
    for bad in (None, "", "Bearer tok", "Basic !!!", basic(":pw")):
        assert segment.write_key_from_header(bad) is None


def test_key_errors_are_401_with_a_json_body():
    assert (segment.missing_key().status, segment.missing_key().body) == (401, {
        "success": False, "code": "unauthorized", "message": "no write key: send it as the HTTP Basic user name "
        "(Authorization: Basic base64(<writeKey>:)) or as writeKey in the body"})
    assert segment.unknown_key().body == {
        "success": False, "code": "unauthorized", "message": "the write key is not configured for any source "
        "(projects[].segment_sources[].write_key); check the key the SDK is initialised with"}


@pytest.mark.parametrize("raw, message", [
    (b"", "the request has no body; send a JSON object"),
    (b'{"batch": [', "the body is not valid JSON: unexpected end of data: line 1 column 12 (char 11)"),
    (b'{"userId": "caf\xe9"}', ("the body is not UTF-8 (invalid continuation byte at byte 15); send JSON encoded "
                               "as UTF-8")),
    (b"[1]", "the body must be a JSON object"),
])
def test_unreadable_bodies_are_400(raw, message):
    got = segment.parse_body(raw)
    assert isinstance(got, ApiError)
    assert (got.status, got.body) == (400, {"success": False, "code": "invalid_json", "message": message})


def msgs(obj, call_type=None, max_bytes=32 * 1024, max_messages=2500):
    ids = iter(f"gen-{i}" for i in range(10_000))
    return segment.messages(obj, call_type, T, max_message_bytes=max_bytes, max_messages=max_messages,
                            new_id=lambda: next(ids))


def test_a_single_call_is_one_message_of_its_type():
    got = msgs({"userId": "u-77", "event": "E", "writeKey": "wk", "type": "identify"}, "track")
    assert got.rejected == []
    ((i, m),) = got.full
    assert (i, m["type"], m["messageId"], "writeKey" in m) == (0, "track", "gen-0", False)


def test_a_batch_merges_its_context_and_keeps_going_past_bad_messages():
    big = {"type": "track", "userId": "u-77", "event": "E", "properties": {"x": "y" * 200}}
    got = msgs({"batch": [{"type": "track", "userId": "u-77", "event": "E"}, {"type": "track"}, 5, big,
                          {"type": "page", "anonymousId": "anon-1"}],
                "context": {"library": {"name": "analytics-python"}}, "sentAt": "2024-03-09T07:15:00Z"},
               max_bytes=200)
    assert [(i, m["type"], m["context"]) for i, m in got.full] == [
        (0, "track", {"library": {"name": "analytics-python"}}), (4, "page", {"library": {"name": "analytics-python"}})]
    assert [(i, r.reason, r.field, orig) for i, r, orig in got.rejected] == [
        (1, Reason.MISSING_ID, "userId", {"type": "track"}), (2, Reason.NOT_AN_OBJECT, None, 5),
        (3, Reason.TOO_LARGE, None, big)]
    assert got.rejected[2][1].detail == f"the message is {len(orjson.dumps(big))} bytes; the limit is 200 " \
        "(api.segment_max_message_bytes)"


def test_a_batch_over_the_message_limit_is_dead_lettered_whole():
    got = msgs({"batch": [{"type": "track", "userId": "u-77", "event": "E"}] * 3}, max_messages=2)
    assert got.full == []
    assert [(i, r.reason, r.field) for i, r, _ in got.rejected] == [(i, Reason.TOO_LARGE, "batch") for i in range(3)]
    assert got.rejected[0][1].detail == "the batch holds 3 messages; the limit is 2 " \
        "(api.segment_max_batch_messages): send smaller batches"


@pytest.mark.parametrize("obj, message", [
    ({"batch": {"a": 1}}, 'a batch needs "batch": an array of messages'),
    ({}, 'a batch needs "batch": an array of messages'),
    ({"batch": [], "context": []}, "the batch's context must be an object"),
    ({"batch": [], "integrations": 1}, "the batch's integrations must be an object"),
])
def test_a_malformed_batch_is_400(obj, message):
    got = msgs(obj)
    assert (got.status, got.body) == (400, {"success": False, "code": "invalid_json", "message": message})


def test_success_bodies():
    assert segment.success_body(3, []) == {"success": True}
    assert segment.success_body(1, [(2, Rejected(Reason.MISSING_ID, "userId", "needs an id"))]) == {
        "success": True, "accepted": 1, "rejected": 1,
        "errors": [{"index": 2, "reason": "missing_id", "field": "userId", "message": "needs an id"}]}


def nested(n):
    """A value nested ``n`` levels deep (the outermost object is level 1)."""
    v = 1
    for _ in range(n):
        v = {"a": v}
    return v


TOO_DEEP = ("nests objects and arrays more than 200 levels deep, the most this API reads; no message of the request "
            "was stored. A message may nest at most 40 levels deep (deeper ones are dead-lettered one by one): flatten "
            "the properties")


@pytest.mark.parametrize("depth", [201, 255, 500, 1023])
def test_a_message_nested_past_the_read_limit_is_a_400_naming_it(depth):
    msg = {"type": "track", "userId": "u-1", "event": "e", "properties": nested(depth - 1)}
    got = msgs(msg, "track")
    assert (got.status, got.body) == (400, {"success": False, "code": "too_deep", "message": "the message " + TOO_DEEP})
    ok = {"type": "track", "userId": "u-1", "event": "e"}
    for max_messages in (2500, 1):   # also when the batch is dead-lettered whole for its size
        got = msgs({"batch": [ok, msg]}, max_messages=max_messages)
        assert (got.status, got.body) == (400, {"success": False, "code": "too_deep",
                                                "message": "message 1 of the batch " + TOO_DEEP})


def test_a_message_at_the_read_limit_is_rejected_alone_and_can_be_encoded():
    msg = {"type": "track", "userId": "u-1", "event": "e", "properties": nested(199)}
    got = msgs({"batch": [msg, {"type": "track", "userId": "u-1", "event": "ok"}]})
    assert [i for i, _ in got.full] == [1]
    assert [(i, r.reason, r.detail) for i, r, _ in got.rejected] == [
        (0, Reason.INVALID_VALUE, "the event nests objects and arrays more than 40 levels deep (42 seen); "
         "Amplitude's limit is 40: flatten its properties")]
    assert len(orjson.dumps(got.rejected[0][2])) > 0   # what the dead letter holds


def test_a_batch_context_too_deep_is_400_and_one_that_makes_a_message_too_deep_rejects_it():
    got = msgs({"batch": [{"type": "track", "userId": "u-1", "event": "e"}], "context": nested(200)})
    assert (got.status, got.body) == (400, {"success": False, "code": "too_deep",
                                            "message": "the batch's context " + TOO_DEEP})
    got = msgs({"batch": [{"type": "track", "userId": "u-1", "event": "e"}], "context": nested(60)})
    assert got.full == []
    assert [(i, r.reason) for i, r, _ in got.rejected] == [(0, Reason.INVALID_VALUE)]


def test_a_body_nested_past_what_json_decoding_reads_is_a_400_naming_the_limit():
    deep = b'{"batch":[' + b'{"a":' * 1100 + b"1" + b"}" * 1100 + b"]}"
    got = segment.parse_body(deep)
    assert (got.status, got.body) == (400, {"success": False, "code": "too_deep", "message": "the body " + TOO_DEEP})


# --- the batch checked slice after slice, as the service does, against messages() in one go -------------------------
def _message(kind: str, i: int):
    return {
        "track": {"type": "track", "event": "e", "anonymousId": f"a-{i}", "properties": {"n": i}},
        "with_id": {"type": "track", "event": "e", "userId": f"u-{i}", "messageId": f"m-{i}"},
        "identify": {"type": "identify", "userId": f"u-{i}", "traits": {"plan": "pro"}},
        "no_id": {"type": "track", "event": "e"},
        "no_event": {"type": "track", "userId": f"u-{i}"},
        "bad_type": {"type": "nope", "userId": f"u-{i}"},
        "too_large": {"type": "track", "event": "e", "userId": f"u-{i}", "properties": {"s": "x" * 500}},
        "too_deep": {"type": "track", "event": "e", "userId": f"u-{i}", "properties": nested(45)},
        "past_read_limit": {"type": "track", "event": "e", "userId": f"u-{i}", "properties": nested(205)},
        "not_object": [i],
        "nested_ok": {"type": "track", "event": "e", "userId": f"u-{i}", "properties": nested(30)},
    }[kind]


_KINDS = ["track", "with_id", "identify", "no_id", "no_event", "bad_type", "too_large", "too_deep",
          "past_read_limit", "not_object", "nested_ok"]


@st.composite
def calls(draw):
    """A /v1/batch (or, one time in eight, a single call) of any mix of messages Segment takes and refuses, with or
    without a batch context (one deep enough to push every message past the depth limit), and a small message limit."""
    weights = st.sampled_from(_KINDS[:3] * 6 + _KINDS[3:])
    kinds = draw(st.lists(weights, max_size=30))
    items = [_message(k, i) for i, k in enumerate(kinds)]
    if draw(st.integers(0, 7)) == 0:
        return (items[0] if items and type(items[0]) is dict else _message("track", 0)), "track", 2500
    obj: dict = {"batch": items}
    ctx = draw(st.sampled_from([None, {"ip": "203.0.113.9"}, {"deep": nested(44)}]))
    if ctx is not None:
        obj["context"] = ctx
    if draw(st.booleans()):
        obj["sentAt"] = "2024-03-09T08:00:00.000Z"
    return obj, None, draw(st.integers(1, 40))


def _ids():
    counter = itertools.count()
    return lambda: f"id-{next(counter)}"


@settings(max_examples=400, deadline=None)
@given(calls(), st.integers(1, 7))
def test_a_call_checked_in_slices_is_what_messages_gives_in_one_go(call, size):
    obj, call_type, max_messages = call
    whole = segment.messages(obj, call_type, T, max_message_bytes=400, max_messages=max_messages, new_id=_ids())
    batch = segment.batch_of(obj, call_type, max_messages=max_messages)
    assert isinstance(batch, segment.Batch)
    sliced, new_id = segment.Messages([], []), _ids()
    for start in range(0, len(batch.items), size):
        step = segment.check(batch, T, max_message_bytes=400, new_id=new_id, start=start, stop=start + size,
                             into=sliced)
        if isinstance(step, ApiError):   # a message past the read limit, in whichever slice: the whole call's 400
            assert step == whole
            return
        assert step is sliced
    assert isinstance(whole, segment.Messages)
    assert (sliced.full, sliced.rejected) == (whole.full, whole.rejected)
    assert orjson.dumps([m for _, m in sliced.full]) == orjson.dumps([m for _, m in whole.full])


def test_the_slices_agree_with_messages_on_a_400_past_the_first_slice_and_on_a_batch_over_the_limit():
    items = [_message("track", i) for i in range(9)]
    deep = {"batch": items[:7] + [_message("past_read_limit", 7)] + items[7:]}
    whole = segment.messages(deep, None, T, max_message_bytes=400, max_messages=5)
    assert (whole.status, whole.body["message"]) == (400, "message 7 of the batch " + TOO_DEEP)
    batch = segment.batch_of(deep, None, max_messages=5)
    into = segment.Messages([], [])
    assert segment.check(batch, T, max_message_bytes=400, start=0, stop=3, into=into) is into
    assert segment.check(batch, T, max_message_bytes=400, start=3, stop=6, into=into) is into
    assert segment.check(batch, T, max_message_bytes=400, start=6, stop=9, into=into) == whole
    over = segment.batch_of({"batch": items}, None, max_messages=5)
    got = segment.Messages([], [])
    for start in range(0, 9, 4):
        segment.check(over, T, max_message_bytes=400, start=start, stop=start + 4, into=got)
    assert got.full == [] and [(i, r) for i, r, _ in got.rejected] == [
        (i, Rejected(Reason.TOO_LARGE, "batch", "the batch holds 9 messages; the limit is 5 "
                     "(api.segment_max_batch_messages): send smaller batches")) for i in range(9)]
    assert segment.messages({"batch": items}, None, T, max_message_bytes=400, max_messages=5).rejected == got.rejected
