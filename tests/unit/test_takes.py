"""Takes of the mirror's mutations: a burst is one take, closed by quiet, by size or by age; acknowledged after."""

import asyncio
import math

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


def takes_of(arrivals, max_=100):
    async def go():
        clock = FakeClock(0)
        stream = FakeStream(arrivals, clock)
        out = []
        agen = take_bursts(stream, max_, 0.5, 10.0, lambda: clock.now_ms() / 1000)
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
