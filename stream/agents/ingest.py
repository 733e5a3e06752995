"""events.ingest -> events.valid + events.dead-letter: a getmany loop, so the per-message cost is aiokafka's alone."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer

from stream import kafka, metrics
from stream.clock import Clock
from stream.events.ingest import ingest_records
from stream.events.normalize import Rules
from stream.settings import Settings

log = logging.getLogger(__name__)


async def run_ingest(settings: Settings, clock: Clock) -> None:
    """Consume events.ingest forever.

    Order per poll: every batch and dead letter is acknowledged by Kafka, then the
    offsets of the records they came from are committed. A crash in between
    replays those records, which produce the same batches (same uuids, same times).
    """
    t, ing = settings.topics, settings.ingest
    src, valid, dead = t.name("ingest"), t.name("valid"), t.name("dead_letter")
    rules = Rules(ing.max_event_bytes, ing.min_id_length, ing.unknown_fields == "keep")
    consumer = AIOKafkaConsumer(src, group_id=f"{settings.worker.app_id}-ingest",
                                **kafka.consumer_args(settings.kafka))
    producer = kafka.producer(settings.kafka)
    await producer.start()
    await consumer.start()
    log.info("ingest: reading %s", src)
    try:
        while True:
            polled = await consumer.getmany(timeout_ms=1000, max_records=ing.poll_max_records)
            if not polled:
                continue
            sends = []
            for tp, recs in polled.items():
                res = ingest_records(recs, src, tp.partition, projects=settings.project_ids(),
                                     default_project=ing.default_project, rules=rules,
                                     partitions=t.partitions, max_events=ing.batch_max_events,
                                     now_ms=clock.now_ms())
                for target, batch in res.batches:
                    sends.append(await producer.send(valid, batch.encode(), partition=target))
                for key, record in res.dead:
                    sends.append(await producer.send(dead, record, key=key, partition=0))
                metrics.EVENTS_INGESTED.inc(len(recs))
                metrics.EVENTS_VALID.inc(res.valid)
                for reason, n in res.reasons.items():
                    metrics.EVENTS_DEAD_LETTERED.labels(reason).inc(n)
            await asyncio.gather(*sends)
            await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in polled.items()})
    finally:
        await consumer.stop()
        await producer.stop()
