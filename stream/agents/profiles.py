"""The profiles stage's faust agent: profiles.mutations -> the profiles table (RocksDB, compacted changelog).

Wiring only (the work is ``stream.imports.profiles.step``): each mutation, on the partition that owns its key
(``project (4 bytes) + user_id``), is applied to the stored profile; what it writes goes to the table and, as one
record keyed like the table, to its changelog (``stream.topics.profiles_changelog``), which is compacted: its latest
record of a key is the user's current profile, where the admin API reads it. A gap in the partition (records the
consumer skipped) is read back and applied first; a mutation handed over again changes nothing (its sequence is not
newer), and the one that set the stored profile writes it again (``replayed``), so that a changelog record lost with
a crash is sent after all. faust commits an offset once the agent is done with its record and the producer is
flushed.

Where a destination has ``exports: profiles``, the replica that owns partition 0 of profiles.mutations writes the
daily snapshots due every ``SNAPSHOT_LOOK_S`` (``stream.export.profiles_snapshot``).
"""

from __future__ import annotations

import logging

import faust

from stream import metrics
from stream.agents.contiguous import Contiguous, Record
from stream.agents.deadletters import keep_undecodable
from stream.clock import Clock
from stream.crashpoints import crash_point
from stream.dedup.table import DedupeTable, KeyedChangelog
from stream.imports import profiles
from stream.kafka import client_args
from stream.settings import Settings
from stream.topics import profiles_changelog

log = logging.getLogger(__name__)


class ProfilesTable(KeyedChangelog, DedupeTable):
    """The profiles: ``project + user_id`` -> the encoded profile (``stream.imports.profiles.encode``); each
    changelog record is one key's profile."""


def register(app: faust.App, settings: Settings, clock: Clock) -> None:
    """The profiles stage of a worker whose settings have sources of profiles."""
    t = settings.topics
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    mutations = app.topic(t.name("profiles"), partitions=t.partitions, **raw)
    dead = app.topic(t.name("dead_letter"), **raw)
    changelog = app.topic(profiles_changelog(settings), partitions=t.partitions, internal=True, retention=None,
                          compacting=True, deleting=False, **raw)
    table = app.tables.add(ProfilesTable(app, name="profiles-applied", partitions=t.partitions,
                                         changelog_topic=changelog, help="(project, user_id) -> the user's profile",
                                         key_type=bytes, value_type=bytes))
    name = mutations.get_topic_name()
    gaps = Contiguous(app, name, client_args(settings.kafka), "profiles")

    @app.agent(mutations, name="profiles-applied")
    async def apply(stream: faust.StreamT) -> None:
        async for event in stream.events():
            for missed in await gaps.missed(event.message.partition, event.message.offset):
                await handle(missed)
            await handle(event)

    async def handle(event: faust.EventT | Record) -> None:
        msg = event.message
        try:
            project, m = profiles.decode_mutation(event.value)
        except ValueError as exc:
            await keep_undecodable(dead, event, exc, "profiles", settings.kafka.max_request_bytes)
            metrics.PROFILE_MUTATIONS.labels("unknown", "invalid").inc()
            return
        k = profiles.key(project, m.user_id)
        write, outcome = profiles.step(table.get_many(msg.partition, [k])[0], m, clock.now_ms())
        if write is not None:
            await table.write_batch(msg.partition, [(k, write)], k, write)
            crash_point("profiles.applied")
        metrics.PROFILE_MUTATIONS.labels(m.op.value.lower(), outcome).inc()

    if any(d.enabled and d.exports_profiles() for d in settings.destinations):
        from aiokafka import TopicPartition

        from stream.export import profiles_snapshot
        owner = TopicPartition(name, 0)

        @app.timer(interval=SNAPSHOT_LOOK_S)
        async def profiles_snapshots() -> None:
            """The daily snapshots due, written by the replica that owns profiles.mutations partition 0."""
            if owner not in app.consumer.assignment():
                return
            try:
                await profiles_snapshot.write_due(settings, clock)
            except Exception as exc:   # S3 or Kafka away: the next look writes what is still missing
                log.warning("profiles: the daily snapshots could not be written (%s: %s); trying again in %ds",
                            type(exc).__name__, exc, SNAPSHOT_LOOK_S)


SNAPSHOT_LOOK_S = 300.0
"""How often the profiles stage looks for daily snapshots due."""
