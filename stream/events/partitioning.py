"""Kafka's default partitioner on the partition key (murmur2), as producers keyed by device_id use."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for(key: str, partitions: int, _cache: dict[tuple[str, int], int] = {}) -> int:  # noqa: B006
    """The partition Kafka's default partitioner gives a message keyed by ``key``.

    Same as the Java client and aiokafka: ``(murmur2(key) & 0x7fffffff) % partitions``.
    """
    p = _cache.get((key, partitions))
    if p is None:
        if len(_cache) > 1_000_000:
            _cache.clear()
        p = _cache[(key, partitions)] = (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
    return p


def partition_of(key: bytes, partitions: int) -> int:
    """``partition_for`` of a key already in bytes (the mirror's keys: a project number, then an insert_id)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
