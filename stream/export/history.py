"""The export history of a destination, hour by hour and job by job, from its ledger records (pure).

Each hour of a destination has been exported by the live exporter and, perhaps, rebuilt by backfill jobs. For
each (hour, job) the history says: its status, the objects, events and bytes it wrote (an object written again
under its key counts once, as its latest record says), when it started and ended, how long that took, how long
after the hour's end the hour was done, how many uploads failed on the way, and its last error with the missing
permission. Objects a later rebuild removed are counted as ``replaced``.

The live job's status: ``complete`` once the hour's ``_complete`` marker (or, for layouts without markers, its
seal on every partition) is recorded, ``failing`` when its latest record is a failed upload, else ``open``. A
backfill job's status is its latest ``job`` record's state (``running``, ``done``, ``cancelled``, ``failed``),
and ``interrupted`` when it is running but has said nothing for ``STALE_MS``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.events.timefmt import HOUR_MS
from stream.export.completion import iso_hour, iso_ms
from stream.export.ledger import Kind, LedgerRecord

LIVE = "live"
STALE_MS = 60_000
"""A running backfill reports its progress every few seconds: one silent this long is no longer running."""


@dataclass
class _Job:
    objects: dict[str, tuple[int, int]] = field(default_factory=dict)   # key -> (events, bytes), latest record
    replaced: set[str] = field(default_factory=set)
    started: int | None = None
    ended: int | None = None
    failures: int = 0
    last_error: LedgerRecord | None = None
    marker: str | None = None
    state: str | None = None

    def saw(self, at: int) -> None:
        self.started = at if self.started is None else min(self.started, at)
        self.ended = at if self.ended is None else max(self.ended, at)


def job_of(r: LedgerRecord) -> str:
    """The job a record belongs to: a backfill's id (an object's ``detail``), else the live exporter."""
    if r.kind in (Kind.OBJECT.value, Kind.MARKER.value) and r.detail.startswith("{"):
        return orjson.loads(r.detail).get("job") or LIVE
    return LIVE


def history(records: Iterable[LedgerRecord], hours: int = 48, now_ms: int = 0,
            partitions: int = 1) -> list[dict[str, Any]]:
    """The latest ``hours`` hours that have records, latest first, each with its jobs (see the module)."""
    by_hour: dict[int, dict[str, _Job]] = {}
    sealed: dict[int, int] = {}
    jobs: dict[str, dict[str, Any]] = {}       # backfill id -> its latest job record's facts
    job_seen: dict[str, int] = {}
    for r in records:
        kind = r.kind
        if kind == Kind.SEAL.value:
            sealed[r.partition] = max(sealed.get(r.partition, -1), r.hour)
            continue
        if kind == Kind.JOB.value:
            facts = orjson.loads(r.detail)
            jobs[facts["job"]] = facts
            job_seen[facts["job"]] = r.written_at
            for h in facts.get("hours_written", []):
                by_hour.setdefault(h, {}).setdefault(facts["job"], _Job()).saw(r.written_at)
            continue
        if kind not in (Kind.OBJECT.value, Kind.MARKER.value, Kind.ERROR.value, Kind.DELETED.value) or r.hour < 0:
            continue
        hour_jobs = by_hour.setdefault(r.hour, {})
        if kind == Kind.DELETED.value:
            for j in hour_jobs.values():
                if r.key in j.objects:
                    j.replaced.add(r.key)
            continue
        j = hour_jobs.setdefault(job_of(r), _Job())
        j.saw(r.written_at)
        if kind == Kind.OBJECT.value:
            j.objects[r.key] = (r.events, r.bytes)
            j.replaced.discard(r.key)
        elif kind == Kind.MARKER.value:
            j.marker = r.key
        else:
            j.failures += 1
            j.last_error = r
    through = min(sealed.get(p, -1) for p in range(partitions)) if partitions else -1
    out = []
    for hour in sorted(by_hour, reverse=True)[:hours]:
        rows = []
        for name, j in sorted(by_hour[hour].items(), key=lambda kv: (kv[0] != LIVE, kv[1].started or 0)):
            kept = {k: v for k, v in j.objects.items() if k not in j.replaced}
            row: dict[str, Any] = {
                "job": name, "status": _status(name, j, hour, through, jobs.get(name), job_seen.get(name), now_ms),
                "objects": len(kept), "events": sum(e for e, _ in kept.values()),
                "bytes": sum(b for _, b in kept.values()), "replaced": len(j.replaced),
                "started_at": iso_ms(j.started) if j.started is not None else None,
                "ended_at": iso_ms(j.ended) if j.ended is not None else None,
                "duration_s": round((j.ended - j.started) / 1000, 3) if j.started is not None else None,
                "delay_s": round((j.ended - hour - HOUR_MS) / 1000, 3) if j.ended is not None else None,
                "failed_attempts": j.failures,
                "last_error": None if j.last_error is None else {
                    "at": iso_ms(j.last_error.written_at), "reason": j.last_error.reason,
                    "detail": j.last_error.detail, "key": j.last_error.key},
            }
            rows.append(row)
        out.append({"hour": iso_hour(hour), "jobs": rows})
    return out


def _status(name: str, j: _Job, hour: int, sealed_through: int, facts: dict[str, Any] | None,
            seen: int | None, now_ms: int) -> str:
    if name != LIVE:
        state = (facts or {}).get("state", "running")
        if state == "running" and seen is not None and now_ms - seen > STALE_MS:
            return "interrupted"
        return state
    if j.last_error is not None and (not j.objects or j.last_error.written_at >= (j.ended or 0)):
        return "failing"
    if j.marker is not None or hour <= sealed_through:
        return "complete"
    return "open"
