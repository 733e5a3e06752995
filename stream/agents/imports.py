"""imports.files -> events.valid (events.mutations for mirror sources, profiles.mutations for sources of profiles):
the faust agent wiring the import engine (``stream.imports.importer``), and the discovery tasks
(``stream.imports.discovery``).

The agent declares the topics and the processed-files table (RocksDB, changelog), and hands each discovery record,
on the partition that owns its key (``<source>:<key>``), to the engine; records that are not discovery records go
to the dead-letter topic. A gap in the partition (records the consumer skipped) is read back and handled first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from stream import kafka
from stream.agents.contiguous import Contiguous, Record
from stream.agents.deadletters import keep_undecodable
from stream.clock import Clock
from stream.health import HEALTH
from stream.imports.fetch import S3Files
from stream.imports.files import ImportFile
from stream.imports.importer import FileImporter, Senders
from stream.imports.pool import ConvertPool
from stream.retry import supervise
from stream.settings import Settings
from stream.shutdown import SHUTDOWN
from stream.topics import import_changelog

log = logging.getLogger(__name__)


class _TableStore:
    """The processed-files table as the engine's store."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: bytes) -> bytes | None:
        return self.table.get(key)

    async def put(self, key: bytes, value: bytes, partition: int) -> None:
        """Write a file's state and wait for the broker to have its changelog record: the state outlives this
        process. The record goes to the Kafka producer itself, not through faust's buffer, whose flush gives up
        after 0.1 s (``stream.dedup.table``)."""
        table = self.table
        store = table.data
        db_of = getattr(store, "_db_for_partition", None)
        if db_of is not None:
            # RocksDB: into the partition named. faust's own write takes the partition of the event being handled,
            # and asserts there is one: a record handed over outside the agent's stream (a partition's tail read
            # back by stream.agents.contiguous) has none, and its file, produced already, was imported again
            db_of(partition).put(key, value)
            store._key_index[key] = partition
        else:   # the memory store (no partitions)
            store[key] = value
        sent = await table.changelog_topic.send(key=key, value=value, partition=partition,
                                                key_serializer=table.key_serializer,
                                                value_serializer=table.value_serializer,
                                                callback=table._on_changelog_sent)
        await sent


def register(app: faust.App, settings: Settings, clock: Clock) -> None:
    t = settings.topics
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    files = app.topic(t.name("import_files"), partitions=t.partitions, **raw)
    valid = app.topic(t.name("valid"), partitions=t.partitions, **raw)
    dead = app.topic(t.name("dead_letter"), **raw)
    changelog = app.topic(import_changelog(settings), partitions=t.partitions, internal=True, retention=None,
                          compacting=True, deleting=False, **raw)
    table = app.Table("import-files", partitions=t.partitions, changelog_topic=changelog,
                      help="(source, key) -> what became of the file", key_type=bytes, value_type=bytes)
    files_name = files.get_topic_name()

    async def send_valid(value: bytes, partition: int) -> Any:
        return await valid.send(value=value, partition=partition)

    async def send_dead(key: bytes, value: bytes) -> Any:
        return await dead.send(key=key, value=value, partition=0)

    send_mutation = None
    if any(src.strategy == "mirror" for src in settings.sources):
        mutations = app.topic(t.name("mutations"), partitions=t.partitions, **raw)

        async def send_mutation(key: bytes, value: bytes) -> Any:
            # no partition: the default partitioner places it by its key, where the mirror index keeps its entries
            return await mutations.send(key=key, value=value)

    send_profile = None
    if any(src.data_type == "profiles" for src in settings.sources):
        from stream.imports.profiles import partition as profile_partition
        profile_topic = app.topic(t.name("profiles"), partitions=t.partitions, **raw)

        async def send_profile(key: bytes, value: bytes) -> Any:
            # on the partition the admin API computes again to read the user's profile from the table's changelog
            return await profile_topic.send(key=key, value=value, partition=profile_partition(key, t.partitions))

    # the processes converting rows (worker.import_processes) end with the worker: at its exit (concurrent.futures
    # stops them) or, killed, by PR_SET_PDEATHSIG
    pool = ConvertPool(settings, settings.worker.import_processes) if settings.worker.import_processes else None
    importer = FileImporter(settings, clock, Senders(send_valid, send_dead, send_mutation, send_profile),
                            _TableStore(table),
                            S3Files(settings), files_name, pool=pool)
    gaps = Contiguous(app, files_name, kafka.client_args(settings.kafka), "import")

    @app.agent(files, name="import-files")
    async def imports(stream: faust.StreamT) -> None:
        await gaps.each(stream, handle)

    async def handle(event: faust.EventT | Record) -> None:
        """One discovered file: imported once (its state is written on the record's own partition, named: a
        record read back by ``Contiguous`` may be handed over outside any event of faust's)."""
        msg = event.message
        try:
            f = ImportFile.decode(event.value)
        except Exception as exc:   # not a discovery record
            await keep_undecodable(dead, event, exc, "import", settings.kafka.max_request_bytes)
            return
        await importer.handle(f, msg.key, msg.partition, msg.offset, int(msg.timestamp * 1000))

    @app.on_rebalance_complete.connect
    async def _import_ready(sender, **kwargs) -> None:
        HEALTH.mark_ready("import")

    _discovery(app, settings, files_name)


def _discovery(app: faust.App, settings: Settings, files_name: str) -> None:
    """Per enabled source: an SQS poller in every replica (SQS spreads the messages), and the list scan in the
    replica that owns imports.files partition 0 (one scanner at a time)."""
    from aiokafka import TopicPartition

    producer_box: dict[str, Any] = {}

    async def send(rec: ImportFile) -> Any:
        p = producer_box.get("p")
        if p is None:
            p = producer_box["p"] = kafka.producer(settings.kafka)
            await p.start()
        return await p.send(files_name, rec.encode(), key=rec.kafka_key)

    owner = TopicPartition(files_name, 0)

    def stop() -> bool:
        return SHUTDOWN.requested

    for src in settings.sources:
        if not src.enabled:
            continue
        if src.queue_url or src.scan.enabled:
            from stream.imports import discovery
        if src.queue_url:
            app.task(_named(f"import_sqs_{src.name}", lambda src=src: supervise(
                f"import {src.name} notifications", lambda: discovery.poll_queue(settings, src, send, stop=stop),
                stop=stop)))
        if src.scan.enabled:
            app.task(_named(f"import_scan_{src.name}", lambda src=src: discovery.scan_while_owner(
                settings, src, send, owns=lambda: owner in app.consumer.assignment(), stop=stop)))


def _named(name: str, fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    async def task() -> None:
        await fn()
    task.__name__ = task.__qualname__ = name.replace("-", "_")
    return task
