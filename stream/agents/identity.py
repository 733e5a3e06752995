"""The identity stage's wiring: its table, the device side for the dedupe agent, and the user-side agent.

The engines, and why a new (device, user) pair's first rows are held, are in ``stream.identity.stage``.
"""

from __future__ import annotations

from collections.abc import Callable

import faust
from faust.types import TP

from stream.agents.contiguous import Contiguous, read_range
from stream.agents.deadletters import keep_undecodable
from stream.clock import Clock
from stream.identity.stage import DeviceStage, UserStage
from stream.identity.table import IdentityTable
from stream.kafka import client_args
from stream.settings import Settings
from stream.topics import identity_changelog

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def add_table(app: faust.App, settings: Settings) -> IdentityTable:
    t = settings.topics
    # one record per key written: compacted, it keeps about one record per live key (stream.identity.table)
    changelog = app.topic(identity_changelog(settings), partitions=t.partitions, internal=True, retention=None,
                          compacting=True, deleting=False, **RAW)
    return app.tables.add(IdentityTable(
        app, name="identity", partitions=t.partitions, changelog_topic=changelog,
        help="devices, (device, user) pairs, users, profiles, groups",
        options={"bloom_filter_size": 10, "block_cache_size": settings.identity.block_cache_mb << 20,
                 "write_buffer_size": settings.identity.write_buffer_mb << 20, "max_write_buffer_number": 2},
        key_type=bytes, value_type=bytes))


def device_stage(app: faust.App, settings: Settings, clock: Clock, table: IdentityTable, accepted: faust.TopicT,
                 links: faust.TopicT, dead: faust.TopicT, valid_name: str) -> DeviceStage:
    """The device side of the dedupe agent, sending to events.accepted, identity.links and the dead letters."""
    async def send_accepted(value: bytes, partition: int):
        return await accepted.send(value=value, partition=partition)

    async def send_links(value: bytes, partition: int):
        return await links.send(value=value, partition=partition)

    async def send_dead(value: bytes):
        return await dead.send(value=value)

    kafka = client_args(settings.kafka)

    async def read_valid(partition: int, first: int, end: int) -> list[tuple[int, bytes]]:
        """Held rows are read back from events.valid when they are no longer in memory (after a restart)."""
        return [(r.message.offset, r.value) for r in await read_range(kafka, valid_name, partition, first, end)]

    stage = DeviceStage(table, clock, send_accepted, send_links, send_dead, valid_name,
                        committed_offsets(app, valid_name), partitions=settings.topics.partitions,
                        hold_s=settings.identity.hold_s, max_properties_bytes=settings.identity.max_properties_bytes,
                        max_request_bytes=settings.kafka.max_request_bytes, read_valid=read_valid)

    app.identity_device = stage     # the cohorts stage of the same worker rekeys what it hands over (``on_accepted``)

    @app.on_partitions_revoked.connect
    async def _forget_held_rows(sender, revoked, **kwargs) -> None:
        """The rows kept in memory for the partitions' holds: another worker may let them go now."""
        stage.held.forget({tp.partition for tp in revoked if tp.topic == valid_name})

    return stage


def register(app: faust.App, settings: Settings, table: IdentityTable, valid: faust.TopicT,
             links: faust.TopicT, dead: faust.TopicT) -> None:
    """The user side: an agent on identity.links that adopts or merges, and sends merges and remaps."""
    merges = app.topic(settings.topics.name("identity_merges"), partitions=1, **RAW)
    links_name = links.get_topic_name()

    async def send_valid(value: bytes, partition: int):
        return await valid.send(value=value, partition=partition)

    async def send_merges(value: bytes, partition: int):
        return await merges.send(value=value, partition=partition)

    async def dead_letter(event, exc: Exception) -> None:
        await keep_undecodable(dead, event, exc, "identity", settings.kafka.max_request_bytes)

    stage = UserStage(table, send_valid, send_merges, dead_letter, links_name, answer=settings.identity.hold_s > 0)
    gaps = Contiguous(app, links_name, client_args(settings.kafka), "identity")

    @app.agent(links, name="identity-users")
    async def users(stream: faust.StreamT) -> None:
        """Per links message: the user side (``stream.identity.stage.UserStage``)."""
        await gaps.each(stream, stage.handle)


def committed_offsets(app: faust.App, topic: str) -> Callable[[int], int | None]:
    """The committed offset of ``topic[partition]`` as faust's consumer last committed or read it (None: none yet).

    faust keeps it in a private attribute; if a faust version moves it, reading it raises, which the caller
    reports (``stream_identity_journal_prune_failures_total``) rather than treating as "nothing committed yet".
    """
    def committed(partition: int) -> int | None:
        return app.consumer._committed_offset.get(TP(topic, partition))
    return committed
