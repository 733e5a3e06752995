"""What a request does once its body is read: validate, throttle, batch, produce, answer (no HTTP framework here).

Order, per request: an address that sent too many missing or unknown keys is answered 429 before its key is
looked at (``stream.attempts``); the body is parsed and every event validated; a request with an invalid event
has its invalid events written to events.dead-letter and is answered 400 with nothing written to events.valid
(Amplitude); a Segment request stores its valid messages and dead-letters the others. A request over a device's
or user's rate is answered 429 whole (``stream.api.throttle``; Segment: per anonymousId and userId). Accepted
events are grouped into batches and produced to events.valid with an explicit partition (acks=all). The answer
is 200 only once the broker acknowledged every batch and dead letter of the request; if it does not within
``api.produce_timeout_s`` (or refuses with a Kafka error), the answer is 503 with Retry-After and the client
sends the request again (events that did reach the broker are then dropped by dedupe through their insert_id /
messageId). Any other error is a bug: it reaches the server, which logs it and answers 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream import metrics
from stream.api import amplitude, segment
from stream.api.batching import group
from stream.api.throttle import Throttle
from stream.attempts import FailedAttempts
from stream.clock import Clock, SystemClock
from stream.events import deadletter
from stream.events.normalize import Normalized, Rejected, Rules, normalize
from stream.events.segment import to_amplitude
from stream.health import HEALTH, Health
from stream.settings import Settings

log = logging.getLogger(__name__)

PRODUCER = "producer"
"""The part of this process /readyz waits for: the producer has reached the brokers."""
RETRY_AFTER_S = 5
PROBE_INTERVAL_S = 5.0


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _reply(err: amplitude.ApiError) -> Reply:
    return Reply(err.status, err.body, dict(err.headers))


def unavailable_amplitude(detail: str) -> Reply:
    return Reply(503, {"code": 503, "error": "Service unavailable", "detail": detail},
                 {"Retry-After": str(RETRY_AFTER_S)})


def unavailable_segment(detail: str) -> Reply:
    return Reply(503, {"success": False, "code": "unavailable", "message": detail},
                 {"Retry-After": str(RETRY_AFTER_S)})


Reserve = Callable[[int], bool]
"""Grows the request's share of the process's budget of request bytes to ``n`` in all; False: no room left."""
PER_EVENT_HELD = 200
"""Bytes a validated event holds besides its row (its Python objects), counted against the budget."""


def held_bytes(body: bytes, accepted: list[Normalized]) -> int:
    """What a request holds once validated: its body, its rows, and their copy in the encoded batches."""
    return len(body) + sum(2 * len(e.line) + PER_EVENT_HELD for e in accepted)


SLICE_EVENTS = 200
"""Events a request validates in one turn of the event loop (about 2 ms of CPU for Amplitude's events; Segment's
messages cost more each): a request of 2,000 lets the other requests' reads, answers and acknowledgements through
nine times instead of holding the loop for 20 ms."""


class _NextTurn:
    """Awaited, lets the event loop run once (every callback ready by then) before the awaiting task goes on."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        yield   # a bare yield: the task is scheduled again behind what is ready, without a timer


def next_turn() -> _NextTurn:
    return _NextTurn()


def _records(valid_topic: str, values: list[tuple[int, bytes]], dead_topic: str,
             dead: list[bytes]) -> Iterator[tuple[str, bytes, int | None]]:
    """(topic, value, partition) of a request's batches, then of its dead letters (partition chosen by the producer)."""
    for p, v in values:
        yield valid_topic, v, p
    for d in dead:
        yield dead_topic, d, None


class Unavailable(Exception):
    """The broker did not acknowledge in time (or refused: a ``KafkaError``): nothing of the request counts as
    stored. Nothing else becomes one: any other error is a bug, answered 500 and logged."""


class Ingestor:
    """The HTTP API's state: the keys, the throttles and the producer. One per process."""

    def __init__(self, settings: Settings, clock: Clock | None = None, health: Health = HEALTH):
        self.settings = settings
        self.clock = clock or SystemClock()
        self.health = health
        api, ing, t = settings.api, settings.ingest, settings.topics
        self.projects = {k: p.id for p in settings.projects for k in p.api_keys}
        self.sources = {s.write_key: (p.id, s.source_id) for p in settings.projects for s in p.segment_sources}
        self.rules = Rules(ing.max_event_bytes, ing.min_id_length, ing.unknown_fields == "keep")
        # Segment ids of any length are ids: dropping a userId "42" as too short would lose the user
        self.segment_rules = Rules(ing.max_event_bytes, 1, False)
        self.throttles = {"/2/httpapi": Throttle(api.httpapi_device_eps, api.throttle_window_s),
                          "/batch": Throttle(api.batch_device_eps, api.throttle_window_s),
                          "segment": Throttle(api.segment_device_eps, api.throttle_window_s)}  # every /v1/* route
        self.failed_auth = FailedAttempts(api.max_failed_auth, api.failed_auth_window_s) \
            if api.max_failed_auth else None
        self.valid_topic, self.dead_topic = t.name("valid"), t.name("dead_letter")
        self.max_batch_bytes = max(settings.kafka.max_request_bytes - 64 * 1024, 64 * 1024)
        self.producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task] = []
        health.expect(PRODUCER)

    # --- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect in the background: the server answers (503, not ready) while the brokers are unreachable."""
        self._tasks.append(asyncio.create_task(self._connect_and_probe(), name="producer"))

    async def _connect_and_probe(self) -> None:
        from stream import kafka
        while self.producer is None:
            producer = kafka.producer(self.settings.kafka)
            try:
                await producer.start()
            except Exception as exc:
                log.warning("cannot reach the brokers at %s (%s); retrying", self.settings.kafka.bootstrap_servers,
                            exc)
                await producer.stop()
                await asyncio.sleep(2)
                continue
            self.producer = producer
            self.health.mark_ready(PRODUCER)
            log.info("producer connected to %s", self.settings.kafka.bootstrap_servers)
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            try:
                ok = await asyncio.wait_for(self.producer.client.force_metadata_update(), PROBE_INTERVAL_S)
            except Exception:
                ok = False
            if ok:
                self.health.mark_ready(PRODUCER)
            else:
                self.health.mark_not_ready(PRODUCER)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        if self.producer is not None:
            # whatever is still unacknowledged was answered 503 (or will be): give it one produce timeout
            try:
                await asyncio.wait_for(self.producer.stop(), self.settings.api.produce_timeout_s)
            except Exception as exc:
                log.warning("producer did not stop cleanly: %s", exc or type(exc).__name__)

    def busy(self) -> str:
        metrics.API_BUSY.inc()
        return (f"this server holds {self.settings.api.max_inflight_bytes} bytes of requests already "
                "(api.max_inflight_bytes); the request was not stored: send it again after Retry-After seconds")

    # --- producing ---------------------------------------------------------------------------------------------
    async def _produce(self, batches: list[tuple[int, Any]], dead: list[bytes]) -> None:
        """Hand every batch and dead letter to the producer and wait for all acknowledgements (or raise)."""
        if self.producer is None:
            raise Unavailable("not connected to the brokers yet")
        # encoded before anything is sent: an error here is a bug (a 500, logged), not the broker's refusal; the
        # event loop runs once every SLICE_EVENTS events encoded (a large request's batches)
        values: list[tuple[int, bytes]] = []
        since = 0
        for p, b in batches:
            if since >= SLICE_EVENTS:
                await next_turn()
                since = 0
            values.append((p, b.encode()))
            since += len(b)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.api.produce_timeout_s):
                futures = []
                for n, (topic, v, p) in enumerate(_records(self.valid_topic, values, self.dead_topic, dead)):
                    if n and not n % SLICE_EVENTS:   # a request of many dead letters: sent in slices too
                        await next_turn()
                    futures.append(await self.producer.send(topic, v, partition=p))
                for n in range(0, len(futures), SLICE_EVENTS):   # waited for in slices as well
                    await asyncio.gather(*futures[n:n + SLICE_EVENTS])
        except TimeoutError:
            self.health.mark_not_ready(PRODUCER)
            raise Unavailable(f"the brokers did not acknowledge the events within "
                              f"{self.settings.api.produce_timeout_s:g}s (api.produce_timeout_s)") from None
        except KafkaError as exc:   # only the broker's (or the client's) refusal is a 503; anything else is a bug
            log.warning("produce failed: %s", exc)
            raise Unavailable(f"the brokers refused the events ({type(exc).__name__})") from None
        metrics.API_PRODUCE_DURATION.observe(time.perf_counter() - started)
        self.health.mark_ready(PRODUCER)

    async def _dead_letters(self, route: str, rejected: list[tuple[int, Rejected, bytes]],
                            received_ms: int) -> list[bytes]:
        """Dead-letter records of rejected events: topic ``http:<route>``, partition -1, offset = event index; the
        event loop runs once every SLICE_EVENTS encoded (a batch of thousands of messages over the limit)."""
        now = self.clock.now_ms()
        out = []
        for n, (i, why, value) in enumerate(rejected):
            if n and not n % SLICE_EVENTS:
                await next_turn()
            out.append(deadletter.encode(why, f"http:{route}", -1, i, received_ms, None, value, now,
                                         self.rules.max_event_bytes))
        return out

    @staticmethod
    def _count_dead(rejected: list[tuple[int, Rejected]] | list[tuple[int, Rejected, bytes]]) -> None:
        """Count dead letters once the broker has them."""
        for reason, n in Counter(r[1].reason.value for r in rejected).items():
            metrics.EVENTS_DEAD_LETTERED.labels("api", reason).inc(n)

    # --- failed authentications --------------------------------------------------------------------------------
    def _auth_wait(self, client_ip: str | None, now_ms: int) -> int | None:
        """Seconds the address must wait (counted as limited) when it failed too often; None: look at its key."""
        if self.failed_auth is None or not client_ip:
            return None
        wait = self.failed_auth.retry_after_s(client_ip, now_ms)
        if wait is not None:
            metrics.AUTH_FAILURES.labels("api", "limited").inc()
        return wait

    def _refused(self, err: amplitude.ApiError, client_ip: str | None, now_ms: int) -> Reply:
        """The answer to a request refused before it was stored, counted against its address when for its key."""
        if err.auth_failure:
            metrics.AUTH_FAILURES.labels("api", "refused").inc()
            if self.failed_auth is not None and client_ip:
                self.failed_auth.failed(client_ip, now_ms)
        return _reply(err)

    # --- Amplitude ---------------------------------------------------------------------------------------------
    async def amplitude(self, route: str, body: bytes, received_ms: int, client_ip: str | None = None,
                        reserve: Reserve = lambda n: True) -> Reply:
        api = self.settings.api
        req = amplitude.parse(body, api.amplitude_max_events)
        if (wait := self._auth_wait(client_ip, received_ms)) is not None:
            n = 0 if isinstance(req, amplitude.ApiError) else len(req.events)
            return _reply(amplitude.auth_limited(wait, api.max_failed_auth, api.failed_auth_window_s, n))
        if isinstance(req, amplitude.ApiError):
            return self._refused(req, client_ip, received_ms)
        project = self.projects.get(req.api_key)
        if project is None:
            return self._refused(amplitude.unknown_key(req.api_key), client_ip, received_ms)
        rules = self.rules if req.min_id_length is None else self.rules._replace(min_id_length=req.min_id_length)
        n = len(req.events)
        nonce = amplitude.request_nonce()
        checked = amplitude.validate(req.events, project, received_ms, nonce, rules, client_ip=client_ip,
                                     stop=SLICE_EVENTS)
        for start in range(SLICE_EVENTS, n, SLICE_EVENTS):   # a large request lets the others through in between
            await next_turn()
            amplitude.validate(req.events, project, received_ms, nonce, rules, client_ip=client_ip, start=start,
                               stop=start + SLICE_EVENTS, into=checked)
        if checked.rejected:
            dead = await self._dead_letters(route, [(i, why, bytes(req.events[i])) for i, why in checked.rejected],
                                            received_ms)
            try:
                await self._produce([], dead)
            except Unavailable as exc:
                metrics.API_EVENTS.labels("rejected").inc(n)
                return unavailable_amplitude(str(exc))
            self._count_dead(checked.rejected)
            metrics.API_EVENTS.labels("rejected").inc(n)
            return _reply(amplitude.invalid_body(checked.rejected))
        accepted = checked.accepted  # every event of the request, in order
        if n > SLICE_EVENTS:   # a large request: its throttle and its grouping each in a turn of their own
            await next_turn()
        throttled = self.throttles[route].admit([e.device_id for e in accepted], [e.user_id for e in accepted],
                                                received_ms)
        if throttled is not None:
            metrics.API_EVENTS.labels("throttled").inc(n)
            return Reply(429, throttled.body())
        if not reserve(held_bytes(body, accepted)):
            return unavailable_amplitude(self.busy())
        if n > SLICE_EVENTS:
            await next_turn()
        batches = group(accepted, self.valid_topic, self.settings.topics.partitions,
                        self.settings.ingest.batch_max_events, self.max_batch_bytes)
        try:
            await self._produce(batches, [])
        except Unavailable as exc:
            metrics.API_EVENTS.labels("rejected").inc(n)
            return unavailable_amplitude(str(exc))
        metrics.API_EVENTS.labels("accepted").inc(n)
        return Reply(200, amplitude.success_body(n, len(body), received_ms))

    # --- Segment -----------------------------------------------------------------------------------------------
    async def segment(self, route: str, call_type: str | None, body: bytes, authorization: str | None,
                      received_ms: int, reserve: Reserve = lambda n: True, client_ip: str | None = None) -> Reply:
        api = self.settings.api
        if (wait := self._auth_wait(client_ip, received_ms)) is not None:
            return _reply(segment.auth_limited(wait, api.max_failed_auth, api.failed_auth_window_s))
        key = segment.write_key_from_header(authorization)
        if key is not None and key not in self.sources:
            return self._refused(segment.unknown_key(), client_ip, received_ms)
        obj = segment.parse_body(body)
        if isinstance(obj, amplitude.ApiError):
            return _reply(obj)
        if key is None:
            body_key = obj.get("writeKey")
            if not body_key or type(body_key) is not str:
                return self._refused(segment.missing_key(), client_ip, received_ms)
            if body_key not in self.sources:
                return self._refused(segment.unknown_key(), client_ip, received_ms)
            key = body_key
        project, source_id = self.sources[key]
        batch = segment.batch_of(obj, call_type, max_messages=api.segment_max_batch_messages)
        if isinstance(batch, amplitude.ApiError):
            return _reply(batch)
        # segment.messages, slice after slice: a large batch lets the others through after its parsing, between
        # its slices of messages and before its normalizing (a message nested too deep ends it with a 400)
        many = len(batch.items) > SLICE_EVENTS
        msgs = segment.Messages([], [])
        for start in range(0, len(batch.items), SLICE_EVENTS):
            if many:
                await next_turn()
            step = segment.check(batch, received_ms, max_message_bytes=api.segment_max_message_bytes, start=start,
                                 stop=start + SLICE_EVENTS, into=msgs)
            if isinstance(step, amplitude.ApiError):
                return _reply(step)
        if many:
            await next_turn()
        nonce = amplitude.request_nonce()
        accepted: list[Normalized] = []
        full_bytes: list[bytes] = []
        rejected: list[tuple[int, Rejected, bytes]] = []
        for j, (i, why, m) in enumerate(msgs.rejected):
            if j and not j % SLICE_EVENTS:   # a batch over the message limit: every message rejected
                await next_turn()
            rejected.append((i, why, orjson.dumps(m)))
        for j, (i, full) in enumerate(msgs.full):
            if j and not j % SLICE_EVENTS:   # a large request lets the others through in between
                await next_turn()
            res = normalize(to_amplitude(full), project, received_ms, f"{nonce}/{i}", self.segment_rules)
            if isinstance(res, Rejected):
                rejected.append((i, res, orjson.dumps(full)))
            else:
                accepted.append(res)
                full_bytes.append(orjson.dumps(full))
        rejected.sort(key=lambda r: r[0])
        large = len(msgs.full) > SLICE_EVENTS
        if large:   # a large request: its throttle and its grouping each in a turn of their own
            await next_turn()
        throttled = self.throttles["segment"].admit([e.device_id for e in accepted], [e.user_id for e in accepted],
                                                    received_ms)
        if throttled is not None:
            metrics.API_EVENTS.labels("throttled").inc(len(accepted) + len(rejected))
            return _reply(segment.throttled(throttled, api.throttle_window_s))
        if not reserve(held_bytes(body, accepted) + sum(map(len, full_bytes))):
            return unavailable_segment(self.busy())
        if large:
            await next_turn()
        dead = await self._dead_letters(route, rejected, received_ms)
        batches = group(accepted, self.valid_topic, self.settings.topics.partitions,
                        self.settings.ingest.batch_max_events, self.max_batch_bytes, segment=full_bytes,
                        segment_source=source_id)
        try:
            await self._produce(batches, dead)
        except Unavailable as exc:
            metrics.API_EVENTS.labels("rejected").inc(len(accepted) + len(rejected))
            return unavailable_segment(str(exc))
        self._count_dead(rejected)
        metrics.API_EVENTS.labels("accepted").inc(len(accepted))
        metrics.API_EVENTS.labels("rejected").inc(len(rejected))
        return Reply(200, segment.success_body(len(accepted), [(i, why) for i, why, _ in rejected]))
