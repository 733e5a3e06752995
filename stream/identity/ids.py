"""amplitude_id allocation without a central counter.

Each events.valid partition p keeps its own counter in its identity state and
allocates ``counter * ID_PARTITION_SLOTS + p`` (counter from 1, so the smallest
id is 1024 + p). Ids of two partitions never collide (their remainders differ),
a partition's counter only grows, and it is written in the same RocksDB batch
(and changelog record) as the device that took the id, so an id is never handed
out twice -- also after a restart, when the counter is restored with the state.
A replay of a batch after a crash rolls its writes back first (the journal,
``stream.identity.device``) and so allocates the same ids to the same devices.
Ids fit a signed 64-bit integer for 2^53 allocations per partition.
"""

from __future__ import annotations

ID_PARTITION_SLOTS = 1024
"""Partitions the id scheme tells apart (topics.partitions is capped at 999)."""


def allocate(counter: int, partition: int) -> tuple[int, int]:
    """(the new id, the counter after it) for a partition whose counter is ``counter`` (0 when none was used)."""
    if not 0 <= partition < ID_PARTITION_SLOTS:
        raise ValueError(f"partition {partition} does not fit the id scheme (0..{ID_PARTITION_SLOTS - 1})")
    counter += 1
    return counter * ID_PARTITION_SLOTS + partition, counter


def partition_of(amplitude_id: int) -> int:
    """The events.valid partition that allocated an id."""
    return amplitude_id % ID_PARTITION_SLOTS
