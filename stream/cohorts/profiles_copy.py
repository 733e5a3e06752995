"""What cohort syncs read of the profiles: a local RocksDB copy of the profiles table's changelog, kept between syncs.

A sync of a project with a source of profiles reads each user's profile by key (``profile_reader``) from a copy of
``<worker.app_id>-profiles-applied-changelog`` on local disk, ``<worker.data_dir>/cohorts-profiles/<topic>``: the
latest value of each key (a tombstone, a record without value, deletes it), and in a column family of its own the
offset of each partition up to which the copy holds the changelog. Before a sync reads it, ``catch_up`` reads each
partition from that offset to its end as it is when the read starts (``stream.kafka.to_end``: the ends raised to
the first fetch's high watermark, ``ReadStalled`` when nothing comes for ``stall_s``), so a sync reads the profiles
written since the previous one, not every profile again, and its memory does not grow with the profiles stored.

Order, so that a crash anywhere leaves a copy that is right for the offsets it names: each fetched batch of a
partition is written to the copy together with the offset after its last record, in one RocksDB write batch; a
copy stopped halfway names where it stopped, and the next catch-up reads on from there (a record read again sets
what it set before). The copy is read from the beginning again (rebuilt) when it is new or lost (its directory
gone or unreadable), and when an offset it names is not in its partition any more (above the partition's end or
below its first offset: the topic was deleted and created again, or its records deleted), as ``resume_at``
decides. A record the broker's compaction removes is one that a later record of its key replaced, which the copy
reads; the profiles stage writes a deleted user as a value (``stream.imports.profiles``), not as a tombstone that
compaction would drop after ``delete.retention.ms``.

One process opens the copy at a time (RocksDB's lock). Another one using the same data directory at the same time
(``stream cohorts sync`` beside a worker) gets a copy of its own in a temporary directory there, read from the
beginning and removed when it closes; one left by a process killed before that is removed by the next process
that opens the copy.
"""

from __future__ import annotations

import logging
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from stream.clock import Clock
from stream.imports.profiles import key
from stream.settings import Settings
from stream.topics import profiles_changelog

log = logging.getLogger(__name__)

COPY_DIR = "cohorts-profiles"
OFFSETS = "offsets"
TEMPORARY = ".temporary"
"""Under ``COPY_DIR``: the copies of processes that found the copy open in another (no topic's copy has this name)."""
WRITE_BUFFER_BYTES = 16 << 20
"""The copy's memtable: what a sync holds in memory of the records it read (more are flushed to disk)."""
_P = struct.Struct(">I")
_O = struct.Struct(">q")


def resume_at(saved: Mapping[int, int], beginnings: Mapping[int, int],
              ends: Mapping[int, int]) -> dict[int, int] | None:
    """Where a catch-up reads each partition from: the offset the copy has read it to (``saved``), the partition's
    first offset when the copy has not read it; None when the copy must be read again from the beginning: an offset
    it names is above its partition's end, below its first offset, or in a partition the topic does not have (pure).
    """
    for p, at in saved.items():
        if p not in ends or not beginnings.get(p, 0) <= at <= ends[p]:
            return None
    return {p: saved.get(p, beginnings.get(p, 0)) for p in ends}


def _is_lock_error(exc: BaseException) -> bool:
    return "lock" in str(exc).lower()


class ProfilesCopy:
    """The copy (module docstring): key -> the latest value of the changelog; partition -> the offset read to."""

    def __init__(self, path: Path, temporary: bool = False) -> None:
        self.path, self.temporary = path, temporary
        self.db: Any = None
        self._open()

    def _open(self) -> None:
        from rocksdict import Options, Rdict
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        opts.set_write_buffer_size(WRITE_BUFFER_BYTES)
        self.path.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(self.path), opts, column_families={OFFSETS: Options(raw_mode=True)})
        self._offsets = self.db.get_column_family(OFFSETS)
        self._offsets_cf = self.db.get_column_family_handle(OFFSETS)

    @classmethod
    def open(cls, root: Path, topic: str) -> ProfilesCopy:
        """The copy of ``topic`` under ``root`` (a data directory), as the previous process left it; a new one when
        there is none or it cannot be read; a temporary one when another process has it open."""
        path = Path(root) / COPY_DIR / topic
        try:
            copy = cls(path)
        except Exception as exc:
            if _is_lock_error(exc):
                (path.parent / TEMPORARY).mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f"{topic}-", dir=path.parent / TEMPORARY))
                log.info("cohort syncs: the profiles copy %s is open in another process; this one reads the profiles "
                         "into %s, removed when it ends", path, tmp)
                return cls(tmp, temporary=True)
            log.warning("cohort syncs: the profiles copy %s cannot be opened (%s: %s); it is made again from the "
                        "beginning of the profiles changelog", path, type(exc).__name__, exc)
            shutil.rmtree(path, ignore_errors=True)
            copy = cls(path)
        cls._remove_left(path.parent / TEMPORARY)
        return copy

    @classmethod
    def _remove_left(cls, temporary: Path) -> None:
        """Remove the temporary copies that no process has open: left by a process killed before it closed them."""
        for d in sorted(temporary.glob("*")) if temporary.is_dir() else ():
            try:
                left = cls(d, temporary=True)
            except Exception as exc:
                if _is_lock_error(exc):
                    continue    # in use
                shutil.rmtree(d, ignore_errors=True)
            else:
                left.close()

    def saved(self) -> dict[int, int]:
        """partition -> the offset up to which the copy holds it."""
        return {_P.unpack(k)[0]: _O.unpack(v)[0] for k, v in self._offsets.items()}

    def apply(self, partition: int, records: Iterable[tuple[bytes | None, bytes | None]], next_offset: int) -> None:
        """Write a partition's records (key, value; in offset order; a value of None deletes the key; a record
        without key is skipped) and the offset after them, at once."""
        from rocksdict import WriteBatch
        wb = WriteBatch(raw_mode=True)
        for k, v in records:
            if k is None:
                continue
            if v is None:
                wb.delete(k)
            else:
                wb.put(k, v)
        wb.put(_P.pack(partition), _O.pack(next_offset), self._offsets_cf)
        self.db.write(wb)

    def mark(self, positions: Mapping[int, int]) -> None:
        """Save the offsets read to (a partition read to its end without a record to write: compacted away)."""
        from rocksdict import WriteBatch
        wb = WriteBatch(raw_mode=True)
        for p, at in positions.items():
            wb.put(_P.pack(p), _O.pack(at), self._offsets_cf)
        self.db.write(wb)

    def get(self, k: bytes) -> bytes | None:
        return self.db.get(k)

    def rebuild(self) -> None:
        """Drop everything: the copy is read again from the beginning."""
        from rocksdict import Options, Rdict
        self._release()
        Rdict.destroy(str(self.path), Options(raw_mode=True))
        shutil.rmtree(self.path, ignore_errors=True)
        self._open()

    def _release(self) -> None:
        # the column family's objects hold the database open: let them go before closing it, or its lock stays
        self._offsets = self._offsets_cf = None
        if self.db is not None:
            if not self.temporary:
                self.db.flush()     # the next process opens the files, not a log of the writes to replay in memory
            self.db.close()
            self.db = None

    def close(self) -> None:
        self._release()
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)


def profile_reader(copy: ProfilesCopy, projects: frozenset[int]) -> Callable[[int, str], Mapping[str, Any] | None]:
    """``SyncView``'s ``profile_of``: a user's profile properties in the copy; None for a project without a source of
    profiles, a user without a profile, or a deleted one."""
    get, loads = copy.db.get, orjson.loads

    def profile_of(project: int, user_id: str) -> Mapping[str, Any] | None:
        if project not in projects:
            return None
        raw = get(key(project, user_id))
        # ``profiles.encode``'s properties, without decoding the rest (a sync asks for every user of its scans)
        return None if raw is None else loads(raw)["properties"]
    return profile_of


async def catch_up(copy: ProfilesCopy, settings: Settings, clock: Clock | None = None, poll_ms: int = 1000,
                   stall_s: float = 60.0, **consumer: Any) -> int:
    """Read the profiles changelog into ``copy`` from where it was read to, up to its ends (module docstring); the
    records read. ``consumer``: more aiokafka consumer settings."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream import kafka
    topic = profiles_changelog(settings)
    c = AIOKafkaConsumer(**{**kafka.client_args(settings.kafka), "enable_auto_commit": False, "group_id": None,
                            "auto_offset_reset": "earliest",
                            "max_partition_fetch_bytes": max(settings.kafka.max_request_bytes, 1 << 20), **consumer})
    await c.start()
    try:
        parts = c.partitions_for_topic(topic) or await kafka.partitions(c, topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        beginnings: dict[int, int] = {}
        ends: dict[int, int] = {}
        if tps:
            c.assign(tps)
            beginnings = {tp.partition: o for tp, o in (await c.beginning_offsets(tps)).items()}
            reported = await c.end_offsets(tps)
            ends = {tp.partition: o for tp, o in reported.items()}
            saved = copy.saved()
            if any(saved.get(p, 0) > o for p, o in ends.items()):
                # past the end the broker reports: exact on Kafka (the topic is new); short on the local broker,
                # whose fetch responses carry the true end (``kafka.fetched_ends``)
                for tp in tps:
                    c.seek(tp, reported[tp])
                ends = {tp.partition: o for tp, o in (await kafka.fetched_ends(c, poll_ms, stall_s, clock)).items()}
        at = resume_at(copy.saved(), beginnings, ends)
        if at is None:
            log.info("cohort syncs: the profiles copy %s names offsets %s that %s does not have (ends %s); it is read "
                     "again from the beginning", copy.path, copy.saved(), topic, ends)
            copy.rebuild()
            at = dict(beginnings)
        if not tps:
            return 0
        for tp in tps:
            c.seek(tp, at[tp.partition])
        n = 0
        async for got in kafka.to_end(c, poll_ms, stall_s, clock):
            for tp, records in got.items():
                if records:
                    copy.apply(tp.partition, [(r.key, r.value) for r in records], records[-1].offset + 1)
                    n += len(records)
        copy.mark({tp.partition: await c.position(tp) for tp in tps})
        return n
    finally:
        await kafka.stop_all(c)
