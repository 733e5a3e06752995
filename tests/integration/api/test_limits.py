"""The API's limits on a running `stream api`: bodies of thousands of gzip members and Segment messages nested
hundreds of levels deep are 400s naming why, Segment traffic is throttled per anonymousId and userId, and an
address that sent too many wrong keys is answered 429 with Retry-After before its key is looked at."""

import gzip

import orjson
import pytest

from stream.api.routes import ROUTES
from tests.integration.api.conftest import API_KEY, WRITE_KEY, basic

pytestmark = pytest.mark.integration

EMPTY_MEMBER = gzip.compress(b"")
AMPLITUDE = {"api_key": API_KEY, "events": [{"event_type": "E", "device_id": "device-0001", "insert_id": "i-1"}]}
TOO_DEEP = ("nests objects and arrays more than 200 levels deep, the most this API reads; no message of the request "
            "was stored. A message may nest at most 40 levels deep (deeper ones are dead-lettered one by one): flatten "
            "the properties")


def deep_message(levels: int) -> bytes:
    """A track message nested ``levels`` deep (the message itself is level 1)."""
    n = levels - 1
    return b'{"type":"track","userId":"u-1","event":"e","properties":' + b'{"a":' * n + b"1" + b"}" * n + b"}"


def test_gzip_members_and_deep_segment_messages_are_400s(api):
    gz = {"Content-Encoding": "gzip"}
    members = EMPTY_MEMBER * 3000
    assert len(members) == 60_000
    no_amplitude_body = {"code": 400, "error": "Missing request body",
                         "detail": "the request has no body; send {\"api_key\": ..., \"events\": [...]}"}
    no_segment_body = {"success": False, "code": "invalid_json", "message": "the request has no body; send a JSON "
                       "object"}
    over_32k = {"success": False, "code": "too_large", "message": "the request body is 60000 bytes; the limit is 32768 "
                "bytes; split the events into smaller requests"}
    answers = {}
    for path, route in ROUTES.items():
        status, _, body = api.post(path, members, {**gz, **basic(WRITE_KEY)})
        answers[path] = (status, orjson.loads(body))
        if route.call_type is not None:   # a single call's limit is 32 KB: 1,500 members fit and are decoded
            status, _, body = api.post(path, EMPTY_MEMBER * 1500, {**gz, **basic(WRITE_KEY)})
            answers[path + " (1500)"] = (status, orjson.loads(body))
    single = [r.path for r in ROUTES.values() if r.call_type is not None]
    assert answers == {"/2/httpapi": (400, no_amplitude_body), "/batch": (400, no_amplitude_body),
                       "/v1/batch": (400, no_segment_body), "/v1/import": (400, no_segment_body),
                       **{p: (400, over_32k) for p in single},
                       **{p + " (1500)": (400, no_segment_body) for p in single}}
    # a valid body among them is read whole
    status, _, body = api.post("/batch", EMPTY_MEMBER * 1500 + gzip.compress(orjson.dumps(AMPLITUDE))
                               + EMPTY_MEMBER * 1500, gz)
    assert (status, orjson.loads(body)["events_ingested"]) == (200, 1)

    # a Segment message nested 500 levels deep, alone and in a batch
    msg = deep_message(500)
    for path, body, where in [("/v1/track", msg, "the message"), ("/v1/batch", b'{"batch":[' + msg + b"]}",
                                                                   "message 0 of the batch")]:
        status, _, answer = api.post(path, body, basic(WRITE_KEY))
        assert (status, orjson.loads(answer)) == (400, {"success": False, "code": "too_deep",
                                                        "message": f"{where} {TOO_DEEP}"})
    # one nested 100 levels deep is dead-lettered alone
    status, _, answer = api.post("/v1/batch", b'{"batch":[' + deep_message(100) + b"]}", basic(WRITE_KEY))
    assert (status, orjson.loads(answer)["rejected"]) == (200, 1)
    m = api.metrics()
    assert m['stream_http_requests_total{route="/v1/track",status="400"}'] == 3
    assert m.get('stream_http_requests_total{route="/v1/track",status="500"}') is None
    assert api.proc.poll() is None


def test_segment_is_throttled_and_wrong_keys_are_limited_per_address(api_with):
    api = api_with(segment_device_eps=2, throttle_window_s=5)   # 10 events per anonymousId or userId in the window
    batch = {"batch": [{"type": "track", "anonymousId": "anon-1", "event": "E", "messageId": f"m-{i}"}
                       for i in range(10)]}
    status, _, body = api.post("/v1/batch", batch, basic(WRITE_KEY))
    assert (status, orjson.loads(body)) == (200, {"success": True})
    status, headers, body = api.post("/v1/batch", batch, basic(WRITE_KEY))
    assert (status, headers["Retry-After"], orjson.loads(body)) == (429, "5", {
        "success": False, "code": "too_many_requests",
        "message": "1 of the request's anonymousIds and userIds would send more than 2 events per second over 5s "
                   "(api.segment_device_eps); nothing of the request was stored: send it again after Retry-After "
                   "seconds",
        "throttled_anonymous_ids": {"anon-1": 4}, "throttled_user_ids": {}})
    status, _, _ = api.post("/v1/track", {"anonymousId": "anon-2", "event": "E"}, basic(WRITE_KEY))
    assert status == 200   # another id is not throttled

    # 20 wrong keys (api.max_failed_auth's default, per 60 s) from this address: the 21st request, right key or
    # not, is refused before its key is looked at
    for i in range(10):
        assert api.post("/2/httpapi", {**AMPLITUDE, "api_key": f"wrong-{i}"})[0] == 400
        assert api.post("/v1/track", {"userId": "u-1", "event": "E"}, basic(f"wrong-{i}"))[0] == 401
    status, headers, body = api.post("/2/httpapi", AMPLITUDE)
    wait = int(headers["Retry-After"])
    assert 1 <= wait <= 3   # a failure drains every 3 s
    detail = ("this address sent 20 requests with a missing or unknown key within 60s, the most allowed "
              "(api.max_failed_auth per api.failed_auth_window_s); nothing of the request was stored: fix the key, "
              f"then send it again after {wait} seconds (Retry-After)")
    assert (status, orjson.loads(body)) == (429, {"code": 429, "error": "Too many failed authentications from this "
                                                  "address", "throttled_events": [0], "detail": detail})
    status, headers, body = api.post("/v1/track", {"userId": "u-1", "event": "E"}, basic(WRITE_KEY))
    assert (status, orjson.loads(body)["code"], "Retry-After" in headers) == (429, "too_many_failed_authentications",
                                                                              True)
    m = api.metrics()
    assert m['stream_auth_failures_total{outcome="refused",surface="api"}'] == 20
    assert m['stream_auth_failures_total{outcome="limited",surface="api"}'] == 2
    assert m['stream_api_events_total{outcome="throttled"}'] == 10
    assert m['stream_http_requests_total{route="/v1/batch",status="429"}'] == 1
