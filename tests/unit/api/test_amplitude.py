"""Amplitude requests: the envelope, per-event validation through normalize, and the exact response bodies."""

import uuid

import msgspec
import orjson
import pytest

from stream.api import amplitude
from stream.api.amplitude import ApiError, invalid_body, parse, success_body, unknown_key, validate
from stream.events.normalize import Reason, Rejected, Rules

T = 1709968500000  # 2024-03-09 07:15:00 UTC


def body(**kw):
    return orjson.dumps(kw)


def ev(**kw):
    return {"event_type": "Order Completed", "user_id": "user-20391", **kw}


def test_parses_key_events_and_min_id_length():
    req = parse(body(api_key="k", events=[ev(), ev()], options={"min_id_length": 3}), 2000)
    assert (req.api_key, len(req.events), req.min_id_length) == ("k", 2, 3)
    assert orjson.loads(bytes(req.events[1])) == ev()


@pytest.mark.parametrize("raw, status, expected", [
    (b"", 400, {"code": 400, "error": "Missing request body",
                "detail": 'the request has no body; send {"api_key": ..., "events": [...]}'}),
    (b'{"api_key": "k", "events": [', 400, {"code": 400, "error": "Invalid JSON request body",
                                            "detail": "the body is not valid JSON: Input data was truncated"}),
    (b'{"api_key": "k",, }', 400, {"code": 400, "error": "Invalid JSON request body",
                                   "detail": "the body is not valid JSON: JSON is malformed: object keys must be "
                                   "strings (byte 16)"}),
    (b"[1, 2]", 400, {"code": 400, "error": "Invalid JSON request body",
                      "detail": 'the body must be a JSON object: {"api_key": ..., "events": [...]}'}),
    (b'{"events": [{}]}', 400, {"code": 400, "error": "Request missing required field", "missing_field": "api_key",
                                "detail": "api_key is missing: put the project's API key in the body's api_key"}),
    (b'{"api_key": "", "events": [{}]}', 400, {"code": 400, "error": "Request missing required field",
                                              "missing_field": "api_key", "detail": "api_key is missing: put the "
                                              "project's API key in the body's api_key"}),
    (b'{"api_key": "k"}', 400, {"code": 400, "error": "Request missing required field", "missing_field": "events",
                                "detail": 'events is missing: send the events as an array under "events"'}),
    (b'{"api_key": "k", "events": null}', 400, {"code": 400, "error": "Request missing required field",
                                                "missing_field": "events",
                                                "detail": 'events is missing: send the events as an array under '
                                                '"events"'}),
    (b'{"api_key": "k", "events": []}', 400, {"code": 400, "error": "Request missing required field",
                                              "missing_field": "events",
                                              "detail": "events is empty: send at least one event"}),
    (b'{"api_key": "k", "events": {"a": 1}}', 400, {"code": 400, "error": "Invalid JSON request body",
                                                    "detail": "events must be an array of event objects"}),
    (b'{"api_key": "k", "events": [{}], "options": {"min_id_length": 0}}', 400, {
        "code": 400, "error": "Invalid JSON request body", "detail": "options.min_id_length must be a positive "
        "integer"}),
    (b'{"api_key": "caf\xe9", "events": [{}]}', 400, {
        "code": 400, "error": "Invalid JSON request body",
        "detail": "the body is not UTF-8 (invalid continuation byte at byte 16); send JSON encoded as UTF-8"}),
    (b'{"api_key": 5, "events": [{}]}', 400, {"code": 400, "error": "Invalid API key: …",
                                             "detail": "api_key must be a string"}),
])
def test_unusable_requests_get_amplitudes_400(raw, status, expected):
    got = parse(raw, 2000)
    assert isinstance(got, ApiError)
    assert (got.status, got.body) == (status, expected)


def test_more_events_than_the_limit_is_413():
    got = parse(body(api_key="k", events=[ev()] * 11), 10)
    assert (got.status, got.body) == (413, {"code": 413, "error": "Payload too large", "detail": (
        "the request holds 11 events; the limit is 10 per request (api.amplitude_max_events): split them into "
        "smaller requests")})


def test_an_unknown_key_is_named_as_the_sdk_expects_without_echoing_it():
    got = unknown_key("0123456789abcdef")
    assert got.body == {"code": 400, "error": "Invalid API key: 0123…",
                        "detail": "no project has this API key (projects[].api_keys); check the key the SDK is "
                        "initialised with"}
    # amplitude-analytics stops retrying on this prefix
    assert got.body["error"].startswith("Invalid API key:")


def raws(*events):
    return [msgspec.Raw(e if isinstance(e, bytes) else orjson.dumps(e)) for e in events]


def rows(validated):
    return [orjson.loads(n.line) for n in validated.accepted]


def test_valid_events_are_stamped_with_the_receive_time_and_keep_insert_id():
    v = validate(raws(ev(insert_id="ord-1", time=T - 5000)), 424242, T, "http/abc", Rules())
    assert v.rejected == []
    (row,) = rows(v)
    assert (row["app"], row["$insert_id"], row["user_id"], row["client_event_time"], row["server_received_time"],
            row["server_upload_time"]) == (424242, "ord-1", "user-20391", "2024-03-09 07:14:55.000000",
                                           "2024-03-09 07:15:00.000000", "2024-03-09 07:15:00.000000")
    assert v.accepted[0].upload_ms == T
    assert v.accepted[0].dedupe_key == b"424242\x00\x00ord-1"


def test_server_times_sent_by_a_client_are_replaced():
    v = validate(raws(ev(server_upload_time=1, server_received_time=2)), 1, T, "http/abc", Rules())
    (row,) = rows(v)
    assert row["server_upload_time"] == row["server_received_time"] == "2024-03-09 07:15:00.000000"


def test_server_times_and_remote_ip_are_the_servers_however_the_keys_and_values_are_spelled():
    # JSON escapes spell the same keys and values: "server\u005fupload_time" is server_upload_time
    escaped = [msgspec.Raw(b'{"event_type":"e","user_id":"user-20391","server\\u005fupload_time":1,'
                           b'"server\\u005freceived_time":"x","ip":"\\u0024remote"}')]
    v = validate(escaped, 1, T, "http/abc", Rules(), client_ip="203.0.113.9")
    assert v.rejected == []
    (row,) = rows(v)
    assert (row["server_upload_time"], row["server_received_time"], row["client_event_time"], row["ip_address"]) == (
        "2024-03-09 07:15:00.000000", "2024-03-09 07:15:00.000000", "2024-03-09 07:15:00.000000", "203.0.113.9")
    assert v.accepted[0].upload_ms == T


def test_uuids_are_fresh_per_request_and_kept_when_given():
    a = validate(raws(ev(), ev()), 1, T, amplitude.request_nonce(), Rules())
    b = validate(raws(ev(), ev()), 1, T, amplitude.request_nonce(), Rules())
    ids = [n.uuid for n in a.accepted + b.accepted]
    assert len(set(ids)) == 4
    given = str(uuid.uuid4())
    (row,) = rows(validate(raws(ev(uuid=given)), 1, T, "http/x", Rules()))
    assert row["uuid"] == given


def test_remote_ip_is_the_clients_address():
    (row,) = rows(validate(raws(ev(ip="$remote")), 1, T, "http/x", Rules(), client_ip="203.0.113.9"))
    assert row["ip_address"] == "203.0.113.9"
    (row,) = rows(validate(raws(ev(ip="$remote")), 1, T, "http/x", Rules(), client_ip=None))
    assert row["ip_address"] is None


def test_min_id_length_option_applies():
    short = ev(user_id="abc")
    assert [r.reason for _, r in validate(raws(short), 1, T, "n", Rules(min_id_length=5)).rejected] == [
        Reason.MISSING_ID]
    assert len(validate(raws(short), 1, T, "n", Rules(min_id_length=3)).accepted) == 1


def test_rejections_carry_the_event_index_and_field():
    v = validate(raws(ev(), {"user_id": "user-20391"}, ev(time="yesterday"), b'{"event_type": "caf\xe9"}',
                      b"[1]", ev(colour="red")), 1, T, "n", Rules())
    assert len(v.accepted) == 1
    assert [(i, r.reason, r.field) for i, r in v.rejected] == [
        (1, Reason.MISSING_EVENT_TYPE, "event_type"), (2, Reason.INVALID_TYPE, "time"),
        (3, Reason.INVALID_UTF8, None), (4, Reason.NOT_AN_OBJECT, None), (5, Reason.UNKNOWN_FIELD, "colour")]


def test_the_400_lists_events_by_field_as_amplitude_does():
    got = invalid_body([(1, Rejected(Reason.MISSING_EVENT_TYPE, "event_type", "event_type is missing or empty")),
                        (2, Rejected(Reason.INVALID_TYPE, "time", "time must be an integer, got string")),
                        (4, Rejected(Reason.INVALID_TYPE, "time", "time must be an integer, got string")),
                        (5, Rejected(Reason.INVALID_UTF8, None, "the message is not UTF-8 (invalid start byte at "
                                     "byte 18)"))])
    assert (got.status, got.body) == (400, {
        "code": 400, "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"time": [2, 4], "event": [5]},
        "events_with_missing_fields": {"event_type": [1]},
        "detail": "events[1].event_type: event_type is missing or empty; events[2].time: time must be an integer, "
                  "got string; events[4].time: time must be an integer, got string; events[5]: the message is not "
                  "UTF-8 (invalid start byte at byte 18). No event of this request was stored: fix or drop the "
                  "listed events and send the others again"})


def test_only_missing_fields_is_request_missing_required_field_without_missing_field():
    got = invalid_body([(3, Rejected(Reason.MISSING_EVENT_TYPE, "event_type", "event_type is missing or empty"))])
    assert got.body["error"] == "Request missing required field"
    assert "missing_field" not in got.body  # the SDK would drop the whole request on missing_field
    assert got.body["events_with_missing_fields"] == {"event_type": [3]}


def test_only_unreadable_events_is_invalid_event_json():
    got = invalid_body([(0, Rejected(Reason.NOT_AN_OBJECT, None, "the message is a JSON array, not an object"))]
                       * 7)
    assert got.body["error"] == "Invalid event JSON"
    assert got.body["detail"].endswith("(and 2 more). No event of this request was stored: fix or drop the listed "
                                       "events and send the others again")


def test_success_body_is_amplitudes():
    assert success_body(50, 5000, T) == {"code": 200, "events_ingested": 50, "payload_size_bytes": 5000,
                                         "server_upload_time": T}


def test_parsing_leaves_the_events_undecoded():
    # a bad byte inside an event is that event's problem (named by index), not the request's
    req = parse(b'{"api_key": "k", "events": [{"event_type": "caf\xe9"}, {"event_type": "ok"}]}', 2000)
    assert [bytes(e) for e in req.events] == [b'{"event_type": "caf\xe9"}', b'{"event_type": "ok"}']
