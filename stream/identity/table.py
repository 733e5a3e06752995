"""The identity state: a faust Table on RocksDB, read and written a batch at a time, with a journal for replays.

Each batch does its multi-gets, then one WriteBatch holding its writes, the
journal of their pre-images (key ``j`` + the events.valid offset) and the
partition's applied offset (``a``), and sends one changelog record with all of
it (``records.encode_ops``). A batch read again at or below the applied offset
(a replay after a crash) first rolls the partition back through the journal
(``rollback``), so it is computed on the state it was first computed on. Journal
entries below the consumer's committed offset can never be replayed and are
deleted every ``PRUNE_EVERY`` batches.

The changelog is kept (``retention.ms=-1``, cleanup by delete): its records
are batches, not keys, so compaction could not shorten it, and the state it
rebuilds (devices, users, profiles) never expires.
"""

from __future__ import annotations

from collections.abc import Iterable

from rocksdict import WriteBatch

from stream.dedup.table import DedupeTable
from stream.identity.records import (
    APPLIED,
    JOURNAL,
    decode_int,
    decode_ops,
    encode_int,
    encode_ops,
    journal_key,
    journal_offset,
)

PRUNE_EVERY = 64
"""Batches between two prunings of a partition's journal."""


class IdentityTable(DedupeTable):
    """The identity state; changelog records carry ``(key, value | None)`` operations of one batch."""

    def write(self, partition: int, ops: dict[bytes, bytes | None], changelog_key: bytes) -> None:
        if not ops:
            return
        wb = WriteBatch(raw_mode=True)
        for k, v in ops.items():
            if v is None:
                wb.delete(k)
            else:
                wb.put(k, v)
        self.db(partition).write(wb)
        self.send_changelog(partition, changelog_key, encode_ops(ops), key_serializer="raw", value_serializer="raw")

    def applied(self, partition: int) -> int:
        """The highest events.valid offset whose writes are in the state, -1 if none."""
        return decode_int(self.db(partition).get(APPLIED), -1)

    def apply(self, partition: int, offset: int, writes: dict[bytes, bytes | None],
              before: dict[bytes, bytes | None], changelog_key: bytes, committed: int | None = None) -> None:
        """The writes of the batch at ``offset``, journaled, in one WriteBatch and one changelog record."""
        if not writes:
            return
        ops = dict(writes)
        ops[journal_key(offset)] = encode_ops(before)
        ops[APPLIED] = encode_int(offset)
        if committed is not None and offset % PRUNE_EVERY == 0:
            for k in self.db(partition).keys(from_key=JOURNAL):
                if not k.startswith(JOURNAL) or journal_offset(k) >= committed:
                    break
                ops[k] = None
        self.write(partition, ops, changelog_key)

    def rollback(self, partition: int, offset: int, changelog_key: bytes) -> int:
        """Undo the journaled batches at or above ``offset`` (newest first); return how many were undone."""
        applied = self.applied(partition)
        if applied < offset:
            return 0
        db = self.db(partition)
        entries = []
        for k, v in db.items(from_key=journal_key(offset)):
            if not k.startswith(JOURNAL):
                break
            entries.append((k, v))
        ops: dict[bytes, bytes | None] = {}
        for k, v in reversed(entries):
            ops.update(decode_ops(v))
            ops[k] = None
        ops[APPLIED] = encode_int(offset - 1)
        self.write(partition, ops, changelog_key)
        return len(entries)

    def changelog_ops(self, value: bytes) -> Iterable[tuple[bytes, bytes | None]]:
        return decode_ops(value)
