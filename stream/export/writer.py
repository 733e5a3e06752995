"""The open objects of one partition of one destination, which of them to close, and which hours are sealed.

No Kafka and no S3 here: the export agent feeds batches in offset order, uploads
what ``add``/``tick`` hand back, records them in the ledger, then asks
``seal_due`` whether the partition has finished more hours, and commits
``committable()``. Each object covers a contiguous run of one (hour, group)'s
batches -- the group is how the layout splits an hour ("" for Amplitude's, the
source id for Segment's) -- and its key comes from (hour, group, partition,
first offset) through ``key_for``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stream.events.timefmt import HOUR_MS
from stream.export.format import GzipLinesSpool
from stream.export.ledger import LedgerIndex
from stream.export.rotation import CloseReason, hour_close_reason, rotation_reason, sealed_hour

KeyFor = Callable[[int, str, int, int], str]
"""(hour, group, partition, start offset) -> object key."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_object_bytes: int
    max_object_events: int
    grace_ms: int


@dataclass(slots=True)
class _Open:
    hour: int
    group: str
    start_offset: int
    end_offset: int
    opened_latest_ms: int
    earliest_ms: int
    straggler: bool            # opened for an hour the partition had already sealed
    spool: GzipLinesSpool
    marks: dict[str, int]


@dataclass(frozen=True, slots=True)
class ClosedObject:
    partition: int
    hour: int
    group: str
    key: str
    start_offset: int
    end_offset: int
    events: int
    raw_bytes: int
    size: int
    path: Path
    reason: CloseReason
    marks: dict[str, int]      # per source, the highest source offset among its events
    earliest_ms: int           # the oldest server_upload_time among its events
    straggler: bool


class PartitionWriter:
    def __init__(self, partition: int, key_for: KeyFor, spool_dir: Path, ledger: LedgerIndex, limits: Limits,
                 first_key_for: KeyFor | None = None):
        self.partition = partition
        self._key_for = key_for
        # the key of an hour's first object, for layouts that name it apart (merged-IDs files): the first object
        # of (hour, group) closed here, with none in the ledger -- facts of the data and the ledger, so a replay
        # names an object as it was named before (a straggler of an hour sealed without objects is its first)
        self._first_key_for = first_key_for
        self._closed: set[tuple[int, str]] = set()
        self._spool_dir = spool_dir
        self._ledger = ledger
        self._limits = limits
        self._open: dict[tuple[int, str], _Open] = {}
        self._pending: dict[str, ClosedObject] = {}     # closed, not yet written: key -> object
        self._next_offset: int | None = None
        self._marks: dict[tuple[int, str, str], int] = {}   # (hour, group, source) -> highest source offset taken
        self.latest_event_ms = -1
        self.skipped_events = 0
        self.sealed_through: int | None = ledger.sealed_through(partition)

    def add(self, offset: int, hour: int, group: str, blob: bytes, count: int, earliest_ms: int, latest_ms: int,
            source: str, source_offsets: list[int]) -> list[ClosedObject]:
        """Take one batch at ``offset`` (``count`` rows joined by newlines, with their source offsets);
        return the objects to upload now."""
        self._next_offset = offset + 1
        if offset <= self._ledger.written_through(self.partition, hour, group):
            self.skipped_events += count   # already inside a written object (a re-read)
            return []
        mark = self._mark(hour, group, source)
        lo, hi = min(source_offsets), max(source_offsets)
        if hi <= mark:
            self.skipped_events += count   # an upstream replay of events already taken
            return []
        if lo <= mark:                     # partly a replay: keep the events past the mark
            kept = [ln for ln, o in zip(blob.split(b"\n"), source_offsets) if o > mark]
            self.skipped_events += count - len(kept)
            blob, count = b"\n".join(kept), len(kept)
        self._marks[(hour, group, source)] = hi
        obj = self._open.get((hour, group))
        if obj is None:
            path = self._spool_dir / f"p{self.partition}-h{hour}-g{group}-o{offset}.json.gz.part"
            straggler = self.sealed_through is not None and hour <= self.sealed_through
            obj = self._open[(hour, group)] = _Open(hour, group, offset, offset, self.latest_event_ms, earliest_ms,
                                                    straggler, GzipLinesSpool(path), {})
        obj.spool.write_rows(blob, count)
        obj.end_offset = offset
        obj.earliest_ms = min(obj.earliest_ms, earliest_ms)
        obj.marks[source] = hi
        closed = []
        lim = self._limits
        if (why := rotation_reason(obj.spool.raw_bytes, obj.spool.events, lim.max_object_bytes,
                                   lim.max_object_events)) is not None:
            closed.append(self._close((hour, group), why))
        self.latest_event_ms = max(self.latest_event_ms, latest_ms)
        return closed + self.tick(now_ms=-1, idle=False)

    def use_ledger(self, ledger: LedgerIndex) -> None:
        """A fresher reading of the ledger (after a rebalance: other workers may have written)."""
        self._ledger = ledger
        theirs = ledger.sealed_through(self.partition)
        if theirs is not None and (self.sealed_through is None or theirs > self.sealed_through):
            self.sealed_through = theirs

    def _mark(self, hour: int, group: str, source: str) -> int:
        mark = self._marks.get((hour, group, source))
        if mark is None:
            mark = self._marks[(hour, group, source)] = self._ledger.source_mark(self.partition, hour, group, source)
        return mark

    def skip(self, offset: int) -> None:
        """A batch this destination does not export (another project) was read at ``offset``."""
        self._next_offset = offset + 1

    def tick(self, now_ms: int, idle: bool) -> list[ClosedObject]:
        """Close the objects whose hour is over (see ``rotation``)."""
        due = [(k, r) for k, o in sorted(self._open.items())
               if (r := hour_close_reason(o.hour, o.opened_latest_ms, self.latest_event_ms, idle, now_ms,
                                          self._limits.grace_ms)) is not None]
        return [self._close(k, r) for k, r in due]

    def _close(self, k: tuple[int, str], reason: CloseReason) -> ClosedObject:
        obj = self._open.pop(k)
        size = obj.spool.close()
        key = self._key_for(obj.hour, obj.group, self.partition, obj.start_offset)
        if self._first_key_for is not None:
            if k not in self._closed and self._ledger.written_through(self.partition, obj.hour, obj.group) < 0:
                key = self._first_key_for(obj.hour, obj.group, self.partition, obj.start_offset)
            self._closed.add(k)
        closed = ClosedObject(self.partition, obj.hour, obj.group, key, obj.start_offset, obj.end_offset,
                              obj.spool.events, obj.spool.raw_bytes, size, obj.spool.path, reason, obj.marks,
                              obj.earliest_ms, obj.straggler)
        self._pending[key] = closed
        return closed

    def close_open(self, reason: CloseReason, hour: int | None = None) -> list[ClosedObject]:
        """Close the open objects (of ``hour`` only, when given) now: a backfill's cut points and range end."""
        return [self._close(k, reason) for k in sorted(self._open) if hour is None or k[0] == hour]

    def written(self, obj: ClosedObject) -> None:
        """``obj`` is on S3 and in the ledger: its offsets may be committed."""
        self._pending.pop(obj.key, None)

    def seal_due(self, now_ms: int, idle: bool) -> tuple[int, CloseReason] | None:
        """The hour up to which the partition is newly sealed, and why; None if nothing more is.

        Called after the objects ``tick`` closed are written: an hour is sealed only
        once no object of it (other than a straggler's) is open or unwritten.
        """
        due = sealed_hour(self.latest_event_ms, idle, now_ms, self._limits.grace_ms)
        if due is None:
            return None
        hour, reason = due
        for o in [*self._open.values(), *self._pending.values()]:
            if not o.straggler and o.hour <= hour:
                hour = o.hour - HOUR_MS
        if self.sealed_through is not None and hour <= self.sealed_through:
            return None
        return hour, reason

    def sealed(self, hour: int) -> None:
        """The seal of every hour up to ``hour`` is in the ledger."""
        self.sealed_through = hour

    def committable(self) -> int | None:
        """The offset to commit: everything below it is in a written object or exports nothing."""
        starts = [o.start_offset for o in self._open.values()] + [o.start_offset for o in self._pending.values()]
        if starts:
            return min(starts)
        return self._next_offset

    def oldest_unwritten_ms(self) -> int | None:
        """The oldest server_upload_time among the events taken but not yet on S3, None if there are none."""
        times = [o.earliest_ms for o in self._open.values()] + [o.earliest_ms for o in self._pending.values()]
        return min(times) if times else None

    def open_starts(self) -> list[tuple[int, int]]:
        """(hour, first offset) of each open object."""
        return [(o.hour, o.start_offset) for o in self._open.values()]

    def open_hours(self) -> list[int]:
        return sorted({h for h, _ in self._open})

    def discard(self) -> None:
        """Drop the open objects (partition revoked or worker stopping): a replay rebuilds them."""
        for obj in self._open.values():
            obj.spool.discard()
        self._open.clear()
