"""When cohort syncs are due, what is late, and when to try a failed one again: pure functions of a time, plus the
thin loop of the worker's ``cohorts`` stage that acts on them.

**Slots.** A sync's *slot* is the time it is stamped with. ``hourly``: the start of the hour of its ``time_zone``
at or before now; ``daily``: that time zone's midnight at or before now (UTC by default; in Europe/Paris the daily
slot of 9 March is 2024-03-08T23:00 UTC, and the file names carry that UTC time); ``once``: the time of its first
completed sync, or before any, now to the minute. A slot is due once no sync of it is complete; when the next
slot begins before a failing one succeeds, the failing one is left (its files, if any, stay without a completion
record) and the next is synced against the latest completed sync.

**Sync now** (the admin API's ``POST /admin/cohorts/{id}/syncs``, the console's button, on any worker: a request
on the sync requests topic, ``stream.cohorts.requests``, which the duty holder hands to its loop through
``SyncNow``) runs a due slot at the loop's next look, without waiting out a failed attempt's backoff. An hourly or daily sync whose
current slot is complete has nothing due: it answers ``complete``; one whose current slot is due runs it, stamped
at the hour or day it is of, before the request (a request cannot make a slot earlier: the events accepted since
are counted by the next slot). A ``once`` sync answers a request made at T with a sync stamped at or after T
(``answers``), so that it counts every event accepted before the user asked: a pending sync stamped before T
(the one the stage stamped as it first scheduled it, at the worker's start, or a failed attempt's) runs without
the request, and the request waits for the next; a ``once`` sync whose sync is complete runs another
(``resync_slot``): stamped at T's minute rounded up (due then, when the state has passed it; now to the minute
when the loop takes the request later), at the earliest the minute after its latest completed sync (two syncs
cannot share a stamp), diffed against the latest completed sync like any other, and recorded in its history; the
loop never runs one on its own. A ``once`` sync is stamped when the stage first schedules it, so one scheduled
before the events it should count had arrived (a worker started before its first events) completes with what was
there: "sync now" then gives the sync the user expects.

**What a sync at T counts** (``counted_day``): the events uploaded before T, on the UTC days of their
``event_time`` up to the day holding T's last millisecond before it: ``within_days: N`` covers the N UTC days
ending with the day of ``T - 1 ms``. For a sync stamped at a UTC midnight this is exactly ``[T - N days, T)``: a
daily sync of 10 March 00:00 with ``within_days: 1`` counts 9 March's events.

**Late** (``late``): an hourly or daily sync whose latest completed slot (or, when none completed yet, the time
the worker began scheduling it) is more than two cadences old. The alert ``StreamCohortSyncLate`` computes the same
from ``stream_cohort_last_completed_sync_timestamp_seconds`` and ``stream_cohort_sync_interval_seconds``.

**Which worker**: the loop runs the syncs only while its worker holds the sync duty (``stream.cohorts.duty``: it
is assigned partition 0 of the cohorts topic), so that with several workers each sync runs on one of them.

**Failures** are retried with ``stream.retry.backoff_s`` (1 minute, doubling, at most 30 minutes) until the slot's
sync completes or the next slot begins; each failed attempt is recorded (``sync.record_failure``) and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from stream.cohorts.rules import day_of_ms
from stream.events.timefmt import DAY_MS, HOUR_MS
from stream.retry import backoff_s

log = logging.getLogger(__name__)
MINUTE_MS = 60_000
RETRY_FIRST_S = 60.0
RETRY_MAX_S = 1800.0
IDLE_WAKE_S = 60.0
"""The longest the loop waits without looking again (a new slot, a retry, or shutdown)."""


def cadence_ms(cadence: str) -> int | None:
    """The interval between two slots, or None for ``once``."""
    return {"hourly": HOUR_MS, "daily": DAY_MS}.get(cadence)


def slot_start(cadence: str, time_zone: str, now_ms: int) -> int:
    """The latest slot of ``cadence`` in ``time_zone`` at or before ``now_ms``; ``once``: now to the minute."""
    if cadence == "once":
        return now_ms - now_ms % MINUTE_MS
    zone = ZoneInfo(time_zone)
    local = datetime.fromtimestamp(now_ms / 1000, zone)
    floor = local.replace(minute=0, second=0, microsecond=0)
    if cadence == "daily":
        floor = floor.replace(hour=0)
    ms = int(floor.timestamp() * 1000)
    if ms > now_ms:   # a midnight that does not exist in the zone (a DST jump at 00:00): the hour before it
        ms -= HOUR_MS
    return ms


def next_slot(cadence: str, time_zone: str, slot_ms: int) -> int | None:
    """The first slot after ``slot_ms`` (None for ``once``): a day in the zone may last 23 or 25 hours."""
    step = cadence_ms(cadence)
    if step is None:
        return None
    guess = slot_start(cadence, time_zone, slot_ms + step + 2 * HOUR_MS)
    while guess > slot_ms + HOUR_MS and slot_start(cadence, time_zone, guess - 1) > slot_ms:
        guess = slot_start(cadence, time_zone, guess - 1)
    return guess


def ceil_minute(ms: int) -> int:
    """``ms`` rounded up to the minute (itself when on one)."""
    return -(-ms // MINUTE_MS) * MINUTE_MS


def answers(cadence: str, slot_ms: int, at_ms: int | None) -> bool:
    """Whether the sync of ``slot_ms`` answers a "sync now" request made at ``at_ms``: for ``once``, one stamped at
    or after it (it counts every event accepted before the request); for ``hourly`` and ``daily``, the sync of any
    slot (a request cannot make a slot earlier: it runs the current one). A request of no known time: any."""
    return cadence != "once" or at_ms is None or slot_ms >= at_ms


def counted_day(scheduled_ms: int) -> int:
    """The last UTC day a sync at ``scheduled_ms`` counts: the day of its last millisecond before it."""
    return day_of_ms(scheduled_ms - 1)


@dataclass
class JobState:
    """What the loop knows of one (cohort, destination, routing key): its latest completed slot, its failures."""

    cadence: str
    time_zone: str = "UTC"
    since_ms: int = 0                      # when the worker began scheduling it
    completed_ms: int | None = None        # the latest completed slot
    first_completed_ms: int | None = None  # once: the slot of its sync
    failures: int = 0                      # failed attempts in a row
    failed_slot: int | None = None
    retry_at_ms: int | None = None
    once_slot: int | None = None           # once: the slot of its first attempt, kept across retries
    requested: bool = False                # once: "sync now" asked for a sync after the pending or completed one
    requested_ms: int | None = None        # once: the time of the latest request waiting (stamped at or after it)


def due(state: JobState, now_ms: int) -> int | None:
    """The slot to sync at ``now_ms``, or None: nothing is due, or a failed attempt's retry is not yet."""
    if state.cadence == "once":
        if state.completed_ms is not None:
            if not state.requested:
                return None
            slot = resync_slot(state, now_ms)
            if slot > now_ms:       # asked within the minute of the latest completed sync: due at the next
                return None
        else:
            slot = state.once_slot if state.once_slot is not None else slot_start("once", state.time_zone, now_ms)
    else:
        slot = slot_start(state.cadence, state.time_zone, now_ms)
        if state.completed_ms is not None and state.completed_ms >= slot:
            return None
    if state.failed_slot == slot and state.retry_at_ms is not None and now_ms < state.retry_at_ms:
        return None
    return slot


def resync_slot(state: JobState, now_ms: int) -> int:
    """The slot of the sync "sync now" asked of a ``once`` sync whose sync is complete: that of its failed attempt,
    else the time of the latest request waiting (``now_ms`` if none is known) rounded up to the minute, or now to
    the minute if later (a request taken late counts the events accepted until then too), at the earliest the
    minute after the latest completed sync (which may be after ``now_ms``: the sync is then due at that minute)."""
    assert state.completed_ms is not None
    if state.once_slot is not None and state.once_slot > state.completed_ms:
        return state.once_slot
    at = state.requested_ms if state.requested_ms is not None else now_ms
    return max(ceil_minute(at), slot_start("once", state.time_zone, now_ms), state.completed_ms + MINUTE_MS)


def sync_now(state: JobState, at_ms: int) -> JobState:
    """The state once "sync now" is asked of it at ``at_ms``: no waiting out a failed attempt's backoff; a ``once``
    sync asks for a sync stamped at or after ``at_ms``: the pending one if it is (``answers``), else one after it,
    or after the completed one (``resync_slot``)."""
    state.retry_at_ms = None
    if state.cadence == "once":
        state.requested = True
        state.requested_ms = max(at_ms, state.requested_ms if state.requested_ms is not None else at_ms)
    return state


def next_wake(state: JobState, now_ms: int) -> int | None:
    """The next time ``due`` may answer otherwise than at ``now_ms`` (None: never again)."""
    if due(state, now_ms) is not None:
        return now_ms
    times = []
    if state.cadence != "once":
        times.append(next_slot(state.cadence, state.time_zone, slot_start(state.cadence, state.time_zone, now_ms)))
    if state.retry_at_ms is not None and state.retry_at_ms > now_ms:
        times.append(state.retry_at_ms)
    if state.cadence == "once" and state.requested and state.completed_ms is not None and \
            resync_slot(state, now_ms) > now_ms:     # asked within the minute of the completed sync
        times.append(resync_slot(state, now_ms))
    return min((t for t in times if t is not None), default=None)


def completed(state: JobState, slot_ms: int) -> JobState:
    """The state once the sync of ``slot_ms`` is complete (or was found complete): a ``once`` sync asked for at a
    time after ``slot_ms`` still asks for another."""
    state.completed_ms = max(slot_ms, state.completed_ms or slot_ms)
    state.failures, state.failed_slot, state.retry_at_ms = 0, None, None
    state.once_slot = None
    if state.requested_ms is None or state.requested_ms <= state.completed_ms:
        state.requested, state.requested_ms = False, None
    return state


def failed(state: JobState, slot_ms: int, now_ms: int) -> JobState:
    """The state after a failed attempt at ``slot_ms``: tried again after the backoff of the failures in a row (of
    any slot: a sync that fails slot after slot keeps backing off)."""
    state.failures += 1
    state.failed_slot = slot_ms
    if state.cadence == "once":
        state.once_slot = slot_ms
    state.retry_at_ms = now_ms + int(backoff_s(state.failures, RETRY_FIRST_S, RETRY_MAX_S) * 1000)
    return state


def superseded(state: JobState, asked: list[str], records: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The state once the syncs of ``records`` (completion records, oldest first), which another run completed
    after the latest one ``state`` knew of, are found complete in place of the one it ran (``sync.Base``): of the
    requests ``asked`` of it, those they ran, and those still to run (for which, if any, another sync is due, as
    "sync now" asks)."""
    completed(state, records[-1]["scheduled_ms"])
    ran = {rid for r in records for rid in r.get("requests", ())}
    remaining = [rid for rid in asked if rid not in ran]
    if remaining:
        sync_now(state, state.completed_ms if state.completed_ms is not None else 0)
    return [rid for rid in asked if rid in ran], remaining


def late(state: JobState, now_ms: int) -> bool:
    """Whether an hourly or daily sync has had no completed slot for more than two cadences."""
    step = cadence_ms(state.cadence)
    if step is None:
        return False
    last = state.completed_ms if state.completed_ms is not None else state.since_ms
    return now_ms - last > 2 * step


class SyncNow:
    """"Sync now" requests handed to this process's scheduler while it holds the sync duty: per job name, the ids
    of the requests (``stream.cohorts.requests``) that asked for its sync. The scheduler takes them at its next look
    (``Scheduler.tick``) and runs each job's due sync without waiting out a failed attempt's backoff, in its turn
    with the others (never beside another sync of the same job); a ``once`` sync whose sync is complete gets
    another (see the module)."""

    def __init__(self) -> None:
        self.pending: dict[str, list[str]] = {}
        self.at: dict[str, int] = {}         # request id -> the time it was asked at (its record's ``at``)

    def add(self, names: list[str], request_id: str, at_ms: int | None = None) -> None:
        for name in names:
            self.pending.setdefault(name, []).append(request_id)
        if at_ms is not None:
            self.at[request_id] = at_ms

    def take(self) -> dict[str, list[str]]:
        taken, self.pending = self.pending, {}
        return taken


def request_answer(job: Any, latest_completed_ms: int | None, now_ms: int) -> dict[str, Any]:
    """What "sync now" asked at ``now_ms`` will do for ``job``, from its latest completed sync (its pointer in the
    bucket): ``queued`` (its due time is not complete, or a ``once`` sync asks for another: ``scheduled_ms``, the
    time of the sync that answers it if it runs in its turn: for ``once``, the request's minute rounded up at the
    earliest, ``answering_slot``) or ``complete`` (the current time of an hourly or daily sync is complete
    already)."""
    state = JobState(job.sync.cadence, job.sync.time_zone, completed_ms=latest_completed_ms)
    slot = answering_slot(sync_now(state, now_ms), now_ms, now_ms)
    return {"destination": job.destination.name, "routing_key": job.sync.routing_key, "cadence": job.sync.cadence,
            "state": "queued" if slot is not None else "complete", "scheduled_ms": slot,
            "latest_completed_ms": latest_completed_ms}


def planned(state: JobState, now_ms: int) -> int | None:
    """The slot the loop syncs next for ``state`` once nothing else is before it: the due one, or that of the
    sync a "sync now" asked of a complete ``once`` sync (due at its minute)."""
    slot = due(state, now_ms)
    if slot is None and state.cadence == "once" and state.requested and state.completed_ms is not None:
        slot = resync_slot(state, now_ms)
    return slot


def answering_slot(state: JobState, at_ms: int, now_ms: int) -> int | None:
    """The slot of the sync that answers a request made at ``at_ms`` (``answers``), ``state`` having taken it
    (``sync_now``): the one planned, or, for a ``once`` sync whose planned one is stamped before the request (its
    first, or a failed attempt), the one after it (``at_ms`` rounded up to the minute, at the earliest the minute
    after it). None: nothing to run (an hourly or daily sync whose current time is complete)."""
    slot = planned(state, now_ms)
    if slot is None or answers(state.cadence, slot, at_ms):
        return slot
    return max(ceil_minute(at_ms), slot + MINUTE_MS)


NOW = SyncNow()
"""This process's (one per process, like the health registry)."""


@dataclass
class Scheduler:
    """The loop of the ``cohorts`` stage: at each wake, the due slots' syncs, one at a time, grouped by slot so the
    events are read once per slot (oldest slot first); one (cohort, destination) never has two syncs at once.

    ``jobs``: ``sync.SyncJob``s; ``now``: the clock; ``latest``: a job's latest completed record (or None);
    ``run``: ``sync.run_syncs`` for (jobs, slot), returning its ``SyncResult``s (a failed job's has ``error``);
    ``pause``: ``stream.retry.pause``-like wait of some seconds; ``held``: whether this worker holds the sync duty
    (``stream.cohorts.duty``; None: not known yet), asked before each sync it starts.

    "Sync now" requests come through ``requests`` (job name -> request ids); ``asked`` holds those taken whose sync
    has not run yet (``run`` writes them in the sync's completion record); ``ran``, per job, the requests its latest
    completed sync ran (read as it starts); ``on_requests(name, ids, state)`` is awaited once job ``name``'s sync
    ran for ``ids`` (``complete``, ``failed``) or had nothing to run (``complete``).
    """

    jobs: list[Any]
    now: Callable[[], int]
    latest: Callable[[Any], Awaitable[dict[str, Any] | None]]
    run: Callable[[list[Any], int], Awaitable[list[Any]]]
    pause: Callable[[float], Awaitable[None]]
    on_state: Callable[[Any, JobState], None] = lambda job, state: None
    requests: SyncNow | None = None
    states: dict[str, JobState] = field(default_factory=dict)
    held: Callable[[], bool | None] = lambda: True
    on_requests: Callable[[str, list[str], str], Awaitable[None]] | None = None
    asked: dict[str, list[str]] = field(default_factory=dict)
    ran: dict[str, set[str]] = field(default_factory=dict)
    asked_at: dict[str, int] = field(default_factory=dict)     # request id -> the time it was asked at

    async def start(self) -> None:
        """Each job's latest completed sync, from its pointer (read once; the loop keeps it after); ``latest``
        writes a pointer that a crash left behind or missing (``sync.latest_completed``)."""
        now = self.now()
        self.asked, self.ran, self.asked_at = {}, {}, {}
        for job in self.jobs:
            state = JobState(job.sync.cadence, job.sync.time_zone, since_ms=now)
            record = await self.latest(job)
            if record is not None:
                state.completed_ms = record["scheduled_ms"]
                self.ran[job.name] = set(record.get("requests", ()))
            self.states[job.name] = state
            self.on_state(job, state)

    def answered(self, job: Any, slot: int | None) -> list[str]:
        """The requests taken for ``job`` that its sync of ``slot`` answers (``answers``; all, with no slot)."""
        return [rid for rid in self.asked.get(job.name, ())
                if slot is None or answers(job.sync.cadence, slot, self.asked_at.get(rid))]

    def _pop_answered(self, job: Any, slot: int) -> list[str]:
        ids = self.answered(job, slot)
        rest = [rid for rid in self.asked.pop(job.name, []) if rid not in ids]
        if rest:
            self.asked[job.name] = rest
        return ids

    def run_args(self, group: list[Any], slot: int | None = None) -> dict[str, Any]:
        """What ``run`` passes to ``sync.run_syncs`` for ``group`` besides the jobs and the slot: the requests each
        job's sync of ``slot`` runs (those it answers), and for a ``once`` job the latest completed sync this
        scheduler knows of (``sync.Base``: a sync another run completed since, the former holder of the duty
        finishing its last, is found rather than run again)."""
        from stream.cohorts.sync import Base
        return {"requests": {j.name: self.answered(j, slot) for j in group},
                "bases": {j.name: Base(self.states[j.name].completed_ms) for j in group
                          if j.sync.cadence == "once" and j.name in self.states}}

    async def _requests_done(self, name: str, ids: list[str], state: str) -> None:
        if ids and self.on_requests is not None:
            await self.on_requests(name, ids, state)

    async def tick(self) -> float:
        """Sync what is due now; the seconds until the next wake."""
        now = self.now()
        taken = self.requests.take() if self.requests is not None else {}
        times = {rid: self.requests.at.pop(rid, now) for rid in {r for ids in taken.values() for r in ids}} \
            if self.requests is not None else {}
        for name, ids in taken.items():
            if name not in self.states:
                continue
            at = {rid: times[rid] for rid in ids}
            state = sync_now(self.states[name], max(at.values(), default=now))
            if planned(state, now) is None:    # nothing to run: complete already
                await self._requests_done(name, ids, "complete")
            else:
                self.asked.setdefault(name, []).extend(ids)
                self.asked_at.update(at)
        plan: dict[int, list[Any]] = {}
        for job in self.jobs:
            slot = due(self.states[job.name], now)
            if slot is not None:
                plan.setdefault(slot, []).append(job)
        for slot, group in sorted(plan.items()):
            if not self.held():       # the duty moved to another worker: it syncs what is due from here on
                break
            for result in await self.run(group, slot):
                state = self.states[result.job.name]
                if result.error is None and getattr(result, "superseded", None):
                    name = result.job.name
                    ran, remaining = superseded(state, self._pop_answered(result.job, slot), result.superseded)
                    self.ran[name] = {rid for r in result.superseded for rid in r.get("requests", ())}
                    if remaining:
                        self.asked[name] = remaining + self.asked.get(name, [])
                    if self.asked.get(name):       # those asked after the sync it ran: a sync after the found one
                        sync_now(state, max(self.asked_at.get(rid, 0) for rid in self.asked[name]))
                    log.info("cohort sync %s: the sync of %s was completed by another run (it ran %s); %s",
                             name, result.superseded[-1].get("stamp", result.superseded[-1]["scheduled_ms"]),
                             ", ".join(ran) or "no request of this worker's",
                             f"another sync is due for {', '.join(remaining)}" if remaining else "nothing is run again")
                    self.on_state(result.job, state)
                    await self._requests_done(name, ran, "complete")
                    continue
                if result.error is None:
                    completed(state, slot)
                else:
                    failed(state, slot, self.now())
                self.on_state(result.job, state)
                await self._requests_done(result.job.name, self._pop_answered(result.job, slot),
                                          "complete" if result.error is None else "failed")
        now = self.now()
        for job in self.jobs:
            if late(self.states[job.name], now):
                log.warning("cohort sync %s: no completed sync for more than two cadences", job.name)
        wakes = [w for job in self.jobs if (w := next_wake(self.states[job.name], now)) is not None]
        wait_ms = min(wakes, default=now + int(IDLE_WAKE_S * 1000)) - now
        return min(max(wait_ms / 1000, 0.0), IDLE_WAKE_S)

    async def run_forever(self, stop: Callable[[], bool], on_ready: Callable[[], None] = lambda: None,
                          on_duty: Callable[[Scheduler | None], None] = lambda scheduler: None) -> None:
        """Until ``stop()``: while this worker holds the sync duty, the syncs as they come due. Each time it gains
        the duty it starts from each job's latest completed sync again (another worker may have completed syncs
        meanwhile); ``on_duty`` is told (the scheduler, then None once it lost it or stops). Ready
        (``on_ready``, once) when it has started, or when it knows it does not hold the duty."""
        ready = False
        while not stop():
            held = self.held()
            if not held:
                if held is False and not ready:
                    on_ready()
                    ready = True
                await self.pause(IDLE_WAKE_S)
                continue
            await self.start()
            on_duty(self)
            try:
                if not ready:
                    on_ready()
                    ready = True
                while not stop() and self.held():
                    wait = await self.tick()
                    if wait > 0 and self.held():
                        await self.pause(wait)
            finally:
                on_duty(None)


def gauges(jobs: list[Any], states: dict[str, JobState]) -> dict[tuple[str, str], tuple[float, float, int]]:
    """Per (cohort, destination) -- the metrics' labels; its routing keys taken together, the worst of them: the
    time of the oldest latest completed slot (or when scheduling began), the longest cadence in seconds (0:
    ``once``), the most failed attempts in a row."""
    out: dict[tuple[str, str], tuple[float, float, int]] = {}
    for job in jobs:
        st = states.get(job.name)
        if st is None:
            continue
        key = (job.cohort.id, job.destination.name)
        last = (st.completed_ms if st.completed_ms is not None else st.since_ms) / 1000
        interval = (cadence_ms(st.cadence) or 0) / 1000
        if key in out:
            a, b, c = out[key]
            last, interval, failures = min(a, last), max(b, interval), max(c, st.failures)
        else:
            failures = st.failures
        out[key] = (last, interval, failures)
    return out


def report_duty(held: bool) -> None:
    """The metrics of the sync duty: ``stream_cohort_sync_duty``; a worker that does not hold it (any more) drops
    its syncs' gauges, as the worker holding it reports them (a former holder's would go stale, and the late alert
    takes the oldest)."""
    from stream import metrics
    metrics.COHORT_SYNC_DUTY.set(1 if held else 0)
    if not held:
        for gauge in (metrics.COHORT_LAST_COMPLETED, metrics.COHORT_SYNC_INTERVAL,
                      metrics.COHORT_CONSECUTIVE_FAILURES):
            gauge.clear()


async def run_stage(settings: Any, clock: Any, stop: Callable[[], bool],
                    on_ready: Callable[[], None] = lambda: None, duty: Any = None) -> None:
    """The worker's ``cohorts`` stage: every configured sync on its cadence, until ``stop()``, while this worker
    holds the sync duty (``duty``, a ``stream.cohorts.duty.SyncDuty``; None: always); while it holds it, the "sync
    now" requests of the requests topic too (``stream.cohorts.requests.Follower``)."""
    import asyncio
    from contextlib import AsyncExitStack

    from stream import kafka, metrics
    from stream.cohorts import sync
    from stream.cohorts.requests import Follower
    from stream.retry import pause

    from stream.cohorts.duty import DUTY_PARTITION, SyncDuty
    duty = duty if duty is not None else SyncDuty(held=True)
    jobs = sync.all_jobs(settings)
    requests_topic = settings.topics.name("cohort_sync_requests")
    async with AsyncExitStack() as stack:
        storages = {d.name: await stack.enter_async_context(sync._s3_storage(settings, d))
                    for d in settings.cohort_destinations if d.syncs}
        from stream.cohorts.changelog import ChangelogSource
        source = ChangelogSource(settings, clock)
        stack.push_async_callback(source.close)
        producer = kafka.producer(settings.kafka)
        await producer.start()
        stack.push_async_callback(kafka.stop_all, producer)

        async def send(record: tuple[bytes, bytes]) -> None:
            await (await producer.send(requests_topic, record[1], key=record[0], partition=0))

        def on_state(job: Any, state: JobState) -> None:
            for (cohort, dest), (last, interval, failures) in gauges(jobs, scheduler.states).items():
                metrics.COHORT_LAST_COMPLETED.labels(cohort=cohort, destination=dest).set(last)
                metrics.COHORT_SYNC_INTERVAL.labels(cohort=cohort, destination=dest).set(interval)
                metrics.COHORT_CONSECUTIVE_FAILURES.labels(cohort=cohort, destination=dest).set(failures)

        async def latest(job: Any) -> dict[str, Any] | None:
            return await sync.latest_completed(storages[job.destination.name], job)

        async def run(group: list[Any], slot: int) -> list[Any]:
            return await sync.run_syncs(settings, group, slot, lambda d: storages[d.name], source,
                                        echo=lambda line: log.info("%s", line), at_ms=slot, clock_ms=clock.now_ms,
                                        **scheduler.run_args(group, slot))

        async def wait(seconds: float) -> None:      # until then, or stop, "sync now", or the duty moved
            seen = duty.changes
            await pause(seconds, lambda: stop() or bool(NOW.pending) or duty.changes != seen)

        following: dict[str, Any] = {}

        async def on_requests(name: str, ids: list[str], state: str) -> None:
            if following.get("follower") is not None:
                await following["follower"].finished(name, ids, state)

        scheduler = Scheduler(jobs, clock.now_ms, latest, run, wait, on_state, NOW, held=lambda: duty.held,
                              on_requests=on_requests)
        topic = settings.topics.name("cohorts")

        async def follow(follower: Follower, holding: dict[str, bool]) -> None:
            while holding["on"] and not stop():
                try:
                    await follower.run(lambda: stop() or not holding["on"])
                except Exception as exc:
                    log.warning("cohorts: reading the sync requests of %s failed (%s: %s); reading it again in "
                                "%g s", requests_topic, type(exc).__name__, exc, IDLE_WAKE_S / 4)
                    await pause(IDLE_WAKE_S / 4, lambda: stop() or not holding["on"])
                    follower = Follower(settings, clock.now_ms, jobs, scheduler.ran, NOW, send)
                    following["follower"] = follower
                else:
                    return

        def on_duty(holder: Scheduler | None) -> None:
            report_duty(holder is not None)
            if following.get("holding") is not None:
                following["holding"]["on"] = False
                following["follower"] = None
            if holder is not None:
                NOW.take()                # a previous holding's leftovers: the new follower reads them again
                holding = {"on": True}
                follower = Follower(settings, clock.now_ms, jobs, holder.ran, NOW, send)
                following.update(holding=holding, follower=follower)
                following.setdefault("tasks", []).append(asyncio.create_task(follow(follower, holding)))
                log.info("cohorts: this worker is assigned partition %d of %s: it runs the %d cohort sync(s): %s",
                         DUTY_PARTITION, topic, len(jobs), ", ".join(j.name for j in jobs))
            else:
                if not stop():
                    log.info("cohorts: partition %d of %s is no longer assigned to this worker: it starts no more "
                             "cohort syncs (the worker assigned it does)", DUTY_PARTITION, topic)
        def ready() -> None:
            if not duty.held:
                log.info("cohorts: partition %d of %s is assigned to another worker, which runs the cohort syncs; "
                         "this one runs them once a rebalance assigns it the partition", DUTY_PARTITION, topic)
            on_ready()
        try:
            await scheduler.run_forever(stop, ready, on_duty)
        finally:
            if following.get("holding") is not None:
                following["holding"]["on"] = False
            for task in following.get("tasks", []):
                try:
                    await task
                except Exception:
                    log.exception("cohorts: reading the sync requests failed")
