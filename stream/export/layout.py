"""Where an object goes: Amplitude's key layout, derived from the data alone.

``<prefix><project>/<project>_<yyyy-MM-dd>_<H>#<n>.json.gz`` (FORMATS.md §1.2)
with the hour of server_upload_time in UTC, unpadded. ``n`` encodes the Kafka
partition and the first offset the object holds, ``n = start_offset * 1000 +
partition``, so an object rebuilt after a crash gets the same key and
overwrites instead of duplicating; the first objects of a fresh topic are
``#0``, ``#1``... one per partition, as Amplitude's own files are numbered.
"""

from __future__ import annotations

from stream.events.timefmt import hour_label

PARTITION_SLOTS = 1000
"""Partitions the key number can tell apart (topics.partitions is capped below it)."""


def object_number(partition: int, start_offset: int) -> int:
    if not 0 <= partition < PARTITION_SLOTS:
        raise ValueError(f"partition {partition} does not fit the key number (0..{PARTITION_SLOTS - 1})")
    return start_offset * PARTITION_SLOTS + partition


def amplitude_key(prefix: str, project: int, hour_ms: int, partition: int, start_offset: int) -> str:
    """The key of the object of ``project``'s hour starting at ``start_offset`` of ``partition``."""
    day, hour = hour_label(hour_ms)
    return f"{prefix}{project}/{project}_{day}_{hour}#{object_number(partition, start_offset)}.json.gz"


def parse_number(n: int) -> tuple[int, int]:
    """(partition, start offset) of a key number."""
    return n % PARTITION_SLOTS, n // PARTITION_SLOTS
