"""Kafka's default partitioner on the partition key (murmur2), as producers keyed by device_id use."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


_MEMOS: dict[int, dict[str, int]] = {}
"""Per partition count, the partitions of the keys seen (at most MEMO_KEYS each: cleared when full)."""
MEMO_KEYS = 1_000_000


def partition_memo(partitions: int) -> dict[str, int]:
    """``partition_for``'s memo for ``partitions`` (key -> partition), for a caller that looks up many keys: a key
    found there is ``partition_for``'s answer; a key missing goes through ``partition_for``, which adds it."""
    memo = _MEMOS.get(partitions)
    if memo is None:
        memo = _MEMOS[partitions] = {}
    return memo


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a message keyed by ``key``.

    Same as the Java client and aiokafka: ``(murmur2(key) & 0x7fffffff) % partitions``.
    """
    memo = partition_memo(partitions)
    p = memo.get(key)
    if p is None:
        if len(memo) >= MEMO_KEYS:
            memo.clear()
        p = memo[key] = (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
    return p


def partition_of(key: bytes, partitions: int) -> int:
    """``partition_for`` of a key already in bytes (the mirror's keys: a project number, then an insert_id)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
