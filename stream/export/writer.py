"""The open objects of one partition of one destination, and which of them to close.

No Kafka and no S3 here: the export agent feeds batches in offset order, uploads
what ``add``/``tick`` hand back, records them in the ledger, and commits
``committable()``. Each object covers a contiguous run of its hour's batches;
its key comes from (partition, hour, first offset) through ``key_for``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stream.export.format import GzipLinesSpool
from stream.export.ledger import LedgerIndex
from stream.export.rotation import CloseReason, hour_close_reason, size_reached


@dataclass(slots=True)
class _Open:
    hour: int
    start_offset: int
    end_offset: int
    opened_latest_ms: int
    spool: GzipLinesSpool
    marks: dict[str, int]


@dataclass(frozen=True, slots=True)
class ClosedObject:
    partition: int
    hour: int
    key: str
    start_offset: int
    end_offset: int
    events: int
    raw_bytes: int
    size: int
    path: Path
    reason: CloseReason
    marks: dict[str, int]      # per source, the highest source offset among its events


class PartitionWriter:
    def __init__(self, partition: int, key_for: Callable[[int, int, int], str], spool_dir: Path,
                 ledger: LedgerIndex, max_object_bytes: int, grace_ms: int):
        self.partition = partition
        self._key_for = key_for
        self._spool_dir = spool_dir
        self._ledger = ledger
        self._max_bytes = max_object_bytes
        self._grace_ms = grace_ms
        self._open: dict[int, _Open] = {}
        self._pending: dict[str, int] = {}     # closed, not yet written: key -> start offset
        self._next_offset: int | None = None
        self._marks: dict[tuple[int, str], int] = {}   # (hour, source) -> highest source offset taken
        self.latest_event_ms = -1
        self.skipped_events = 0

    def add(self, offset: int, hour: int, blob: bytes, count: int, latest_ms: int, source: str,
            source_offsets: list[int]) -> list[ClosedObject]:
        """Take one batch at ``offset`` (``count`` rows joined by newlines, with their source offsets);
        return the objects to upload now."""
        self._next_offset = offset + 1
        if offset <= self._ledger.written_through(self.partition, hour):
            self.skipped_events += count   # already inside a written object (a re-read)
            return []
        mark = self._mark(hour, source)
        lo, hi = min(source_offsets), max(source_offsets)
        if hi <= mark:
            self.skipped_events += count   # an upstream replay of events already taken
            return []
        if lo <= mark:                     # partly a replay: keep the events past the mark
            kept = [ln for ln, o in zip(blob.split(b"\n"), source_offsets) if o > mark]
            self.skipped_events += count - len(kept)
            blob, count = b"\n".join(kept), len(kept)
        self._marks[(hour, source)] = hi
        obj = self._open.get(hour)
        if obj is None:
            path = self._spool_dir / f"p{self.partition}-h{hour}-o{offset}.json.gz.part"
            obj = self._open[hour] = _Open(hour, offset, offset, self.latest_event_ms, GzipLinesSpool(path), {})
        obj.spool.write_rows(blob, count)
        obj.end_offset = offset
        obj.marks[source] = hi
        closed = []
        if size_reached(obj.spool.raw_bytes, self._max_bytes):
            closed.append(self._close(hour, CloseReason.SIZE))
        self.latest_event_ms = max(self.latest_event_ms, latest_ms)
        return closed + self.tick(now_ms=-1, idle=False)

    def use_ledger(self, ledger: LedgerIndex) -> None:
        """A fresher reading of the ledger (after a rebalance: other workers may have written)."""
        self._ledger = ledger

    def _mark(self, hour: int, source: str) -> int:
        mark = self._marks.get((hour, source))
        if mark is None:
            mark = self._marks[(hour, source)] = self._ledger.source_mark(self.partition, hour, source)
        return mark

    def skip(self, offset: int) -> None:
        """A batch this destination does not export (another project) was read at ``offset``."""
        self._next_offset = offset + 1

    def tick(self, now_ms: int, idle: bool) -> list[ClosedObject]:
        """Close the hours that are over (see ``rotation``)."""
        due = [(h, r) for h, o in sorted(self._open.items())
               if (r := hour_close_reason(h, o.opened_latest_ms, self.latest_event_ms, idle, now_ms,
                                          self._grace_ms)) is not None]
        return [self._close(h, r) for h, r in due]

    def _close(self, hour: int, reason: CloseReason) -> ClosedObject:
        obj = self._open.pop(hour)
        size = obj.spool.close()
        key = self._key_for(hour, self.partition, obj.start_offset)
        self._pending[key] = obj.start_offset
        return ClosedObject(self.partition, hour, key, obj.start_offset, obj.end_offset, obj.spool.events,
                            obj.spool.raw_bytes, size, obj.spool.path, reason, obj.marks)

    def written(self, obj: ClosedObject) -> None:
        """``obj`` is on S3 and in the ledger: its offsets may be committed."""
        self._pending.pop(obj.key, None)

    def committable(self) -> int | None:
        """The offset to commit: everything below it is in a written object or exports nothing."""
        starts = [o.start_offset for o in self._open.values()] + list(self._pending.values())
        if starts:
            return min(starts)
        return self._next_offset

    def open_hours(self) -> list[int]:
        return sorted(self._open)

    def discard(self) -> None:
        """Drop the open objects (partition revoked or worker stopping): a replay rebuilds them."""
        for obj in self._open.values():
            obj.spool.discard()
        self._open.clear()
