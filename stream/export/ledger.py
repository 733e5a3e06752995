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

Backfills and operations add, with their facts as JSON in ``detail``:

- ``claim`` (``{"job", "hours", "ends": {partition: end offset}}``): a backfill rebuilds these hours from the
  events below each partition's end offset; live exporters skip those events of those hours from then on
  (``LedgerIndex.written_through``), and answer with a ``claim_ack`` (``{"job", "partitions"}``) once every
  object they had open for those hours is dropped;
- ``deleted`` (``{"job"}``): an object of a rebuilt hour that the rebuild's objects replace, removed from S3;
- ``job``: a backfill's state and progress (``stream.export.backfill``); objects and markers it wrote carry
  ``{"job"}`` too;
- ``gap``: offsets the topic's retention deleted before they were exported (a sentence);
- ``notice`` (``{"incident", "channels"}``): a failure notification sent (``reason`` failing or resolved);
- ``verified``: an access verification (``reason`` ok or failed, the problem in ``detail``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import Enum

import orjson

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


@dataclass(frozen=True)
class Claim:
    """A backfill's claim: its job, the hours it rebuilds, and per partition the end offset below which it writes
    their events (the live exporter writes those at or past it)."""

    job: str
    hours: tuple[int, ...]
    ends: dict[int, int]

    def record(self, destination: str, project: int, topic: str, bucket: str, now_ms: int) -> LedgerRecord:
        detail = orjson.dumps({"job": self.job, "hours": list(self.hours),
                               "ends": {str(p): e for p, e in self.ends.items()}}).decode()
        return LedgerRecord(destination, project, topic, -1, min(self.hours), bucket, "", -1, -1, 0, {}, 0, "claim",
                            now_ms, Kind.CLAIM.value, detail)

    @classmethod
    def of(cls, r: LedgerRecord) -> Claim:
        d = orjson.loads(r.detail)
        return cls(d["job"], tuple(d["hours"]), {int(p): e for p, e in d["ends"].items()})


def facts(r: LedgerRecord) -> dict:
    """The JSON facts of a record whose ``detail`` holds them (claim_ack, deleted, job, notice; objects and markers
    a backfill wrote); {} for the others."""
    return orjson.loads(r.detail) if r.detail.startswith("{") else {}


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
        self._claimed: dict[tuple[int, int], int] = {}     # (partition, hour) -> last offset a backfill took over
        for r in records:
            self.add(r)

    def add(self, r: LedgerRecord) -> None:
        if r.kind == Kind.CLAIM.value:
            claim = Claim.of(r)
            for p, end in claim.ends.items():
                for h in claim.hours:
                    self._claimed[(p, h)] = max(self._claimed.get((p, h), -1), end - 1)
            return
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
        """The highest offset of (partition, hour, group) in a written object, -1 if none; a backfill's claim of the
        hour counts as written up to its end offset (the backfill writes what lies below it)."""
        return max(self._marks.get((partition, hour, group), -1), self._claimed.get((partition, hour), -1))

    def sealed_through(self, partition: int) -> int | None:
        """The latest hour sealed on ``partition`` (every earlier hour is sealed too), None if none."""
        return self._sealed.get(partition)

    def object(self, key: str) -> LedgerRecord | None:
        """The latest record of the object ``key``, None if it was never written."""
        return self._objects.get(key)

    def hours(self, partition: int) -> set[int]:
        return {h for (p, h, _) in self._marks if p == partition}
