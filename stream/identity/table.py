"""The identity state: a faust Table on RocksDB, read and written a batch at a time, with a journal for replays.

Each batch does its multi-gets, then one WriteBatch holding its writes, the
journal of their pre-images (key ``j`` + the events.valid offset) and the
partition's applied offset (``a``). A batch read again at or below the applied
offset (a replay after a crash) first rolls the partition back through the
journal (``rollback``), so it is computed on the state it was first computed
on. Journal entries below the consumer's committed offset can never be replayed
and are deleted every ``PRUNE_EVERY`` batches, and so are the chunks of held
rows that the batches below it stopped using (``stream.identity.records.Held``):
deleted by the batch that let their rows go, they would have been journaled,
every row again, for a replay of it.

The changelog carries one record per key written (the key, and its value or a
tombstone), so it is compacted (``cleanup.policy=compact``): on a broker that
compacts, it holds about one record per live key -- devices, pairs, users,
profiles, groups and the last journal entries -- and its size follows the state
(a few hundred bytes a user, BENCHMARKS.md), not the number of events. A broker
that does not compact (the local Tansu broker) keeps every record: one per key
written, about one per event that changes a user's fields.
"""

from __future__ import annotations


from stream.dedup.table import DedupeTable, KeyedChangelog
from stream.identity.records import (
    APPLIED,
    JOURNAL,
    UNUSED,
    dec_keys,
    decode_int,
    decode_ops,
    encode_int,
    encode_ops,
    journal_key,
    journal_offset,
    unused_offset,
)

PRUNE_EVERY = 64
"""Batches between two prunings of a partition's journal."""


class IdentityTable(KeyedChangelog, DedupeTable):
    """The identity state; its changelog holds one record per key written, compacted by the broker.

    The records of one batch's writes go to the broker in one go (``DedupeTable.send_records``).
    """

    def applied(self, partition: int) -> int:
        """The highest events.valid offset whose writes are in the state, -1 if none."""
        return decode_int(self.db(partition).get(APPLIED), -1)

    async def apply(self, partition: int, offset: int, writes: dict[bytes, bytes | None],
              before: dict[bytes, bytes | None], committed: int | None = None) -> int:
        """The writes of the batch at ``offset``, journaled, in one WriteBatch; journal entries below the
        ``committed`` offset, and the chunks of held rows unused since an offset below it, are deleted every
        PRUNE_EVERY offsets. Returns how many journal entries were pruned."""
        if not writes:
            return 0
        ops = dict(writes)
        ops[journal_key(offset)] = encode_ops(before)
        ops[APPLIED] = encode_int(offset)
        pruned = 0
        if committed is not None and offset % PRUNE_EVERY == 0:
            for k in self.db(partition).keys(from_key=JOURNAL):
                if not k.startswith(JOURNAL) or journal_offset(k) >= committed:
                    break
                ops[k] = None
                pruned += 1
            for k, v in self.db(partition).items(from_key=UNUSED):
                if not k.startswith(UNUSED) or unused_offset(k) >= committed:
                    break
                ops.update(dict.fromkeys(dec_keys(v)))
                ops[k] = None
        await self.write(partition, ops)
        return pruned

    async def rollback(self, partition: int, offset: int) -> int:
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
        await self.write(partition, ops)
        return len(entries)
