"""events.accepted -> hourly objects on S3 for one destination, offsets committed after the upload."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import aioboto3
from botocore.config import Config
from botocore.exceptions import ClientError
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from stream import kafka, metrics
from stream.check import explain_s3_error
from stream.clock import Clock
from stream.crashpoints import crash_point
from stream.health import HEALTH
from stream.events.batch import decode_rows
from stream.events.deadletter import not_a_batch
from stream.events.normalize import Reason
from stream.export.layout import amplitude_key
from stream.export.ledger import LedgerIndex, LedgerRecord
from stream.export.storage import PutRequest, S3Storage, Storage
from stream.export.writer import ClosedObject, PartitionWriter
from stream.retry import retry_until_done, s3_failure_kind
from stream.settings import DestinationSettings, Settings

log = logging.getLogger(__name__)

IDLE_POLL_MS = 200
"""How long a poll waits for records: an empty poll marks its partitions idle, which lets a past hour close."""


class Exporter:
    """One destination's writers, fed by the loop below; also driven directly by component tests."""

    def __init__(self, settings: Settings, dest: DestinationSettings, storage: Storage, clock: Clock,
                 spool_dir: Path, append_ledger: Callable[[LedgerRecord], Awaitable[None]], ledger: LedgerIndex):
        self.settings, self.dest, self.storage, self.clock = settings, dest, storage, clock
        self.spool_dir = spool_dir
        self.append_ledger = append_ledger
        self.ledger = ledger
        self.topic = settings.topics.name("accepted")
        self.writers: dict[int, PartitionWriter] = {}

    def writer(self, partition: int) -> PartitionWriter:
        w = self.writers.get(partition)
        if w is None:
            d = self.dest
            w = self.writers[partition] = PartitionWriter(
                partition, lambda hour, p, start: amplitude_key(d.prefix, d.project, hour, p, start),
                self.spool_dir, self.ledger, d.max_object_bytes, int(d.close_grace_s * 1000))
        return w

    def add(self, partition: int, offset: int, value: bytes) -> list[ClosedObject]:
        """Take the batch at ``offset``; raises if the message is not a batch."""
        rows = decode_rows(value)
        w = self.writer(partition)
        if rows.project != self.dest.project or not rows.count:
            w.skip(offset)
            return []
        skipped = w.skipped_events
        closed = w.add(offset, rows.hour, rows.blob, rows.count, rows.latest_ms, rows.source, rows.offsets)
        if w.skipped_events != skipped:
            metrics.EXPORT_SKIPPED.labels(self.dest.name).inc(w.skipped_events - skipped)
        return closed

    def tick(self, idle_partitions: set[int]) -> list[ClosedObject]:
        now = self.clock.now_ms()
        return [obj for p, w in self.writers.items() for obj in w.tick(now, idle=p in idle_partitions)]

    async def finish(self, obj: ClosedObject) -> LedgerRecord:
        """Upload, then record in the ledger; only then may the offsets be committed."""
        d = self.dest
        req = PutRequest(d.bucket, obj.key, obj.path, obj.size, "application/gzip", {
            "stream-topic": self.topic, "stream-partition": str(obj.partition),
            "stream-start-offset": str(obj.start_offset), "stream-end-offset": str(obj.end_offset),
            "stream-events": str(obj.events)})
        await retry_until_done(f"upload of s3://{d.bucket}/{obj.key}", lambda: self.storage.put_file(req),
                               kind_of=s3_failure_kind, on_failure=self._upload_failed)
        metrics.EXPORT_FAILING.labels(d.name).set(0)
        crash_point("export.uploaded")
        rec = LedgerRecord(d.name, d.project, self.topic, obj.partition, obj.hour, d.bucket, obj.key,
                           obj.start_offset, obj.end_offset, obj.events, obj.marks, obj.size, obj.reason.value,
                           self.clock.now_ms())
        await self.append_ledger(rec)
        crash_point("export.ledgered")
        self.ledger.add(rec)
        self.writers[obj.partition].written(obj)
        obj.path.unlink(missing_ok=True)
        metrics.EXPORT_EVENTS.labels(d.name).inc(obj.events)
        metrics.EXPORT_OBJECTS.labels(d.name, obj.reason.value).inc()
        metrics.EXPORT_BYTES.labels(d.name).inc(obj.size)
        log.info("export %s: wrote s3://%s/%s (%d events, %d bytes, offsets %d-%d, %s)", d.name, d.bucket, obj.key,
                 obj.events, obj.size, obj.start_offset, obj.end_offset, obj.reason.value)
        return rec

    def use_ledger(self, ledger: LedgerIndex) -> None:
        self.ledger = ledger
        for w in self.writers.values():
            w.use_ledger(ledger)

    def _upload_failed(self, kind: str, exc: BaseException) -> None:
        d = self.dest
        metrics.EXPORT_UPLOAD_FAILURES.labels(d.name, kind).inc()
        metrics.EXPORT_FAILING.labels(d.name).set(1)
        if kind == "permanent" and isinstance(exc, ClientError):
            why = explain_s3_error(exc, "s3:PutObject", f"arn:aws:s3:::{d.bucket}/{d.prefix}*", d)
            log.error("export %s: %s; uploads retry every minute until it is fixed", d.name, why)

    def committable(self) -> dict[int, int]:
        return {p: o for p, w in self.writers.items() if (o := w.committable()) is not None}

    def revoke(self, partitions: set[int]) -> None:
        for p in partitions:
            w = self.writers.pop(p, None)
            if w is not None:
                w.discard()

    def discard_all(self) -> None:
        self.revoke(set(self.writers))


async def load_ledger(settings: Settings, destination: str) -> LedgerIndex:
    topic = settings.topics.name("export_ledger")
    records = [r for r in (LedgerRecord.decode(m.value) for m in await kafka.read_all(settings, topic))
               if r.destination == destination]
    log.info("export %s: read %d ledger records of %s", destination, len(records), topic)
    return LedgerIndex(records)


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


async def run_export(settings: Settings, dest: DestinationSettings, clock: Clock) -> None:
    """Export one destination forever.

    Order per poll: add the batches to the open objects; upload every object that
    closed, then append its ledger record (acknowledged by Kafka); then commit,
    per partition, the lowest offset not yet inside a written object.
    """
    spool = Path(settings.worker.data_dir) / "spool" / dest.name
    shutil.rmtree(spool, ignore_errors=True)   # parts of a previous run: their events will be replayed
    spool.mkdir(parents=True)
    producer = kafka.producer(settings.kafka)
    await producer.start()
    ledger_topic = settings.topics.name("export_ledger")
    dead_topic = settings.topics.name("dead_letter")

    async def append_ledger(rec: LedgerRecord) -> None:
        await (await producer.send(ledger_topic, rec.encode(), key=rec.message_key()))

    session = aioboto3.Session()
    timeouts = Config(connect_timeout=settings.s3.connect_timeout_s, read_timeout=settings.s3.read_timeout_s,
                      retries={"max_attempts": 1})   # retried in retry_until_done, which never gives up
    async with session.client("s3", endpoint_url=settings.s3.endpoint_url,
                              region_name=dest.region or settings.s3.region, config=timeouts) as s3:
        exporter = Exporter(settings, dest, S3Storage(s3, dest.encryption, settings.s3.upload_part_bytes,
                                                 settings.s3.read_timeout_s), clock,
                            spool, append_ledger, LedgerIndex())
        consumer = AIOKafkaConsumer(group_id=f"{settings.worker.app_id}-export-{dest.name}",
                                    **kafka.consumer_args(settings.kafka))
        rebalance = _Rebalance(exporter)
        consumer.subscribe([exporter.topic], listener=rebalance)
        await consumer.start()
        HEALTH.mark_ready("export")
        log.info("export %s: reading %s for project %d into s3://%s/%s", dest.name, exporter.topic, dest.project,
                 dest.bucket, dest.prefix)
        committed: dict[int, int] = {}
        try:
            while True:
                polled = await consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=2000)
                if rebalance.assigned is not None:
                    # another worker may have written objects of these partitions: read the ledger first
                    assigned, rebalance.assigned = rebalance.assigned, None
                    exporter.use_ledger(await load_ledger(settings, dest.name))
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
                idle = set()
                for tp in consumer.assignment():
                    if tp in polled:
                        continue
                    high = consumer.highwater(tp)
                    if high is None or await consumer.position(tp) >= high:
                        idle.add(tp.partition)
                closed += exporter.tick(idle)
                for obj in closed:
                    await exporter.finish(obj)
                offsets = {p: o for p, o in exporter.committable().items() if committed.get(p) != o}
                if offsets:
                    await consumer.commit({TopicPartition(exporter.topic, p): o for p, o in offsets.items()})
                    crash_point("export.committed")
                    committed.update(offsets)
        finally:
            exporter.discard_all()
            await consumer.stop()
            await producer.stop()
