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
daily snapshots due every ``SNAPSHOT_LOOK_S`` (``stream.export.profiles_snapshot``). A day's snapshot is due ten
minutes after the UTC day ends, by the worker's clock; a test arms ``STREAM_PROFILES_SNAPSHOTS=<look_s>[:<ahead_ms>]``
in the environment (as crash points are armed) to look every ``look_s`` seconds with the snapshot writer's clock
``ahead_ms`` ahead of the worker's, so that the worker writes today's snapshot without a day going by
(``snapshot_schedule``).
"""

from __future__ import annotations

import logging
import os

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


SCHEDULE_ENV = "STREAM_PROFILES_SNAPSHOTS"


def snapshot_schedule(armed: str | None) -> tuple[float, int]:
    """(seconds between looks for snapshots due, ms the snapshot writer's clock runs ahead of the worker's):
    ``(SNAPSHOT_LOOK_S, 0)``, or what ``armed`` (``<look_s>[:<ahead_ms>]``, from ``SCHEDULE_ENV``) says."""
    if not armed:
        return SNAPSHOT_LOOK_S, 0
    look, _, ahead = armed.partition(":")
    try:
        look_s, ahead_ms = float(look), int(ahead or 0)
    except ValueError:
        look_s = ahead_ms = -1
    if not look_s > 0 or ahead_ms < 0:
        raise ValueError(f"{SCHEDULE_ENV}={armed!r}: expected <look_s>[:<ahead_ms>], seconds between looks (more "
                         "than 0) and milliseconds the snapshot writer's clock runs ahead (0 or more), e.g. 1:87000000;"
                         f" unset it to look every {SNAPSHOT_LOOK_S:.0f}s by the worker's clock")
    return look_s, ahead_ms


class Ahead:
    """A clock ``ahead_ms`` ahead of another."""

    def __init__(self, clock: Clock, ahead_ms: int):
        self.clock, self.ahead_ms = clock, ahead_ms

    def now_ms(self) -> int:
        return self.clock.now_ms() + self.ahead_ms


def register(app: faust.App, settings: Settings, clock: Clock,
             schedule: tuple[float, int] | None = None) -> None:
    """The profiles stage of a worker whose settings have sources of profiles; ``schedule``: that of the daily
    snapshots (``snapshot_schedule``; default: as the environment arms it)."""
    look_s, ahead_ms = schedule or snapshot_schedule(os.environ.get(SCHEDULE_ENV))
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
        await gaps.each(stream, handle)

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

        snapshot_clock = Ahead(clock, ahead_ms) if ahead_ms else clock

        @app.timer(interval=look_s)
        async def profiles_snapshots() -> None:
            """The daily snapshots due, written by the replica that owns profiles.mutations partition 0."""
            def owns() -> bool:
                return owner in app.consumer.assignment()
            if not owns():
                return
            try:
                await profiles_snapshot.write_due(settings, snapshot_clock, owns)
            except Exception as exc:   # S3 or Kafka away: the next look writes what is still missing
                log.warning("profiles: the daily snapshots could not be written (%s: %s); trying again in %ds",
                            type(exc).__name__, exc, look_s)


SNAPSHOT_LOOK_S = 300.0
"""How often the profiles stage looks for daily snapshots due."""
