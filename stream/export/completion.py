"""A destination's ledger folded: which hours are complete, which markers are due, and the status view.

Pure: ``ExportBook.add`` takes ledger records in order (the exporter tails the
ledger topic, ``stream exports status`` reads it whole) and the rest are
questions about what they say. An hour is *sealed* once every partition of
events.accepted has sealed it; its ``_complete`` marker is then due, for every
hour from the destination's first object on, recent empty hours included --
which is how a reader tells an hour without events from an hour not yet exported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from stream.events.timefmt import HOUR_MS, hour_start
from stream.export.ledger import Kind, LedgerRecord

EMPTY_HOUR_MARKERS_MS = 48 * HOUR_MS
"""How far back hours without events get a marker: a destination that starts exporting data of long ago marks the
hours that hold it, not every empty hour since."""


def iso_hour(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


def iso_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


_HOURLY = frozenset({Kind.OBJECT.value, Kind.MARKER.value, Kind.ERROR.value})
"""Records that say something of one hour of the destination."""


@dataclass
class _Hour:
    objects: int = 0
    events: int = 0
    bytes: int = 0
    keys: dict[str, tuple[int, int]] = field(default_factory=dict)   # key -> (events, bytes) of its latest record
    marker: str | None = None
    last_error: LedgerRecord | None = None
    last_written_at: int = -1

    def put(self, key: str, events: int, size: int) -> None:
        """An object written under ``key``; a key written again (an object rebuilt after a crash or a move of its
        partition, whatever it holds now) counts once, as its latest record says: S3 holds the latest."""
        old = self.keys.get(key)
        if old is None:
            self.objects += 1
        else:
            self.events -= old[0]
            self.bytes -= old[1]
        self.keys[key] = (events, size)
        self.events += events
        self.bytes += size


class ExportBook:
    def __init__(self, destination: str, partitions: int):
        self.destination = destination
        self.partitions = partitions
        self.hours: dict[int, _Hour] = {}
        self.sealed: dict[int, int] = {}          # partition -> latest sealed hour
        self.first_hour: int | None = None        # of the first object: markers start there
        self.last_error: LedgerRecord | None = None
        self.last_written_at = -1
        self.gaps: list[LedgerRecord] = []         # offsets lost to the topic's retention (kind gap)

    def add(self, r: LedgerRecord) -> None:
        if r.destination != self.destination:
            return
        if r.kind == Kind.SEAL.value:
            if r.hour > self.sealed.get(r.partition, -1):
                self.sealed[r.partition] = r.hour
            return
        if r.kind == Kind.GAP.value:
            self.gaps.append(r)
            return
        if r.kind not in _HOURLY:
            return
        h = self.hours.setdefault(r.hour, _Hour())
        if r.kind == Kind.OBJECT.value:
            h.put(r.key, r.events, r.bytes)
            h.last_written_at = max(h.last_written_at, r.written_at)
            self.last_written_at = max(self.last_written_at, r.written_at)
            if self.first_hour is None or r.hour < self.first_hour:
                self.first_hour = r.hour
        elif r.kind == Kind.MARKER.value:
            h.marker = r.key
        elif r.kind == Kind.ERROR.value:
            h.last_error = r
            if self.last_error is None or r.written_at >= self.last_error.written_at:
                self.last_error = r

    def sealed_through(self) -> int | None:
        """The latest hour every partition has sealed, None until each has sealed one."""
        if self.partitions <= 0 or any(p not in self.sealed for p in range(self.partitions)):
            return None
        return min(self.sealed[p] for p in range(self.partitions))

    def markers_due(self, now_ms: int) -> list[int]:
        """Hours sealed on every partition whose marker is not written yet: each hour with objects, and each hour
        without from the first object's hour on, back to EMPTY_HOUR_MARKERS_MS before ``now_ms``."""
        through = self.sealed_through()
        if through is None or self.first_hour is None:
            return []
        with_objects = {h for h, book in self.hours.items() if book.objects}
        recent = range(max(self.first_hour, hour_start(now_ms - EMPTY_HOUR_MARKERS_MS)), through + 1, HOUR_MS)
        return sorted(h for h in with_objects.union(recent)
                      if h <= through and (h not in self.hours or self.hours[h].marker is None))

    def failing(self) -> bool:
        """The latest thing the ledger says of this destination is a failed upload."""
        return self.last_error is not None and self.last_error.written_at > self.last_written_at

    def status(self, hours: int = 48) -> dict[str, Any]:
        """The status view of the destination: its partitions' seals and its latest ``hours`` hours."""
        through = self.sealed_through()
        listed = sorted(self.hours, reverse=True)[:hours]
        return {
            "destination": self.destination,
            "state": "failing" if self.failing() else "ok",
            "sealed_through": iso_hour(through) if through is not None else None,
            "partitions": {str(p): iso_hour(self.sealed[p]) if p in self.sealed else None
                           for p in range(self.partitions)},
            "last_error": _error(self.last_error),
            "data_lost": [{"at": iso_ms(g.written_at), "partition": g.partition, "first_offset": g.start_offset,
                           "last_offset": g.end_offset, "detail": g.detail} for g in reversed(self.gaps[-20:])],
            "hours": [{
                "hour": iso_hour(h),
                "state": "sealed" if through is not None and h <= through else "open",
                "complete_marker": self.hours[h].marker,
                "objects": self.hours[h].objects,
                "events": self.hours[h].events,
                "bytes": self.hours[h].bytes,
                "last_error": _error(self.hours[h].last_error),
            } for h in listed],
        }


def _error(r: LedgerRecord | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"at": iso_ms(r.written_at), "reason": r.reason, "detail": r.detail, "key": r.key,
            "partition": r.partition}
