"""The dedupe state: a faust Table on RocksDB, read and written a batch at a time.

Each batch does one multi-get and one WriteBatch on the partition's RocksDB and
sends one changelog record holding all its writes (``policy.encode_changelog``),
instead of one record per key. Recovery expands those records again.

Changelog records go straight into the Kafka producer's accumulator
(``send_records``), never through faust's producer buffer: before it commits,
faust waits for the accumulator to drain, but it gives up on its own buffer when
a message waits there longer than 0.1 s (``ProducerBuffer.flush_atmost``), so a
record still buffered (its topic's metadata not yet fetched, on a busy worker)
could be lost with a crash after the commit of the offsets it belongs to.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.types import TP
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

    async def write_batch(self, partition: int, writes: list[tuple[bytes, bytes]], changelog_key: bytes,
                          changelog_value: bytes) -> None:
        wb = WriteBatch(raw_mode=True)
        for k, v in writes:
            wb.put(k, v)
        self.db(partition).write(wb)
        await self.send_records(partition, [(changelog_key, changelog_value)])

    async def send_records(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Hand changelog records (a value of None is a tombstone) to the Kafka producer, as record batches built
        in one go (aiokafka's ``send_batch`` on faust's own producer): one faust message each would cost tens of
        microseconds a record (BENCHMARKS.md), and go through faust's buffer (see the module docstring). faust
        flushes the producer before it commits, so the records are on the broker before the batch they come from
        counts as done."""
        producer = getattr(self.app.producer, "_producer", None)
        if producer is None:    # no broker (unit tests): faust's per-message path, which tests can replace
            for k, v in records:
                self.send_changelog(partition, k, v, key_serializer="raw", value_serializer="raw")
            return
        topic = self.changelog_topic.get_topic_name()
        batch, n = self._new_batch(producer), 0
        for k, v in records:
            if batch.append(key=k, value=v, timestamp=None) is None:    # full: send it, start the next
                self._track(await producer.send_batch(batch, topic, partition=partition), topic, partition, n)
                batch, n = self._new_batch(producer), 0
                batch.append(key=k, value=v, timestamp=None)
            n += 1
        self._track(await producer.send_batch(batch, topic, partition=partition), topic, partition, n)

    def _new_batch(self, producer: Any) -> BatchBuilder:
        # one record batch per request, as large as a request may be: the producer's default batch (16 KiB) would
        # make a batch's writes a dozen requests, each paid for in the producer's send loop
        size = max(producer._max_request_size // 2, 1 << 20)
        return BatchBuilder(size, producer._message_accumulator._compression_type)

    def _track(self, sent: Any, topic: str, partition: int, n: int) -> None:
        """Once the broker has the batch, record its last offset as the local state's (faust's persisted offset:
        where recovery starts after a restart)."""
        def done(fut: Any) -> None:
            if not fut.cancelled() and fut.exception() is None:
                self.data.set_persisted_offset(TP(topic, partition), fut.result().offset + n - 1)
        sent.add_done_callback(done)

    def changelog_ops(self, key: bytes | None, value: bytes | None) -> Iterable[tuple[bytes, bytes | None]]:
        """The writes of one changelog record, in order: (key, value), a value of None deletes the key. Here a
        record holds the writes of one batch; a table whose records are one key each says so with
        :class:`KeyedChangelog`."""
        return () if value is None else decode_changelog(value)

    def apply_changelog_batch(self, batch: Iterable[faust.types.EventT]) -> None:
        """Recovery: replay the records, in order, into each partition's RocksDB (``changelog_ops`` says what
        each record writes)."""
        batches: dict[int, WriteBatch] = {}
        offsets: dict[Any, int] = {}
        for event in batch:
            msg = event.message
            offsets[msg.tp] = max(msg.offset, offsets.get(msg.tp, -1))
            ops = self.changelog_ops(msg.key, msg.value)
            if not ops:
                continue
            wb = batches.get(msg.partition)
            if wb is None:
                wb = batches[msg.partition] = WriteBatch(raw_mode=True)
            for k, v in ops:
                if v is None:
                    wb.delete(k)
                else:
                    wb.put(k, v)
        for partition, wb in batches.items():
            self.db(partition).write(wb)
        for tp, offset in offsets.items():
            self.data.set_persisted_offset(tp, offset)


class KeyedChangelog:
    """For a table whose changelog records are one key each (the record's key and value; a tombstone deletes):
    put it before the table class among the bases."""

    def changelog_ops(self, key: bytes | None, value: bytes | None) -> Iterable[tuple[bytes, bytes | None]]:
        return () if key is None else ((key, value),)

    async def write(self, partition: int, ops: dict[bytes, bytes | None]) -> None:
        """Write ``ops`` (a value of None deletes the key) in one WriteBatch, and a changelog record per key
        (``DedupeTable.send_records``)."""
        if not ops:
            return
        wb = WriteBatch(raw_mode=True)
        for k, v in ops.items():
            if v is None:
                wb.delete(k)
            else:
                wb.put(k, v)
        self.db(partition).write(wb)
        await self.send_records(partition, ops.items())
