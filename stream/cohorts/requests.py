"""Cohort "sync now" requests, taken by any worker and run by the one holding the sync duty.

The admin API's ``POST /admin/cohorts/{id}/syncs`` and the console's button may land on any worker; the syncs run
only on the worker holding the sync duty (``stream.cohorts.duty``). So the worker that takes a request appends it to
the topic ``topics.cohort_sync_requests`` (one partition, JSON, kept two days) and answers 202 with its id; the
duty holder follows the topic, hands each request's syncs to its scheduler (``schedule.SyncNow``), which runs them
in turn with its scheduled ones (one sync per cohort and destination at a time), and appends what became of the
request once each of its syncs ran.

Records (key, value):

- ``request/<id>``: ``{"kind": "request", "id", "cohort", "destination" (or null: all of the cohort's), "syncs":
  [{"destination", "routing_key"}], "at": ms, "by"}``;
- ``done/<id>``: ``{"kind": "done", "id", "outcome": "run" | "dropped", "syncs": [{"destination", "routing_key",
  "state"}], "at": ms, "worker"}``; ``state``: ``complete`` (synced, or nothing was due), ``failed`` (the attempt
  failed: the scheduler retries it on its backoff), ``unknown`` (the sync is no longer in the settings);
- ``holder``: ``{"kind": "holder", "worker", "at": ms}``, written by the duty holder when it gains the duty and every
  ``HOLDER_BEAT_S`` while it holds it, so that any worker can tell whether one runs the cohorts stage.

**Once.** A request is run once, across a restart or a change of holder: a worker that gains the duty reads the
topic from its beginning and skips every request with a ``done`` record; a sync's completion record lists the
requests it ran (``requests``), so a request whose sync completed just before its holder died without appending
``done`` is not run again (the new holder reads each sync's latest completion record as it starts). A former holder
may still complete a ``once`` sync it started after the new holder read that record; the new holder's sync of the
request then finds it and runs nothing again (``sync.Base``, ``schedule.superseded``). A request older
than ``MAX_AGE_MS`` when a duty holder reads it is dropped, with a log line and a ``done`` record, rather than run
long after it was asked for.

Why a topic of its own rather than a record type on ``exports.control``: that topic is compacted and kept for good
(the latest record of each key is the exports' state, read by every worker at start); requests are many, short-lived
and read whole by the duty holder, so they want a time-based retention, and mixing them in would grow what every
exporter reads at start.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from stream.events.timefmt import HOUR_MS

log = logging.getLogger(__name__)
MAX_AGE_MS = 24 * HOUR_MS
"""A request older than this when a duty holder reads it is dropped, not run."""
HOLDER_BEAT_S = 60.0
"""How often the duty holder says so on the topic."""
HOLDER_LEASE_MS = 180_000
"""A holder record older than this says nothing: no worker is known to hold the duty."""
POLL_S = 1.0


def new_request_id(now_ms: int) -> str:
    return f"sr-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now_ms // 1000))}-{secrets.token_hex(3)}"


def sync_ref(job: Any) -> dict[str, str]:
    """A sync of a request: its destination and routing key (with the cohort, which sync of the settings)."""
    return {"destination": job.destination.name, "routing_key": job.sync.routing_key}


def request_record(request_id: str, cohort: str, destination: str | None, jobs: Iterable[Any], at_ms: int,
                   by: str) -> tuple[bytes, bytes]:
    return (f"request/{request_id}".encode(), orjson.dumps({
        "kind": "request", "id": request_id, "cohort": cohort, "destination": destination,
        "syncs": [sync_ref(j) for j in jobs], "at": at_ms, "by": by}))


def done_record(request_id: str, outcome: str, syncs: list[dict[str, str]], at_ms: int,
                worker: str) -> tuple[bytes, bytes]:
    return (f"done/{request_id}".encode(), orjson.dumps({
        "kind": "done", "id": request_id, "outcome": outcome, "syncs": syncs, "at": at_ms, "worker": worker}))


def holder_record(worker: str, at_ms: int) -> tuple[bytes, bytes]:
    return b"holder", orjson.dumps({"kind": "holder", "worker": worker, "at": at_ms})


def worker_name() -> str:
    import os
    import socket
    return f"{socket.gethostname()} (pid {os.getpid()})"


@dataclass
class Book:
    """The requests topic folded in order: the requests, which are done, and the latest holder record."""

    requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    holder: dict[str, Any] | None = None

    def add(self, value: bytes) -> dict[str, Any] | None:
        """Fold one record; the record (None when it is not JSON of a known kind, which is skipped)."""
        try:
            r = orjson.loads(value)
        except orjson.JSONDecodeError:
            log.warning("cohort sync requests: a record is not JSON: skipped")
            return None
        kind = r.get("kind") if isinstance(r, dict) else None
        if kind == "request":
            self.requests.setdefault(r["id"], r)
        elif kind == "done":
            self.done[r["id"]] = r
        elif kind == "holder":
            if self.holder is None or r["at"] >= self.holder["at"]:
                self.holder = r
        else:
            return None
        return r

    def add_all(self, values: Iterable[bytes]) -> Book:
        for v in values:
            self.add(v)
        return self

    def pending(self, now_ms: int, cohort: str | None = None) -> list[dict[str, Any]]:
        """The requests not done and not older than ``MAX_AGE_MS`` (of ``cohort`` only, if given), oldest first."""
        return [r for r in self.requests.values() if r["id"] not in self.done and not expired(r, now_ms)
                and cohort in (None, r["cohort"])]

    def holder_at(self, now_ms: int) -> dict[str, Any] | None:
        """The latest holder record, if it is recent enough to say a worker holds the duty."""
        if self.holder is None or now_ms - self.holder["at"] > HOLDER_LEASE_MS:
            return None
        return self.holder


def expired(request: dict[str, Any], now_ms: int) -> bool:
    return now_ms - request["at"] > MAX_AGE_MS


def pending_doc(request: dict[str, Any]) -> dict[str, Any]:
    """A requested-but-not-yet-run request as a cohort's document shows it."""
    return {"request": request["id"], "at_ms": request["at"], "by": request["by"],
            "destination": request["destination"], "syncs": request["syncs"]}


def answer_lines(doc: dict[str, Any]) -> list[str]:
    """The answer to a "sync now" request (``Admin.cohort_sync``'s document, the API's 202) as ``stream cohorts
    sync-now`` prints it: the request's id, what each sync will do (a ``once`` sync: one stamped at or after the
    request; an hourly or daily one: its current time's, unless complete), and where it runs (the ``note``)."""
    def stamp(ms: int | None) -> str:
        return "none" if ms is None else time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ms // 1000))
    to = f" to {doc['destination']}" if doc["destination"] else ""
    lines = [f"request {doc['request']}: sync now of {doc['cohort']}{to}"]
    for s in doc["syncs"]:
        name = s["destination"] + (f" ({s['routing_key']})" if s["routing_key"] else "")
        if s["state"] == "queued" and s["cadence"] == "once":
            what = f"queued: a sync stamped {stamp(s['scheduled_ms'])}, counting every event accepted before then"
        elif s["state"] == "queued":
            what = (f"queued: the sync of its current time, stamped {stamp(s['scheduled_ms'])} (events accepted "
                    "since count in the next)")
        else:
            what = "complete: its current time is synced already, nothing to run"
        lines.append(f"  {name:<16} {s['cadence']:<6} {what} (latest completed: {stamp(s['latest_completed_ms'])})")
    lines.append(doc["note"])
    return lines


def job_names(request: dict[str, Any], jobs: Iterable[Any]) -> tuple[list[str], list[dict[str, str]]]:
    """The scheduler's jobs a request asks for (their names), and the syncs it names that are no longer in the
    settings."""
    by_ref = {(j.cohort.id, j.destination.name, j.sync.routing_key): j.name for j in jobs}
    names, unknown = [], []
    for s in request["syncs"]:
        name = by_ref.get((request["cohort"], s["destination"], s["routing_key"]))
        if name is None:
            unknown.append(s)
        else:
            names.append(name)
    return names, unknown


@dataclass
class Taken:
    """A request the duty holder took: each of its syncs' state, None while it waits to run."""

    request: dict[str, Any]
    states: dict[str, str | None]          # job name -> state
    refs: dict[str, dict[str, str]]        # job name -> its sync ref
    unknown: list[dict[str, str]]

    def syncs(self) -> list[dict[str, str]]:
        return [{**self.refs[n], "state": s or "waiting"} for n, s in self.states.items()] + \
            [{**u, "state": "unknown"} for u in self.unknown]


class Runs:
    """The duty holder's requests taken and not yet done: pure bookkeeping of ``Follower``.

    ``admit`` decides what to do with a request read from the topic: ``skip`` (done already, or taken), ``drop``
    (too old), ``done`` (nothing left to run: each of its syncs ran it before, per their completion records, or is
    gone), or ``run`` (the job names to hand to the scheduler). ``finished`` records a sync's outcome for the
    requests it ran, and returns those now done."""

    def __init__(self, jobs: list[Any]) -> None:
        self.jobs = jobs
        self.taken: dict[str, Taken] = {}
        self.seen: set[str] = set()

    def admit(self, request: dict[str, Any], done: bool, ran: dict[str, set[str]], now_ms: int
              ) -> tuple[str, list[str]]:
        rid = request["id"]
        if done or rid in self.seen:
            return "skip", []
        self.seen.add(rid)
        if expired(request, now_ms):
            return "drop", []
        names, unknown = job_names(request, self.jobs)
        refs = {j.name: sync_ref(j) for j in self.jobs}
        states: dict[str, str | None] = {n: ("complete" if rid in ran.get(n, ()) else None) for n in names}
        self.taken[rid] = Taken(request, states, {n: refs[n] for n in names}, unknown)
        todo = [n for n, s in states.items() if s is None]
        return ("run" if todo else "done"), todo

    def finished(self, name: str, request_ids: Iterable[str], state: str) -> list[Taken]:
        out = []
        for rid in request_ids:
            t = self.taken.get(rid)
            if t is None or name not in t.states:
                continue
            t.states[name] = state
            if all(s is not None for s in t.states.values()):
                out.append(self.taken.pop(rid))
        return out

    def pop(self, rid: str) -> Taken:
        return self.taken.pop(rid)


class RequestLog(Protocol):
    """Where requests are appended and read back (the topic; a list in tests)."""

    async def append(self, record: tuple[bytes, bytes]) -> None: ...

    async def read(self) -> list[bytes]: ...


class KafkaRequestLog:
    """The ``cohort_sync_requests`` topic: appended with an acknowledged send to partition 0, read whole."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.topic = settings.topics.name("cohort_sync_requests")

    async def append(self, record: tuple[bytes, bytes]) -> None:
        from stream import kafka
        p = kafka.producer(self.settings.kafka)
        await p.start()
        try:
            await (await p.send(self.topic, record[1], key=record[0], partition=0))
        finally:
            await kafka.stop_all(p)

    async def read(self) -> list[bytes]:
        from stream import kafka
        return [m.value for m in await kafka.read_all(self.settings, self.topic)]


@dataclass
class MemoryRequestLog:
    records: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def append(self, record: tuple[bytes, bytes]) -> None:
        self.records.append(record)

    async def read(self) -> list[bytes]:
        return [v for _, v in self.records]


class Follower:
    """The duty holder's side, one per holding of the duty: says it holds the duty, reads the topic from its
    beginning, hands each request to be run to the scheduler (``now``, a ``schedule.SyncNow``), drops the too old,
    follows the topic for new ones, and appends each request's ``done`` record once its syncs ran (``finished``,
    which the scheduler calls)."""

    def __init__(self, settings: Any, clock_ms: Any, jobs: list[Any], ran: dict[str, set[str]], now: Any,
                 send: Any, worker: str | None = None) -> None:
        """``ran``: per job name, the requests its latest completed sync ran; ``send``: an async append of a record
        (key, value) to the topic."""
        self.settings, self.clock_ms, self.now, self.send = settings, clock_ms, now, send
        self.runs, self.book, self.ran = Runs(jobs), Book(), ran
        self.worker = worker or worker_name()
        self.topic = settings.topics.name("cohort_sync_requests") if settings is not None else "sync requests"
        self.beat_at: int | None = None

    async def beat(self) -> None:
        """The holder record, when the last one is ``HOLDER_BEAT_S`` old (or none was written)."""
        now = self.clock_ms()
        if self.beat_at is None or now - self.beat_at >= HOLDER_BEAT_S * 1000:
            await self.send(holder_record(self.worker, now))
            self.beat_at = now

    async def start(self, values: Iterable[bytes]) -> None:
        """The topic up to its end as the holding starts: folded whole first (a request's ``done`` record comes
        after it), then each request acted on in order."""
        self.book.add_all(values)
        for r in list(self.book.requests.values()):
            await self.act(r)

    async def take(self, value: bytes) -> None:
        """Fold a record read from the topic as it grows; act on a request."""
        r = self.book.add(value)
        if r is not None and r["kind"] == "request":
            await self.act(r)

    async def act(self, r: dict[str, Any]) -> None:
        from stream import metrics
        now = self.clock_ms()
        action, names = self.runs.admit(r, r["id"] in self.book.done, self.ran, now)
        if action == "drop":
            age_h = (now - r["at"]) / HOUR_MS
            log.warning("cohort sync request %s (sync now of %s, asked by %s) is %.1f hours old, more than the %d "
                        "hours a request may wait: dropped, not run; ask again if the sync is still wanted",
                        r["id"], r["cohort"], r["by"], age_h, MAX_AGE_MS // HOUR_MS)
            metrics.COHORT_SYNC_REQUESTS.labels("dropped").inc()
            await self.send(done_record(r["id"], "dropped", [], now, self.worker))
        elif action == "done":
            await self._done(self.runs.pop(r["id"]))
        elif action == "run":
            log.info("cohort sync request %s (sync now of %s, asked by %s): queued for %s", r["id"], r["cohort"],
                     r["by"], ", ".join(names))
            self.now.add(names, r["id"], r.get("at"))

    async def finished(self, name: str, request_ids: list[str], state: str) -> None:
        """The scheduler ran (or found nothing to run for) job ``name`` for ``request_ids``."""
        for t in self.runs.finished(name, request_ids, state):
            await self._done(t)

    async def _done(self, t: Taken) -> None:
        from stream import metrics
        syncs = t.syncs()
        await self.send(done_record(t.request["id"], "run", syncs, self.clock_ms(), self.worker))
        metrics.COHORT_SYNC_REQUESTS.labels("run").inc()
        log.info("cohort sync request %s (sync now of %s): run: %s", t.request["id"], t.request["cohort"],
                 ", ".join(f"{s['destination']} {s['state']}" for s in syncs))

    async def run(self, stop: Any) -> None:
        """Until ``stop()``: the topic from its beginning, then as it grows (polled every ``POLL_S``), beating."""
        from aiokafka import AIOKafkaConsumer

        from stream import kafka
        consumer = AIOKafkaConsumer(**{**kafka.client_args(self.settings.kafka), "enable_auto_commit": False})
        await consumer.start()
        try:
            await self.beat()
            await kafka.assign_from_beginning(consumer, self.topic, default=frozenset({0}))
            await self.start([m.value async for m in kafka.records_to_end(consumer, int(POLL_S * 1000))])
            while not stop():
                for recs in (await consumer.getmany(timeout_ms=int(POLL_S * 1000))).values():
                    for m in recs:
                        await self.take(m.value)
                await self.beat()
        finally:
            await kafka.stop_all(consumer)
