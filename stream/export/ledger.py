"""The export ledger: one record per object on S3 (schemas/export_ledger.avsc).

The exporter writes a record after the object is complete on S3 and before it
commits the offsets the object holds. After a restart it reads the ledger back,
and an event of (partition, hour) is skipped when it is already inside an object:
- its batch is at or below the highest offset recorded for the pair (a re-read
  from the committed offset), or
- its source offset -- where it first entered Kafka -- is at or below the highest
  recorded for the pair and that source (a replay by an upstream stage that
  crashed between producing and committing, which re-sends the same events).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from stream.events import avro


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    destination: str
    project: int
    topic: str
    partition: int
    hour: int
    bucket: str
    key: str
    start_offset: int
    end_offset: int
    events: int
    marks: dict[str, int]
    bytes: int
    reason: str
    written_at: int

    def encode(self) -> bytes:
        return avro.encode("export_ledger", asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> LedgerRecord:
        return cls(**avro.decode("export_ledger", data))

    def message_key(self) -> bytes:
        return f"{self.destination}/{self.partition}".encode()


class LedgerIndex:
    """Per (partition, hour), the highest offset already inside a written object."""

    def __init__(self, records: Iterable[LedgerRecord] = ()):
        self._marks: dict[tuple[int, int], int] = {}
        self._sources: dict[tuple[int, int, str], int] = {}
        for r in records:
            self.add(r)

    def add(self, r: LedgerRecord) -> None:
        k = (r.partition, r.hour)
        if r.end_offset > self._marks.get(k, -1):
            self._marks[k] = r.end_offset
        for source, offset in r.marks.items():
            ks = (r.partition, r.hour, source)
            if offset > self._sources.get(ks, -1):
                self._sources[ks] = offset

    def source_mark(self, partition: int, hour: int, source: str) -> int:
        """The highest source offset of ``source`` among written events of (partition, hour), -1 if none."""
        return self._sources.get((partition, hour, source), -1)

    def written_through(self, partition: int, hour: int) -> int:
        """The highest offset of (partition, hour) in a written object, -1 if none."""
        return self._marks.get((partition, hour), -1)

    def hours(self, partition: int) -> set[int]:
        return {h for (p, h) in self._marks if p == partition}
