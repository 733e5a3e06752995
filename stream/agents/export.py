"""events.accepted (or identity.merges) -> one destination's objects on S3: ``stream.export.cycle`` on the live feed."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from stream import kafka, metrics
from stream.clock import Clock
from stream.events.deadletter import not_a_batch
from stream.events.normalize import Reason
from stream.export.cycle import ExportCycle
from stream.export.exporter import Exporter, export_input
from stream.export.feed import KafkaFeed, LedgerTail, load_ledger
from stream.export.ledger import LedgerIndex, LedgerRecord
from stream.export.verify import VerificationGate
from stream.health import HEALTH
from stream.s3.client import target_client, target_of
from stream.s3.storage import S3Storage
from stream.settings import DestinationSettings, Settings
from stream.shutdown import SHUTDOWN

log = logging.getLogger(__name__)


async def run_export(settings: Settings, dest: DestinationSettings, clock: Clock, topic: str = "accepted",
                     running: dict[str, Exporter] | None = None, stop=lambda: SHUTDOWN.requested) -> None:
    """Export one destination's events (``topic="accepted"``) or merged ids (``"identity_merges"``) until ``stop()``
    (checked after each whole cycle: uploaded, recorded, committed; records polled once it is asked are not taken).
    ``running`` lists this process's exporters
    by name while they run (for the status view)."""
    source = export_input(settings, dest, topic)
    name = source.name
    spool = Path(settings.worker.data_dir) / "spool" / name
    shutil.rmtree(spool, ignore_errors=True)   # parts of a previous run: their events will be replayed
    spool.mkdir(parents=True)
    producer = kafka.producer(settings.kafka)
    ledger_topic, dead_topic = settings.topics.name("export_ledger"), settings.topics.name("dead_letter")

    async def append_ledger(rec: LedgerRecord) -> None:
        await (await producer.send(ledger_topic, rec.encode(), key=rec.message_key()))

    async def dead_letter(partition: int, r, exc: Exception) -> None:
        await (await producer.send(dead_topic, not_a_batch(source.topic, partition, r.offset, r.timestamp, r.key,
                                                           r.value, exc, settings.kafka.max_request_bytes),
                                   key=r.key))
        metrics.EVENTS_DEAD_LETTERED.labels("export", Reason.INVALID_BATCH.value).inc()

    async def read_ledger() -> LedgerIndex:
        return (await load_ledger(settings, name))[0]

    async with target_client(target_of(dest, settings.s3, name), settings.s3) as s3:
        exporter = Exporter(settings, dest, S3Storage(s3, dest.encryption, settings.s3.upload_part_bytes,
                                                      settings.s3.read_timeout_s),
                            clock, spool, append_ledger, LedgerIndex(), source=source)
        feed = KafkaFeed(settings, f"{settings.worker.app_id}-export-{name}", exporter.topic, exporter.revoke)
        tail = LedgerTail(settings, name)
        try:
            await producer.start()
            await feed.start()
            await tail.start()
        except BaseException:
            await kafka.stop_all(feed, tail, producer)
            raise

        async def counted(rec: LedgerRecord) -> None:   # a failed verification counts toward a notification
            exporter.notices.add(rec)
            await exporter.notify()
        # a new destination exports nothing before its access is verified (stream.export.verify)
        gate = VerificationGate(settings, dest, name, (await load_ledger(settings, name))[1], append_ledger, clock,
                                counted)
        exporter.book.partitions = feed.partitions() or exporter.book.partitions
        if running is not None:
            running[name] = exporter
        HEALTH.mark_ready("export")
        log.info("export %s: reading %s for project %d into s3://%s/%s", name, exporter.topic, dest.project,
                 dest.bucket, dest.prefix)
        cycle = ExportCycle(exporter, feed, read_ledger, tail, dead_letter, gate, stop)
        try:
            while not stop():
                await cycle.step()
        finally:
            if running is not None:
                running.pop(name, None)
            exporter.discard_all()
            await kafka.stop_all(feed, tail, producer)
