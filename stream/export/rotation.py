"""When an object is closed: pure decisions that return their reason.

An hour closes when its partition reaches events stamped ``grace`` after the
hour's end (the data says the hour is over), or when the partition is idle --
its last poll returned nothing -- and the clock is ``grace`` past the hour. An
object opened for a straggler of an hour already closed counts from the data's
time when it opened instead, so late batches arriving together share one file.
An object also closes when it reaches ``max_object_bytes`` of rows, counted
before compression, or ``max_object_events`` rows, so the cut falls at the same
event on a replay.

A partition *seals* an hour once the same rule says that hour is over for any
object: its data (or, idle, the clock) has passed the hour's end plus grace.
What arrives for a sealed hour afterwards is a straggler and goes into an extra
object of that hour.
"""

from __future__ import annotations

from enum import Enum

from stream.events.timefmt import HOUR_MS, hour_start


class CloseReason(str, Enum):
    HOUR_CLOSED = "hour_closed"
    IDLE = "idle"
    SIZE = "size"
    EVENTS = "events"
    REBUILT = "rebuilt"        # closed by a backfill: the end of its range, or where the live export cut it


def hour_close_reason(hour_ms: int, opened_latest_ms: int, latest_event_ms: int, idle: bool, now_ms: int,
                      grace_ms: int) -> CloseReason | None:
    """Why the object of ``hour_ms`` should close now, or None to keep it open.

    ``opened_latest_ms`` is the partition's latest event time when the object opened.
    """
    deadline = max(hour_ms + HOUR_MS, opened_latest_ms) + grace_ms
    if latest_event_ms >= deadline:
        return CloseReason.HOUR_CLOSED
    if idle and now_ms >= deadline:
        return CloseReason.IDLE
    return None


def rotation_reason(raw_bytes: int, events: int, max_object_bytes: int, max_object_events: int) -> CloseReason | None:
    """Why an object must close before it grows further, or None."""
    if raw_bytes >= max_object_bytes:
        return CloseReason.SIZE
    if events >= max_object_events:
        return CloseReason.EVENTS
    return None


def sealed_hour(latest_event_ms: int, idle: bool, now_ms: int, grace_ms: int) -> tuple[int, CloseReason] | None:
    """The latest hour that is over on a partition, and why, or None if none is yet.

    Hour H is over when the partition's data reached H + 1 h + grace or, the
    partition being idle, the clock did -- the rule ``hour_close_reason`` applies
    to the hour's object, so an hour seals as its object closes.
    """
    by_data = hour_start(latest_event_ms - grace_ms) - HOUR_MS if latest_event_ms >= 0 else None
    by_clock = hour_start(now_ms - grace_ms) - HOUR_MS if idle else None
    if by_clock is not None and (by_data is None or by_clock > by_data):
        return by_clock, CloseReason.IDLE
    if by_data is not None:
        return by_data, CloseReason.HOUR_CLOSED
    return None
