"""When an object is closed: pure decisions that return their reason.

An hour closes when its partition reaches events stamped ``grace`` after the
hour's end (the data says the hour is over), or when the partition is idle --
its last poll returned nothing -- and the clock is ``grace`` past the hour. An
object opened for a straggler of an hour already closed counts from the data's
time when it opened instead, so late batches arriving together share one file.
An object also closes when it reaches ``max_object_bytes`` of rows, counted
before compression so the cut falls at the same event on a replay.
"""

from __future__ import annotations

from enum import Enum

from stream.events.timefmt import HOUR_MS


class CloseReason(str, Enum):
    HOUR_CLOSED = "hour_closed"
    IDLE = "idle"
    SIZE = "size"


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


def size_reached(raw_bytes: int, max_object_bytes: int) -> bool:
    return raw_bytes >= max_object_bytes
