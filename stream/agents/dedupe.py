"""events.valid -> events.accepted: the faust agent that drops duplicates, one batch message at a time."""

from __future__ import annotations

import logging

import faust

from stream import metrics
from stream.agents import identity
from stream.agents.contiguous import Contiguous, Record
from stream.agents.deadletters import keep_undecodable
from stream.crashpoints import crash_point
from stream.dedup.policy import DAY_MS, decide, encode_changelog
from stream.dedup.table import DedupeTable
from stream.events.batch import EventBatch, Origin
from stream.kafka import client_args
from stream.settings import Settings
from stream.topics import dedupe_changelog, dedupe_changelog_retention_ms

log = logging.getLogger(__name__)


def register(app: faust.App, settings: Settings) -> None:
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
    gaps = Contiguous(app, valid_name, client_args(settings.kafka), "dedupe")
    device = None
    if settings.identity.enabled:
        links = app.topic(t.name("identity_links"), partitions=t.partitions, **raw)
        itable = identity.add_table(app, settings)
        device = identity.DeviceSide(settings, itable, links, dead, valid_name,
                                     identity.committed_offsets(app, valid_name))
        identity.register(app, settings, itable, valid, links, dead)

    @app.agent(valid, name="dedupe")
    async def dedupe(stream: faust.StreamT) -> None:
        """Per batch: multi-get, decide, one WriteBatch + one changelog record, one accepted batch.

        With identity on, the accepted events then get their ids and user fields on the same partition
        (``stream.agents.identity.DeviceSide``), and remap messages on events.valid update the device state.

        The accepted batch and the changelog record go to faust's Kafka producer (not its buffer,
        ``stream.dedup.table``), which faust flushes before it commits the valid offset.
        """
        async for event in stream.events():
            for missed in await gaps.missed(event.message.partition, event.message.offset):
                await handle(missed)
            await handle(event)

    async def handle(event: faust.EventT | Record) -> None:
        """One events.valid message: a batch, or a remap message of the identity stage."""
        msg = event.message
        crash_point("dedupe.received")
        if device is not None and await device.remaps(event.value, msg.partition, msg.offset):
            return
        try:
            batch = EventBatch.decode(event.value)
        except Exception as exc:  # not a batch
            await keep_undecodable(dead, event, exc, "dedupe", settings.kafka.max_request_bytes)
            return
        origin = Origin(valid_name, msg.partition, msg.offset)
        batch.arrived_at(origin)
        d = decide(batch.keys, batch.times, batch.uuids, table.get_many(msg.partition, batch.keys), window_ms)
        if d.writes:
            await table.write_batch(msg.partition, d.writes, str(origin).encode(), encode_changelog(d.writes))
            crash_point("dedupe.state_written")
        out = batch.select(d.keep, origin)
        if device is not None and out.lines:
            out = await device.batch(out, msg.partition, msg.offset, int(msg.timestamp * 1000))
        if out.lines:
            # the identity stage grew the rows after the batch was sized: keep each message within the
            # producer's limit (the parts keep their events' source offsets, so replays stay harmless)
            for part in out.split(settings.kafka.max_request_bytes // 2):
                await accepted.send(value=part.encode(), partition=msg.partition)
            crash_point("dedupe.sent")
        metrics.DEDUPE_EVENTS.inc(len(batch))
        metrics.DEDUPE_DUPLICATES.inc(d.duplicates)
        metrics.DEDUPE_ACCEPTED.inc(len(out.lines))

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
