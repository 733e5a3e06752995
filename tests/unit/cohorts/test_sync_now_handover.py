"""A "sync now" request of a completed ``once`` sync runs once when the sync duty moves while the former holder's
sync of it is still running: the new holder read that sync's latest completed sync before the former holder
completed the request's, so it takes the request as not run. Two workers' schedulers on one fake clock and one
bucket, with the real syncs."""

import asyncio

import orjson

from stream.clock import FakeClock
from stream.cohorts.requests import Follower, MemoryRequestLog, request_record
from stream.cohorts.schedule import Scheduler, SyncNow
from stream.cohorts.sync import jobs_of, latest_completed, run_syncs
from stream.s3.storage import MemoryStorage
from tests.unit.cohorts.test_sync import BUCKET, HISTORY, MERGES, Source, ms, settings

DONE = "_stream/cohorts/crm/424242_pro-buyers/done/"


class Hooked(Source):
    """The state as a sync reads it, with something done first (once): the former holder's sync completing
    while the new holder's runs."""

    def __init__(self, before=None):
        super().__init__(HISTORY, MERGES)
        self.before = before

    async def fold(self, membership):
        if self.before is not None:
            before, self.before = self.before, None
            await before()
        await super().fold(membership)


class Worker:
    def __init__(self, name, s, clock, storage, log, source, gate=None):
        (self.job,) = jobs_of(s, "pro-buyers")
        self.now, self.calls = SyncNow(), []

        async def run(group, slot):
            self.calls.append(slot)
            if gate is not None:
                await gate.wait()       # the sync began before the duty moved; it completes once let go
            return await run_syncs(s, group, slot, lambda d: storage, source, at_ms=slot, clock_ms=clock.now_ms,
                                   **self.sched.run_args(group))

        async def latest(job):
            return await latest_completed(storage, job)

        async def nothing(_):
            return None

        self.sched = Scheduler([self.job], clock.now_ms, latest, run, nothing, requests=self.now)
        self.name, self.s, self.clock, self.log = name, s, clock, log

    async def gain(self):
        """The duty: the latest completed syncs read, then the requests topic from its beginning."""
        await self.sched.start()
        follower = Follower(self.s, self.clock.now_ms, [self.job], self.sched.ran, self.now, self.log.append,
                            worker=self.name)
        self.sched.on_requests = follower.finished
        await follower.start(await self.log.read())


def setup():
    s, clock, storage, log = settings("once"), FakeClock(ms("2024-03-12 07:42")), MemoryStorage(), MemoryRequestLog()
    (job,) = jobs_of(s, "pro-buyers")
    # the once sync completed at 07:42; at 07:42:50 "sync now" asks for another (stamped 07:43, after the request)
    asyncio.run(run_syncs(s, [job], clock.now_ms(), lambda d: storage, Source(HISTORY, MERGES),
                          clock_ms=clock.now_ms))
    log.records.append(request_record("sr-1", "pro-buyers", None, [job], ms("2024-03-12 07:42") + 50_000, "api"))
    return s, clock, storage, log, job


def done_records(storage):
    return {k[len(DONE):]: orjson.loads(v).get("requests") for (_, k), v in storage.objects.items()
            if k.startswith(DONE)}


def done_lines(log):
    return [(r["id"], r["worker"], [x["state"] for x in r["syncs"]])
            for r in (orjson.loads(v) for _, v in log.records) if r["kind"] == "done"]


def test_a_request_whose_sync_the_former_holder_completes_after_the_duty_moved_is_not_run_again():
    """a runs sr-1's sync (07:43); the duty moves to b, which reads the latest completed sync (07:42) and the
    request (no done record yet); a's sync then completes listing sr-1; b's next look finds it done, runs nothing
    and records the request done."""
    s, clock, storage, log, job = setup()
    gate = asyncio.Event()
    a = Worker("a", s, clock, storage, log, Source(HISTORY, MERGES), gate)
    b = Worker("b", s, clock, storage, log, Source(HISTORY, MERGES))

    async def go():
        clock.t = ms("2024-03-12 07:43") + 20_000
        await a.gain()
        running = asyncio.ensure_future(a.sched.tick())     # a's sync of 07:43 for sr-1 begins
        await asyncio.sleep(0)
        await b.gain()                                      # the duty moved: b reads 07:42 and sr-1, not done
        clock.t = ms("2024-03-12 07:44") + 10_000
        gate.set()
        await running                                       # a's sync completes (its worker finishes it)
        waits = [await b.sched.tick()]
        clock.advance(120_000)
        waits.append(await b.sched.tick())
        return waits

    waits = asyncio.run(go())
    assert a.calls == [ms("2024-03-12 07:43")]
    assert b.calls == [ms("2024-03-12 07:44")]            # found done as it read the chain: nothing written
    assert done_records(storage) == {"2024-03-12T07-42.done": None, "2024-03-12T07-43.done": ["sr-1"]}
    assert not any("/failed/" in k for (_, k) in storage.objects)
    state = b.sched.states[job.name]
    assert (state.completed_ms, state.requested, state.retry_at_ms) == (ms("2024-03-12 07:43"), False, None)
    assert b.sched.ran == {job.name: {"sr-1"}}
    assert waits == [60.0, 60.0]
    assert done_lines(log) == [("sr-1", "a", ["complete"]), ("sr-1", "b", ["complete"])]


def test_a_request_whose_sync_the_former_holder_completes_during_the_new_holders_is_not_run_again():
    """b's sync for sr-1 (07:44) reads the chain while a's (07:43) still runs; a's completes before b's would: b's
    is not completed (its diff would skip a's), and is not tried again: the request ran."""
    s, clock, storage, log, job = setup()
    gate = asyncio.Event()
    a = Worker("a", s, clock, storage, log, Source(HISTORY, MERGES), gate)
    state_read = {}

    async def a_completes():
        gate.set()
        await state_read["a"]

    b = Worker("b", s, clock, storage, log, Hooked(a_completes))

    async def go():
        clock.t = ms("2024-03-12 07:43") + 20_000
        await a.gain()
        state_read["a"] = asyncio.ensure_future(a.sched.tick())
        await asyncio.sleep(0)
        await b.gain()
        clock.t = ms("2024-03-12 07:44") + 10_000
        waits = [await b.sched.tick()]                      # b's sync of 07:44, during which a's completes
        clock.advance(120_000)
        waits.append(await b.sched.tick())
        return waits

    waits = asyncio.run(go())
    assert a.calls == [ms("2024-03-12 07:43")]
    assert b.calls == [ms("2024-03-12 07:44")]
    assert done_records(storage) == {"2024-03-12T07-42.done": None, "2024-03-12T07-43.done": ["sr-1"]}
    assert not any("/failed/" in k for (_, k) in storage.objects)
    state = b.sched.states[job.name]
    assert (state.completed_ms, state.requested, state.retry_at_ms, state.failures) == (
        ms("2024-03-12 07:43"), False, None, 0)
    assert waits == [60.0, 60.0]
    assert done_lines(log) == [("sr-1", "a", ["complete"]), ("sr-1", "b", ["complete"])]


def test_a_request_the_former_holder_did_not_run_runs_after_the_sync_it_completed():
    """The duty moves while a runs sr-1's sync; sr-2, asked meanwhile, reaches b only: b's sync for both finds
    a's completed (sr-1 ran), and runs another for sr-2 alone, after a's."""
    s, clock, storage, log, job = setup()
    gate = asyncio.Event()
    a = Worker("a", s, clock, storage, log, Source(HISTORY, MERGES), gate)
    b = Worker("b", s, clock, storage, log, Source(HISTORY, MERGES))

    async def go():
        clock.t = ms("2024-03-12 07:43") + 20_000
        await a.gain()
        running = asyncio.ensure_future(a.sched.tick())
        await asyncio.sleep(0)
        log.records.append(request_record("sr-2", "pro-buyers", None, [job], ms("2024-03-12 07:43") + 30_000,
                                          "console"))
        await b.gain()
        clock.t = ms("2024-03-12 07:44") + 10_000
        gate.set()
        await running
        waits = [await b.sched.tick()]                      # sr-1 ran at 07:43: sr-2's sync is due now
        waits.append(await b.sched.tick())
        return waits

    waits = asyncio.run(go())
    assert b.calls == [ms("2024-03-12 07:44"), ms("2024-03-12 07:44")]
    assert done_records(storage) == {"2024-03-12T07-42.done": None, "2024-03-12T07-43.done": ["sr-1"],
                                     "2024-03-12T07-44.done": ["sr-2"]}
    assert orjson.loads(storage.objects[(BUCKET, DONE + "2024-03-12T07-44.done")])["previous"] == "2024-03-12T07:43"
    assert waits == [0.0, 60.0]
    assert done_lines(log) == [("sr-1", "a", ["complete"]), ("sr-1", "b", ["complete"]), ("sr-2", "b", ["complete"])]


def test_a_sync_superseded_by_those_another_run_completed_takes_their_time_and_requests():
    from stream.cohorts.schedule import JobState, superseded
    from stream.cohorts.sync import Base
    records = [{"scheduled_ms": t, **({"requests": rs} if rs else {})} for t, rs in (
        (ms("2024-03-12 07:42"), None), (ms("2024-03-12 07:43"), ["sr-1"]), (ms("2024-03-12 07:44"), ["sr-3"]),
        (ms("2024-03-12 07:45"), None))]
    assert Base(ms("2024-03-12 07:42")).since(records[::-1], ms("2024-03-12 07:44")) == [records[1], records[3]]
    assert Base(None).since(records, ms("2024-03-12 07:50")) == records
    assert Base(ms("2024-03-12 07:45")).since(records, ms("2024-03-12 07:46")) == []
    state = JobState("once", completed_ms=ms("2024-03-12 07:42"), requested=True, failures=2,
                     retry_at_ms=ms("2024-03-12 07:50"))
    assert superseded(state, ["sr-1", "sr-2", "sr-3"], records[1:]) == (["sr-1", "sr-3"], ["sr-2"])
    assert (state.completed_ms, state.requested, state.failures, state.retry_at_ms) == (
        ms("2024-03-12 07:45"), True, 0, None)
    state = JobState("once", completed_ms=ms("2024-03-12 07:42"), requested=True)
    assert superseded(state, ["sr-1"], records[1:2]) == (["sr-1"], [])
    assert (state.completed_ms, state.requested) == (ms("2024-03-12 07:43"), False)
