"""events.ingest -> events.valid + events.dead-letter: a getmany loop, so the per-message cost is aiokafka's alone."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from stream import kafka, metrics
from stream.clock import Clock
from stream.crashpoints import crash_point
from stream.events.clamps import ClampIndex
from stream.events.clamps import encode as encode_clamps
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

    Order: the server times a poll replaced (a producer's clock ahead of ours) are
    recorded and acknowledged (``stream.events.clamps``); every batch and dead letter
    of the poll is acknowledged by Kafka; then the offsets of the records they came
    from are committed. Up to MAX_POLLS_IN_FLIGHT polls overlap so the loop never
    idles on a round trip. A crash in between replays those records, which produce
    the same batches (same uuids, same times: replaced times from the record).
    On shutdown it stops polling, waits for what it produced and commits it.
    """
    t, ing = settings.topics, settings.ingest
    src, valid, dead, clamps_topic = t.name("ingest"), t.name("valid"), t.name("dead_letter"), t.name("ingest_clamps")
    rules = Rules.of(ing)
    clamps = ClampIndex(src)
    known: set[TopicPartition] = set()
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
            if (assigned := consumer.assignment()) != known:
                # partitions taken over (at start, or from another worker): what an earlier pass replaced in them
                # is read before any of their records is processed
                new = {tp.partition for tp in assigned - known}
                if new:
                    n = clamps.load((m.value for m in await kafka.read_all(settings, clamps_topic)), new)
                    if n:
                        log.info("ingest: %d replaced server times recorded for partitions %s", n, sorted(new))
                known = set(assigned)
            if polled:
                crash_point("ingest.polled")
                now = clock.now_ms()
                results = [(tp, recs, ingest_records(
                    recs, src, tp.partition, projects=settings.project_ids(), default_project=ing.default_project,
                    rules=rules, partitions=t.partitions, max_events=ing.batch_max_events,
                    max_bytes=settings.kafka.max_request_bytes // 2, now_ms=now, clamps=clamps.of(tp.partition)))
                    for tp, recs in polled.items()]
                recorded = [await producer.send(clamps_topic, value, key=key, partition=0)
                            for tp, _, res in results if res.new_clamps
                            for key, value in [encode_clamps(src, tp.partition, res.new_clamps)]]
                for fut in recorded:   # a replay must find them before it finds the batches they stamped
                    await fut
                sends = []
                for tp, recs, res in results:
                    clamps.add(tp.partition, res.new_clamps)
                    for target, batch in res.batches:
                        sends.append(await producer.send(valid, batch.encode(), partition=target))
                    for key, record in res.dead:
                        sends.append(await producer.send(dead, record, key=key, partition=0))
                    metrics.EVENTS_INGESTED.inc(len(recs))
                    metrics.EVENTS_VALID.inc(res.valid)
                    if res.clamped:
                        metrics.EVENTS_CLAMPED.inc(res.clamped)
                        log.warning("ingest: %d events of %s[%d] carried server times more than %.0fs ahead of this "
                                    "clock; stamped with the ingest time instead (a producer's clock is wrong)",
                                    res.clamped, src, tp.partition, ing.max_clock_skew_s)
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
                for tp, offset in pending.done.items():
                    clamps.prune(tp.partition, offset)
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
