"""What cohort syncs read: the cohorts stage's state, from its table's compacted changelog.

``ChangelogSource.view`` reads every partition of the changelog up to its end offsets, taken when the read starts
(so the read ends however steady the traffic), into a local RocksDB per partition (the latest record of each key;
a tombstone deletes it), then asks the view whether every partition has passed the sync's time
(``stage.SyncView.check``). Not yet: it reads on, to the new end offsets, until it has or
``cohort_state.sync_wait_s`` is over (then the sync fails with the reason ``events`` and the scheduler tries again).
The local copies are kept between syncs of one process and read on from where they were, so a sync reads what the
state wrote since the previous one, not every user again. Memory is bounded: the copies are on disk. The first
read of a process (the changelog from its beginning: every record of a key not yet compacted by the broker, one a
write of its user) is followed by a compaction of the copies, so that a sync's scan steps over one value a user,
not one per write the state made since the broker last compacted the topic (BENCHMARKS.md, Cohorts).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stream import kafka
from stream.clock import Clock, SystemClock
from stream.cohorts.rules import CohortSet
from stream.cohorts.stage import NotPassed, RdictStore, SyncView
from stream.settings import Settings
from stream.topics import cohorts_changelog

log = logging.getLogger(__name__)
POLL_MS = 1000


class ChangelogSource:
    """The ``source`` of ``sync.run_syncs``: ``view(cohorts, t)`` (module docstring)."""

    def __init__(self, settings: Settings, clock: Clock | None = None, spool: Path | None = None) -> None:
        self.settings, self.clock = settings, clock or SystemClock()
        self.spool = spool
        self.topic = cohorts_changelog(settings)
        self.consumer: Any = None
        self.stores: dict[int, RdictStore] = {}
        self.compacted = False
        self.profiles: Any = None

    async def _start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from stream.kafka import client_args
        from rocksdict import Options, Rdict
        c = AIOKafkaConsumer(**{**client_args(self.settings.kafka), "enable_auto_commit": False, "group_id": None,
                                "auto_offset_reset": "earliest",
                                "max_partition_fetch_bytes": max(self.settings.kafka.max_request_bytes, 1 << 20)})
        await c.start()
        try:
            parts = c.partitions_for_topic(self.topic) or await kafka.partitions(c, self.topic)
            if not parts:
                raise NotPassed(f"there is no cohort state yet: the topic {self.topic} does not exist; run a worker "
                                "with the cohorts stage (worker.stages), which creates it and keeps the state")
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
        except BaseException:
            await c.stop()
            raise
        if self.spool is None:     # one per process: a CLI run beside the worker has its own
            import tempfile
            root = Path(self.settings.worker.data_dir)
            root.mkdir(parents=True, exist_ok=True)
            self.spool = Path(tempfile.mkdtemp(prefix="cohorts-sync-", dir=root))
        else:
            shutil.rmtree(self.spool, ignore_errors=True)
            self.spool.mkdir(parents=True)
        self.stores = {tp.partition: RdictStore(Rdict(str(self.spool / str(tp.partition)), Options(raw_mode=True)))
                       for tp in tps}
        self.compacted = False
        self.consumer = c

    async def _read_to_end(self) -> int:
        """Read every partition up to its end offsets as they are now (``stream.kafka.to_end``); the records read."""
        n = 0
        async for got in kafka.to_end(self.consumer, POLL_MS, clock=self.clock):
            n += self._apply(got)
        return n

    def _apply(self, got: Mapping[Any, list[Any]]) -> int:
        n = 0
        for tp, records in got.items():
            self.stores[tp.partition].write([(r.key, r.value) for r in records if r.key is not None])
            n += len(records)
        return n

    async def view(self, cohorts: CohortSet, t_ms: int) -> SyncView:
        if self.consumer is None:
            await self._start()
        deadline = self.clock.now_ms() + int(self.settings.cohort_state.sync_wait_s * 1000)
        profile_of = await self._profiles(cohorts)
        while True:
            n = await self._read_to_end()
            if not self.compacted:
                for s in self.stores.values():
                    s.db.compact_range(None, None)
                self.compacted = True
            v = SyncView(cohorts, self.stores, self.settings.topics.partitions, t_ms, profile_of)
            try:
                v.check()
            except NotPassed:
                if self.clock.now_ms() >= deadline:
                    raise
                if n == 0:    # nothing new: wait for the stage's next records (a poll that returns when they come)
                    self._apply(await self.consumer.getmany(timeout_ms=POLL_MS))
                continue
            v.rows = n
            return v

    async def _profiles(self, cohorts: CohortSet) -> Any:
        """``SyncView``'s ``profile_of`` when a cohort's project has a source of profiles: the local copy of the
        profiles changelog under the data directory, read on to its end (``profiles_copy``), a user read by key."""
        projects = frozenset(c.project for c in cohorts.cohorts)
        if not (self.settings.profiles_projects() & projects):
            return None
        from stream.cohorts.profiles_copy import ProfilesCopy, catch_up, profile_reader
        from stream.topics import profiles_changelog
        if self.profiles is None:
            self.profiles = ProfilesCopy.open(Path(self.settings.worker.data_dir), profiles_changelog(self.settings))
        await catch_up(self.profiles, self.settings, self.clock)
        return profile_reader(self.profiles, self.settings.profiles_projects())

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        for s in self.stores.values():
            s.db.close()
        self.stores = {}
        if self.profiles is not None:
            self.profiles.close()
            self.profiles = None
        if self.spool is not None:
            shutil.rmtree(self.spool, ignore_errors=True)
