"""stream.kafka.to_end over a scripted broker: the end offsets taken when the read starts (raised to the first fetch's
high watermark where the broker reports them short), polls that return nothing waited past, a read that fetches
nothing for its bound raises ReadStalled."""

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from stream.clock import FakeClock
from stream.kafka import ReadStalled, records_to_end

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


class Broker:
    """A consumer whose partitions hold ``held`` records, whose end offsets are ``reported``, and whose polls answer
    as ``script`` says, one entry a poll: a partition -> how many records that poll fetches from its position (the
    high watermark of the response is what the partition holds then), or None for a poll that gets nothing within
    its timeout (the clock moves on by it)."""

    def __init__(self, clock, held, reported, script):
        self.clock, self.held, self.reported, self.script = clock, held, reported, list(script)
        self.positions = {tp: 0 for tp in held}
        self.high = {}
        self.polls = []

    def assignment(self):
        return set(self.held)

    async def end_offsets(self, tps):
        return {tp: self.reported[tp] for tp in tps}

    def highwater(self, tp):
        return self.high.get(tp)

    async def position(self, tp):
        return self.positions[tp]

    async def getmany(self, *tps, timeout_ms):
        self.polls.append(sorted(tp.partition for tp in tps))
        step = self.script.pop(0) if self.script else None
        if step is None:
            self.clock.advance(timeout_ms)
            return {}
        got = {}
        for tp, n in step.items():
            self.high[tp] = self.held[tp] if isinstance(self.held[tp], int) else self.held[tp].pop(0)
            first = self.positions[tp]
            got[tp] = [SimpleNamespace(partition=tp.partition, offset=o) for o in range(first, first + n)]
            self.positions[tp] = first + n
        return got


def read(broker, clock, poll_ms=300, stall_s=60.0):
    async def run():
        return [(r.partition, r.offset) async for r in records_to_end(broker, poll_ms, stall_s, clock)]
    return asyncio.run(run())


def test_a_read_waits_past_polls_that_get_nothing_until_every_partition_is_at_its_end():
    clock = FakeClock(0)
    broker = Broker(clock, {P0: 3, P1: 2}, {P0: 3, P1: 2}, [None, None, None, {P0: 2}, None, None, {P0: 1, P1: 2}])
    assert read(broker, clock) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert broker.polls == [[0, 1]] * 7
    assert clock.now_ms() == 5 * 300


def test_end_offsets_reported_short_are_raised_to_the_first_fetchs_high_watermark_and_no_further():
    """The local broker reports 1 for a partition of 4; records written while the read goes on (the high watermark
    of the later fetches, 6) are not waited for."""
    clock = FakeClock(0)
    broker = Broker(clock, {P0: [4, 6, 6]}, {P0: 1}, [{P0: 1}, None, {P0: 2}, {P0: 1}, {P0: 2}])
    assert read(broker, clock) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert len(broker.polls) == 4


def test_an_empty_partition_reads_nothing_and_an_empty_assignment_is_read_without_a_poll():
    clock = FakeClock(0)
    broker = Broker(clock, {P0: 0}, {P0: 0}, [{P0: 0}])
    assert (read(broker, clock), clock.now_ms()) == ([], 0)
    broker = Broker(clock, {}, {}, [])
    assert (read(broker, clock), broker.polls) == ([], [])


def test_a_partition_at_its_end_is_not_polled_while_another_is_read_on():
    clock = FakeClock(0)
    broker = Broker(clock, {P0: 1, P1: 3}, {P0: 1, P1: 3}, [{P0: 1, P1: 1}, {P1: 2}])
    assert read(broker, clock) == [(0, 0), (1, 0), (1, 1), (1, 2)]
    assert broker.polls == [[0, 1], [1]]


def test_a_read_that_fetches_nothing_for_its_bound_raises_read_stalled_with_where_it_stopped():
    clock = FakeClock(0)
    broker = Broker(clock, {P0: 5, P1: 2}, {P0: 5, P1: 2}, [{P0: 2, P1: 2}] + [None] * 10)
    with pytest.raises(ReadStalled) as e:
        read(broker, clock, poll_ms=1000, stall_s=3)
    assert str(e.value) == ("nothing was fetched for 3s while reading to the end: t[0] at offset 2 of 5; the broker "
                            "is slow or unreachable (see its logs and the worker's connection errors), try again once "
                            "it answers")
    assert (broker.polls, clock.now_ms()) == ([[0, 1]] + [[0]] * 3, 3000)


def test_fetched_ends_are_the_reported_ones_raised_to_the_first_fetch_response_of_each_partition():
    from stream.kafka import fetched_ends
    clock = FakeClock(0)
    broker = Broker(clock, {P0: [9, 12], P1: [2]}, {P0: 4, P1: 2}, [None, {P0: 0}, None, {P0: 0, P1: 0}])
    assert asyncio.run(fetched_ends(broker, 500, 60, clock)) == {P0: 9, P1: 2}
    assert broker.polls == [[0, 1], [0, 1], [1], [1]]


def test_fetched_ends_raise_read_stalled_when_no_fetch_response_comes_for_the_bound():
    from stream.kafka import fetched_ends
    clock = FakeClock(0)
    broker = Broker(clock, {P0: [9], P1: [2]}, {P0: 4, P1: 2}, [{P0: 0}] + [None] * 10)
    with pytest.raises(ReadStalled) as e:
        asyncio.run(fetched_ends(broker, 500, 2, clock))
    assert str(e.value) == ("no fetch response came for 2s while finding the end of t[1]; the broker is slow or "
                            "unreachable (see its logs and the worker's connection errors), try again once it answers")
    assert (len(broker.polls), clock.now_ms()) == (5, 2000)
