"""The ingest stage's record of the server times it replaced, so that a replay replaces them the same way.

A server time ahead of the ingest clock by more than ``ingest.max_clock_skew_s`` is replaced by the ingest
clock (``normalize.clamp_server_time``). The clock is not a function of the input: a record replayed after a
crash (read again from the last committed offset) would be stamped with a later clock, possibly in another
hour, and its event exported twice (once in each hour). So before the batches holding replaced times are
produced, the ingest stage appends one record per source partition to the ``ingest_clamps`` topic: the offsets
it replaced and the clock it used. A replay reads them back and uses the same clock for those offsets; a record
the first pass did not replace is not replaced on a replay either, as the clock has only moved on.

Records are JSON: ``{"topic": "events.ingest", "partition": 3, "clamps": [[offset, clock_ms], ...]}``, keyed by
``topic[partition]``. Clamping is rare (a producer whose clock is ahead), so the topic is usually empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson


def encode(topic: str, partition: int, clamps: Mapping[int, int]) -> tuple[bytes, bytes]:
    """(message key, value) recording ``clamps`` (offset -> clock) of ``topic[partition]``."""
    return (f"{topic}[{partition}]".encode(),
            orjson.dumps({"topic": topic, "partition": partition, "clamps": sorted(clamps.items())}))


class ClampIndex:
    """The replaced times of one source topic's partitions: offset -> the clock used, per partition."""

    def __init__(self, topic: str):
        self.topic = topic
        self.by_partition: dict[int, dict[int, int]] = {}

    def load(self, values: Iterable[bytes], partitions: Iterable[int]) -> int:
        """Take the records of ``partitions`` (replacing what was known of them); returns how many clamps."""
        wanted = set(partitions)
        for p in wanted:
            self.by_partition[p] = {}
        n = 0
        for value in values:
            r = orjson.loads(value)
            if r["topic"] == self.topic and r["partition"] in wanted:
                for offset, clock in r["clamps"]:
                    self.by_partition[r["partition"]][offset] = clock
                    n += 1
        return n

    def add(self, partition: int, clamps: Mapping[int, int]) -> None:
        self.by_partition.setdefault(partition, {}).update(clamps)

    def of(self, partition: int) -> Mapping[int, int]:
        return self.by_partition.get(partition, {})

    def prune(self, partition: int, committed: int) -> None:
        """Offsets below the committed offset are never read again."""
        known = self.by_partition.get(partition)
        if known:
            for offset in [o for o in known if o < committed]:
                del known[offset]
