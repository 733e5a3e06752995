"""The kept mutations of the hours one rebuild pass writes, spilled to a RocksDB file of its spool directory.

A pass rebuilds up to ``backfill.chunk_hours`` hours at once, reading the topic in offset order, so it needs the
mutations of every one of its hours at hand; held in memory they cost about 6.5 KB each (their rows decoded), which
grows with the hours' size. Here they are written, hour by hour and object by object, to a RocksDB file keyed by
the hour (8 bytes) and the insert_id, whose value is the mutations of that event as the log's lines: a rebuild
reads a key when a row of the hour names it. Memory stays that of one log object at a time and RocksDB's own, which
is held to a fixed size: its memtables (``WRITE_BUFFER_BYTES`` each) and its block cache (``CACHE_BYTES``; RocksDB's
default of 32 MiB would fill with every block a rebuild reads, so that the pass's memory grew with the mutations
kept up to that size). Each key is read once per rebuild of its hour, so a bigger cache would not save reads.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from stream.export import mirror_log
from stream.export.mirror import Mutation


WRITE_BUFFER_BYTES = 1 << 20
CACHE_BYTES = 1 << 20


class KeptMutations:
    def __init__(self, path: Path):
        self.path = path
        shutil.rmtree(path, ignore_errors=True)     # a crashed pass's file: its mutations are read again
        path.parent.mkdir(parents=True, exist_ok=True)
        self._options = Options(raw_mode=True)
        self._options.set_write_buffer_size(WRITE_BUFFER_BYTES)   # what it holds in memory before it flushes
        table = BlockBasedOptions()
        table.set_block_cache(Cache(CACHE_BYTES))
        self._options.set_block_based_table_factory(table)
        self.db = Rdict(str(path), self._options)
        self._ids: dict[int, int] = {}

    def add(self, hour: int, mutations: Iterable[Mutation]) -> None:
        """Keep mutations of the hour (the same mutation kept twice is read once), as their log lines."""
        self.add_lines(hour, [mirror_log.line(m) for m in mutations])

    def add_lines(self, hour: int, lines: Iterable[bytes]) -> None:
        """:meth:`add` of the mutations of log lines (``mirror_log.lines``, a log object's), kept as they are,
        unparsed: the lines grouped by insert_id, then one multi-get of the keys and one write batch (a get and a
        put a line cost about 40 µs)."""
        prefix = hour.to_bytes(8, "big")
        grouped: dict[bytes, list[bytes]] = {}
        for ln in lines:
            key = prefix + mirror_log.insert_id_of(ln)
            got = grouped.get(key)
            if got is None:
                grouped[key] = [ln]
            else:
                got.append(ln)
        if not grouped:
            return
        keys = list(grouped)
        batch, new = WriteBatch(raw_mode=True), 0
        for key, old in zip(keys, self.db.get(keys)):
            if old is None:
                new += 1
                batch.put(key, b"".join(grouped[key]))
            else:
                batch.put(key, b"".join((old, *grouped[key])))
        self.db.write(batch)
        if new:
            self._ids[hour] = self._ids.get(hour, 0) + new

    def hour(self, hour: int) -> HourMutations:
        return HourMutations(self, hour)

    def close(self) -> None:
        self.db.close()
        Rdict.destroy(str(self.path), self._options)


class HourMutations(Mapping[str, Sequence[Mutation]]):
    """One hour's kept mutations by insert_id, each group once per mutation and in the order it applies."""

    def __init__(self, kept: KeptMutations, hour: int):
        self._kept, self._prefix, self._hour = kept, hour.to_bytes(8, "big"), hour

    def __getitem__(self, insert_id: str) -> Sequence[Mutation]:
        raw = self._kept.db.get(self._prefix + insert_id.encode())
        if raw is None:
            raise KeyError(insert_id)
        return mirror_log.merge([mirror_log.decode_lines(raw)])

    def __iter__(self) -> Iterator[str]:
        n = len(self._prefix)
        for key in self._kept.db.keys(from_key=self._prefix):
            if not key.startswith(self._prefix):
                return
            yield key[n:].decode()

    def __len__(self) -> int:
        return self._kept._ids.get(self._hour, 0)
