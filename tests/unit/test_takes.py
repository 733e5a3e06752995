"""Takes of the mirror's mutations: a burst is one take, closed by quiet, by size or by age; acknowledged after."""

import asyncio
import math
import weakref

import pytest

from stream.agents.takes import left, take_bursts
from stream.clock import FakeClock


@pytest.mark.parametrize("size,first,last,now,wait", [
    (0, 0.0, 0.0, 7.0, 0.5),          # nothing taken: look again after the quiet time
    (3, 1.0, 1.2, 1.3, 0.4),          # records still coming: wait until 0.5 s after the last
    (3, 1.0, 1.2, 1.7, 0.0),          # quiet for 0.5 s: closes
    (3, 1.0, 10.9, 11.0, 0.0),        # 10 s after the first: closes, however many still come
    (3, 1.0, 10.6, 10.8, 0.2),
    (5, 1.0, 1.0, 1.0, 0.0),          # full: closes at once
])
def test_a_take_closes_after_a_quiet_time_at_its_age_limit_or_when_full(size, first, last, now, wait):
    assert left(size, 5, first, last, now, 0.5, 10.0) == pytest.approx(wait)


class Event:
    def __init__(self, n):
        self.n = n


class FakeStream:
    """The parts of a faust stream a take uses; records arrive at given times of a fake clock, delivered while the
    take waits."""

    def __init__(self, arrivals, clock):
        self.arrivals, self.clock = sorted(arrivals, key=lambda a: a[0]), clock
        self.enable_acks, self._processors, self.acked = True, [], []
        self.current_event, self.channel, self.loop = None, [], asyncio.get_running_loop()
        self.should_stop = False
        self._active_agens = set()

    def add_processor(self, p):
        self._processors.append(p)

    def _enable_passive(self, it):
        pass

    async def wait(self, event):
        await event.wait()

    async def wait_for_stopped(self, event, timeout):
        until = self.clock.now_ms() + max(1, math.ceil(timeout * 1000))
        while self.arrivals and self.arrivals[0][0] <= until and not event.is_set():
            at, n = self.arrivals.pop(0)
            self.clock.advance(max(0, at - self.clock.now_ms()))
            self.current_event = Event(n)
            task = self.loop.create_task(self._processors[0](n))
            await asyncio.wait({task}, timeout=0.05)
        if not event.is_set():
            self.clock.advance(max(0, until - self.clock.now_ms()))
        if not self.arrivals and not event.is_set() and self.clock.now_ms() > 60_000:
            self.should_stop = True
        return False

    async def ack(self, event):
        self.acked.append(event.n)


def takes_of(arrivals, max_=100, weight=None):
    async def go():
        clock = FakeClock(0)
        stream = FakeStream(arrivals, clock)
        out = []
        agen = take_bursts(stream, max_, 0.5, 10.0, lambda: clock.now_ms() / 1000, weight=weight)
        assert agen in stream._active_agens
        async for events in agen:
            out.append(([e.n for e in events], clock.now_ms(), list(stream.acked)))
        return out, stream
    return asyncio.run(go())


def test_a_burst_across_what_was_a_fixed_tick_is_one_take_acknowledged_once_the_agent_asks_for_the_next():
    burst = [(1_500 + 100 * i, i) for i in range(10)]             # 1.5 s .. 2.4 s: a 2 s tick would cut it
    out, stream = takes_of(burst + [(5_000, 10)])
    assert [(ns, at) for ns, at, _ in out] == [(list(range(10)), 2_900), ([10], 5_500)]
    assert [acked for _, _, acked in out] == [[], list(range(10))]  # nothing acknowledged while a take is worked on
    assert stream.acked == list(range(11)) and stream.enable_acks is True and stream._processors == []


def test_a_take_holds_at_most_max_records_and_closes_at_its_age_limit():
    out, _ = takes_of([(0, i) for i in range(5)], max_=3)
    assert [(ns, at) for ns, at, _ in out] == [([0, 1, 2], 0), ([3, 4], 500)]
    steady = [(400 * i, i) for i in range(40)]                      # never quiet for 0.5 s
    out, _ = takes_of(steady)
    assert [(ns[0], ns[-1]) for ns, _, _ in out] == [(0, 25), (26, 39)]
    assert [at for _, at, _ in out] == [pytest.approx(10_000, abs=1), pytest.approx(16_100, abs=1)]  # ms rounding


def test_a_take_of_weighed_records_holds_at_most_max_of_their_weight_overshot_by_its_last_record():
    # a record of events.mutations carries many mutations: the take counts those (TAKE_MAX mutations), not records
    out, _ = takes_of([(0, i) for i in range(6)], max_=10, weight=lambda e: 4)
    assert [(ns, at) for ns, at, _ in out] == [([0, 1, 2], 0), ([3, 4, 5], 0)]
    out, _ = takes_of([(0, 7), (0, 1), (0, 2), (0, 1)], max_=10, weight=lambda e: e.n)
    assert [(ns, at) for ns, at, _ in out] == [([7, 1, 2], 0), ([1], 500)]
    out, _ = takes_of([(0, i) for i in range(6)], max_=10)          # no weight: each record counts 1
    assert [(ns, at) for ns, at, _ in out] == [([0, 1, 2, 3, 4, 5], 500)]


# --- a take the agent is done with ------------------------------------------------------------------------------------
class WorkingStream(FakeStream):
    """A FakeStream whose records also arrive while the agent works on a take (``work_until``); as in faust, the next
    record is delivered only once the stream's processor returned for the one before, and the stream holds the event
    it processes, its ``current_event`` a weak reference."""

    blocked = blocked_event = None
    _current = None

    @property
    def current_event(self):       # as faust's: a weak reference to the event being processed
        return self._current() if self._current is not None else None

    @current_event.setter
    def current_event(self, event):
        self._current = weakref.ref(event) if event is not None else None

    async def deliver(self, until: int) -> None:
        if self.blocked is not None:
            await asyncio.wait({self.blocked}, timeout=0.05)
            if self.blocked.done():
                self.blocked = self.blocked_event = None
        while self.arrivals and self.arrivals[0][0] <= until and self.blocked is None:
            at, n = self.arrivals.pop(0)
            self.clock.advance(max(0, at - self.clock.now_ms()))
            event = Event(n)
            self.current_event = event
            task = self.loop.create_task(self._processors[0](n))
            await asyncio.wait({task}, timeout=0.05)
            if not task.done():
                self.blocked = task     # the stream waits on its processor: nothing more arrives meanwhile
                self.blocked_event = event      # held by the stream until its processor returns

    async def work_until(self, ms: int) -> None:
        await self.deliver(ms)
        self.clock.advance(max(0, ms - self.clock.now_ms()))

    async def wait_for_stopped(self, event, timeout):
        until = self.clock.now_ms() + max(1, math.ceil(timeout * 1000))
        await self.deliver(until)
        if not event.is_set():
            self.clock.advance(max(0, until - self.clock.now_ms()))
        if not self.arrivals and self.blocked is None and not event.is_set() and self.clock.now_ms() > 60_000:
            self.should_stop = True
        return False


def test_a_take_the_agent_is_done_with_is_not_held_while_the_next_is_waited_for():
    # the mirror's rebuilds run while its agent waits for the next take: the last take's records must not stay
    # alive meanwhile (a take holds up to mirror.take_max_bytes of records)
    import gc

    async def go():
        clock = FakeClock(0)
        stream = WorkingStream([(100 * i, i) for i in range(5)] + [(20_000, 5)], clock)
        refs: list = []
        alive_while_waiting: list[int] = []
        original = stream.wait_for_stopped

        async def waiting(event, timeout):
            if refs and not alive_while_waiting:     # the first wait for the next take (one collection: a full
                gc.collect()                          # collection in a process holding many objects is slow)
                alive_while_waiting.append(sum(r() is not None for r in refs))
            return await original(event, timeout)
        stream.wait_for_stopped = waiting
        taken = []
        async for events in take_bursts(stream, 100, 0.5, 10.0, lambda: clock.now_ms() / 1000):
            taken.append([e.n for e in events])
            if not refs:
                refs.extend(weakref.ref(e) for e in events)
            del events
            await stream.work_until(clock.now_ms() + 1_000)
        return taken, alive_while_waiting
    taken, alive = asyncio.run(go())
    assert taken == [[0, 1, 2, 3, 4], [5]]
    assert alive and set(alive) == {0}


@pytest.mark.parametrize("how", ["raises", "closed"])
def test_a_take_the_agent_did_not_finish_is_not_acknowledged(how):
    """An agent that fails during a take, or is cancelled there as the worker stops (faust then closes the take's
    generator), leaves the take's records unacknowledged: faust commits none of them, and they are read again."""
    async def go():
        clock = FakeClock(0)
        stream = FakeStream([(0, 1), (100, 2), (2_000, 3)], clock)
        agen = take_bursts(stream, 100, 0.5, 10.0, lambda: clock.now_ms() / 1000)
        first = await agen.__anext__()
        assert [e.n for e in first] == [1, 2]
        if how == "raises":
            with pytest.raises(RuntimeError, match="the log could not be written"):
                await agen.athrow(RuntimeError("the log could not be written"))
        else:
            await agen.aclose()
        return stream
    stream = asyncio.run(go())
    assert stream.acked == []
    assert stream.enable_acks is True and stream._processors == []
