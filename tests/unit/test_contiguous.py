from stream.agents.contiguous import gap


def test_a_gap_is_the_offsets_between_the_next_expected_and_the_one_that_came():
    assert [gap(None, 5), gap(5, 5), gap(6, 5), gap(3, 5)] == [None, None, None, (3, 5)]


def test_each_hands_over_the_records_read_back_before_the_one_that_revealed_them_in_order():
    import asyncio
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from stream.agents.contiguous import Contiguous, Record

    def event(partition, offset):
        return Record(b"v%d" % offset, SimpleNamespace(partition=partition, offset=offset))

    class Stream:
        async def events(self):
            for e in (event(0, 4), event(1, 0), event(0, 5), event(0, 8), event(1, 1)):
                yield e
    reads = []

    async def read(client_args, topic, partition, first, end):
        reads.append((topic, partition, first, end))
        return [event(partition, o) for o in range(first, end)]
    app = SimpleNamespace(seeks=1, starts={TopicPartition("events.valid", 0): 2, TopicPartition("other", 1): 0})
    handled = []

    async def handle(e):
        handled.append((e.message.partition, e.message.offset))
    asyncio.run(Contiguous(app, "events.valid", {}, "dedupe", read=read).each(Stream(), handle))
    assert reads == [("events.valid", 0, 2, 4), ("events.valid", 0, 6, 8)]
    assert handled == [(0, 2), (0, 3), (0, 4), (1, 0), (0, 5), (0, 6), (0, 7), (0, 8), (1, 1)]


def test_takes_hand_over_each_take_with_the_records_read_back_before_the_ones_that_revealed_them():
    import asyncio
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from stream.agents.contiguous import Contiguous, Record

    def event(partition, offset):
        return Record(b"v%d" % offset, SimpleNamespace(partition=partition, offset=offset))

    async def takes():
        yield [event(0, 4), event(1, 0), event(0, 5)]
        yield [event(0, 8), event(1, 1)]
        yield [event(1, 2)]
    reads = []

    async def read(client_args, topic, partition, first, end):
        reads.append((topic, partition, first, end))
        return [event(partition, o) for o in range(first, end)]
    app = SimpleNamespace(seeks=1, starts={TopicPartition("cohorts", 0): 2, TopicPartition("other", 1): 0})
    handled = []

    async def handle(records):
        handled.append([(r.message.partition, r.message.offset) for r in records])
    asyncio.run(Contiguous(app, "cohorts", {}, "cohorts-state", read=read).takes(takes(), handle))
    assert reads == [("cohorts", 0, 2, 4), ("cohorts", 0, 6, 8)]
    assert handled == [[(0, 2), (0, 3), (0, 4), (1, 0), (0, 5)], [(0, 6), (0, 7), (0, 8), (1, 1)], [(1, 2)]]


def test_a_partition_stalled_behind_its_end_since_the_previous_check_is_its_tail_passed_over():
    from stream.agents.contiguous import stalled

    expected = {0: 5, 1: 7, 2: 3, 3: 9, 4: 2}
    ends = {0: 6, 1: 9, 2: 3, 3: 12, 4: None}
    # 0: behind and unmoved; 1: behind but moved since (it was 6); 2: at its end; 3: no previous check; 4: end unknown
    assert stalled(expected, ends, {0: 5, 1: 6, 2: 3, 4: 2}) == {0: (5, 6)}
    assert stalled(expected, ends, {}) == {}


def test_the_tail_check_reads_back_a_stalled_partitions_tail_once_and_starts_again_after_a_seek():
    import asyncio
    from types import SimpleNamespace

    from aiokafka import TopicPartition
    from faust.types import TP

    from stream.agents import contiguous
    from stream.agents.contiguous import Contiguous, Record

    def event(partition, offset):
        return Record(b"v%d" % offset, SimpleNamespace(partition=partition, offset=offset))

    highwater = {TP("links", 0): 1, TP("links", 1): 2500, TP("other", 0): 9}
    consumer = SimpleNamespace(highwater=highwater.__getitem__, assignment=lambda: set(highwater))
    active = [True]
    app = SimpleNamespace(seeks=1, starts={TopicPartition("links", 0): 0, TopicPartition("links", 1): 0},
                          consumer=consumer, flow_control=SimpleNamespace(is_active=lambda: active[0]),
                          rebalancing=False)
    reads, handled = [], []

    async def read(client_args, topic, partition, first, end):
        reads.append((topic, partition, first, end))
        return [event(partition, o) for o in range(first, end)]

    async def handle(records):
        handled.append([(r.message.partition, r.message.offset) for r in records])

    async def run():
        c = Contiguous(app, "links", {}, "identity", read=read)
        first = await c.check_tails(handle, None)               # nothing compared yet: nothing read
        assert (first, reads) == ((1, {0: 0, 1: 0}), [])
        second = await c.check_tails(handle, first)             # unmoved since: both tails, 1's in steps
        assert second == (1, {0: 1, 1: contiguous.TAIL_READ_MAX})
        third = await c.check_tails(handle, second)             # 0 at its end now; 1 read on
        assert third == (1, {0: 1, 1: 2 * contiguous.TAIL_READ_MAX})
        app.seeks, app.starts = 2, {TopicPartition("links", 1): 2400}
        fourth = await c.check_tails(handle, third)             # a seek: compared again from the next check
        assert fourth == (2, {1: 2400})
        active[0] = False
        assert await c.check_tails(handle, fourth) == (2, {1: 2400})     # the flow held: nothing read
        active[0] = True
        assert await c.check_tails(handle, fourth) == (2, {1: 2500})
    asyncio.run(run())
    n = contiguous.TAIL_READ_MAX
    assert reads == [("links", 0, 0, 1), ("links", 1, 0, n), ("links", 1, n, 2 * n), ("links", 1, 2400, 2500)]
    assert [len(h) for h in handled] == [1, n, n, 100] and handled[0] == [(0, 0)]
    assert handled[3][0] == (1, 2400) and handled[3][-1] == (1, 2499)


def test_each_hands_over_a_tail_the_check_reads_back_between_the_streams_events_never_during_one():
    import asyncio
    from types import SimpleNamespace

    from aiokafka import TopicPartition
    from faust.types import TP

    from stream.agents.contiguous import Contiguous, Record

    def event(partition, offset):
        return Record(b"v%d" % offset, SimpleNamespace(partition=partition, offset=offset))

    consumer = SimpleNamespace(highwater={TP("links", 0): 3}.__getitem__, assignment=lambda: {TP("links", 0)})
    app = SimpleNamespace(seeks=1, starts={TopicPartition("links", 0): 0}, consumer=consumer,
                          flow_control=SimpleNamespace(is_active=lambda: True), rebalancing=False)
    log = []

    async def run():
        go = asyncio.Event()

        class Stream:
            async def events(self):
                yield event(0, 0)
                await go.wait()      # the consumer hands nothing more over: offsets 1 and 2 were passed over

        async def read(client_args, topic, partition, first, end):
            return [event(partition, o) for o in range(first, end)]

        async def handle(e):
            log.append(("start", e.message.offset))
            await asyncio.sleep(0.1)     # longer than the check's period: the check waits for the handling
            log.append(("end", e.message.offset))

        task = asyncio.ensure_future(
            Contiguous(app, "links", {}, "identity", read=read, tail_check_s=0.03).each(Stream(), handle))
        while len(log) < 6:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)         # and nothing more: the tail is handed over once
        go.set()
        await task
    asyncio.run(run())
    assert log == [("start", 0), ("end", 0), ("start", 1), ("end", 1), ("start", 2), ("end", 2)]
