"""What the Ingestor answers, route by route, with a clock and a stand-in for the producer: Segment throttling,
the failed-authentication limit, nesting limits, and which errors of producing are a 503."""

import asyncio
import base64

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from hypothesis import given, settings
from prometheus_client import REGISTRY

from stream.api.service import Ingestor
from stream.clock import FakeClock
from stream.events.batch import EventBatch
from stream.health import Health
from stream.settings import Settings
from tests.unit.api.test_segment_requests import calls

T = 1_710_000_000_000
API_KEY = "amp-key-424242"
WRITE_KEY = "seg-write-key-1"


class Producer:
    """Acknowledges every record at once (or raises ``error`` from send), keeping what it was sent."""

    def __init__(self, error: Exception | None = None):
        self.error, self.sent = error, []

    async def send(self, topic, value, partition=None):
        if self.error is not None:
            raise self.error
        self.sent.append((topic, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def ingestor(producer=None, **api) -> Ingestor:
    settings = Settings(projects=[{"id": 424242, "api_keys": [API_KEY],
                                   "segment_sources": [{"write_key": WRITE_KEY, "source_id": "src-1"}]}],
                        api=api)
    ing = Ingestor(settings, FakeClock(T), Health())
    ing.producer = producer
    return ing


def amp(ing, body, ip="198.51.100.7", route="/2/httpapi"):
    reply = asyncio.run(ing.amplitude(route, orjson.dumps(body) if not isinstance(body, bytes) else body,
                                      ing.clock.now_ms(), ip))
    return reply.status, reply.body, reply.headers


def seg(ing, body, route="/v1/batch", key=WRITE_KEY, ip="198.51.100.7"):
    call_type = None if route == "/v1/batch" else route.rsplit("/", 1)[1]
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode() if key else None
    reply = asyncio.run(ing.segment(route, call_type, orjson.dumps(body) if not isinstance(body, bytes) else body,
                                    auth, ing.clock.now_ms(), client_ip=ip))
    return reply.status, reply.body, reply.headers


def auth_failures(outcome):
    return REGISTRY.get_sample_value("stream_auth_failures_total", {"surface": "api", "outcome": outcome}) or 0


EVENT = {"event_type": "E", "device_id": "device-0001", "insert_id": "i-1"}


# --- producing --------------------------------------------------------------------------------------------------
def test_a_broker_error_is_a_503_with_retry_after():
    ing = ingestor(Producer(KafkaConnectionError("no broker")))
    assert amp(ing, {"api_key": API_KEY, "events": [EVENT]}) == (503, {
        "code": 503, "error": "Service unavailable", "detail": "the brokers refused the events (KafkaConnectionError)"},
        {"Retry-After": "5"})
    assert seg(ing, {"batch": [{"type": "track", "userId": "u-1", "event": "e"}]}) == (503, {
        "success": False, "code": "unavailable", "message": "the brokers refused the events (KafkaConnectionError)"},
        {"Retry-After": "5"})


@pytest.mark.parametrize("producer_error", [None, ValueError("a bug in the producer's caller")])
def test_any_other_error_of_producing_is_raised_not_a_503(monkeypatch, producer_error):
    if producer_error is None:
        def broken(self):
            raise TypeError("a bug in the batch codec")
        monkeypatch.setattr(EventBatch, "encode", broken)
    ing = ingestor(Producer(producer_error))
    with pytest.raises((TypeError, ValueError)):   # the server answers it 500 and logs it (app.py)
        amp(ing, {"api_key": API_KEY, "events": [EVENT]})
    with pytest.raises((TypeError, ValueError)):
        seg(ing, {"batch": [{"type": "track", "userId": "u-1", "event": "e"}]})


# --- nesting ----------------------------------------------------------------------------------------------------
def nested(n: int) -> bytes:
    """JSON text nested ``n`` levels deep (orjson encodes at most 254)."""
    return b'{"a":' * n + b"1" + b"}" * n


@pytest.mark.parametrize("depth", [255, 500, 1023])
def test_a_segment_message_nested_past_the_limit_is_a_400_on_every_route(depth):
    ing = ingestor(Producer())
    msg = b'{"type":"track","userId":"u-1","event":"e","properties":' + nested(depth - 1) + b"}"
    limit = ("nests objects and arrays more than 200 levels deep, the most this API reads; no message of the "
             "request was stored. A message may nest at most 40 levels deep (deeper ones are dead-lettered one by "
             "one): flatten the properties")
    assert seg(ing, msg, route="/v1/track") == (400, {"success": False, "code": "too_deep",
                                                      "message": "the message " + limit}, {})
    want = "the body " + limit if depth + 2 > 1024 else "message 0 of the batch " + limit
    assert seg(ing, b'{"batch":[' + msg + b"]}") == (400, {"success": False, "code": "too_deep", "message": want}, {})
    assert ing.producer.sent == []


# --- Segment throttling -----------------------------------------------------------------------------------------
def test_segment_traffic_is_throttled_per_anonymous_id_and_user_id():
    ing = ingestor(Producer(), segment_device_eps=2, throttle_window_s=5)   # 10 events per id in the window
    track = {"type": "track", "event": "e"}
    assert seg(ing, {"batch": [{**track, "anonymousId": "anon-1"}] * 10})[0] == 200
    status, body, headers = seg(ing, {"userId": "u-2", "anonymousId": "anon-1", "event": "e"}, route="/v1/track")
    assert (status, body, headers) == (429, {
        "success": False, "code": "too_many_requests",
        "message": "1 of the request's anonymousIds and userIds would send more than 2 events per second over 5s "
                   "(api.segment_device_eps); nothing of the request was stored: send it again after Retry-After "
                   "seconds",
        "throttled_anonymous_ids": {"anon-1": 2}, "throttled_user_ids": {}}, {"Retry-After": "1"})
    assert seg(ing, {"batch": [{**track, "userId": "u-3", "anonymousId": f"anon-{i}"} for i in range(2, 15)]})[:2] \
        == (429, {"success": False, "code": "too_many_requests",
                  "message": "1 of the request's anonymousIds and userIds would send more than 2 events per second "
                             "over 5s (api.segment_device_eps); nothing of the request was stored: send it again "
                             "after Retry-After seconds",
                  "throttled_anonymous_ids": {}, "throttled_user_ids": {"u-3": 3}})
    sent = len(ing.producer.sent)
    ing.clock.advance(500)   # one event drained
    assert seg(ing, {"anonymousId": "anon-1", "event": "e"}, route="/v1/track") == (200, {"success": True}, {})
    assert len(ing.producer.sent) == sent + 1


def test_segment_throttling_defaults_like_batch():
    assert ingestor().throttles["segment"].eps == 1000


# --- failed authentications -------------------------------------------------------------------------------------
def test_an_address_that_sent_too_many_wrong_keys_waits_before_any_key_is_looked_at():
    ing = ingestor(Producer(), max_failed_auth=3, failed_auth_window_s=60)
    refused, limited = auth_failures("refused"), auth_failures("limited")
    assert amp(ing, {"api_key": "wrong", "events": [EVENT]})[0] == 400
    assert amp(ing, {"events": [EVENT]})[0] == 400                       # missing
    assert seg(ing, {"userId": "u", "event": "e"}, route="/v1/track", key="wrong")[0] == 401
    assert auth_failures("refused") - refused == 3
    # the 4th request, a right key included, is refused unseen
    detail = ("this address sent 3 requests with a missing or unknown key within 60s, the most allowed "
              "(api.max_failed_auth per api.failed_auth_window_s); nothing of the request was stored: fix the key, "
              "then send it again after 20 seconds (Retry-After)")
    assert amp(ing, {"api_key": API_KEY, "events": [EVENT, EVENT]}) == (429, {
        "code": 429, "error": "Too many failed authentications from this address", "throttled_events": [0, 1],
        "detail": detail}, {"Retry-After": "20"})
    assert seg(ing, {"userId": "u", "event": "e"}, route="/v1/track") == (429, {
        "success": False, "code": "too_many_failed_authentications", "message": detail}, {"Retry-After": "20"})
    assert amp(ing, b"not json") == (429, {"code": 429, "error": "Too many failed authentications from this address",
                                           "detail": detail}, {"Retry-After": "20"})
    assert auth_failures("limited") - limited == 3
    assert auth_failures("refused") - refused == 3
    assert ing.producer.sent == []
    # another address is not affected; this one may try again once a failure has drained
    assert amp(ing, {"api_key": API_KEY, "events": [EVENT]}, ip="203.0.113.5")[0] == 200
    ing.clock.advance(20_000)
    assert amp(ing, {"api_key": API_KEY, "events": [EVENT]})[0] == 200
    assert seg(ing, {"userId": "u", "event": "e"}, route="/v1/track", key=None)[0] == 401   # no key at all
    assert amp(ing, {"api_key": API_KEY, "events": [EVENT]})[0] == 429


def test_a_wrong_write_key_in_the_body_counts_and_the_limit_can_be_turned_off():
    ing = ingestor(Producer(), max_failed_auth=1)
    assert seg(ing, {"userId": "u", "event": "e", "writeKey": "wrong"}, route="/v1/track", key=None)[0] == 401
    assert seg(ing, {"userId": "u", "event": "e"}, route="/v1/track")[0] == 429
    off = ingestor(Producer(), max_failed_auth=0)
    for _ in range(50):
        assert seg(off, {"userId": "u", "event": "e"}, route="/v1/track", key="wrong")[0] == 401
    assert seg(off, {"userId": "u", "event": "e"}, route="/v1/track")[0] == 200


def test_requests_that_fail_for_something_else_do_not_count():
    ing = ingestor(Producer(), max_failed_auth=1)
    assert amp(ing, b"not json")[0] == 400
    assert amp(ing, {"api_key": API_KEY, "events": [{"device_id": "device-0001"}]})[0] == 400   # invalid event
    assert seg(ing, b"[1]", key=WRITE_KEY)[0] == 400
    assert amp(ing, {"api_key": API_KEY, "events": [EVENT]})[0] == 200


# --- one request at a time on the event loop ----------------------------------------------------------------------
def large_and_small(run_large, run_small, large_n: int) -> list[tuple[str, int]]:
    """A large request started first, then a small one: what the producer was sent, in order, as (device, events)
    per batch: a request that let the other through during its validation has its batches after the other's."""
    producer = Producer()
    ing = ingestor(producer, batch_device_eps=1e9, segment_device_eps=1e9)

    async def both():
        large = asyncio.ensure_future(run_large(ing, large_n))
        small = asyncio.ensure_future(run_small(ing, 1))
        assert [(await large).status, (await small).status] == [200, 200]
    asyncio.run(both())
    out = []
    for _, value in producer.sent:
        b = EventBatch.decode(value)
        out.append((orjson.loads(b.lines[0])["device_id"][:5], len(b)))
    return out


def amp_of(device: str):
    async def run(ing, n):
        body = {"api_key": API_KEY, "events": [{**EVENT, "device_id": f"{device}-{i:04d}", "insert_id": f"i-{i}"}
                                                for i in range(n)]}
        return await ing.amplitude("/batch", orjson.dumps(body), ing.clock.now_ms(), "198.51.100.7")
    return run


def seg_of(device: str):
    async def run(ing, n):
        body = {"batch": [{"type": "track", "event": "E", "anonymousId": f"{device}-{i:04d}", "messageId": f"m-{i}"}
                          for i in range(n)]}
        auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
        return await ing.segment("/v1/batch", None, orjson.dumps(body), auth, ing.clock.now_ms())
    return run


def test_a_large_amplitude_request_lets_a_smaller_one_through_between_its_slices():
    from stream.api.service import SLICE_EVENTS
    assert SLICE_EVENTS == 200
    # 201 events: validated in two slices, the small request's whole handling in between
    sent = large_and_small(amp_of("large"), amp_of("small"), SLICE_EVENTS + 1)
    assert sent[0] == ("small", 1)
    assert all(d == "large" for d, _ in sent[1:]) and sum(n for _, n in sent[1:]) == 201
    # one slice: the large request is validated and sent first, as before
    sent = large_and_small(amp_of("large"), amp_of("small"), SLICE_EVENTS)
    assert sent[-1] == ("small", 1) and sum(n for _, n in sent[:-1]) == SLICE_EVENTS


def test_a_large_segment_request_lets_a_smaller_one_through_between_its_slices():
    from stream.api.service import SLICE_EVENTS
    sent = large_and_small(seg_of("large"), seg_of("small"), SLICE_EVENTS + 1)
    assert sent[0] == ("small", 1) and all(d == "large" for d, _ in sent[1:])
    assert sum(n for _, n in sent[1:]) == SLICE_EVENTS + 1
    sent = large_and_small(seg_of("large"), seg_of("small"), SLICE_EVENTS)
    assert sent[-1] == ("small", 1) and sum(n for _, n in sent[:-1]) == SLICE_EVENTS


def test_a_large_segment_batch_builds_its_messages_in_slices_letting_a_request_through_between_them(monkeypatch):
    """A small request that arrives while a large batch's messages are being built is answered once the first slice
    of 200 is built, not after all of them (2 ms, not 20-40 ms, behind it)."""
    from stream.api import segment
    from stream.api.service import SLICE_EVENTS
    log: list[str] = []
    producer = Producer()
    ing = ingestor(producer, segment_device_eps=1e9)
    full_message = segment.full_message

    def logged(msg, *args, **kwargs):
        log.append(msg["anonymousId"][:5])
        if len(log) == 50:   # the small request arrives while the large one is being built
            small.append(asyncio.ensure_future(seg_of("small")(ing, 1)))
        return full_message(msg, *args, **kwargs)
    monkeypatch.setattr(segment, "full_message", logged)
    small: list[asyncio.Future] = []

    async def send(topic, value, partition=None):
        log.append("sent " + orjson.loads(EventBatch.decode(value).lines[0])["device_id"][:5])
        return await Producer.send(producer, topic, value, partition)
    producer.send = send

    async def both():
        large = await seg_of("large")(ing, 2 * SLICE_EVENTS + 1)
        assert [large.status, (await small[0]).status] == [200, 200]
    asyncio.run(both())
    built = 2 * SLICE_EVENTS + 3
    assert log[:built] == ["large"] * SLICE_EVENTS + ["small", "sent small"] + ["large"] * (SLICE_EVENTS + 1)
    assert set(log[built:]) == {"sent large"}
    assert sum(len(EventBatch.decode(v)) for _, v in producer.sent) == 2 * SLICE_EVENTS + 2


def test_a_batch_over_the_message_limit_dumps_encodes_and_sends_its_dead_letters_200_a_turn(monkeypatch):
    """Every message of a batch over api.segment_max_batch_messages is dead-lettered: thousands of records for one
    request of 500 KB, each encoded and sent, with a turn of the event loop every 200 (not all in one)."""
    from stream.api import service
    from stream.events import deadletter
    log: list[str] = []

    class Turn:
        def __await__(self):
            log.append("turn")
            yield
    encode = deadletter.encode

    def logged_encode(*args):
        log.append("dead")
        return encode(*args)

    class Logged(Producer):
        async def send(self, topic, value, partition=None):
            log.append(f"send {topic}")
            return await super().send(topic, value, partition)
    monkeypatch.setattr(service, "next_turn", Turn)
    monkeypatch.setattr(deadletter, "encode", logged_encode)
    ing = ingestor(Logged(), segment_max_batch_messages=10)
    labels = {"stage": "api", "reason": "too_large"}
    counted = REGISTRY.get_sample_value("stream_dead_letter_events_total", labels) or 0
    status, body, _ = seg(ing, {"batch": [{"type": "track", "event": "e", "userId": f"u-{i}"} for i in range(401)]})
    assert REGISTRY.get_sample_value("stream_dead_letter_events_total", labels) == counted + 401
    assert (status, body["accepted"], body["rejected"], len(body["errors"])) == (200, 0, 401, 20)
    assert body["errors"][0] == {"index": 0, "reason": "too_large", "field": "batch", "message": (
        "the batch holds 401 messages; the limit is 10 (api.segment_max_batch_messages): send smaller batches")}
    send = "send events.dead-letter"
    assert log == (["turn"] * 3      # before each slice of 200 messages checked
                   + ["turn"] * 3    # before the rejected messages are dumped, then after 200 and 400 of them
                   + ["dead"] * 200 + ["turn"] + ["dead"] * 200 + ["turn"] + ["dead"]
                   + [send] * 200 + ["turn"] + [send] * 200 + ["turn"] + [send])
    assert len(ing.producer.sent) == 401


@settings(max_examples=60, deadline=None)
@given(calls())
def test_the_service_answers_a_batch_checked_in_slices_as_one_checked_in_one_go(call):
    """Slices of 2 messages (each call a few turns) against one slice for the whole call: the same status and body,
    and the same records produced, for any mix of messages, including a 400 for a message past the read limit
    after the first slice and a batch over the message limit."""
    from stream.api import service
    obj, call_type, max_messages = call
    route = "/v1/batch" if call_type is None else f"/v1/{call_type}"

    def answer(slice_events: int):
        old, service.SLICE_EVENTS = service.SLICE_EVENTS, slice_events
        try:
            producer = Producer()
            ing = ingestor(producer, segment_device_eps=1e9, segment_max_batch_messages=max_messages,
                           segment_max_message_bytes=400)
            status, body, _ = seg(ing, obj, route)
        finally:
            service.SLICE_EVENTS = old
        return status, body, [(topic, len(EventBatch.decode(v)) if topic.endswith("valid") else v)
                              for topic, v in producer.sent]
    assert answer(2) == answer(10**6)


def test_a_large_request_gives_the_loop_a_turn_between_slices_the_throttle_the_grouping_and_every_200_encoded(
        monkeypatch):
    from stream.api import service
    log: list[str] = []

    class Turn:
        def __await__(self):
            log.append("turn")
            yield

    class Logged(Producer):
        async def send(self, topic, value, partition=None):
            log.append(f"send {len(EventBatch.decode(value))}")
            return await super().send(topic, value, partition)
    monkeypatch.setattr(service, "next_turn", Turn)
    settings = Settings(projects=[{"id": 424242, "api_keys": [API_KEY]}], topics={"partitions": 1},
                        ingest={"batch_max_events": 100}, api={"batch_device_eps": 1e9})
    ing = Ingestor(settings, FakeClock(T), Health())
    ing.producer = Logged()

    def request(n: int) -> list[str]:
        log.clear()
        status = amp_of("d")(ing, n)
        assert asyncio.run(status).status == 200
        return list(log)
    # 401 events: validated in slices of 200 (2 turns), the throttle (1), the grouping (1), five batches of at most
    # 100 encoded with a turn once 200 events were (2), then sent
    assert request(401) == ["turn"] * 6 + ["send 100"] * 4 + ["send 1"]
    assert request(200) == ["send 100"] * 2   # a request of one slice: no turn of its own
