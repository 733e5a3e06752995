"""Named crash points: a test arms one through the environment and the process dies there, like kill -9.

``STREAM_CRASH_AT=<name>[:<n>]`` makes the n-th (default first) pass through
``crash_point(<name>)`` send SIGKILL to the process itself: no cleanup, no
flush, no commit -- the failure exactly-once has to survive. Unset, a crash
point costs one comparison.
"""

from __future__ import annotations

import os
import signal

_name, _, _n = os.environ.get("STREAM_CRASH_AT", "").partition(":")
_ARMED = _name or None
_left = int(_n or 1)

NAMES = (
    "ingest.produced",        # a poll's batches are acknowledged by Kafka, its offsets not committed
    "dedupe.sent",            # an accepted batch is handed to the producer, the valid offset not committed
    "export.uploaded",        # an object is on S3, its ledger record not written
    "export.ledgered",        # the ledger record is written, the offsets not committed
    "export.committed",       # the offsets are committed
)


def crash_point(name: str) -> None:
    global _left
    if name != _ARMED:
        return
    _left -= 1
    if _left == 0:
        os.kill(os.getpid(), signal.SIGKILL)
