"""events.ingest -> events.valid + events.dead-letter: a getmany loop, so the per-message cost is aiokafka's alone."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from stream import kafka, metrics
from stream.clock import Clock
from stream.crashpoints import crash_point
from stream.events.ingest import ingest_records
from stream.events.normalize import Rules
from stream.health import HEALTH
from stream.settings import Settings
from stream.shutdown import SHUTDOWN

log = logging.getLogger(__name__)

MAX_POLLS_IN_FLIGHT = 4
"""Polls whose output may await Kafka's acknowledgement while the next ones are processed."""
COMMIT_INTERVAL_S = 0.5


class _Pending:
    """Polls in offset order, each with the sends of its output and the offsets it covers.

    The offsets of a poll are committed only once all of its sends, and those of
    every earlier poll, are acknowledged by Kafka.
    """

    def __init__(self) -> None:
        self.polls: deque[tuple[list[asyncio.Future], dict[TopicPartition, int]]] = deque()
        self.done: dict[TopicPartition, int] = {}

    def add(self, sends: list[asyncio.Future], offsets: dict[TopicPartition, int]) -> None:
        self.polls.append((sends, offsets))

    def collect(self) -> None:
        """Move the acknowledged polls at the head into ``done`` (raises if a send failed)."""
        while self.polls and all(f.done() for f in self.polls[0][0]):
            sends, offsets = self.polls.popleft()
            for f in sends:
                f.result()
            crash_point("ingest.produced")
            self.done.update(offsets)

    async def wait_oldest(self) -> None:
        await asyncio.gather(*self.polls[0][0])
        self.collect()

    async def drain(self) -> None:
        while self.polls:
            await self.wait_oldest()


class _Drain(ConsumerRebalanceListener):
    """Before partitions move to another worker, finish and commit what was read from them."""

    def __init__(self, pending: _Pending, consumer: AIOKafkaConsumer):
        self.pending, self.consumer = pending, consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.pending.drain()
        if self.pending.done:
            await self.consumer.commit(self.pending.done)
            self.pending.done = {}

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        pass


async def run_ingest(settings: Settings, clock: Clock) -> None:
    """Consume events.ingest forever.

    Order: every batch and dead letter of a poll is acknowledged by Kafka, then the
    offsets of the records they came from are committed; up to MAX_POLLS_IN_FLIGHT
    polls overlap so the loop never idles on a round trip. A crash in between
    replays those records, which produce the same batches (same uuids, same times).
    On shutdown it stops polling, waits for what it produced and commits it.
    """
    t, ing = settings.topics, settings.ingest
    src, valid, dead = t.name("ingest"), t.name("valid"), t.name("dead_letter")
    rules = Rules(ing.max_event_bytes, ing.min_id_length, ing.unknown_fields == "keep")
    consumer = AIOKafkaConsumer(group_id=f"{settings.worker.app_id}-ingest", **kafka.consumer_args(settings.kafka))
    producer = kafka.producer(settings.kafka)
    pending = _Pending()
    consumer.subscribe([src], listener=_Drain(pending, consumer))
    try:
        await producer.start()
        await consumer.start()
    except BaseException:
        await kafka.stop_all(consumer, producer)
        raise
    HEALTH.mark_ready("ingest")
    log.info("ingest: reading %s", src)
    loop = asyncio.get_running_loop()
    last_commit = loop.time()
    lag_gauge = metrics.CONSUMER_LAG.labels("ingest", src)
    try:
        while not SHUTDOWN.requested:
            polled = await consumer.getmany(timeout_ms=200 if pending.polls else 1000,
                                            max_records=ing.poll_max_records)
            if polled:
                crash_point("ingest.polled")
                sends = []
                for tp, recs in polled.items():
                    res = ingest_records(recs, src, tp.partition, projects=settings.project_ids(),
                                         default_project=ing.default_project, rules=rules,
                                         partitions=t.partitions, max_events=ing.batch_max_events,
                                         max_bytes=settings.kafka.max_request_bytes // 2,
                                         now_ms=clock.now_ms())
                    for target, batch in res.batches:
                        sends.append(await producer.send(valid, batch.encode(), partition=target))
                    for key, record in res.dead:
                        sends.append(await producer.send(dead, record, key=key, partition=0))
                    metrics.EVENTS_INGESTED.inc(len(recs))
                    metrics.EVENTS_VALID.inc(res.valid)
                    for reason, n in res.reasons.items():
                        metrics.EVENTS_DEAD_LETTERED.labels("ingest", reason).inc(n)
                pending.add(sends, {tp: recs[-1].offset + 1 for tp, recs in polled.items()})
                crash_point("ingest.sent")
            pending.collect()
            if len(pending.polls) >= MAX_POLLS_IN_FLIGHT:
                await pending.wait_oldest()
            if pending.done and (not polled or loop.time() - last_commit >= COMMIT_INTERVAL_S):
                await consumer.commit(pending.done)
                crash_point("ingest.committed")
                pending.done = {}
                last_commit = loop.time()
                lag_gauge.set(await kafka.lag(consumer))
    finally:
        try:
            await pending.drain()
            if pending.done:
                await consumer.commit(pending.done)
        finally:
            await kafka.stop_all(consumer, producer)
