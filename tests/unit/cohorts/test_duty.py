"""The cohort sync duty: the worker assigned partition 0 of the cohorts topic runs the syncs; two workers'
schedulers on one fake clock, the duty moving between them with a rebalance, write each sync once."""

import asyncio
import heapq
from collections import Counter

from stream.clock import FakeClock
from stream.cohorts.duty import DUTY_PARTITION, SyncDuty, after_revocation, holds_duty
from stream.cohorts.schedule import Scheduler
from stream.cohorts.sync import jobs_of, latest_completed, run_syncs
from stream.s3.storage import MemoryStorage
from tests.unit.cohorts.test_schedule import settings_with
from tests.unit.cohorts.test_sync import BUCKET, HISTORY, MERGES, Source, ms

TOPIC = "events.cohorts"


def test_the_worker_assigned_partition_0_of_the_cohorts_topic_holds_the_duty():
    assert DUTY_PARTITION == 0
    assert holds_duty([(TOPIC, 0)], TOPIC) is True
    assert holds_duty([(TOPIC, 3), ("events.accepted", 0), (TOPIC, 1)], TOPIC) is False
    assert holds_duty([("events.accepted", 0), ("stream-cohorts-state-changelog", 0)], TOPIC) is False
    assert holds_duty([("events.accepted", 0), (TOPIC, 2), (TOPIC, 0)], TOPIC) is True
    assert holds_duty([], TOPIC) is False
    # a revocation takes it only with the partition; before any assignment it stays unknown
    assert after_revocation(True, [(TOPIC, 0), (TOPIC, 1)], TOPIC) is False
    assert after_revocation(True, [(TOPIC, 1), ("events.accepted", 0)], TOPIC) is True
    assert after_revocation(False, [(TOPIC, 1)], TOPIC) is False
    assert after_revocation(None, [(TOPIC, 1)], TOPIC) is None
    assert after_revocation(None, [(TOPIC, 0)], TOPIC) is False
    duty = SyncDuty()
    assert (duty.held, duty.changes) == (None, 0)
    duty.set(True)
    duty.set(True)
    duty.set(False)
    assert (duty.held, duty.changes) == (False, 2)


class Sim:
    """Loops that wait with ``pause`` on one fake clock: the clock moves to the earliest wake once every loop
    waits; a duty change at its time wakes every loop (as the stage's wait ends when the duty changes)."""

    def __init__(self, clock: FakeClock, loops: int, changes: list[tuple[int, dict[str, bool | None]]]) -> None:
        self.clock, self.loops, self.changes = clock, loops, sorted(changes, key=lambda c: c[0])
        self.waiting: list[tuple[int, int, asyncio.Future]] = []
        self.seq = 0
        self.all_waiting = asyncio.Event()
        self.stopped = False
        self.duties: dict[str, SyncDuty] = {}

    def duty(self, name: str) -> SyncDuty:
        return self.duties.setdefault(name, SyncDuty())

    async def pause(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.seq += 1
        heapq.heappush(self.waiting, (self.clock.now_ms() + int(seconds * 1000), self.seq, fut))
        if len(self.waiting) == self.loops:
            self.all_waiting.set()
        await fut

    def _wake(self, entries) -> None:
        for _, _, fut in entries:
            fut.set_result(None)

    async def drive(self, until_ms: int) -> None:
        while True:
            await self.all_waiting.wait()
            self.all_waiting.clear()
            wake = self.waiting[0][0]
            if self.changes and self.changes[0][0] <= wake:
                at, held = self.changes.pop(0)
                self.clock.t = max(self.clock.t, at)
                for name, h in held.items():
                    self.duty(name).set(h)
                woken, self.waiting = self.waiting, []
            elif wake >= until_ms:
                self.stopped = True
                woken, self.waiting = self.waiting, []
                self._wake(woken)
                return
            else:
                self.clock.t = max(self.clock.t, wake)
                woken = [heapq.heappop(self.waiting)]
            self._wake(woken)


def test_two_workers_sync_each_slot_once_the_duty_moving_with_a_rebalance():
    s = settings_with(
        {"name": "crm", "bucket": BUCKET, "encryption": {"type": "none"},
         "syncs": [{"cohort": "pro-buyers", "cadence": "hourly"}]},
        {"name": "ads", "bucket": BUCKET, "path_prefix": "ads/", "encryption": {"type": "none"},
         "syncs": [{"cohort": "pro-buyers", "cadence": "daily"}]})
    storage, source = MemoryStorage(), Source(HISTORY, MERGES)    # one bucket, read by both workers
    clock = FakeClock(ms("2024-03-10 22:30"))
    # 22:30:05 the first assignment gives partition 0 to a; 23:20 a rebalance moves it to b (a revoked first)
    sim = Sim(clock, 2, [(ms("2024-03-10 22:30") + 5_000, {"a": True, "b": False}),
                         (ms("2024-03-10 23:20"), {"a": False}), (ms("2024-03-10 23:20") + 3_000, {"b": True})])
    calls, events = [], []

    def worker(name: str) -> Scheduler:
        async def run(group, slot):
            calls.append((name, slot, sorted(j.destination.name for j in group)))
            return await run_syncs(s, group, slot, lambda d: storage, source, at_ms=slot, clock_ms=clock.now_ms)

        async def latest(job):
            return await latest_completed(storage, job)

        duty = sim.duty(name)
        return Scheduler(jobs_of(s, "pro-buyers"), clock.now_ms, latest, run, sim.pause, held=lambda: duty.held)

    a, b = worker("a"), worker("b")

    async def go():
        tasks = [asyncio.ensure_future(w.run_forever(
            lambda: sim.stopped, lambda n=n: events.append((n, "ready", clock.now_ms())),
            lambda sched, n=n: events.append((n, "duty" if sched else "no duty", clock.now_ms()))))
            for n, w in (("a", a), ("b", b))]
        await sim.drive(ms("2024-03-11 01:30"))
        await asyncio.gather(*tasks)

    asyncio.run(go())
    # b starts from the latest completed sync a wrote (23:00): it syncs from the next hour on, never twice
    assert calls == [("a", ms("2024-03-10 00:00"), ["ads"]), ("a", ms("2024-03-10 22:00"), ["crm"]),
                     ("a", ms("2024-03-10 23:00"), ["crm"]),
                     ("b", ms("2024-03-11 00:00"), ["ads", "crm"]), ("b", ms("2024-03-11 01:00"), ["crm"])]
    done = sorted(k for (_, k) in storage.objects if "/done/" in k)
    assert done == ["_stream/cohorts/ads/424242_pro-buyers/done/2024-03-10T00-00.done",
                    "_stream/cohorts/ads/424242_pro-buyers/done/2024-03-11T00-00.done",
                    "_stream/cohorts/crm/424242_pro-buyers/done/2024-03-10T22-00.done",
                    "_stream/cohorts/crm/424242_pro-buyers/done/2024-03-10T23-00.done",
                    "_stream/cohorts/crm/424242_pro-buyers/done/2024-03-11T00-00.done",
                    "_stream/cohorts/crm/424242_pro-buyers/done/2024-03-11T01-00.done"]
    assert {k: n for k, n in Counter(storage.puts).items() if n > 1 and "latest" not in k} == {}
    assert not any("/failed/" in k for (_, k) in storage.objects)
    t0 = ms("2024-03-10 22:30") + 5_000
    assert events == [("a", "duty", t0), ("a", "ready", t0), ("b", "ready", t0),
                      ("a", "no duty", ms("2024-03-10 23:20")),
                      ("b", "duty", ms("2024-03-10 23:20") + 3_000),
                      ("b", "no duty", ms("2024-03-11 01:29") + 3_000)]     # stopped (b looks every minute)


class Completed:
    def __init__(self, job):
        self.job, self.error = job, None


def test_a_worker_that_loses_the_duty_finishes_its_sync_and_starts_no_other():
    s = settings_with(
        {"name": "crm", "bucket": BUCKET, "encryption": {"type": "none"},
         "syncs": [{"cohort": "pro-buyers", "cadence": "hourly"}]},
        {"name": "ads", "bucket": BUCKET, "path_prefix": "ads/", "encryption": {"type": "none"},
         "syncs": [{"cohort": "pro-buyers", "cadence": "daily"}]})
    clock, duty, calls, events = FakeClock(ms("2024-03-10 22:30")), SyncDuty(True), [], []
    stop = []

    async def run(group, slot):
        calls.append((slot, [j.destination.name for j in group]))
        duty.set(False)            # a rebalance revoked partition 0 while the first sync ran
        return [Completed(j) for j in group]

    async def latest(job):
        return None

    async def pause(seconds):
        events.append(("pause", seconds))
        stop.append(True)

    sched = Scheduler(jobs_of(s, "pro-buyers"), clock.now_ms, latest, run, pause, held=lambda: duty.held)
    asyncio.run(sched.run_forever(lambda: bool(stop), lambda: events.append("ready"),
                                  lambda h: events.append("duty" if h else "no duty")))
    # two slots were due (the day's and the hour's): the second is not started once the duty moved
    assert calls == [(ms("2024-03-10 00:00"), ["ads"])]
    assert events == ["duty", "ready", "no duty", ("pause", 60.0)]


def test_a_worker_waits_for_its_first_assignment_before_it_is_ready():
    s = settings_with({"name": "crm", "bucket": BUCKET, "encryption": {"type": "none"},
                       "syncs": [{"cohort": "pro-buyers", "cadence": "hourly"}]})
    clock, duty, events, stop = FakeClock(ms("2024-03-10 22:30")), SyncDuty(), [], []

    async def run(group, slot):
        raise AssertionError("a worker without the duty syncs nothing")

    async def latest(job):
        raise AssertionError("a worker without the duty reads no sync record")

    async def pause(seconds):
        events.append(("pause", seconds, duty.held))
        duty.set(False)          # the first assignment: another worker holds partition 0
        if len(events) >= 4:
            stop.append(True)

    sched = Scheduler(jobs_of(s, "pro-buyers"), clock.now_ms, latest, run, pause, held=lambda: duty.held)
    asyncio.run(sched.run_forever(lambda: bool(stop), lambda: events.append("ready"),
                                  lambda h: events.append(("duty", h))))
    assert events == [("pause", 60.0, None), "ready", ("pause", 60.0, False), ("pause", 60.0, False)]


def test_a_worker_that_loses_the_duty_drops_its_sync_gauges():
    from prometheus_client import REGISTRY

    from stream import metrics
    from stream.cohorts.schedule import report_duty
    labels = {"cohort": "pro-buyers", "destination": "crm"}
    report_duty(True)
    metrics.COHORT_LAST_COMPLETED.labels(**labels).set(1710108000)
    metrics.COHORT_SYNC_INTERVAL.labels(**labels).set(3600)
    metrics.COHORT_CONSECUTIVE_FAILURES.labels(**labels).set(2)
    assert REGISTRY.get_sample_value("stream_cohort_sync_duty") == 1.0
    assert REGISTRY.get_sample_value("stream_cohort_last_completed_sync_timestamp_seconds", labels) == 1710108000
    report_duty(False)
    assert REGISTRY.get_sample_value("stream_cohort_sync_duty") == 0.0
    # the worker now holding the duty reports them: this one's would stay at its last sync and look late
    assert [REGISTRY.get_sample_value(name, labels) for name in (
        "stream_cohort_last_completed_sync_timestamp_seconds", "stream_cohort_sync_interval_seconds",
        "stream_cohort_sync_consecutive_failures")] == [None, None, None]
