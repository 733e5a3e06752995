"""A backfill and the live export of the same hours, interleaved step by step (one topic in memory, one ledger, one
bucket, a fake clock): the backfill's claim holds the live exporter off the claimed offsets, both ways it has to.

- partition 0: the live export lags; offsets of the claimed hour below the claim's end are unread when the claim
  comes. The ledger index counts them as written (``LedgerIndex.written_through``), so the live exporter skips
  them; without that, it writes them into an object that the backfill overwrites under the same key, and the
  straggler in it is lost;
- partition 1: the live exporter holds an open object of the claimed hour when the claim comes. It drops it and
  reads the partition again (``Exporter.claim``); without that, the object it uploads later holds an event the
  backfill's object of the same key holds, and loses the one the backfill's held.
"""

import asyncio
import gzip
from types import SimpleNamespace

from stream.clock import FakeClock
from stream.export.backfill import Acknowledgements, Backfill, Request
from stream.export.cycle import ExportCycle
from stream.export.exporter import Exporter
from stream.export.ledger import LedgerIndex
from stream.s3.storage import MemoryStorage
from tests.unit.export.test_writer import H7, HOUR, batch, settings

JOB = "bf-20240309T120000-abcdef"


class Topic:
    """events.accepted in memory: partition -> its records' values, in offset order."""

    def __init__(self):
        self.values: dict[int, list[bytes]] = {0: [], 1: []}

    def produce(self, partition, *lines):
        self.values[partition].append(batch(H7, [ln.encode() for ln in lines]))


class TopicFeed:
    """The live exporter's consumer on the in-memory topic: every poll takes what is there past its position."""

    topic = "events.accepted"

    def __init__(self, topic, per_poll):
        self.t, self.per_poll, self.position, self.assigned = topic, per_poll, {0: 0, 1: 0}, {0, 1}

    def take_assigned(self):
        assigned, self.assigned = self.assigned, None
        return assigned

    def take_gaps(self):
        return []

    async def poll(self):
        out = {}
        for p, values in self.t.values.items():
            if self.position[p] < len(values):
                end = min(len(values), self.position[p] + self.per_poll)
                out[p] = [SimpleNamespace(offset=o, value=values[o]) for o in range(self.position[p], end)]
                self.position[p] = end
        return out

    async def caught_up(self, polled):
        return {p for p, values in self.t.values.items() if p not in polled and self.position[p] == len(values)}

    async def seek(self, partition, offset):
        self.position[partition] = offset

    async def lag(self):
        return 0

    async def commit(self, offsets):
        return True


class LedgerTail:
    def __init__(self, ledger):
        self.ledger, self.seen = ledger, 0

    async def poll(self):
        new, self.seen = self.ledger[self.seen:], len(self.ledger)
        return new


class Interleaved(Backfill):
    """The backfill with its Kafka reads served from the in-memory topic and ledger; while it waits for the
    acknowledgements, the live export runs (``live``), and stragglers arrive (``arrive``)."""

    def __init__(self, topic, ledger, live, arrive, **kw):
        super().__init__(**kw)
        self.t, self.ledger, self.live, self.arrive = topic, ledger, live, arrive

    async def _live_ledger(self, source):
        return list(self.ledger)

    async def _end_offsets(self, topic):
        return {p: len(v) for p, v in self.t.values.items()}

    async def _await_acknowledgements(self, source, claim):
        self.arrive()
        acks, seen = Acknowledgements(claim), 0
        while not acks.done():
            await self.live()
            acks.take(self.ledger[seen:])
            seen = len(self.ledger)
        for _ in range(3):         # the live export goes on while the backfill reads the topic
            await self.live()
        return acks

    async def _read(self, topic, ends):
        for p, end in sorted(ends.items()):
            for o in range(end):
                yield p, o, self.t.values[p][o]


def lines_of(storage):
    return {k.removeprefix("amp/424242/424242_2024-03-09_7#"): gzip.decompress(body).decode().splitlines()
            for (_, k), body in storage.objects.items() if k.endswith(".json.gz")}


class Run:
    """The live export of partitions 0 and 1 on a fake clock past hour 7, and a backfill of hour 7 beside it."""

    def __init__(self, tmp_path, max_object_events, per_poll):
        self.s = settings(idle_close_s=0, max_object_events=max_object_events)
        self.topic, self.ledger, self.storage = Topic(), [], MemoryStorage()
        self.clock, self.tmp = FakeClock(H7 + 3 * HOUR), tmp_path

        async def read_ledger():
            return LedgerIndex(self.ledger)

        async def dead_letter(p, r, exc):
            raise exc
        (tmp_path / "live").mkdir()
        ex = Exporter(self.s, self.s.destinations[0], self.storage, self.clock, tmp_path / "live", self.append,
                      LedgerIndex(), partitions=2)
        self.cycle = ExportCycle(ex, TopicFeed(self.topic, per_poll), read_ledger, LedgerTail(self.ledger),
                                 dead_letter)

    async def append(self, rec):
        self.ledger.append(rec)

    def live(self, steps):
        for _ in range(steps):
            asyncio.run(self.cycle.step())

    def backfill(self, arrive):
        """Claim hour 7; ``arrive`` produces what comes after the claim; the live export runs until it acknowledged
        the claim and three steps more; then the backfill writes and cleans, and the live export runs on."""
        b = Interleaved(self.topic, self.ledger, self.cycle.step, arrive, settings=self.s,
                        request=Request("main", H7, H7 + HOUR, job=JOB), storage=self.storage,
                        append_ledger=self.append, clock=self.clock, spool_dir=self.tmp / "bf")
        asyncio.run(b._rebuild_from_topic(b.inputs[0], [H7]))
        self.live(3)
        return lines_of(self.storage)


def test_the_live_export_writes_no_claimed_offset_it_had_not_read_nor_one_it_held_in_an_open_object(tmp_path):
    """The live export reads one batch of each partition per poll. Partition 0 lags: a2 and a3 are unread when the
    claim comes; partition 1 holds b2 in an open object. After the claim, a4 and b3 arrive (stragglers)."""
    run = Run(tmp_path, max_object_events=3, per_poll=1)
    run.topic.produce(0, "a1")
    run.topic.produce(1, "b1")
    run.live(2)                                    # both written, each partition caught up
    run.topic.produce(1, "b2")
    run.live(1)                                    # taken into an open object
    run.topic.produce(0, "a2")
    run.topic.produce(0, "a3")                     # not read yet

    def arrive():
        run.topic.produce(0, "a4")
        run.topic.produce(1, "b3")
    assert run.backfill(arrive) == {
        "0.json.gz": ["a1"], "1000.json.gz": ["a2", "a3"], "3000.json.gz": ["a4"],     # partition 0
        "1.json.gz": ["b1"], "1001.json.gz": ["b2"], "2001.json.gz": ["b3"]}            # partition 1
    objects = [(r.partition, r.start_offset, r.end_offset, "job" in r.detail) for r in run.ledger if r.kind == "object"]
    assert [o for o in objects if not o[3]] == [(0, 0, 0, False), (1, 0, 0, False), (1, 2, 2, False),
                                                (0, 3, 3, False)]    # live: before the claim, and stragglers


def test_an_object_the_live_export_wrote_across_the_claimed_end_before_it_read_the_claim_is_rebuilt_whole(tmp_path):
    """a3 arrives after the claim and is read, with a2 below the claim's end, into one object that the live export
    writes before it reads the claim: the backfill's object of a2, under the same key, holds a3 too."""
    run = Run(tmp_path, max_object_events=2, per_poll=10)
    run.topic.produce(0, "a1")
    run.live(2)
    run.topic.produce(0, "a2")                     # not read yet
    assert run.backfill(lambda: run.topic.produce(0, "a3")) == {"0.json.gz": ["a1"], "1000.json.gz": ["a2", "a3"]}
    assert [(r.partition, r.start_offset, r.end_offset, r.detail) for r in run.ledger if r.kind == "object"][-1] == (
        0, 1, 2, f'{{"job":"{JOB}"}}')
