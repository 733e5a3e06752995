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


def test_a_partition_behind_its_end_is_its_tail_passed_over():
    from stream.agents.contiguous import stalled

    expected = {0: 5, 1: 7, 2: 3, 3: 9}
    ends = {0: 6, 1: 9, 2: 3, 3: None}
    # 0 and 1: behind; 2: at its end; 3: end unknown
    assert stalled(expected, ends) == {0: (5, 6), 1: (7, 9)}


def test_the_tail_check_reads_back_tails_only_after_quiet_checks_and_starts_again_after_a_handling_or_a_seek():
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

    n = contiguous.TAIL_READ_MAX
    assert contiguous.TAIL_QUIET_CHECKS == 2

    async def run():
        c = Contiguous(app, "links", {}, "identity", read=read)
        c.check = lambda: c.check_tails(handle)
        assert [await c.check(), await c.check()] == [{}, {}]      # the first check, then one quiet: not yet
        c._handled += 1                                           # the agent handled a record meanwhile
        assert [await c.check(), await c.check()] == [{}, {}]
        assert await c.check() == {0: (0, 1), 1: (0, n)}          # quiet twice: both tails, 1's a part of it
        assert [await c.check(), await c.check()] == [{}, {}]     # the read-back was a handling
        assert await c.check() == {1: (n, 2 * n)}                 # 0 at its end now
        app.seeks, app.starts = 2, {TopicPartition("links", 1): 2400}
        assert [await c.check(), await c.check()] == [{}, {}]     # a seek: quiet checks again
        active[0] = False
        assert await c.check() == {}                              # the flow held: no end known
        active[0] = True
        assert await c.check() == {1: (2400, 2500)}
    asyncio.run(run())
    assert reads == [("links", 0, 0, 1), ("links", 1, 0, n), ("links", 1, n, 2 * n), ("links", 1, 2400, 2500)]
    assert [len(h) for h in handled] == [1, n, n, 100] and handled[0] == [(0, 0)]
    assert handled[3][0] == (1, 2400) and handled[3][-1] == (1, 2499)


def test_records_waiting_while_the_agent_handles_another_partitions_are_not_taken_for_passed_over():
    import asyncio
    from types import SimpleNamespace

    from aiokafka import TopicPartition
    from faust.types import TP

    from stream.agents.contiguous import Contiguous, Record

    def event(partition, offset):
        return Record(b"v%d" % offset, SimpleNamespace(partition=partition, offset=offset))

    # partition 1's record 0 is fetched (its end is 1) but waits while the agent handles partition 0's slow record
    consumer = SimpleNamespace(highwater={TP("files", 0): 1, TP("files", 1): 1}.__getitem__,
                               assignment=lambda: {TP("files", 0), TP("files", 1)})
    app = SimpleNamespace(seeks=1, starts={TopicPartition("files", 0): 0, TopicPartition("files", 1): 0},
                          consumer=consumer, flow_control=SimpleNamespace(is_active=lambda: True), rebalancing=False)
    log, reads = [], []

    async def run():
        class Stream:
            async def events(self):
                await asyncio.sleep(0.04)    # a check first, the agent idle
                yield event(0, 0)
                yield event(1, 0)

        async def read(client_args, topic, partition, first, end):
            reads.append((partition, first, end))
            return [event(partition, o) for o in range(first, end)]

        async def handle(e):
            log.append((e.message.partition, e.message.offset))
            if e.message.partition == 0:
                await asyncio.sleep(0.5)     # 16 check periods

        await Contiguous(app, "files", {}, "import", read=read, tail_check_s=0.03).each(Stream(), handle)
    asyncio.run(run())
    assert (log, reads) == ([(0, 0), (1, 0)], [])


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
