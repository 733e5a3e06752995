"""The export cycle on a feed of batches: the ledger read before a new assignment's records, dead letters for
what is not a batch, offsets lost to the topic's retention recorded, commits after the ledger."""

import asyncio
from types import SimpleNamespace

from aiokafka import TopicPartition

from stream.export.cycle import ExportCycle
from stream.export.feed import Gap, KafkaFeed
from stream.export.ledger import LedgerIndex
from tests.unit.export.test_completion import GRACE, H7, HOUR, batch, make


class FakeFeed:
    """Batches handed out poll by poll, as a consumer's getmany would; commits and gaps noted."""

    topic = "events.accepted"

    def __init__(self, polls, assigned=None, gaps=()):
        self.polls, self.assigned, self.gaps, self.commits, self.seeks = list(polls), assigned, list(gaps), [], []

    def take_assigned(self):
        assigned, self.assigned = self.assigned, None
        return assigned

    def take_gaps(self):
        gaps, self.gaps = self.gaps, []
        return gaps

    async def poll(self):
        return self.polls.pop(0) if self.polls else {}

    async def caught_up(self, polled):
        return {0, 1} - polled

    async def lag(self):
        return 0

    async def seek(self, partition, offset):
        self.seeks.append((partition, offset))

    async def commit(self, offsets):
        self.commits.append(offsets)
        return True


class Tail:
    def __init__(self, records):
        self.records = records
        self.seen = 0

    async def poll(self):
        new, self.seen = self.records[self.seen:], len(self.records)
        return new


def rec(offset, value):
    return SimpleNamespace(offset=offset, value=value, timestamp=0, key=None)


def test_a_cycle_reads_the_ledger_first_then_writes_records_seals_marks_and_commits(tmp_path):
    ex, storage, records, clock = make(tmp_path, partitions=2)
    order, dead = [], []

    async def read_ledger():
        order.append("ledger")
        return LedgerIndex()

    async def dead_letter(p, r, exc):
        dead.append((p, r.offset, type(exc).__name__))
    feed = FakeFeed([{0: [rec(0, batch(H7, [b'{"a":1}'])), rec(1, b"not a batch")],
                      1: [rec(0, batch(H7, [b'{"b":1}']))]}], assigned={0, 1},
                    gaps=[Gap(1, 7, 9)])
    cycle = ExportCycle(ex, feed, read_ledger, Tail(records), dead_letter)
    asyncio.run(cycle.step())
    assert (order, [d[:2] for d in dead]) == (["ledger"], [(0, 1)])
    assert [(r.kind, r.partition, r.start_offset, r.end_offset) for r in records if r.kind != "seal"] == [
        ("gap", 1, 7, 8)]
    assert feed.commits == [{0: 0, 1: 0}]                 # open objects hold the commit back
    clock.t = H7 + HOUR + GRACE                            # the hour is over, the partitions idle
    ex._idle_ms = 0
    asyncio.run(cycle.step())
    asyncio.run(cycle.step())
    kinds = [r.kind for r in records]
    assert (kinds.count("object"), kinds.count("seal"), kinds[-1]) == (2, 4, "marker")   # seals: hours 6, then 7
    assert feed.commits[-1] == {0: 2, 1: 1}
    assert sorted(k for _, k in storage.objects) == ["amp/424242/424242_2024-03-09_7#0.json.gz",
                                                     "amp/424242/424242_2024-03-09_7#1.json.gz",
                                                     "amp/424242/424242_2024-03-09_7_complete"]


def test_the_feed_turns_an_offset_the_topic_no_longer_holds_into_a_gap_and_goes_on_from_its_first_offset():
    tp = TopicPartition("events.accepted", 2)
    seeks = []

    async def beginning_offsets(tps):
        return {t: 500 for t in tps}
    feed = KafkaFeed.__new__(KafkaFeed)
    feed.topic, feed._gaps = "events.accepted", []
    feed.consumer = SimpleNamespace(beginning_offsets=beginning_offsets, assignment=lambda: {tp},
                                    seek=lambda t, o: seeks.append((t.partition, o)))
    asyncio.run(feed._lost({tp: 120}))
    assert (feed.take_gaps(), seeks) == ([Gap(2, 120, 500)], [(2, 500)])
    asyncio.run(feed._lost({tp: 900}))                      # past the end: nothing was lost
    assert (feed.take_gaps(), seeks[-1]) == ([], (2, 500))


def test_records_polled_once_the_exporter_is_asked_to_stop_are_neither_written_nor_committed(tmp_path):
    """Turned off at runtime while it polls: what the poll brought is left to the next run of the exporter."""
    ex, storage, records, clock = make(tmp_path, partitions=2)

    async def read_ledger():
        return LedgerIndex()

    async def dead_letter(p, r, exc):
        raise AssertionError("no dead letter")
    stopping = []
    feed = FakeFeed([{0: [rec(0, batch(H7, [b'{"a":1}']))]}, {1: [rec(0, batch(H7, [b'{"b":1}']))]}],
                    assigned={0, 1})
    cycle = ExportCycle(ex, feed, read_ledger, Tail(records), dead_letter, stop=lambda: bool(stopping))
    asyncio.run(cycle.step())
    assert (feed.commits, sorted(ex.writers)) == ([{0: 0}], [0, 1])   # the open object holds the commit back
    stopping.append(True)
    written = [(r.kind, r.partition) for r in records]
    assert written == [("seal", 0), ("seal", 1)]          # hour 6, before the first record's hour
    clock.t = H7 + HOUR + GRACE                            # the hour is over, the partitions idle
    ex._idle_ms = 0
    asyncio.run(cycle.step())                              # polls partition 1's batch: not taken
    assert (feed.polls, feed.commits, [(r.kind, r.partition) for r in records], storage.objects) == (
        [], [{0: 0}], written, {})
