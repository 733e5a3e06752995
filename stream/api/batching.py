"""A request's accepted events -> EventBatches for events.valid, one per (target partition, project, hour) (pure).

A batch the API writes has no per-event offsets and the origin ``events.valid[p]@-1``: its events enter
Kafka in that very message, whose real coordinates the dedupe stage fills in when it reads it
(``EventBatch.arrived_at``). The target partition is Kafka's default partitioner on device_id (else
user_id), so a device's events from the API and from producers keyed by device_id meet in one partition.
"""

from __future__ import annotations

from collections.abc import Sequence

from stream.events.batch import EventBatch, Origin
from stream.events.normalize import Normalized
from stream.events.partitioning import partition_for, partition_memo
from stream.events.timefmt import HOUR_MS

BATCH_OVERHEAD = 1024
"""Bytes reserved per batch message for its header (project, hour, origin, per-event keys, times, uuids)."""
PER_EVENT_OVERHEAD = 48


def group(events: Sequence[Normalized], valid_topic: str, partitions: int, max_events: int, max_bytes: int,
          segment: Sequence[bytes] | None = None, segment_source: str = "") -> list[tuple[int, EventBatch]]:
    """(target partition, batch) for the events, in request order within each batch.

    A batch holds at most ``max_events`` events and about ``max_bytes`` bytes (the producer's largest message);
    ``segment`` gives each event's Segment message when the events came from Segment's API.
    """
    targets = partition_memo(partitions)
    # (target, project, hour) -> the indices of its events, in order of first appearance; the events of the first
    # event's project and hour (a request's, nearly always) are filed under their target alone
    by_key: dict[int | tuple[int, int, int], list[int]] = {}
    p0, t0 = (events[0].project, events[0].upload_ms) if events else (0, 0)
    h0 = t0 - t0 % HOUR_MS
    h1 = h0 + HOUR_MS
    for i, (project, _, upload_ms, _, _, device_id, user_id, _) in enumerate(events):
        key = device_id if device_id is not None else user_id   # ev.partition_key, without its call
        target = targets.get(key)  # type: ignore[arg-type]
        if target is None:
            target = partition_for(key, partitions)  # type: ignore[arg-type]
        k = target if project == p0 and h0 <= upload_ms < h1 else (target, project, upload_ms - upload_ms % HOUR_MS)
        members = by_key.get(k)
        if members is None:
            by_key[k] = [i]
        else:
            members.append(i)
    out: list[tuple[int, EventBatch]] = []
    for k, members in by_key.items():
        target, project, hour = (k, p0, h0) if type(k) is int else k  # type: ignore[misc]
        for chunk in _chunks(events, members, max_events, max_bytes, segment):
            evs = [events[i] for i in chunk]
            out.append((target, EventBatch(
                project, hour, Origin(valid_topic, target, -1), keys=[e[1] for e in evs],
                times=[e[2] for e in evs], uuids=[e[3] for e in evs], lines=[e[4] for e in evs],
                segment_source=segment_source, segment=[segment[i] for i in chunk] if segment else [])))
    return out


def _size(ev: Normalized, i: int, segment: Sequence[bytes] | None) -> int:
    return len(ev.line) + len(ev.dedupe_key) + PER_EVENT_OVERHEAD + (len(segment[i]) if segment else 0)


def _chunks(events: Sequence[Normalized], members: list[int], max_events: int, max_bytes: int,
            segment: Sequence[bytes] | None) -> list[list[int]]:
    """``members`` cut into runs of at most ``max_events`` events and about ``max_bytes`` bytes."""
    if len(members) <= max_events:   # within both limits, nearly always: _size's sum without its calls
        used = BATCH_OVERHEAD + PER_EVENT_OVERHEAD * len(members)
        for i in members:
            e = events[i]
            used += len(e[4]) + len(e[1])   # line, dedupe_key
        if segment:
            for i in members:
                used += len(segment[i])
        if used <= max_bytes:
            return [members]
    out: list[list[int]] = []
    run: list[int] = []
    used = BATCH_OVERHEAD
    for i in members:
        size = _size(events[i], i, segment)
        if run and (len(run) >= max_events or used + size > max_bytes):
            out.append(run)
            run, used = [], BATCH_OVERHEAD
        run.append(i)
        used += size
    out.append(run)
    return out
