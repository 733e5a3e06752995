"""The export ledger: what each destination has written, on exports.ledger (schemas/export_ledger.avsc).

Four kinds of record, all keyed ``destination/partition``:

- ``object``: an object is complete on S3. Written after the upload and before
  the offsets the object holds are committed. After a restart an event of
  (partition, hour) is skipped when it is already inside an object: its batch is
  at or below the highest offset recorded for the pair (a re-read from the
  committed offset), or its source offset -- where it first entered Kafka -- is
  at or below the highest recorded for the pair and that source (a replay by an
  upstream stage that crashed between producing and committing, which re-sends
  the same events).
- ``seal``: every hour up to ``hour`` is closed on the partition; written after
  the objects of those hours. Once every partition sealed an hour, its
  ``_complete`` marker is due.
- ``marker``: the ``_complete`` marker of ``hour`` is on S3.
- ``error``: an upload failed (``reason``, ``detail``); the exporter retries it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import Enum

from stream.events import avro


class Kind(str, Enum):
    OBJECT = "object"
    SEAL = "seal"
    MARKER = "marker"
    ERROR = "error"
    CLAIM = "claim"            # a backfill takes hours over: events of them below its end offsets are its own
    CLAIM_ACK = "claim_ack"    # a live exporter of the destination honours a claim on a partition
    DELETED = "deleted"        # an object removed: a rebuild replaced its hour
    JOB = "job"                # a backfill's state and progress
    GAP = "gap"                # offsets of the partition lost to the topic's retention before they were exported
    NOTICE = "notice"          # a failure (or its resolution) was notified
    VERIFIED = "verified"      # an access verification and its outcome


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
    kind: str = Kind.OBJECT.value
    detail: str = ""
    group: str = ""

    def encode(self) -> bytes:
        return avro.encode("export_ledger", asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> LedgerRecord:
        return cls(**avro.decode("export_ledger", data))

    def message_key(self) -> bytes:
        return f"{self.destination}/{self.partition}".encode()

    @classmethod
    def seal(cls, destination: str, project: int, topic: str, partition: int, hour: int, bucket: str, reason: str,
             now_ms: int) -> LedgerRecord:
        return cls(destination, project, topic, partition, hour, bucket, "", -1, -1, 0, {}, 0, reason, now_ms,
                   Kind.SEAL.value)

    @classmethod
    def marker(cls, destination: str, project: int, topic: str, hour: int, bucket: str, key: str,
               now_ms: int) -> LedgerRecord:
        return cls(destination, project, topic, -1, hour, bucket, key, -1, -1, 0, {}, 0, "complete", now_ms,
                   Kind.MARKER.value)

    @classmethod
    def error(cls, destination: str, project: int, topic: str, partition: int, hour: int, bucket: str, key: str,
              reason: str, detail: str, now_ms: int) -> LedgerRecord:
        return cls(destination, project, topic, partition, hour, bucket, key, -1, -1, 0, {}, 0, reason, now_ms,
                   Kind.ERROR.value, detail)


class LedgerIndex:
    """What one destination's exporter needs of its ledger to skip what it already wrote.

    Per (partition, hour, group), the highest offset inside a written object and,
    per source, the highest source offset; per partition, the latest sealed hour.
    """

    def __init__(self, records: Iterable[LedgerRecord] = ()):
        self._marks: dict[tuple[int, int, str], int] = {}
        self._sources: dict[tuple[int, int, str, str], int] = {}
        self._sealed: dict[int, int] = {}
        self._objects: dict[str, LedgerRecord] = {}
        for r in records:
            self.add(r)

    def add(self, r: LedgerRecord) -> None:
        if r.kind == Kind.SEAL.value:
            if r.hour > self._sealed.get(r.partition, -1):
                self._sealed[r.partition] = r.hour
            return
        if r.kind != Kind.OBJECT.value:
            return
        self._objects[r.key] = r
        k = (r.partition, r.hour, r.group)
        if r.end_offset > self._marks.get(k, -1):
            self._marks[k] = r.end_offset
        for source, offset in r.marks.items():
            ks = (r.partition, r.hour, r.group, source)
            if offset > self._sources.get(ks, -1):
                self._sources[ks] = offset

    def source_mark(self, partition: int, hour: int, group: str, source: str) -> int:
        """The highest source offset of ``source`` among written events of (partition, hour, group), -1 if none."""
        return self._sources.get((partition, hour, group, source), -1)

    def written_through(self, partition: int, hour: int, group: str = "") -> int:
        """The highest offset of (partition, hour, group) in a written object, -1 if none."""
        return self._marks.get((partition, hour, group), -1)

    def sealed_through(self, partition: int) -> int | None:
        """The latest hour sealed on ``partition`` (every earlier hour is sealed too), None if none."""
        return self._sealed.get(partition)

    def object(self, key: str) -> LedgerRecord | None:
        """The latest record of the object ``key``, None if it was never written."""
        return self._objects.get(key)

    def hours(self, partition: int) -> set[int]:
        return {h for (p, h, _) in self._marks if p == partition}
