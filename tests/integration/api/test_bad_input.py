"""Bad requests get their documented status and exact body, nothing of them reaches events.valid or the bucket,
invalid events are dead-lettered, and the service answers the next valid request."""

import select
import socket
import time

import orjson
import pytest

from stream.events import deadletter
from stream.events.batch import EventBatch
from tests.integration.api.conftest import API_KEY, WRITE_KEY, basic, bucket_rows, topic, wait_for_worker

pytestmark = pytest.mark.integration

MB = 1024 * 1024


def ev(n, **kw):
    return {"event_type": "Button Clicked", "device_id": "device-0001", "user_id": "user-0001",
            "insert_id": f"ins-{n}", **kw}


def amp(events, key=API_KEY):
    return {"api_key": key, "events": events}


def big_events(n):
    return amp([ev(i, event_properties={"pad": "x" * 600}) for i in range(n)])


TOO_LARGE_FAST = (f"the request body is {2 * MB} bytes; the limit is {MB} bytes; split the events into smaller "
                  "requests")
DECOMPRESSED = f"the request body decompresses to more than the limit of {MB} bytes; split the events into smaller " \
    "requests"
BAD_JSON = {"code": 400, "error": "Invalid JSON request body",
            "detail": "the body is not valid JSON: JSON is malformed: invalid character (byte 41)"}
UNAUTHORIZED = {"success": False, "code": "unauthorized"}

# (name, path, body, headers, gzip, status, body expected)
CASES = [
    ("invalid json", "/2/httpapi", b'{"api_key": "amp-key-424242", "events": [}', {}, False, 400, BAD_JSON),
    ("wrong content type", "/2/httpapi", orjson.dumps(amp([ev(0)])),
     {"Content-Type": "application/x-www-form-urlencoded"}, False, 415,
     {"code": 415, "error": "Unsupported Media Type", "detail": "Content-Type 'application/x-www-form-urlencoded' "
      "is not supported; send the body as JSON with Content-Type: application/json"}),
    ("missing api key", "/2/httpapi", {"events": [ev(0)]}, {}, False, 400,
     {"code": 400, "error": "Request missing required field", "missing_field": "api_key",
      "detail": "api_key is missing: put the project's API key in the body's api_key"}),
    ("unknown api key", "/2/httpapi", amp([ev(0)], key="wrong-key"), {}, False, 400,
     {"code": 400, "error": "Invalid API key: wron…", "detail": "no project has this API key (projects[].api_keys); "
      "check the key the SDK is initialised with"}),
    ("invalid utf-8 in an event", "/2/httpapi",
     b'{"api_key": "amp-key-424242", "events": [' + orjson.dumps(ev(0)) + b', {"event_type": "caf\xe9", '
     b'"user_id": "user-0001"}]}', {}, False, 400,
     {"code": 400, "error": "Invalid event JSON", "events_with_invalid_fields": {"event": [1]},
      "detail": "events[1]: the message is not UTF-8 (invalid continuation byte at byte 19). No event of this request "
      "was stored: fix or drop the listed events and send the others again"}),
    ("invalid utf-8 in the envelope", "/2/httpapi", b'{"api_key": "amp-key-\xff", "events": []}', {}, False, 400,
     {"code": 400, "error": "Invalid JSON request body",
      "detail": "the body is not UTF-8 (invalid start byte at byte 21); send JSON encoded as UTF-8"}),
    ("some invalid events", "/2/httpapi", amp([{"device_id": "device-0001"}, ev(1), ev(2, time="yesterday")]), {},
     False, 400,
     {"code": 400, "error": "Invalid field values on some events", "events_with_invalid_fields": {"time": [2]},
      "events_with_missing_fields": {"event_type": [0]},
      "detail": "events[0].event_type: event_type is missing or empty; events[2].time: time must be an integer, got "
      "string. No event of this request was stored: fix or drop the listed events and send the others again"}),
    ("10,000 events to /batch", "/batch", big_events(10_000), {}, False, 413,
     {"code": 413, "error": "Payload too large", "detail": "the request holds 10000 events; the limit is 2000 per "
      "request (api.amplitude_max_events): split them into smaller requests"}),
    ("10,000 events to /2/httpapi", "/2/httpapi", big_events(10_000), {}, False, 413, None),
    ("over the limit, sent fast", "/2/httpapi", b" " * (2 * MB), {}, False, 413,
     {"code": 413, "error": "Payload too large", "detail": TOO_LARGE_FAST}),
    ("gzip bomb", "/2/httpapi", b" " * (200 * MB), {}, True, 413,
     {"code": 413, "error": "Payload too large", "detail": DECOMPRESSED}),
    ("corrupt gzip", "/batch", b"\x1f\x8b\x08\x00 not gzip", {"Content-Encoding": "gzip"}, False, 400,
     {"code": 400, "error": "Invalid JSON request body",
      "detail": "the gzip body ends before its gzip stream does (truncated upload?)"}),
    ("throttled device", "/2/httpapi", amp([ev(i, device_id="device-0009") for i in range(11)]), {}, False, 429,
     {"code": 429, "error": "Too many requests for some devices and users", "eps_threshold": 2,
      "throttled_devices": {"device-0009": 2}, "throttled_users": {"user-0001": 2},
      "throttled_events": list(range(11))}),
    ("segment: no write key", "/v1/track", {"userId": "u-77", "event": "E"}, {}, False, 401,
     {**UNAUTHORIZED, "message": "no write key: send it as the HTTP Basic user name (Authorization: Basic "
      "base64(<writeKey>:)) or as writeKey in the body"}),
    ("segment: unknown write key", "/v1/batch", {"batch": [{"type": "track", "userId": "u-77", "event": "E"}]},
     basic("not-a-key"), False, 401,
     {**UNAUTHORIZED, "message": "the write key is not configured for any source "
      "(projects[].segment_sources[].write_key); check the key the SDK is initialised with"}),
    ("segment: invalid json", "/v1/batch", b'{"batch": [', basic(WRITE_KEY), False, 400,
     {"success": False, "code": "invalid_json",
      "message": "the body is not valid JSON: unexpected end of data: line 1 column 12 (char 11)"}),
    ("segment: invalid utf-8", "/v1/track", b'{"userId": "u-77", "event": "caf\xe9"}', basic(WRITE_KEY), False, 400,
     {"success": False, "code": "invalid_json",
      "message": "the body is not UTF-8 (invalid continuation byte at byte 32); send JSON encoded as UTF-8"}),
    ("segment: message over 32 KB", "/v1/track", {"userId": "u-77", "event": "E", "properties": {"p": "x" * 40_000}},
     basic(WRITE_KEY), False, 400,
     {"success": False, "code": "too_large", "message": "the request body is 40051 bytes; the limit is 32768 bytes; "
      "split the events into smaller requests"}),
    ("unknown path", "/3/httpapi", {}, {}, False, 404, None),
]


def trickle(port: int, path: str, total: int, chunk: int = 32 * 1024, pause: float = 0.005):
    """POST ``total`` bytes in chunks with pauses; stop sending as soon as the server answers."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              "Transfer-Encoding: chunked\r\n\r\n".encode())
    sent = 0
    try:
        while sent < total:
            s.sendall(b"%x\r\n%s\r\n" % (chunk, b" " * chunk))
            sent += chunk
            if select.select([s], [], [], pause)[0]:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    return (sent, *read_response(s))


def read_response(s: socket.socket):
    """(status, JSON body, head) of the response on ``s``; closes it."""
    data = b""
    s.settimeout(10)
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            data.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0]):
        part = s.recv(65536)
        if not part:
            break
        data += part
    s.close()
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split(b" ", 2)[1]), orjson.loads(body), head


def test_bad_input_is_answered_exactly_and_never_stored(api_deployment, api, worker):
    settings, _ = api_deployment
    worker()
    wrong = []
    for name, path, body, headers, gz, status, expected in CASES:
        got_status, _, got_body = api.post(path, body, headers, gz=gz)
        got = orjson.loads(got_body)
        if expected is None:  # checked below
            expected = got
        if (got_status, got) != (status, expected):
            wrong.append((name, got_status, got))
    assert wrong == [], "\n".join(map(repr, wrong))

    # the 10,000 events to /2/httpapi were refused by their size, the unknown path named the endpoints
    status, _, body = api.post("/2/httpapi", big_events(10_000))
    assert status == 413 and orjson.loads(body)["detail"].startswith("the request body is ")
    status, _, body = api.post("/3/httpapi", {})
    assert (status, orjson.loads(body)["error"]) == (404, "Invalid request path")
    status, headers, body = api.request("GET", "/2/httpapi")
    assert (status, headers["Allow"], orjson.loads(body)) == (405, "POST, OPTIONS", {
        "code": 405, "error": "Method not allowed", "detail": "/2/httpapi takes POST (and OPTIONS), not GET"})

    # a body over the limit sent slowly is cut off at the limit, before the client has sent it all
    t = time.monotonic()
    sent, status, body, head = trickle(settings.api.port, "/2/httpapi", 4 * MB)
    assert (status, body) == (413, {"code": 413, "error": "Payload too large", "detail": (
        f"the request body is larger than the limit of {MB} bytes; split the events into smaller requests")})
    assert MB < sent <= MB + 4 * 32 * 1024 and b"Connection: close" in head
    assert time.monotonic() - t < 10

    # a body that stops coming is answered 408 after api.request_timeout_s (2 s here), and its connection closed
    s = socket.create_connection(("127.0.0.1", settings.api.port))
    s.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: 1000\r\n\r\n" + b'{"batch": [')
    t = time.monotonic()
    status, body, head = read_response(s)
    assert (status, body) == (408, {"success": False, "code": "timeout", "message": "the request body did not "
                                    "arrive within 2s (api.request_timeout_s)"})
    assert 2 <= time.monotonic() - t < 5 and b"Connection: close" in head

    # a browser's preflight
    status, headers, _ = api.request("OPTIONS", "/2/httpapi", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert (status, headers["Access-Control-Allow-Origin"], headers["Access-Control-Allow-Methods"],
            headers["Access-Control-Allow-Headers"]) == (204, "*", "POST, OPTIONS", "content-type")

    # nothing so far reached events.valid; the invalid events are in the dead-letter topic
    assert topic(settings, "valid") == []

    # the service is still up: valid requests succeed, and only they reach the bucket
    status, _, body = api.post("/2/httpapi", amp([ev(100, event_properties={"ok": 1})]))
    assert (status, set(orjson.loads(body))) == (200, {"code", "events_ingested", "payload_size_bytes",
                                                       "server_upload_time"})
    status, _, body = api.post("/v1/batch", {"batch": [{"type": "track", "userId": "u-77", "event": "Good",
                                                        "messageId": "m-ok"}, {"type": "track", "event": "No id"}]},
                               basic(WRITE_KEY))
    assert (status, orjson.loads(body)) == (200, {
        "success": True, "accepted": 1, "rejected": 1, "errors": [
            {"index": 1, "reason": "missing_id", "field": "userId",
             "message": "the message needs a userId or an anonymousId"}]})
    # a single call that carries its write key in the body and is rejected: dead-lettered without the key
    status, _, body = api.post("/v1/track", {"writeKey": WRITE_KEY, "userId": "u-77", "properties": {}})
    assert (status, orjson.loads(body)["rejected"]) == (200, 1)
    valid = [EventBatch.decode(m.value) for m in topic(settings, "valid")]
    assert sorted(orjson.loads(line)["$insert_id"] for b in valid for line in b.lines) == ["ins-100", "m-ok"]
    wait_for_worker(settings, read=2, exported=2)
    _, rows = bucket_rows(settings)
    assert sorted((r["$insert_id"], r["event_type"]) for r in rows) == [("ins-100", "Button Clicked"),
                                                                         ("m-ok", "Good")]

    dead = sorted((deadletter.decode(m.value) for m in topic(settings, "dead_letter")),
                  key=lambda d: (d["topic"], d["offset"], d["reason"]))
    assert [(d["topic"], d["partition"], d["offset"], d["reason"], d["field"], d["key"]) for d in dead] == [
        ("http:/2/httpapi", -1, 0, "missing_event_type", "event_type", None),
        ("http:/2/httpapi", -1, 1, "invalid_utf8", None, None),
        ("http:/2/httpapi", -1, 2, "invalid_type", "time", None),
        ("http:/v1/batch", -1, 1, "missing_id", "userId", None),
        ("http:/v1/track", -1, 0, "missing_event_type", "event", None)]
    assert dead[1]["value"] == b'{"event_type": "caf\xe9", "user_id": "user-0001"}'
    assert orjson.loads(dead[3]["value"]) == {"type": "track", "event": "No id"}
    assert orjson.loads(dead[4]["value"]) == {"writeKey": "[redacted]", "userId": "u-77", "properties": {}}
    assert not [d for d in dead if WRITE_KEY.encode() in d["value"] or API_KEY.encode() in d["value"]]

    m = api.metrics()
    assert m['stream_dead_letter_events_total{reason="invalid_utf8",stage="api"}'] == 1
    assert m['stream_http_requests_total{route="/2/httpapi",status="413"}'] == 5
    assert m['stream_http_requests_total{route="/2/httpapi",status="429"}'] == 1
    assert m['stream_api_events_total{outcome="throttled"}'] == 11
    assert api.get_json("/healthz") == (200, {"status": "ok", "failed": {}})
    assert api.proc.poll() is None
