"""One exporter's cycle, driven by a feed of batches: the order that makes every object exactly once.

Each ``step``:

1. polls the feed; after a new assignment it first reads the ledger (another worker may have written objects
   of these partitions), then takes no record before; records polled once the exporter was asked to stop (turned
   off at runtime, or the worker stopping) are left uncommitted, to be read again when it next runs;
2. ``add``s each batch to its partition's open objects (a message that is not a batch goes to the dead-letter
   topic), and records the offsets the topic's retention deleted before they were exported (``gap``);
3. ``tick``s: objects whose hour is over close (by the data, or by the clock once a partition is idle);
4. ``finish``es each closed object: upload, then its ledger record -- only then are its offsets committable;
5. ``seal``s the hours each partition has finished, after their objects;
6. reads the ledger's new records (every worker's), and writes the ``_complete`` markers of the hours every
   partition has sealed (the owner of partition 0 only, so that one worker writes them);
7. commits what is committable.

A crash between any two steps is replayed from the committed offsets; deterministic keys and the ledger's marks
make the replay converge. The live consumer (``KafkaFeed``) drives it until the worker stops.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from stream import metrics
from stream.crashpoints import crash_point
from stream.export.exporter import Exporter
from stream.export.feed import Gap
from stream.export.ledger import Claim, Kind, LedgerIndex, LedgerRecord, facts
from stream.export.writer import ClosedObject

log = logging.getLogger(__name__)


class Feed(Protocol):
    topic: str

    def take_assigned(self) -> set[int] | None: ...
    def take_gaps(self) -> list[Gap]: ...
    async def poll(self) -> dict[int, list[Any]]: ...
    async def caught_up(self, polled: set[int]) -> set[int]: ...
    async def seek(self, partition: int, offset: int) -> None: ...
    async def lag(self) -> int: ...
    async def commit(self, offsets: dict[int, int]) -> bool: ...


class Tail(Protocol):
    async def poll(self) -> list[LedgerRecord]: ...


FINISHED = frozenset({"done", "cancelled", "failed"})
"""States of a backfill job that has stopped for good."""
ReadLedger = Callable[[], Awaitable[LedgerIndex]]
DeadLetter = Callable[[int, Any, Exception], Awaitable[None]]
"""(partition, record, why): keep a message that is not a batch in the dead-letter topic."""


class ExportCycle:
    def __init__(self, exporter: Exporter, feed: Feed, read_ledger: ReadLedger, tail: Tail,
                 dead_letter: DeadLetter, gate: Callable[[], Awaitable[bool]] | None = None,
                 stop: Callable[[], bool] = lambda: False):
        self.exporter, self.feed, self.read_ledger, self.tail, self.dead_letter = (
            exporter, feed, read_ledger, tail, dead_letter)
        self.gate = gate           # access verification: nothing is read before it opens (stream.export.verify)
        self.stop = stop           # the exporter is stopping (turned off, or the worker stops): take no new record
        self.committed: dict[int, int] = {}
        self.finished: set[str | None] = set()     # backfill jobs done, cancelled or failed: claims not to answer
        self._lag = metrics.CONSUMER_LAG.labels(f"export-{exporter.name}", feed.topic)

    async def _take_assignment(self) -> None:
        """After a new assignment, read the ledger (another worker may have written objects of these
        partitions) before taking any record of them."""
        ex = self.exporter
        assigned = self.feed.take_assigned()
        if assigned is not None:
            log.info("export %s: assigned partitions %s of %s", ex.name, sorted(assigned), self.feed.topic)
            crash_point("export.assigned")
            ex.use_ledger(await self.read_ledger())
            crash_point("export.ledger_read")
            for p in assigned:
                ex.writer(p)

    async def _follow_ledger(self) -> None:
        """Take the ledger's new records (every worker's): into the status book, and honour backfills' claims of
        hours (``Exporter.claim``), acknowledging each one that is still running."""
        ex = self.exporter
        new = await self.tail.poll()
        self.finished |= {facts(r).get("job") for r in new
                          if r.kind == Kind.JOB.value and facts(r).get("state") in FINISHED}
        for rec in new:
            ex.book.add(rec)
            ex.notices.add(rec)
            if rec.kind != Kind.CLAIM.value:
                continue
            claim = Claim.of(rec)
            ex.ledger.add(rec)
            if claim.job in self.finished:
                continue
            owned = set(ex.writers)
            for p, offset in ex.claim(claim).items():
                await self.feed.seek(p, offset)
                log.info("export %s: backfill %s claimed hours of partition %d; its open objects were dropped and "
                         "it reads again from offset %d", ex.name, claim.job, p, offset)
            await ex.acknowledge(claim, owned)
        if new:
            await ex.notify()

    async def step(self) -> None:
        ex = self.exporter
        if self.gate is not None:
            await self._take_assignment()      # the group is joined in the background: know what is ours
            await self._follow_ledger()
            if not await self.gate():
                return
            self.gate = None
        polled = await self.feed.poll()
        if polled and self.stop():
            # asked to stop while polling (turned off at runtime, or the worker stopping): what came in is not
            # exported now; uncommitted, it is read again when the exporter next runs
            return
        await self._take_assignment()
        closed: list[ClosedObject] = []
        for p, recs in polled.items():
            for r in recs:
                try:
                    closed += ex.add(p, r.offset, r.value)
                except Exception as exc:   # not a batch: keep it in the dead-letter topic, go on
                    await self.dead_letter(p, r, exc)
                    ex.writer(p).skip(r.offset)
        for gap in self.feed.take_gaps():
            await ex.record_gap(gap.partition, gap.first, gap.end)
        self._lag.set(await self.feed.lag())
        closed += ex.tick(await self.feed.caught_up(set(polled)))
        for obj in closed:
            await ex.finish(obj)
        await ex.seal()
        await self._follow_ledger()
        if 0 in ex.writers:   # the owner of partition 0 writes the markers of the whole destination
            await ex.write_markers()
        ex.update_gauges()
        offsets = {p: o for p, o in ex.committable().items() if self.committed.get(p) != o}
        if offsets and await self.feed.commit(offsets):
            crash_point("export.committed")
            self.committed.update(offsets)
