"""Mutated and malformed requests to every ingestion route of a running `stream api`: never a 5xx but a 503 with
Retry-After, and the service stays up."""

import gzip
import random

import orjson
import pytest

from stream.api.routes import ROUTES
from tests.integration.api.conftest import API_KEY, WRITE_KEY, basic

pytestmark = pytest.mark.integration

AMPLITUDE = orjson.dumps({"api_key": API_KEY, "events": [
    {"event_type": "Order Completed", "user_id": "user-20391", "device_id": "device-1", "time": 1710000000000,
     "insert_id": "ord-1", "event_properties": {"sku": "a", "n": [1, 2, {"x": None}]}, "price": 3.5,
     "ip": "$remote", "user_properties": {"$set": {"plan": "pro"}}}]})
SEGMENT_ONE = orjson.dumps({"userId": "u-77", "event": "Plan Upgraded", "properties": {"plan": "pro"},
                            "timestamp": "2024-03-09T07:15:00.000Z", "messageId": "m-1", "groupId": "g-1",
                            "previousId": "p-1", "traits": {"name": "x"}, "name": "Home"})
SEGMENT_BATCH = orjson.dumps({"batch": [{"type": "track", "userId": "u-77", "event": "e", "messageId": "m-2"},
                                        {"type": "identify", "anonymousId": "a-1", "traits": {"a": [1]}}],
                              "context": {"ip": "1.2.3.4"}, "sentAt": "2024-03-09T07:15:05.000Z"})
INSERTS = [b"{", b"[", b'"', b"\\", b"\xff", b"\x00", b"null", b"1e999", b"-", b",", b":", b"}", b"]",
           b"\\u0000", b"\xed\xa0\x80", b"123456789012345678901234567890", b'"writeKey":1,', b'"api_key":[],',
           b'{"a":' * 1100 + b"1" + b"}" * 1100, b'[' * 50 + b']' * 50, b'"time":-1,', b'"events":{},']


def mutate(rnd: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rnd.randint(1, 4)):
        at = rnd.randint(0, len(data))
        kind = rnd.choice(["delete", "insert", "replace", "truncate"])
        if kind == "delete":
            del data[at:at + rnd.randint(1, 8)]
        elif kind == "insert":
            data[at:at] = rnd.choice(INSERTS)
        elif kind == "replace" and data:
            data[min(at, len(data) - 1)] = rnd.randint(0, 255)
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


def test_no_mutated_request_gets_a_5xx(api):
    rnd = random.Random(2024)
    wrong = []
    sent = 0
    for path, route in ROUTES.items():
        if route.vendor == "amplitude":
            valid, headers = AMPLITUDE, {}
        else:
            valid, headers = (SEGMENT_BATCH if route.call_type is None else SEGMENT_ONE), basic(WRITE_KEY)
        for i in range(60):
            body = mutate(rnd, valid)
            h = {**headers}
            gz = i % 10 == 0
            if i % 15 == 0:
                h["Content-Encoding"] = "gzip"   # a body that claims gzip and is not
            status, got_headers, answer = api.post(path, body, h, gz=gz)
            sent += 1
            if status >= 500 and not (status == 503 and "Retry-After" in got_headers):
                wrong.append((path, status, body[:200], answer[:300]))
            if status < 500:
                orjson.loads(answer)   # every answer is a JSON body
    if sent:
        # a truncated gzip stream and a gzip bomb's first bytes
        for path in ("/2/httpapi", "/v1/batch"):
            status, _, _ = api.post(path, gzip.compress(AMPLITUDE)[:-10], {"Content-Encoding": "gzip"})
            assert status == 400
    assert wrong == [], "\n".join(map(repr, wrong))
    assert api.get_json("/healthz") == (200, {"status": "ok", "failed": {}})
    assert api.proc.poll() is None
