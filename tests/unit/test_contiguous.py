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
