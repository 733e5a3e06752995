"""Mutated, malformed and hostile requests to every ingestion route of a running `stream api`: never a 5xx but a
503 the broker caused, every answer a JSON body, and the service stays up.

Besides random edits of valid requests, every route gets the shapes that once answered 500: thousands of gzip
members, values nested past each decoder's and encoder's depth (in every slot of both vendors' bodies), huge
arrays, and text in other encodings than UTF-8. A 503 passes only when its body says why and the why is the
broker's: it did not acknowledge in time, it refused with a Kafka error (named by its class), or the process was
full. Any other error of the service is a 500 (``stream.api.service`` lets it through), and fails the test.
"""

import gzip
import random
import re

import aiokafka.errors
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
DEPTHS = [41, 201, 255, 500, 990, 1023, 1024, 1100, 3000]


def deep(n: int, kind: str = "object") -> bytes:
    return b'{"a":' * n + b"1" + b"}" * n if kind == "object" else b"[" * n + b"1" + b"]" * n


INSERTS = [b"{", b"[", b'"', b"\\", b"\xff", b"\x00", b"null", b"1e999", b"-", b",", b":", b"}", b"]",
           b"\\u0000", b"\xed\xa0\x80", b"123456789012345678901234567890", b'"writeKey":1,', b'"api_key":[],',
           b'"time":-1,', b'"events":{},', b"\xef\xbb\xbf", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\\ud800",
           b'"\\udc00\\ud800"', b"[" + b"0," * 20_000 + b"0]", deep(40), deep(255), deep(500, "array"), deep(1023),
           deep(1100)]

# @ is where a deep value goes
SLOTS = {
    "amplitude": [b'{"api_key":"' + API_KEY.encode() + b'","events":[{"event_type":"e","user_id":"user-1",'
                  b'"event_properties":@}]}',
                  b'{"api_key":@,"events":[{"event_type":"e","user_id":"user-1"}]}',
                  b'{"api_key":"' + API_KEY.encode() + b'","events":@}',
                  b'{"api_key":"' + API_KEY.encode() + b'","events":[@]}',
                  b'{"api_key":"' + API_KEY.encode() + b'","options":@,"events":[{"event_type":"e","user_id":"u-1"}]}'],
    "single": [b'{"userId":"u","event":"e","properties":@}', b'{"userId":"u","event":"e","context":@}',
               b'{"userId":"u","traits":@,"event":"e"}', b'{"userId":@,"event":"e"}',
               b'{"anonymousId":"a","event":"e","integrations":@}', b"@"],
    "batch": [b'{"batch":[{"type":"track","userId":"u","event":"e","properties":@}]}',
              b'{"batch":[{"type":"track","userId":"u","event":"e"}],"context":@}',
              b'{"batch":[{"type":"track","userId":"u","event":"e"}],"integrations":@}',
              b'{"batch":[@]}', b'{"batch":@}', b'{"batch":[{"type":"track","userId":"u","event":"e"},'
              b'{"type":"identify","anonymousId":@}]}', b'{"batch":[],"sentAt":@}'],
}


def members(data: bytes, empty_before: int = 0, empty_after: int = 0, size: int = 0) -> bytes:
    """``data`` as concatenated gzip members: empty ones around it, and it cut into members of ``size`` bytes."""
    empty = gzip.compress(b"")
    parts = [data[i:i + size] for i in range(0, len(data), size)] if size else [data]
    return empty * empty_before + b"".join(gzip.compress(p) for p in parts) + empty * empty_after


def hostile(route) -> list[tuple[str, bytes, dict[str, str]]]:
    """(what, body, extra headers) of the shapes that reach the limits of each step."""
    vendor = "amplitude" if route.vendor == "amplitude" else "single" if route.call_type else "batch"
    valid = {"amplitude": AMPLITUDE, "single": SEGMENT_ONE, "batch": SEGMENT_BATCH}[vendor]
    gz = {"Content-Encoding": "gzip"}
    out = [(f"{n} deep {kind} in slot {i}", slot.replace(b"@", deep(n, kind)), {})
           for i, slot in enumerate(SLOTS[vendor]) for n in DEPTHS for kind in ("object", "array")]
    out += [
        ("3000 empty gzip members", members(b"", 3000), gz),
        ("1500 empty gzip members", members(b"", 1500), gz),
        ("a valid body among 1400 empty gzip members", members(valid, 700, 700), gz),
        ("a valid body in one-byte gzip members", members(valid, size=1), gz),
        ("a valid body and garbage after its gzip member", members(valid) + b"\0garbage", gz),
        ("gzip twice, declared once", gzip.compress(gzip.compress(valid)), gz),
        ("gzip declared twice", gzip.compress(gzip.compress(valid)), {"Content-Encoding": "gzip, gzip"}),
        ("gzip not declared", gzip.compress(valid), {}),
        ("GZIP in capitals", gzip.compress(valid), {"Content-Encoding": "GZIP"}),
        ("UTF-16 with a BOM", valid.decode().encode("utf-16"), {}),
        ("UTF-16 declared", valid.decode().encode("utf-16-le"), {"Content-Type": "application/json; charset=utf-16"}),
        ("UTF-32", valid.decode().encode("utf-32"), {}),
        ("a UTF-8 BOM", b"\xef\xbb\xbf" + valid, {}),
        ("latin-1", valid.replace(b'"e', b'"caf\xe9'), {}),
        ("an overlong slash", valid.replace(b'"e', b'"\xc0\xafe'), {}),
        ("a lone surrogate", valid.replace(b'"e', b'"\\ud800e'), {}),
        ("a NUL byte", valid.replace(b'"e', b'"\x00e'), {}),
        ("text/plain", valid, {"Content-Type": "text/plain;charset=UTF-8"}),
    ]
    if vendor == "amplitude":
        ev = b'{"event_type":"e","user_id":"user-1","insert_id":"x"}'
        head = b'{"api_key":"' + API_KEY.encode() + b'","events":['
        out += [("2001 events", head + b",".join([ev] * 2001) + b"]}", {}),
                ("100,000 numbers as events", head + b",".join([b"1"] * 100_000) + b"]}", {}),
                ("an event with 100,000 properties in an array", head + b'{"event_type":"e","user_id":"user-1",'
                 b'"event_properties":{"a":[' + b",".join([b"0"] * 100_000) + b"]}}]}", {})]
    elif vendor == "batch":
        msg = b'{"type":"track","userId":"u-1","event":"e"}'
        out += [("2501 messages", b'{"batch":[' + b",".join([msg] * 2501) + b"]}", {}),
                ("100,000 numbers as messages", b'{"batch":[' + b",".join([b"1"] * 100_000) + b"]}", {}),
                ("a message with an array of 50,000 numbers", b'{"batch":[{"type":"track","userId":"u-1",'
                 b'"event":"e","properties":{"a":[' + b",".join([b"0"] * 50_000) + b"]}}]}", {})]
    else:
        out += [("an array of 10,000 numbers", b'{"userId":"u","event":"e","properties":{"a":['
                 + b",".join([b"0"] * 10_000) + b"]}}", {})]
    return out


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


BROKER = ("the brokers did not acknowledge the events within ", "not connected to the brokers yet",
          "this server holds ")
REFUSED = re.compile(r"the brokers refused the events \((\w+)\)")


def broker_caused(headers: dict, answer: bytes) -> bool:
    """Whether a 503 is the broker's (or the full process's) doing, as its body says: anything else is a bug."""
    if "Retry-After" not in headers:
        return False
    try:
        body = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return False
    text = (body.get("detail") or body.get("message") or "") if type(body) is dict else ""
    if text.startswith(BROKER):
        return True
    error = (m := REFUSED.fullmatch(text)) and getattr(aiokafka.errors, m[1], None)
    return isinstance(error, type) and issubclass(error, aiokafka.errors.KafkaError)


def test_a_503_counts_only_when_the_broker_caused_it():
    def answer(text):
        return orjson.dumps({"code": 503, "detail": text})
    assert broker_caused({"Retry-After": "5"}, answer("the brokers refused the events (KafkaConnectionError)"))
    assert broker_caused({"Retry-After": "5"}, orjson.dumps({"success": False, "message": "not connected to the "
                                                             "brokers yet"}))
    assert not broker_caused({"Retry-After": "5"}, answer("the brokers refused the events (ValueError)"))
    assert not broker_caused({"Retry-After": "5"}, answer("the brokers refused the events (RecursionError)"))
    assert not broker_caused({}, answer("the brokers refused the events (KafkaConnectionError)"))
    assert not broker_caused({"Retry-After": "5"}, b"<html>")
    assert not broker_caused({"Retry-After": "5"}, b"[]")


def test_no_hostile_request_gets_a_5xx(api_with):
    # no limit of ids or failed keys gets in the way: every request goes as far as its body lets it
    api = api_with(httpapi_device_eps=1e6, batch_device_eps=1e6, segment_device_eps=1e6, max_failed_auth=10**9)
    rnd = random.Random(2024)
    wrong, seen = [], set()

    def send(what, path, body, headers, gz=False):
        status, got_headers, answer = api.post(path, body, headers, gz=gz)
        seen.add(status)
        if status >= 500 and not (status == 503 and broker_caused(got_headers, answer)):
            wrong.append((path, what, status, body[:120], answer[:300]))
        elif status < 500:
            try:
                orjson.loads(answer)   # every answer is a JSON body
            except orjson.JSONDecodeError:
                wrong.append((path, what, status, body[:120], answer[:300]))

    for path, route in ROUTES.items():
        if route.vendor == "amplitude":
            valid, headers = AMPLITUDE, {}
        else:
            valid, headers = (SEGMENT_BATCH if route.call_type is None else SEGMENT_ONE), basic(WRITE_KEY)
        for what, body, extra in hostile(route):
            send(what, path, body, {**headers, **extra})
        for i in range(60):
            body = mutate(rnd, valid)
            h = {**headers}
            if i % 15 == 0:
                h["Content-Encoding"] = "gzip"   # a body that claims gzip and is not
            if i % 10 == 5:                      # gzip cut into many members
                send("mutated, in gzip members", path, members(body, rnd.randint(0, 50), rnd.randint(0, 50),
                                                                 rnd.randint(1, 64)), {**h, "Content-Encoding": "gzip"})
            else:
                send("mutated", path, body, h, gz=i % 10 == 0)
    # a truncated gzip stream and a gzip bomb's first bytes
    for path in ("/2/httpapi", "/v1/batch"):
        status, _, _ = api.post(path, gzip.compress(AMPLITUDE)[:-10], {"Content-Encoding": "gzip"})
        assert status == 400
    assert wrong == [], "\n".join(map(repr, wrong))
    assert {200, 400, 413}.issubset(seen), seen   # the requests went as far as storing events
    assert api.get_json("/healthz") == (200, {"status": "ok", "failed": {}})
    assert api.proc.poll() is None
