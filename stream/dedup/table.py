"""The dedupe state: a faust Table on RocksDB, read and written a batch at a time.

Each batch does one multi-get and one WriteBatch on the partition's RocksDB and
sends one changelog record holding all its writes (``policy.encode_changelog``),
instead of one record per key. Recovery expands those records again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
from rocksdict import WriteBatch, WriteOptions

from stream.dedup.policy import decode_changelog


class DedupeTable(faust.Table):
    """A faust Table whose changelog records each carry the writes of one batch."""

    def db(self, partition: int) -> Any:
        """The RocksDB (rocksdict) of one partition, written without RocksDB's write-ahead log.

        The changelog topic is the log: after a crash RocksDB reopens at its last
        flushed state, whose persisted changelog offset is no later than its data,
        and recovery replays the changelog from there.
        """
        db = self.data._db_for_partition(partition)
        unlogged = self.__dict__.setdefault("_unlogged_dbs", set())   # per table instance
        if id(db) not in unlogged:
            wo = WriteOptions()
            wo.disable_wal = True
            db.set_write_options(wo)
            unlogged.add(id(db))
        return db

    def get_many(self, partition: int, keys: list[bytes]) -> list[bytes | None]:
        return self.db(partition).get(keys)

    def write_batch(self, partition: int, writes: list[tuple[bytes, bytes]], changelog_key: bytes,
                    changelog_value: bytes) -> None:
        wb = WriteBatch(raw_mode=True)
        for k, v in writes:
            wb.put(k, v)
        self.db(partition).write(wb)
        self.send_changelog(partition, changelog_key, changelog_value, key_serializer="raw",
                            value_serializer="raw")

    def changelog_ops(self, value: bytes) -> Iterable[tuple[bytes, bytes | None]]:
        """The writes of one changelog record, in order: (key, value), a value of None deletes the key."""
        return decode_changelog(value)

    def apply_changelog_batch(self, batch: Iterable[faust.types.EventT]) -> None:
        """Recovery: replay batch records, in order, into each partition's RocksDB."""
        batches: dict[int, WriteBatch] = {}
        offsets: dict[Any, int] = {}
        for event in batch:
            msg = event.message
            offsets[msg.tp] = max(msg.offset, offsets.get(msg.tp, -1))
            if msg.value is None:
                continue
            wb = batches.get(msg.partition)
            if wb is None:
                wb = batches[msg.partition] = WriteBatch(raw_mode=True)
            for k, v in self.changelog_ops(msg.value):
                if v is None:
                    wb.delete(k)
                else:
                    wb.put(k, v)
        for partition, wb in batches.items():
            self.db(partition).write(wb)
        for tp, offset in offsets.items():
            self.data.set_persisted_offset(tp, offset)
