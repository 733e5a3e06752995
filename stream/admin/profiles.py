"""A user's profile as the admin API and the console show it: read from the profiles table's changelog.

The worker that answers may not own the user's partition (or run the profiles stage at all), so the profile is
read from Kafka, not from a local table: the changelog (``stream.topics.profiles_changelog``) is compacted and
keyed like the table, and the partition of a key is ``stream.imports.profiles.partition`` of it, as the importer
produced its mutations there and the stage writes the changelog on the partition of the mutation it applied. The
partition is read from its beginning up to its end offset as it is when the lookup starts (``stream.kafka.to_end``:
a slow broker makes the lookup slower, not short) and the latest record of the key is the profile
(``stream.imports.profiles.latest``). A broker that fetches nothing for ``STALL_S`` raises
``stream.kafka.ReadStalled`` (the API answers 503).

Cost: one lookup reads a whole partition of the changelog, about (users with a profile) / topics.partitions
records once compaction has run (more between compactions: every profile written since): a lookup for support and
checks, not for a hot path.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.imports import profiles
from stream.imports.profiles import Profile
from stream.kafka import client_args, partitions, records_to_end, stop_all
from stream.settings import Settings
from stream.topics import profiles_changelog

STALL_S = 20.0
"""How long a lookup waits for the broker to fetch anything before it gives up (``ReadStalled``)."""


async def read_profile(settings: Settings, project: int, user_id: str, poll_ms: int = 1000,
                       stall_s: float = STALL_S, **consumer: Any) -> Profile | None:
    """The user's stored profile (a deleted one too, as its tombstone), or None when none was ever set;
    ``consumer``: more aiokafka consumer settings."""
    k = profiles.key(project, user_id)
    tp = TopicPartition(profiles_changelog(settings), profiles.partition(k, settings.topics.partitions))
    c = AIOKafkaConsumer(**{**client_args(settings.kafka), "enable_auto_commit": False, "group_id": None,
                            **consumer})
    await c.start()
    try:
        if tp.partition not in await partitions(c, tp.topic):
            return None     # nothing applied yet: the stage has not created its changelog
        c.assign([tp])
        await c.seek_to_beginning(tp)
        records: list[tuple[bytes | None, bytes | None]] = []
        async for r in records_to_end(c, poll_ms, stall_s):
            if r.key == k:
                records.append((r.key, r.value))
        return profiles.latest(records, k)
    finally:
        await stop_all(c)


def profile_doc(project: int, user_id: str, p: Profile) -> dict[str, Any]:
    """The admin API's answer for a stored profile that is not deleted."""
    modified_ms, file, row = p.seq
    return {"project": project, "user_id": user_id, "user_properties": p.properties,
            "updated_ms": p.changed_ms, "set_by": {"file": file, "row": row, "file_modified_ms": modified_ms}}
