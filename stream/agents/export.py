"""events.accepted -> one destination's objects on S3: the Kafka side of ``stream.export.exporter``."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from stream import kafka, metrics
from stream.clock import Clock
from stream.crashpoints import crash_point
from stream.events.deadletter import not_a_batch
from stream.events.normalize import Reason
from stream.export.completion import ExportBook, iso_ms
from stream.export.exporter import Exporter, export_input, exporters_of
from stream.export.ledger import LedgerIndex, LedgerRecord
from stream.export.writer import ClosedObject
from stream.health import HEALTH
from stream.s3.client import target_client, target_of
from stream.s3.storage import S3Storage
from stream.settings import DestinationSettings, Settings
from stream.shutdown import SHUTDOWN

log = logging.getLogger(__name__)

IDLE_POLL_MS = 200
"""How long a poll waits for records: an empty poll marks its partitions idle, which lets a past hour close."""

RUNNING: dict[str, Exporter] = {}
"""The exporters of this process, by name (the destination's, or ``<destination>.merged-ids``; for the status
view)."""


async def load_ledger(settings: Settings, destination: str) -> LedgerIndex:
    topic = settings.topics.name("export_ledger")
    records = [r for r in (LedgerRecord.decode(m.value) for m in await kafka.read_all(settings, topic))
               if r.destination == destination]
    log.info("export %s: read %d ledger records of %s", destination, len(records), topic)
    return LedgerIndex(records)


def export_status(settings: Settings, books: dict[str, ExportBook] | None = None, hours: int = 48) -> dict[str, Any]:
    """The status view of every exporter -- a destination's events, and its merged-IDs files when it exports
    them (``<destination>.merged-ids``) -- from ``books`` (read from the ledger, by exporter name), else this
    process's exporters."""
    out = []
    for d in settings.destinations:
        for name, what in exporters_of(d):
            book = books.get(name) if books is not None else (RUNNING[name].book if name in RUNNING else None)
            head = {"destination": name, "project": d.project, "exports": what,
                    "layout": d.layout if what == "events" else "merged_ids", "bucket": d.bucket,
                    "prefix": d.prefix, "enabled": d.enabled}
            if book is None:
                out.append({**head, "state": "disabled" if not d.enabled else "not running here"})
            else:
                st = book.status(hours)
                if not d.enabled:
                    st["state"] = "disabled"
                out.append({**head, **st})
    return {"generated_at": iso_ms(time.time_ns() // 1_000_000), "destinations": out}


class _Rebalance(ConsumerRebalanceListener):
    """Notes a new assignment; the export loop reads the ledger before it takes any record.

    (aiokafka starts fetching for new partitions while this listener still runs, so
    reading the ledger here would race the first records of a replay.)
    """

    def __init__(self, exporter: Exporter):
        self.exporter = exporter
        self.assigned: set[int] | None = None

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.exporter.revoke({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.assigned = {tp.partition for tp in assigned}


class LedgerTail:
    """Follows exports.ledger from its beginning (no consumer group) into one destination's book."""

    def __init__(self, settings: Settings, book: ExportBook):
        self.topic = settings.topics.name("export_ledger")
        self.book = book
        self.consumer = AIOKafkaConsumer(**{**kafka.client_args(settings.kafka), "enable_auto_commit": False})

    async def start(self) -> None:
        await self.consumer.start()
        await kafka.assign_from_beginning(self.consumer, self.topic, default=frozenset({0}))

    async def poll(self) -> None:
        for recs in (await self.consumer.getmany(timeout_ms=0, max_records=5000)).values():
            for m in recs:
                self.book.add(LedgerRecord.decode(m.value))

    async def stop(self) -> None:
        await self.consumer.stop()


async def run_export(settings: Settings, dest: DestinationSettings, clock: Clock, topic: str = "accepted") -> None:
    """Export one destination's events (``topic="accepted"``) or merged ids (``"identity_merges"``) forever; see
    ``stream.export.exporter`` for the order of one cycle."""
    source = export_input(settings, dest, topic)
    name = source.name
    spool = Path(settings.worker.data_dir) / "spool" / name
    shutil.rmtree(spool, ignore_errors=True)   # parts of a previous run: their events will be replayed
    spool.mkdir(parents=True)
    producer = kafka.producer(settings.kafka)
    ledger_topic = settings.topics.name("export_ledger")
    dead_topic = settings.topics.name("dead_letter")

    async def append_ledger(rec: LedgerRecord) -> None:
        await (await producer.send(ledger_topic, rec.encode(), key=rec.message_key()))

    async with target_client(target_of(dest, settings.s3, name), settings.s3) as s3:
        exporter = Exporter(settings, dest, S3Storage(s3, dest.encryption, settings.s3.upload_part_bytes,
                                                      settings.s3.read_timeout_s),
                            clock, spool, append_ledger, LedgerIndex(), source=source)
        # An upload that keeps failing holds the loop (backpressure: nothing more is read) for as long as the
        # failure lasts; the group must not evict the exporter for not polling meanwhile: any other exporter of
        # the destination would be held by the same bucket.
        consumer = AIOKafkaConsumer(group_id=f"{settings.worker.app_id}-export-{name}",
                                    **{**kafka.consumer_args(settings.kafka), "max_poll_interval_ms": 86_400_000})
        rebalance = _Rebalance(exporter)
        consumer.subscribe([exporter.topic], listener=rebalance)
        tail = LedgerTail(settings, exporter.book)
        try:
            await producer.start()
            await consumer.start()
            await tail.start()
        except BaseException:
            await kafka.stop_all(consumer, tail.consumer, producer)
            raise
        exporter.book.partitions = len(consumer.partitions_for_topic(exporter.topic) or ()) or exporter.book.partitions
        RUNNING[name] = exporter
        HEALTH.mark_ready("export")
        log.info("export %s: reading %s for project %d into s3://%s/%s", name, exporter.topic, dest.project,
                 dest.bucket, dest.prefix)
        committed: dict[int, int] = {}
        lag_label = metrics.CONSUMER_LAG.labels(f"export-{name}", exporter.topic)
        try:
            while not SHUTDOWN.requested:   # a stop ends the loop after a whole cycle: uploaded, recorded, committed
                polled = await consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=2000)
                if rebalance.assigned is not None:
                    # another worker may have written objects of these partitions: read the ledger first
                    assigned, rebalance.assigned = rebalance.assigned, None
                    log.info("export %s: assigned partitions %s of %s", name, sorted(assigned), exporter.topic)
                    crash_point("export.assigned")
                    exporter.use_ledger(await load_ledger(settings, name))
                    crash_point("export.ledger_read")
                    for p in assigned:
                        exporter.writer(p)
                closed: list[ClosedObject] = []
                for tp, recs in polled.items():
                    for r in recs:
                        try:
                            closed += exporter.add(tp.partition, r.offset, r.value)
                        except Exception as exc:  # not a batch: keep it in the dead-letter topic, go on
                            await (await producer.send(dead_topic, not_a_batch(
                                tp.topic, tp.partition, r.offset, r.timestamp, r.key, r.value, exc,
                                settings.kafka.max_request_bytes), key=r.key))
                            metrics.EVENTS_DEAD_LETTERED.labels("export", Reason.INVALID_BATCH.value).inc()
                            exporter.writer(tp.partition).skip(r.offset)
                caught_up = set()
                for tp in consumer.assignment():
                    high = consumer.highwater(tp)
                    if high is not None and tp not in polled and await consumer.position(tp) >= high:
                        caught_up.add(tp.partition)
                lag_label.set(await kafka.lag(consumer))
                closed += exporter.tick(caught_up)
                for obj in closed:
                    await exporter.finish(obj)
                await exporter.seal()
                await tail.poll()
                if 0 in exporter.writers:   # the owner of partition 0 writes the markers of the whole destination
                    await exporter.write_markers()
                exporter.update_gauges()
                offsets = {p: o for p, o in exporter.committable().items() if committed.get(p) != o}
                if offsets:
                    try:
                        await consumer.commit({TopicPartition(exporter.topic, p): o for p, o in offsets.items()})
                    except (CommitFailedError, IllegalStateError) as exc:
                        # the group rebalanced meanwhile: whoever owns the partitions now reads from the last
                        # commit, and the ledger skips what this exporter wrote since
                        log.warning("export %s: offsets %s not committed (%s); the next owner replays them",
                                    name, offsets, exc)
                        continue
                    crash_point("export.committed")
                    committed.update(offsets)
        finally:
            RUNNING.pop(name, None)
            exporter.discard_all()
            await kafka.stop_all(consumer, tail.consumer, producer)
