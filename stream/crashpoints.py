"""Named crash points: a test arms one through the environment and the process dies there, like kill -9.

``STREAM_CRASH_AT=<name>[:<n>]`` makes the n-th (default first) pass through
``crash_point(<name>)`` send SIGKILL to the process itself: no cleanup, no
flush, no commit -- the failure exactly-once has to survive. Unset, a crash
point costs one comparison.

``STREAM_PAUSE_AT=<name>`` with ``STREAM_PAUSE_UNTIL=<path>`` makes the first
pass through ``await pause_point(<name>)`` wait until a file exists at
``<path>``: the rest of the process runs on meanwhile, so a test can make
something happen at that moment (a live event while a rebuild holds its
claim) and then let it go on.
"""

from __future__ import annotations

import os
import signal

from stream.retry import wait

_name, _, _n = os.environ.get("STREAM_CRASH_AT", "").partition(":")
_ARMED = _name or None
_left = int(_n or 1)
_PAUSE = os.environ.get("STREAM_PAUSE_AT") or None
_PAUSE_UNTIL = os.environ.get("STREAM_PAUSE_UNTIL", "")
PAUSE_LOOK_S = 0.1

NAMES = (
    # ingest: events.ingest -> events.valid
    "ingest.polled",          # records fetched, nothing produced for them yet
    "ingest.sent",            # a poll's batches handed to the producer, not acknowledged
    "ingest.produced",        # a poll's batches acknowledged by Kafka, its offsets not committed
    "ingest.committed",       # offsets committed
    # dedupe: events.valid -> events.accepted
    "dedupe.received",        # a batch received, the state not read
    "dedupe.state_written",   # RocksDB written and the changelog record handed over, the accepted batch not sent
    "dedupe.sent",            # the accepted batch handed to the producer, the valid offset not committed
    "dedupe.committed",       # faust committed the valid offsets
    # identity, device side (in the dedupe agent) and user side (identity.links -> identity.merges, remaps)
    "identity.state_written",  # a batch's identity state written (journaled), its rows and links not sent
    "identity.links_sent",    # a batch's links handed to the producer, its accepted batch not sent
    "identity.remap_applied",  # a remap message applied to the device state, its offset not committed
    "identity.merges_sent",   # a links message's merges and remaps acknowledged by Kafka, the user state not written
    "identity.users_written",  # the user state written, the links offset not committed
    # export: events.accepted -> S3
    "export.assigned",        # partitions assigned, the ledger not read
    "export.ledger_read",     # the ledger read, no record of the new assignment taken
    "export.added",           # a batch written to an open object's spool file
    "export.closed",          # an object closed, its upload not started
    "export.multipart_created",  # a multipart upload created, no part uploaded
    "export.part_uploaded",   # a part uploaded, the upload not completed
    "export.uploaded",        # an object on S3, its ledger record not written
    "export.ledgered",        # the ledger record written, the offsets not committed
    "export.sealed",          # a partition's seal recorded
    "export.marker_uploaded",  # a _complete marker on S3, its ledger record not written
    "export.marker_ledgered",  # the marker recorded
    "export.committed",       # the offsets committed
    # import: discovery (SQS, scan) -> imports.files -> events.valid
    "import.discovered",      # a message's discovery records acknowledged by Kafka, the SQS message not deleted
    "import.reading",         # a file's first rows produced, the rest not read (a kill mid-file)
    "import.produced",        # a file's rows all acknowledged by Kafka, its processed state not written
    "import.state_written",   # the processed state written, the imports.files offset not committed
    # mirror: events.mutations -> the hour logs -> hour rebuilds
    "mirror.logged",          # a take's mutations written to their hours' logs, its hours not recorded pending
    "mirror.pending",         # a take's hours recorded pending (handed to the changelog), its offsets not committed
    "mirror.rebuilt",         # the pending hours rebuilt, their mirror-files records not written, still pending
    # profiles: profiles.mutations -> the profiles table
    "profiles.applied",       # a mutation's profile written to the table and handed to the changelog, not committed
    "profiles.snapshot_planned",  # a day's snapshot read, listed as missing and its body made, not put
    "profiles.snapshot_written",  # a day's snapshot put, the next day due (if any) not
    # backfill: the hours of a backfill -> S3
    "backfill.claimed",       # the claim (hours, end offsets) in the ledger, nothing rebuilt
    "backfill.written",       # the claimed hours rebuilt and their objects uploaded, the replaced ones not deleted
    "backfill.uploaded",      # a rebuilt object on S3, its ledger record not written
    "backfill.progress",      # a progress report in the ledger, the backfill going on
    "backfill.deleted",       # a replaced object deleted, its ledger record not written
    "backfill.marked",        # an hour's _complete marker on S3 and recorded
    # shutdown
    "worker.stopping",        # SIGTERM received, nothing drained yet
    # cohorts
    "cohorts.rekeyed",        # a take of accepted batches' cohort records handed to the producer, offsets not committed
    "cohorts.state_written",  # a cohorts message's states written and handed to the changelog, not committed
    "cohorts.diffed",         # a sync's three files spooled, none uploaded
    "cohorts.file_written",   # one of a sync's files on S3, the others or its completion record not yet
    "cohorts.completed",      # a sync's completion record on S3
)


def crash_point(name: str) -> None:
    """Die here if the test armed this point (see the module docstring); a no-op otherwise."""
    global _left
    if name != _ARMED:
        return
    _left -= 1
    if _left == 0:
        os.kill(os.getpid(), signal.SIGKILL)


async def pause_point(name: str) -> None:
    """Wait here the first time through until the file the test named exists (see the module docstring); a no-op
    otherwise."""
    global _PAUSE
    if name != _PAUSE:
        return
    _PAUSE = None
    while not os.path.exists(_PAUSE_UNTIL):
        await wait(PAUSE_LOOK_S)
