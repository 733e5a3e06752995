"""events.valid -> events.accepted: the faust agent that drops duplicates (``stream.dedup.stage``), its table and
topics."""

from __future__ import annotations

import logging

import faust

from stream import metrics
from stream.agents import identity
from stream.agents.contiguous import Contiguous
from stream.agents.deadletters import keep_undecodable
from stream.clock import Clock, SystemClock
from stream.crashpoints import crash_point
from stream.dedup.policy import DAY_MS
from stream.dedup.stage import DedupeStage
from stream.dedup.table import DedupeTable
from stream.kafka import client_args
from stream.settings import Settings
from stream.topics import dedupe_changelog, dedupe_changelog_retention_ms

log = logging.getLogger(__name__)


def register(app: faust.App, settings: Settings, clock: Clock | None = None) -> None:
    t = settings.topics
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    valid = app.topic(t.name("valid"), partitions=t.partitions, **raw)
    accepted = app.topic(t.name("accepted"), partitions=t.partitions, **raw)
    dead = app.topic(t.name("dead_letter"), **raw)
    changelog = app.topic(dedupe_changelog(settings), partitions=t.partitions, internal=True,
                          retention=dedupe_changelog_retention_ms(settings) / 1000, compacting=False,
                          deleting=True, **raw)
    table = app.tables.add(DedupeTable(
        app, name="dedupe", partitions=t.partitions, changelog_topic=changelog, help="(device_id, insert_id) -> "
        "first occurrence",
        options={"ttl": int(dedupe_changelog_retention_ms(settings) / 1000), "bloom_filter_size": 10,
                 "block_cache_size": settings.dedupe.block_cache_mb << 20,
                 "write_buffer_size": settings.dedupe.write_buffer_mb << 20, "max_write_buffer_number": 2},
        key_type=bytes, value_type=bytes))
    window_ms = int(settings.dedupe.window_days * DAY_MS)
    valid_name = valid.get_topic_name()

    async def send_accepted(value: bytes, partition: int):
        return await accepted.send(value=value, partition=partition)

    async def dead_letter(event, exc: Exception) -> None:
        await keep_undecodable(dead, event, exc, "dedupe", settings.kafka.max_request_bytes)

    device = None
    if settings.identity.enabled:
        links = app.topic(t.name("identity_links"), partitions=t.partitions, **raw)
        itable = identity.add_table(app, settings)
        device = identity.device_stage(app, settings, clock or SystemClock(), itable, accepted, links, dead,
                                       valid_name)
        identity.register(app, settings, itable, valid, links, dead)
    stage = DedupeStage(table, send_accepted, dead_letter, valid_name, window_ms, settings.kafka.max_request_bytes,
                        device)
    gaps = Contiguous(app, valid_name, client_args(settings.kafka), "dedupe")

    @app.agent(valid, name="dedupe")
    async def dedupe(stream: faust.StreamT) -> None:
        """Per batch: multi-get, decide, one WriteBatch + one changelog record, one accepted batch
        (``stream.dedup.stage``); with identity on, the device side on the same partition.

        The accepted batch and the changelog record go to faust's Kafka producer (not its buffer,
        ``stream.dedup.table``), which faust flushes before it commits the valid offset.
        """
        await gaps.each(stream, stage.handle)

    lag_gauge = metrics.CONSUMER_LAG.labels("dedupe", valid_name)

    @app.timer(interval=5.0)
    async def dedupe_lag() -> None:
        c, total = app.consumer, 0
        try:
            for tp in c.assignment():
                if tp.topic == valid_name:
                    position, high = await c.position(tp), c.highwater(tp)
                    if position is not None and high is not None:
                        total += max(0, high - position)
        except Exception as exc:   # the broker is away: the gauge keeps its last value
            log.debug("dedupe lag not measured: %s", exc)
            return
        lag_gauge.set(total)

    app.sensors.add(_CommitCrashPoint())


class _CommitCrashPoint(faust.Sensor):
    """Names the moment faust has committed the dedupe group's offsets (``dedupe.committed``)."""

    def on_commit_completed(self, consumer, state) -> None:
        crash_point("dedupe.committed")
