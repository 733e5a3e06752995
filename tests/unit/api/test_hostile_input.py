"""Generated hostile bodies through every step a request takes before the producer: nothing ever raises.

Each step a body goes through in ``stream.api.service`` -- parsing, validation, the Segment message checks,
normalization, batching, the batch codec and the dead-letter codec -- is run on bodies that hypothesis builds
from mutated valid requests and from arbitrary JSON, and must return an answer (an ApiError or a result), never
raise: a raised error is a 500, which the SDKs retry forever.
"""

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.api import amplitude, segment
from stream.api.batching import group
from stream.events import deadletter
from stream.events.normalize import Normalized, Rejected, Rules, normalize
from stream.events.segment import to_amplitude

RULES = Rules()
SEG_RULES = Rules(min_id_length=1)

json_scalars = st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.sampled_from(["event_type", "user_id", "device_id", "time",
                                                            "event_properties", "userId", "event", "type",
                                                            "properties", "batch", "events", "api_key",
                                                            "writeKey", "insert_id", "groups", "x"]) |
                                           st.text(max_size=8), inner, max_size=5), max_leaves=25)
VALID_AMPLITUDE = orjson.dumps({"api_key": "k", "events": [
    {"event_type": "Order Completed", "user_id": "user-20391", "time": 1710000000000, "insert_id": "ord-1",
     "event_properties": {"sku": "a", "n": [1, 2, {"x": None}]}, "price": 3.5, "ip": "$remote",
     "server_upload_time": 1}]})
VALID_SEGMENT = orjson.dumps({"batch": [
    {"type": "track", "userId": "u-77", "event": "Plan Upgraded", "properties": {"plan": "pro"},
     "timestamp": "2024-03-09T07:15:00.000Z", "messageId": "m-1", "context": {"ip": "1.2.3.4"}},
    {"type": "identify", "anonymousId": "a-1", "traits": {"name": "x"}}], "writeKey": "wk",
    "sentAt": "2024-03-09T07:15:05.000Z"})


@st.composite
def mutated(draw, valid: bytes):
    """``valid`` with a few random byte edits: deletions, insertions, replacements, truncation, deep nesting."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "nest"]))
        at = draw(st.integers(0, len(data)))
        if kind == "delete" and data:
            del data[at:at + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from([b"{", b"[", b'"', b"\\", b"\xff", b"\x00", b"null", b"1e999",
                                                b"-", b",", b":", b"}", b"]", b"\\u0000", b"\xed\xa0\x80",
                                                b"123456789012345678901234567890", b"-0.0e-400"]))
        elif kind == "replace" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "nest":
            n = draw(st.sampled_from([39, 41, 201, 255, 300, 500, 990, 1023, 1100, 3000]))
            data[at:at] = b'{"a":' * n + b"1" + b"}" * n
    return bytes(data)


def answer_amplitude(body: bytes) -> int:
    req = amplitude.parse(body, 2000)
    if isinstance(req, amplitude.ApiError):
        return req.status
    checked = amplitude.validate(req.events, 424242, 1_710_000_000_000, "http/test", RULES, client_ip="1.2.3.4")
    if checked.rejected:
        for i, why in checked.rejected:
            deadletter.encode(why, "http:/2/httpapi", -1, i, 1, None, bytes(req.events[i]), 2, 1 << 20)
        return amplitude.invalid_body(checked.rejected).status
    for _, b in group(checked.accepted, "events.valid", 4, 500, 4 << 20):
        b.encode()
    return 200


def answer_segment(body: bytes) -> int:
    obj = segment.parse_body(body)
    if isinstance(obj, amplitude.ApiError):
        return obj.status
    msgs = segment.messages(obj, None, 1_710_000_000_000, max_message_bytes=32 * 1024, max_messages=2500)
    if isinstance(msgs, amplitude.ApiError):
        return msgs.status
    accepted, full_bytes = [], []
    for i, why, m in msgs.rejected:
        deadletter.encode(why, "http:/v1/batch", -1, i, 1, None, orjson.dumps(m), 2, 1 << 20)
    for i, full in msgs.full:
        res = normalize(to_amplitude(full), 424242, 1_710_000_000_000, f"n/{i}", SEG_RULES)
        if isinstance(res, Rejected):
            deadletter.encode(res, "http:/v1/batch", -1, i, 1, None, orjson.dumps(full), 2, 1 << 20)
        else:
            assert type(res) is Normalized
            accepted.append(res)
            full_bytes.append(orjson.dumps(full))
    for _, b in group(accepted, "events.valid", 4, 500, 4 << 20, segment=full_bytes, segment_source="s"):
        b.encode()
    return 200


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mutated(VALID_AMPLITUDE))
def test_mutated_amplitude_requests_get_an_answer(body):
    assert answer_amplitude(body) in (200, 400, 413)


@FUZZ
@given(json_values)
def test_any_json_sent_to_amplitude_gets_an_answer(value):
    assert answer_amplitude(orjson.dumps(value)) in (200, 400, 413)
    assert answer_amplitude(orjson.dumps({"api_key": "k", "events": [value]})) in (200, 400, 413)


@FUZZ
@given(mutated(VALID_SEGMENT))
def test_mutated_segment_requests_get_an_answer(body):
    assert answer_segment(body) in (200, 400)


@FUZZ
@given(json_values)
def test_any_json_sent_to_segment_gets_an_answer(value):
    assert answer_segment(orjson.dumps(value)) in (200, 400)
    assert answer_segment(orjson.dumps({"batch": [value], "writeKey": "wk"})) in (200, 400)


DEPTHS = st.sampled_from([39, 41, 42, 199, 200, 201, 254, 255, 256, 500, 990, 1000, 1022, 1023, 1024, 1100, 3000])


def deep(n: int, kind: str) -> bytes:
    """A JSON value nested ``n`` levels deep, of objects or of arrays."""
    return b'{"a":' * n + b"1" + b"}" * n if kind == "object" else b"[" * n + b"1" + b"]" * n


AMPLITUDE_SLOTS = [b'{"api_key":"k","events":[{"event_type":"e","user_id":"user-1","event_properties":@}]}',
                   b'{"api_key":@,"events":[{"event_type":"e","user_id":"user-1"}]}',
                   b'{"api_key":"k","events":@}', b'{"api_key":"k","events":[@]}',
                   b'{"api_key":"k","options":@,"events":[{"event_type":"e","user_id":"user-1"}]}']
SEGMENT_SLOTS = [b'{"batch":[{"type":"track","userId":"u","event":"e","properties":@}]}',
                 b'{"batch":[{"type":"track","userId":"u","event":"e"}],"context":@}',
                 b'{"batch":[{"type":"track","userId":"u","event":"e"}],"integrations":@}',
                 b'{"batch":[@]}', b'{"batch":@}', b'{"batch":[{"type":"track","userId":@,"event":"e"}]}',
                 b'{"batch":[{"type":"track","userId":"u","event":"e"}],"sentAt":@}']


@FUZZ
@given(st.sampled_from(AMPLITUDE_SLOTS), DEPTHS, st.sampled_from(["object", "array"]))
def test_deep_values_anywhere_in_an_amplitude_request_get_an_answer(slot, n, kind):
    assert answer_amplitude(slot.replace(b"@", deep(n, kind))) in (200, 400)


@FUZZ
@given(st.sampled_from(SEGMENT_SLOTS), DEPTHS, st.sampled_from(["object", "array"]))
def test_deep_values_anywhere_in_a_segment_request_get_an_answer(slot, n, kind):
    assert answer_segment(slot.replace(b"@", deep(n, kind))) in (200, 400)


def test_an_event_nested_3000_levels_deep_is_a_400_naming_the_limit():
    deep = b'{"a":' * 3000 + b"1" + b"}" * 3000
    body = b'{"api_key":"k","events":[{"event_type":"x","user_id":"user-1","event_properties":' + deep + b"}]}"
    assert amplitude.parse(body, 2000).body == {
        "code": 400, "error": "Invalid JSON request body",
        "detail": "the body nests objects and arrays too deeply to be read; events may nest at most 40 levels deep"}
    shallow = b'{"a":' * 300 + b"1" + b"}" * 300
    req = amplitude.parse(b'{"api_key":"k","events":[{"event_type":"x","user_id":"user-1","event_properties":'
                          + shallow + b"}]}", 2000)
    checked = amplitude.validate(req.events, 1, 1, "n", RULES)
    assert amplitude.invalid_body(checked.rejected).body == {
        "code": 400, "error": "Invalid event JSON", "events_with_invalid_fields": {"event": [0]},
        "detail": "events[0]: the event nests objects and arrays more than 40 levels deep (301 seen); Amplitude's "
        "limit is 40: flatten its properties. No event of this request was stored: fix or drop the listed events "
        "and send the others again"}


def test_a_segment_message_nested_too_deeply_is_rejected_alone():
    deep = {"a": 1}
    for _ in range(60):
        deep = {"a": deep}
    msgs = segment.messages({"batch": [{"type": "track", "userId": "u-1", "event": "e", "properties": deep},
                                       {"type": "track", "userId": "u-1", "event": "ok"}]}, None, 1,
                            max_message_bytes=32 * 1024, max_messages=10)
    assert [i for i, _ in msgs.full] == [1]
    assert [(i, r.reason.value, r.detail) for i, r, _ in msgs.rejected] == [
        (0, "invalid_value", "the event nests objects and arrays more than 40 levels deep (42 seen); Amplitude's "
         "limit is 40: flatten its properties")]
