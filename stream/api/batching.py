"""A request's accepted events -> EventBatches for events.valid, one per (target partition, project, hour) (pure).

A batch the API writes has no per-event offsets and the origin ``events.valid[p]@-1``: its events enter
Kafka in that very message, whose real coordinates the dedupe stage fills in when it reads it
(``EventBatch.arrived_at``). The target partition is Kafka's default partitioner on device_id (else
user_id), so a device's events from the API and from producers keyed by device_id meet in one partition.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from stream.events.batch import EventBatch, Origin
from stream.events.normalize import Normalized
from stream.events.partitioning import partition_for
from stream.events.timefmt import HOUR_MS

BATCH_OVERHEAD = 1024
"""Bytes reserved per batch message for its header (project, hour, origin, per-event keys, times, uuids)."""
PER_EVENT_OVERHEAD = 48


class _Ids(msgspec.Struct):
    device_id: str | None = None
    user_id: str | None = None


_ids = msgspec.json.Decoder(_Ids).decode


def ids_of(events: Sequence[Normalized]) -> tuple[list[str | None], list[str | None]]:
    """(device_ids, user_ids) of normalized events, read from their export rows (ids already validated)."""
    devices, users = [], []
    for ev in events:
        i = _ids(ev.line)
        devices.append(i.device_id)
        users.append(i.user_id)
    return devices, users


def group(events: Sequence[Normalized], valid_topic: str, partitions: int, max_events: int, max_bytes: int,
          segment: Sequence[bytes] | None = None, segment_source: str = "") -> list[tuple[int, EventBatch]]:
    """(target partition, batch) for the events, in request order within each batch.

    A batch holds at most ``max_events`` events and about ``max_bytes`` bytes (the producer's largest message);
    ``segment`` gives each event's Segment message when the events came from Segment's API.
    """
    open_: dict[tuple[int, int, int], tuple[EventBatch, list[int]]] = {}
    done: list[tuple[int, EventBatch]] = []
    for i, ev in enumerate(events):
        target = partition_for(ev.partition_key, partitions)
        hour = ev.upload_ms - ev.upload_ms % HOUR_MS
        k = (target, ev.project, hour)
        size = len(ev.line) + len(ev.dedupe_key) + PER_EVENT_OVERHEAD + (len(segment[i]) if segment else 0)
        entry = open_.get(k)
        if entry is not None and (len(entry[0].lines) >= max_events or entry[1][0] + size > max_bytes):
            done.append((target, entry[0]))
            entry = None
        if entry is None:
            entry = open_[k] = (EventBatch(ev.project, hour, Origin(valid_topic, target, -1),
                                           segment_source=segment_source), [BATCH_OVERHEAD])
        b, used = entry
        used[0] += size
        b.keys.append(ev.dedupe_key)
        b.times.append(ev.upload_ms)
        b.uuids.append(ev.uuid)
        b.lines.append(ev.line)
        if segment:
            b.segment.append(segment[i])
    done.extend((target, b) for (target, _, _), (b, _) in open_.items())
    return done
