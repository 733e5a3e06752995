from stream.agents.contiguous import gap


def test_a_gap_is_the_offsets_between_the_next_expected_and_the_one_that_came():
    assert [gap(None, 5), gap(5, 5), gap(6, 5), gap(3, 5)] == [None, None, None, (3, 5)]


def test_each_hands_over_the_records_read_back_before_the_one_that_revealed_them_in_order():
    import asyncio
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from stream.agents.contiguous import Contiguous

    event = _event

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

    from stream.agents.contiguous import Contiguous

    event = _event

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


def _tail_app(topic, highwater, read_offset, starts, active=None):
    """A faust app as the tail check reads it: its consumer's assignment, high watermarks and read offsets."""
    from types import SimpleNamespace

    from aiokafka import TopicPartition
    from faust.types import TP

    hw = {TP(topic, p): o for p, o in highwater.items()}
    consumer = SimpleNamespace(highwater=hw.__getitem__, assignment=lambda: set(hw),
                               _read_offset={TP(topic, p): o for p, o in read_offset.items()})
    active = active if active is not None else [True]
    return SimpleNamespace(seeks=1, starts={TopicPartition(topic, p): o for p, o in starts.items()},
                           consumer=consumer, flow_control=SimpleNamespace(is_active=lambda: active[0]),
                           rebalancing=False)


def _event(partition, offset):
    from types import SimpleNamespace

    from stream.agents.contiguous import Record
    return Record(b"v%d" % offset, SimpleNamespace(partition=partition, offset=offset))


async def _until(cond, what, timeout_s=10.0):
    import asyncio
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_the_tail_check_reads_back_tails_only_after_quiet_checks_and_starts_again_after_a_handling_or_a_seek():
    import asyncio

    from aiokafka import TopicPartition

    from stream.agents import contiguous
    from stream.agents.contiguous import Contiguous

    active = [True]
    # partition 0: its last record (0) read by faust and never handed over; 1: read to 2499 of 2500
    app = _tail_app("links", {0: 1, 1: 2500, 2: 7}, {0: 0, 1: 2499, 2: 3}, {0: 0, 1: 0, 2: 4}, active)
    reads, handled = [], []

    async def read(client_args, topic, partition, first, end):
        reads.append((topic, partition, first, end))
        return [_event(partition, o) for o in range(first, end)]

    async def handle(records):
        handled.append([(r.message.partition, r.message.offset) for r in records])

    n = contiguous.TAIL_READ_MAX
    assert contiguous.TAIL_QUIET_CHECKS == 2

    async def run():
        c = Contiguous(app, "links", {}, "identity", read=read)

        async def check():
            return await c.check_tails(handle)
        assert [await check(), await check()] == [{}, {}]      # the first check, then one quiet: not yet
        c._handled += 1                                       # the agent handled a record meanwhile
        assert [await check(), await check()] == [{}, {}]
        # quiet twice: both tails, 1's a part of it; 2 is read by faust to 3 only (4-6 wait in its conductor)
        assert await check() == {0: (0, 1), 1: (0, n)}
        assert [await check(), await check()] == [{}, {}]     # the read-back was a handling
        assert await check() == {1: (n, 2 * n)}               # 0 at its end now
        app.seeks, app.starts = 2, {TopicPartition("links", 1): 2400}
        assert [await check(), await check()] == [{}, {}]     # a seek: quiet checks again
        active[0] = False
        assert await check() == {}                            # the flow held: nothing compared
        active[0] = True
        assert await check() == {1: (2400, 2500)}
    asyncio.run(run())
    assert reads == [("links", 0, 0, 1), ("links", 1, 0, n), ("links", 1, n, 2 * n), ("links", 1, 2400, 2500)]
    assert [len(h) for h in handled] == [1, n, n, 100] and handled[0] == [(0, 0)]
    assert handled[3][0] == (1, 2400) and handled[3][-1] == (1, 2499)


def test_records_waiting_while_the_agent_handles_another_partitions_are_not_taken_for_passed_over():
    import asyncio

    from stream.agents.contiguous import Contiguous

    # partition 1's record 0 is read by faust (its end is 1) but waits while the agent handles partition 0's
    app = _tail_app("files", {0: 1, 1: 1}, {0: 0, 1: 0}, {0: 0, 1: 0})
    log, reads, checks = [], [], []

    async def run():
        class Stream:
            async def events(self):
                await _until(lambda: len(checks) >= 1, "a check with the agent idle")
                yield _event(0, 0)
                yield _event(1, 0)

        async def read(client_args, topic, partition, first, end):
            reads.append((partition, first, end))
            return [_event(partition, o) for o in range(first, end)]

        async def handle(e):
            log.append((e.message.partition, e.message.offset))
            if e.message.partition == 0:
                await _until(lambda: len(checks) >= 2, "a check begun while the agent is busy")
                await asyncio.sleep(0.1)

        c = Contiguous(app, "files", {}, "import", read=read, tail_check_s=0.03)
        check_tails = c.check_tails

        async def counted(handle):
            checks.append(1)
            return await check_tails(handle)
        c.check_tails = counted
        await c.each(Stream(), handle)
    asyncio.run(run())
    assert (log, reads) == ([(0, 0), (1, 0)], []) and len(checks) >= 2


def test_each_hands_over_a_tail_the_check_reads_back_between_the_streams_events_never_during_one():
    import asyncio

    from stream.agents.contiguous import Contiguous

    app = _tail_app("links", {0: 3}, {0: 2}, {0: 0})
    log = []

    async def run():
        go = asyncio.Event()

        class Stream:
            async def events(self):
                yield _event(0, 0)
                await go.wait()      # the consumer hands nothing more over: offsets 1 and 2 were passed over

        async def read(client_args, topic, partition, first, end):
            return [_event(partition, o) for o in range(first, end)]

        async def handle(e):
            log.append(("start", e.message.offset))
            await asyncio.sleep(0.1)     # longer than the check's period: the check waits for the handling
            log.append(("end", e.message.offset))

        task = asyncio.ensure_future(
            Contiguous(app, "links", {}, "identity", read=read, tail_check_s=0.03).each(Stream(), handle))
        await _until(lambda: len(log) >= 6, "the tail handed over")
        await asyncio.sleep(0.2)         # and nothing more: the tail is handed over once
        go.set()
        await task
    asyncio.run(run())
    assert log == [("start", 0), ("end", 0), ("start", 1), ("end", 1), ("start", 2), ("end", 2)]


def test_a_handler_failing_on_a_tail_stops_the_agent_with_its_error_and_the_tail_is_read_again_next_time():
    import asyncio

    from stream.agents.contiguous import Contiguous

    app = _tail_app("links", {0: 3}, {0: 2}, {0: 1})
    reads, log = [], []

    async def read(client_args, topic, partition, first, end):
        reads.append((first, end))
        return [_event(partition, o) for o in range(first, end)]

    class Stream:
        async def events(self):
            await asyncio.Event().wait()     # nothing handed over: the tail 1-2 was passed over
            yield _event(0, 3)

    async def failing(e):
        log.append(e.message.offset)
        raise ValueError("the state store is closed")

    c = Contiguous(app, "links", {}, "identity", read=read, tail_check_s=0.03)
    try:
        asyncio.run(asyncio.wait_for(c.each(Stream(), failing), 10))
        raise AssertionError("the agent went on")
    except ValueError as exc:
        assert str(exc) == "the state store is closed"
    assert (reads, log, c._next) == ([(1, 3)], [1], {0: 1})

    async def handle(e):
        log.append(e.message.offset)

    async def again():
        task = asyncio.ensure_future(c.each(Stream(), handle))
        await _until(lambda: len(log) >= 3, "the tail handed over again")
        task.cancel()
    asyncio.run(again())
    assert (reads, log, c._next) == ([(1, 3), (1, 3)], [1, 1, 2], {0: 3})


def test_a_revocation_of_the_partitions_waits_for_a_tail_being_handed_over():
    import asyncio

    from faust.types import TP

    from stream.agents.contiguous import Contiguous

    app = _tail_app("links", {0: 2}, {0: 1}, {0: 0})
    connected = []
    app.on_partitions_revoked = type("Signal", (), {"connect": lambda self, fn: connected.append(fn)})()
    log = []

    async def run():
        release = asyncio.Event()

        async def read(client_args, topic, partition, first, end):
            return [_event(partition, o) for o in range(first, end)]

        async def handle(records):
            log.append("tail")
            await release.wait()
            log.append("tail handled")

        c = Contiguous(app, "links", {}, "identity", read=read)
        assert connected == [c._wait_for_the_tail]
        await c.check_tails(handle)
        await c.check_tails(handle)
        tail = asyncio.ensure_future(c.check_tails(handle))
        await _until(lambda: log == ["tail"], "the tail's handling")

        async def revoke(revoked):
            await connected[0](app, revoked)
            log.append("revoked " + ",".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked)))
        await revoke({TP("other", 0)})                       # another topic's partitions: no wait
        revoking = asyncio.ensure_future(revoke({TP("links", 0)}))
        await asyncio.sleep(0.05)
        assert not revoking.done()
        release.set()
        await asyncio.gather(tail, revoking)
    asyncio.run(run())
    assert log == ["tail", "revoked other[0]", "tail handled", "revoked links[0]"]
