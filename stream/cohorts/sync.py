"""Cohort syncs to S3 (FORMATS.md 6), computed from the accepted events, exactly once per scheduled time.

A sync of cohort C to a cohort destination D at scheduled time T:

1. **Schedule.** ``hourly`` and ``daily`` syncs are stamped with the latest UTC hour or day start at or before
   now; a ``once`` sync with the time of its first sync (its completion record's), or, before any, now to the
   minute. Running the sync again within the same hour (day) finds that time's completion record and does nothing.
2. **Membership.** events.accepted is read from its beginning, one record at a time (nothing is kept of a batch
   once its rows are folded): every row of C's project uploaded before T (the batch's server_upload_time) goes
   through ``membership.apply_event`` with ``today`` = T's day, into the latest ``UserState`` of its
   amplitude_id. Memory is one state per user, never per event. A user's properties are those of its row with
   the latest server_upload_time, whatever order the partitions are read in. identity.merges is read likewise
   (merges made before T) and each merged id's state joins its survivor's (``membership.merge``). The members are
   the users ``membership.is_member`` says are in C on T's day, by amplitude_id.
3. **Diff and files.** The previous *completed* sync's ``existing`` file (read back from S3 to a spool file) and
   the members, both ascending, go through ``csvfiles.diff`` in one pass that writes the three spool files
   ``entering``, ``exiting`` and ``existing``; each is uploaded (a multipart upload when large) under its
   ``csvfiles.sync_key`` with the destination's server-side encryption.
4. **Completion.** ``<path_prefix>_sync/<project>_<cohort>_<stamp>[_<routing_key>].done``, a small JSON object,
   is written after the three files. It lives in the bucket with the files it vouches for, so whoever reads the
   bucket (``stream cohorts history``, a consumer) sees which syncs are whole, it outlives any topic's
   retention (the next diff needs the previous completed sync however old it is), and it needs no topic of its
   own. A crash before it leaves no record: the next run for T computes the same members from the same events
   (only rows uploaded before T count) against the same previous sync, and writes the same keys with the same
   bytes over what the crash left. Two runs at once write the same bytes too.

Limits of this first slice: the events come from events.accepted, so a window longer than the topic's retention
undercounts; an event of T's past that reaches events.accepted only after a sync for T is not in that sync (it is
in the next); static cohorts are not synced (their uploaded members are not stored yet); files written by a run
that crashed and whose time was never completed (a ``once`` sync retried on another minute, an hourly sync
retried after the next hour began) stay in the bucket without a completion record.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import orjson

from stream import metrics
from stream.cohorts import csvfiles
from stream.cohorts.membership import EMPTY, UserState, apply_event, is_member, merge
from stream.cohorts.rules import Cohort, CohortSet, day_of_ms
from stream.crashpoints import crash_point
from stream.events.timefmt import DAY_MS, HOUR_MS
from stream.s3.storage import PutRequest, Storage
from stream.settings import CohortDestinationSettings, CohortSyncSettings, Settings

MINUTE_MS = 60_000
STAMP_LEN = len("2024-03-09T07:00")


class SyncError(Exception):
    """A sync that cannot run as asked (an unknown cohort or destination, a static cohort)."""


@dataclass(frozen=True)
class SyncJob:
    """One cohort synced to one destination (one entry of its ``syncs``)."""

    destination: CohortDestinationSettings
    sync: CohortSyncSettings
    cohort: Cohort

    @property
    def name(self) -> str:
        routing = f" (routing key {self.sync.routing_key})" if self.sync.routing_key else ""
        return f"{self.cohort.id} -> {self.destination.name}{routing}"


@dataclass
class SyncResult:
    job: SyncJob
    scheduled_ms: int
    keys: dict[str, str]
    done_key: str
    skipped: bool = False                      # the scheduled time was already completed
    members: int = 0
    entering: int = 0
    exiting: int = 0
    previous: str | None = None                # the stamp of the completed sync it was diffed against


def jobs_of(settings: Settings, cohort_id: str, destination: str | None = None) -> list[SyncJob]:
    """The syncs of ``cohort_id``: to ``destination`` only, or to every cohort destination that syncs it."""
    cohort = settings.cohort_set.cohort(cohort_id) if settings.cohort_set else None
    if cohort is None:
        raise SyncError(f"no cohort {cohort_id!r} in the settings (cohorts)")
    if cohort.static:
        raise SyncError(f"cohort {cohort_id!r} is static: static cohorts are not synced yet")
    if destination is not None and settings.cohort_destination(destination) is None:
        raise SyncError(f"no cohort destination {destination!r} (cohort_destinations)")
    jobs = [SyncJob(d, s, cohort) for d in settings.cohort_destinations
            if destination in (None, d.name) for s in d.syncs if s.cohort == cohort_id]
    if not jobs:
        raise SyncError(f"cohort {cohort_id!r} is synced to no cohort destination"
                        + (f" named {destination!r}" if destination else "") + " (cohort_destinations[].syncs)")
    return jobs


# --- keys and completion records ---------------------------------------------------------------------------------

def stamp(scheduled_ms: int, hyphen: bool = False) -> str:
    return time.strftime("%Y-%m-%dT%H-%M" if hyphen else "%Y-%m-%dT%H:%M", time.gmtime(scheduled_ms // 1000))


def parse_stamp(text: str) -> int | None:
    """The epoch ms of a key's stamp, in either form; None when it is not one."""
    if len(text) != STAMP_LEN or text[10] != "T":
        return None
    try:
        t = time.strptime(text[:13] + ":" + text[14:], "%Y-%m-%dT%H:%M")
    except ValueError:
        return None
    import calendar
    return calendar.timegm(t) * 1000


def sync_keys(job: SyncJob, scheduled_ms: int) -> dict[str, str]:
    d, s = job.destination, job.sync
    return {t: csvfiles.sync_key(d.path_prefix, job.cohort.project, job.cohort.id, scheduled_ms, t, s.routing_key,
                                 d.hyphen_time) for t in csvfiles.DIFF_TYPES}


def done_prefix(job: SyncJob) -> str:
    return f"{job.destination.path_prefix}_sync/{job.cohort.project}_{job.cohort.id}_"


def done_key(job: SyncJob, scheduled_ms: int) -> str:
    routing = f"_{job.sync.routing_key}" if job.sync.routing_key else ""
    return f"{done_prefix(job)}{stamp(scheduled_ms, job.destination.hyphen_time)}{routing}.done"


async def _read_bytes(storage: Storage, bucket: str, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.read(bucket, key)])


async def completed(storage: Storage, job: SyncJob) -> list[dict[str, Any]]:
    """The completion records of ``job``, oldest scheduled time first."""
    prefix = done_prefix(job)
    routing = f"_{job.sync.routing_key}" if job.sync.routing_key else ""
    out = []
    async for o in storage.list(job.destination.bucket, prefix):
        rest = o.key[len(prefix):]
        if parse_stamp(rest[:STAMP_LEN]) is None or rest[STAMP_LEN:] != routing + ".done":
            continue   # another cohort whose id starts with this one's and an underscore, or another routing key
        out.append(orjson.loads(await _read_bytes(storage, job.destination.bucket, o.key)))
    return sorted(out, key=lambda r: r["scheduled_ms"])


def scheduled_time(cadence: str, now_ms: int, done: list[dict[str, Any]] = ()) -> int:  # type: ignore[assignment]
    """The time the sync due at ``now_ms`` is stamped with (see the module docstring)."""
    if cadence == "hourly":
        return now_ms - now_ms % HOUR_MS
    if cadence == "daily":
        return now_ms - now_ms % DAY_MS
    if done:
        return done[0]["scheduled_ms"]
    return now_ms - now_ms % MINUTE_MS


# --- membership from the events ----------------------------------------------------------------------------------

class Membership:
    """Users' latest states, folded from export rows uploaded before ``until_ms``, counted on day ``today``."""

    def __init__(self, cohorts: CohortSet, projects: Iterable[int], until_ms: int) -> None:
        self.cohorts, self.projects, self.until_ms = cohorts, frozenset(projects), until_ms
        self.today = day_of_ms(until_ms)
        self.states: dict[int, UserState] = {}
        self._props_at: dict[int, int] = {}       # amplitude_id -> upload time of the row its properties are from
        self._merges: dict[int, int] = {}         # merged amplitude_id -> the id it was merged into
        self.rows = 0

    def add_row(self, row: Mapping[str, Any], uploaded_ms: int) -> None:
        if uploaded_ms >= self.until_ms:
            return
        aid = row.get("amplitude_id")
        if not isinstance(aid, int) or isinstance(aid, bool):
            return
        before = self.states.get(aid, EMPTY)
        after = apply_event(before, row, self.cohorts, self.today)
        if after.properties is not before.properties:
            if uploaded_ms < self._props_at.get(aid, -1):   # an older row read after a newer one: keep the newer's
                after = UserState(after.project, after.user_id, after.counts, before.properties)
            else:
                self._props_at[aid] = uploaded_ms
        self.states[aid] = after
        self.rows += 1

    def add_batch(self, batch: Any) -> None:
        """The rows of one events.accepted batch (``EventBatch``); other projects' batches are skipped unread."""
        if batch.project not in self.projects:
            return
        for uploaded_ms, line in zip(batch.times, batch.lines):
            if uploaded_ms < self.until_ms:
                self.add_row(orjson.loads(line), uploaded_ms)

    def add_merge(self, record: Mapping[str, Any]) -> None:
        """One merge record of identity.merges (``stream.identity.users.Merge``)."""
        if record.get("merge_server_time", 0) >= self.until_ms:
            return
        merged, into = record.get("merged_amplitude_id"), record.get("amplitude_id")
        if isinstance(merged, int) and isinstance(into, int) and merged != into:
            self._merges[merged] = into

    def _survivor(self, aid: int) -> int:
        seen = {aid}
        while aid in self._merges and self._merges[aid] not in seen:
            aid = self._merges[aid]
            seen.add(aid)
        return aid

    def apply_merges(self) -> None:
        """Each merged id's state joins its (final) survivor's; call once, after every row and merge."""
        for merged in sorted(self._merges):
            state = self.states.pop(merged, None)
            if state is None:
                continue
            into = self._survivor(merged)
            self.states[into] = merge(self.states.get(into, EMPTY), state)
        self._merges.clear()

    def members(self, cohort: Cohort) -> list[int]:
        """The amplitude_ids in ``cohort`` on ``today``, ascending."""
        return sorted(aid for aid, st in self.states.items() if is_member(st, cohort, self.today))


class EventSource:
    """Where the rows and merges come from: events.accepted and identity.merges, each read from its beginning."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _records(self, topic: str) -> AsyncIterator[Any]:
        from stream.kafka import iter_all
        return iter_all(self.settings, topic,
                        max_partition_fetch_bytes=max(self.settings.kafka.max_request_bytes, 1 << 20))

    async def fold(self, membership: Membership) -> None:
        from stream.events.batch import EventBatch
        async for r in self._records(self.settings.topics.name("accepted")):
            if r.value:
                membership.add_batch(EventBatch.decode(r.value))
        if self.settings.identity.enabled:
            async for r in self._records(self.settings.topics.name("identity_merges")):
                if r.value:
                    for line in EventBatch.decode(r.value).lines:
                        membership.add_merge(orjson.loads(line))
        membership.apply_merges()


# --- the files ---------------------------------------------------------------------------------------------------

def _ids_of(path: Path) -> Iterator[int]:
    """The amplitudeID column of a sync file, header skipped (the first field: digits, never quoted)."""
    with open(path, "rb") as f:
        next(f, None)
        for raw in f:
            head = raw.split(b",", 1)[0].strip()
            if head:
                yield int(head)


def write_files(spool_dir: Path, previous: Iterable[int], members: Iterable[int],
                states: Mapping[int, UserState], properties: list[str],
                user_id_property: str | None) -> dict[str, int]:
    """The three sync files in ``spool_dir`` (``<diff_type>.csv``), in one merge pass; the users per file."""
    head = csvfiles.header(properties)
    counts = dict.fromkeys(csvfiles.DIFF_TYPES, 0)
    with ExitStack() as stack:
        files = {t: stack.enter_context(open(spool_dir / f"{t}.csv", "wb")) for t in csvfiles.DIFF_TYPES}
        for f in files.values():
            f.write(head)
        for aid, diff_type in csvfiles.diff(previous, members, existing=True):
            st = states.get(aid, EMPTY)
            user_id = st.properties.get(user_id_property) if user_id_property else st.user_id
            files[diff_type].write(csvfiles.row(aid, user_id, (st.properties.get(p) for p in properties)))
            counts[diff_type] += 1
    return counts


async def sync_job(storage: Storage, job: SyncJob, scheduled_ms: int, membership: Membership,
                   part_bytes: int = 8 << 20, echo: Callable[[str], None] = lambda _: None) -> SyncResult:
    """Write the sync of ``job`` at ``scheduled_ms`` from ``membership`` (folded until ``scheduled_ms``), unless
    a completion record says it is written."""
    dest, bucket = job.destination, job.destination.bucket
    keys, done = sync_keys(job, scheduled_ms), done_key(job, scheduled_ms)
    result = SyncResult(job, scheduled_ms, keys, done)
    records = await completed(storage, job)
    if any(r["scheduled_ms"] == scheduled_ms for r in records):
        result.skipped = True
        echo(f"{job.name}: the sync of {stamp(scheduled_ms)} is complete already ({done})")
        return result
    before = [r for r in records if r["scheduled_ms"] < scheduled_ms]
    previous = before[-1] if before else None
    members = membership.members(job.cohort)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stream-cohort-") as tmp:
        spool = Path(tmp)
        prev_path = spool / "previous.csv"
        with open(prev_path, "wb") as f:  # noqa: ASYNC230 (a local spool file)
            if previous is not None:
                result.previous = previous["stamp"]
                async for chunk in storage.read(bucket, previous["keys"]["existing"]):
                    f.write(chunk)
        counts = write_files(spool, _ids_of(prev_path) if previous else (), members, membership.states,
                             job.sync.properties, dest.user_id_property)
        crash_point("cohorts.diffed")
        for diff_type in csvfiles.DIFF_TYPES:
            path = spool / f"{diff_type}.csv"
            await storage.put_file(PutRequest(bucket, keys[diff_type], path, path.stat().st_size,
                                              "text/csv; charset=utf-8", None, {}))
            crash_point("cohorts.file_written")
            echo(f"{job.name}: wrote s3://{bucket}/{keys[diff_type]} ({counts[diff_type]} users)")
    result.members, result.entering, result.exiting = counts["existing"], counts["entering"], counts["exiting"]
    record = {"cohort": job.cohort.id, "project": job.cohort.project, "destination": dest.name,
              "cadence": job.sync.cadence, "routing_key": job.sync.routing_key, "scheduled_ms": scheduled_ms,
              "stamp": stamp(scheduled_ms, dest.hyphen_time), "keys": keys, "members": result.members,
              "entering": result.entering, "exiting": result.exiting, "previous": result.previous,
              "completed_at_ms": int(time.time() * 1000)}
    await storage.put_bytes(bucket, done, orjson.dumps(record), "application/json")
    crash_point("cohorts.completed")
    labels = {"cohort": job.cohort.id, "destination": dest.name}
    metrics.COHORT_MEMBERS.labels(**labels).set(result.members)
    metrics.COHORT_ENTERING.labels(**labels).inc(result.entering)
    metrics.COHORT_EXITING.labels(**labels).inc(result.exiting)
    metrics.COHORT_SYNC_DURATION.labels(**labels).observe(time.monotonic() - started)
    echo(f"{job.name}: sync of {stamp(scheduled_ms)} complete: {result.members} members, {result.entering} "
         f"entering, {result.exiting} exiting ({done})")
    return result


async def run_syncs(settings: Settings, jobs: list[SyncJob], now_ms: int,
                    storage_of: Callable[[CohortDestinationSettings], Any] | None = None,
                    source: Any = None, echo: Callable[[str], None] = lambda _: None) -> list[SyncResult]:
    """Each job's sync due at ``now_ms``; the events are read once per scheduled time the jobs need."""
    source = source or EventSource(settings)
    storage_of = storage_of or (lambda d: _s3_storage(settings, d))
    results: list[SyncResult] = []
    async with _Storages(storage_of) as storages:
        plan: dict[int, list[SyncJob]] = {}
        for job in jobs:
            storage = await storages.get(job.destination)
            t = scheduled_time(job.sync.cadence, now_ms, await completed(storage, job))
            plan.setdefault(t, []).append(job)
        for t, due in sorted(plan.items()):
            membership = None
            for job in due:
                storage = await storages.get(job.destination)
                try:
                    if membership is None and not any(r["scheduled_ms"] == t for r in await completed(storage, job)):
                        echo(f"reading the events uploaded before {stamp(t)} UTC")
                        membership = Membership(settings.cohort_set, {j.cohort.project for j in due}, t)
                        await source.fold(membership)
                        echo(f"{membership.rows} rows folded into {len(membership.states)} users")
                    results.append(await sync_job(storage, job, t, membership or Membership(
                        settings.cohort_set, (), t), settings.s3.upload_part_bytes, echo))
                except Exception as exc:
                    from stream.s3.errors import classify
                    failure = classify(exc)
                    metrics.COHORT_SYNC_FAILURES.labels(cohort=job.cohort.id, destination=job.destination.name,
                                                        reason=failure.reason if failure else "other").inc()
                    raise
    return results


class _Storages:
    """One storage per destination, opened on first use and closed at the end."""

    def __init__(self, storage_of: Callable[[CohortDestinationSettings], Any]) -> None:
        self.storage_of = storage_of
        self.open: dict[str, Any] = {}
        self.stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        return self

    async def get(self, dest: CohortDestinationSettings) -> Storage:
        if dest.name not in self.open:
            made = self.storage_of(dest)
            if hasattr(made, "__aenter__"):
                made = await self.stack.enter_async_context(made)
            self.open[dest.name] = made
        return self.open[dest.name]

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.aclose()


@asynccontextmanager
async def _s3_storage(settings: Settings, dest: CohortDestinationSettings) -> AsyncIterator[Storage]:
    from stream.s3.client import target_client, target_of
    from stream.s3.storage import S3Storage
    s3 = settings.s3
    async with target_client(target_of(dest, s3), s3) as client:
        yield S3Storage(client, dest.encryption, s3.upload_part_bytes, s3.read_timeout_s)


async def history(settings: Settings, jobs: list[SyncJob],
                  storage_of: Callable[[CohortDestinationSettings], Any] | None = None
                  ) -> list[tuple[SyncJob, dict[str, Any]]]:
    """Every completed sync of ``jobs``, read from their buckets' completion records."""
    storage_of = storage_of or (lambda d: _s3_storage(settings, d))
    out = []
    async with _Storages(storage_of) as storages:
        for job in jobs:
            storage = await storages.get(job.destination)
            out += [(job, r) for r in await completed(storage, job)]
    return out
