"""Cohort syncs to S3 (FORMATS.md 6), computed from the accepted events, exactly once per scheduled time.

A sync of cohort C to a cohort destination D at scheduled time T:

1. **Schedule.** ``hourly`` and ``daily`` syncs are stamped with the latest hour or day start of the sync's
   ``time_zone`` (UTC by default) at or before now; a ``once`` sync with the time of its first sync (its completion
   record's), or, before any, now to the minute (``schedule.slot_start``); a sync now of a ``once`` sync runs one
   stamped at or after the request, at a minute of its own (``schedule.answers``, ``schedule.resync_slot``), so
   that it counts every event accepted before the request. Running the sync again within the same
   hour (day) finds that time's completion record and does nothing. The worker's ``cohorts`` stage runs each sync
   when it is due (``schedule.Scheduler``); ``stream cohorts sync`` runs the one due now.
2. **Membership.** The cohorts stage keeps each user's state in-stream (``stage``); the sync reads it from the
   state table's compacted changelog (``changelog.ChangelogSource``), up to its end offsets, once every partition
   has passed T, and sees each user as of T (``stage.view``): the events uploaded before T, counted with ``today``
   = ``schedule.counted_day(T)``, the UTC day of T's last millisecond before it: ``within_days: N`` counts the N
   days ending that day, which for a sync at a UTC midnight is exactly ``[T - N days, T)``. A user's properties
   and user_id are those of its rows with the latest server_upload_time before T; a merged id's state is its
   survivor's. The members (``membership.is_member`` on that day) are streamed in amplitude_id order. (A
   ``source`` with ``fold`` instead of ``view`` gets a ``Membership`` to fold rows and merges into.)
3. **Diff and files.** The latest completed sync before T (``chain``: never another; a sync older than the latest
   completed one is refused) has its ``existing`` file read back from S3 to a spool file; it and the members,
   both ascending, go through ``csvfiles.diff`` in one pass that writes the three spool files ``entering``,
   ``exiting`` and ``existing``; each is uploaded (a multipart upload when large) under its ``csvfiles.sync_key``
   with the destination's server-side encryption.
4. **Completion.** The completion record ``<records_prefix><destination>/<project>_<cohort>[_<routing_key>]/
   done/<time>.done``, a small JSON object, is written after the three files, then the pointer ``latest.json``
   beside ``done/`` (a copy of it). The records live in the bucket with the files they vouch for, so whoever
   reads the bucket (``stream cohorts history``, a consumer) sees which syncs are whole, they outlive any topic's
   retention (the next diff needs the previous completed sync however old it is), and they need no topic of
   their own; they sit under a prefix of their own (``_stream/cohorts/`` by default), so that a reader listing
   the CSV files' folder finds only what the vendor writes there. Just before the completion record, the records
   after the previous sync are listed again: if another run (a CLI run beside the worker) completed one
   meanwhile, this sync is not completed (``ChainError``), as its diff would skip it. A crash before the record
   leaves none: the next run for T computes the same members from the same events (only rows uploaded before T
   count) against the same previous sync, and writes the same keys with the same bytes over what the crash left.
   Two runs at once write the same bytes too. A crash between the record and the pointer: see ``chain``.
5. **Failures.** A failed sync is counted by reason (``stream_cohort_sync_failures_total``) and recorded under
   ``failed/<time>.json`` beside ``done/``; the other jobs of the run go on.

Limits: an event of T's past that reaches events.accepted only after every partition of the state passed T is not
in the sync of T (it is in the next); a merge counts from when the stage reads it; a static cohort's members are
its uploaded user ids matched to the users' states (``static``); files written by a run that crashed and whose
time was never completed (a ``once`` sync retried on another minute, an hourly sync retried after the next hour
began) stay in the bucket without a completion record.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import msgspec
import orjson

from stream import metrics
from stream.cohorts import csvfiles, schedule
from stream.cohorts.membership import EMPTY, UserState, apply_event, is_member, merge
from stream.cohorts.rules import Cohort, CohortSet
from stream.crashpoints import crash_point
from stream.s3.storage import PutRequest, Storage
from stream.settings import CohortDestinationSettings, CohortSyncSettings, Settings

log = logging.getLogger(__name__)
MINUTE_MS = 60_000
STAMP_LEN = len("2024-03-09T07:00")


class SyncError(Exception):
    """A sync that cannot run as asked (an unknown cohort or destination)."""


class ChainError(SyncError):
    """A sync whose entering and exiting files would not be relative to the latest completed sync before it."""


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
    error: str | None = None                   # why it failed (the other jobs went on)
    reason: str | None = None                  # the failure's metric label (FAILURE_REASONS)
    superseded: list[dict[str, Any]] | None = None  # not completed: the syncs another run completed after its base


FAILURE_REASONS = ("chain", "events", "other")
"""Reasons of failed syncs besides S3's (``stream.s3.errors``): ``chain``, the diff cannot follow the latest completed
sync (another run completed one meanwhile, a later one is complete, the previous sync's existing file is missing);
``events``, the cohort state could not be read or had not passed the sync's time within ``cohort_state.sync_wait_s``;
``other``, anything else."""


def jobs_of(settings: Settings, cohort_id: str, destination: str | None = None) -> list[SyncJob]:
    """The syncs of ``cohort_id``: to ``destination`` only, or to every cohort destination that syncs it."""
    cohort = settings.cohort_set.cohort(cohort_id) if settings.cohort_set else None
    if cohort is None:
        raise SyncError(f"no cohort {cohort_id!r} in the settings (cohorts)")
    if destination is not None and settings.cohort_destination(destination) is None:
        raise SyncError(f"no cohort destination {destination!r} (cohort_destinations)")
    jobs = [SyncJob(d, s, cohort) for d in settings.cohort_destinations
            if destination in (None, d.name) for s in d.syncs if s.cohort == cohort_id]
    if not jobs:
        raise SyncError(f"cohort {cohort_id!r} is synced to no cohort destination"
                        + (f" named {destination!r}" if destination else "") + " (cohort_destinations[].syncs)")
    return jobs


def all_jobs(settings: Settings) -> list[SyncJob]:
    """Every sync of every cohort destination."""
    cohorts = settings.cohort_set
    return [SyncJob(d, s, c) for d in settings.cohort_destinations for s in d.syncs
            if (c := cohorts.cohort(s.cohort)) is not None]


# --- keys and records --------------------------------------------------------------------------------------------

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


def records_dir(job: SyncJob) -> str:
    """``<records_prefix><destination>/<project>_<cohort>[_<routing_key>]/``: the sync records of one job. Neither
    the cohort id nor the routing key holds an ``_`` (the settings refuse it), so no two jobs share a folder."""
    routing = f"_{job.sync.routing_key}" if job.sync.routing_key else ""
    return f"{job.destination.records_prefix}{job.destination.name}/{job.cohort.project}_{job.cohort.id}{routing}/"


def done_key(job: SyncJob, scheduled_ms: int) -> str:
    """The completion record of the sync at ``scheduled_ms``; the time always in the hyphen form, so that the
    records' keys sort as their times do whatever ``hyphen_time`` is."""
    return f"{records_dir(job)}done/{stamp(scheduled_ms, True)}.done"


def pointer_key(job: SyncJob) -> str:
    """A copy of the latest completed sync's record, written after it."""
    return f"{records_dir(job)}latest.json"


def failure_key(job: SyncJob, scheduled_ms: int) -> str:
    """The latest failed attempt at the sync of ``scheduled_ms``."""
    return f"{records_dir(job)}failed/{stamp(scheduled_ms, True)}.json"


async def _read_bytes(storage: Storage, bucket: str, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.read(bucket, key)])


def _missing(exc: BaseException) -> bool:
    """Whether a read failed because there is no such key (S3's NoSuchKey; MemoryStorage's KeyError)."""
    from botocore.exceptions import ClientError
    if isinstance(exc, KeyError):
        return True
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404")


async def _read_optional(storage: Storage, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when there is no such key."""
    try:
        return await _read_bytes(storage, bucket, key)
    except Exception as exc:
        if _missing(exc):
            return None
        raise


async def _records(storage: Storage, job: SyncJob, prefix: str, start_after: str = "") -> list[dict[str, Any]]:
    out = []
    async for o in storage.list(job.destination.bucket, prefix, start_after):
        out.append(orjson.loads(await _read_bytes(storage, job.destination.bucket, o.key)))
    return sorted(out, key=lambda r: r["scheduled_ms"])


async def completed(storage: Storage, job: SyncJob) -> list[dict[str, Any]]:
    """Every completion record of ``job``, oldest scheduled time first: a listing of all of them, for the history
    and when the pointer is missing."""
    return await _records(storage, job, f"{records_dir(job)}done/")


async def failures(storage: Storage, job: SyncJob) -> list[dict[str, Any]]:
    """The failure records of ``job`` (the latest failed attempt of each scheduled time), oldest first."""
    return await _records(storage, job, f"{records_dir(job)}failed/")


@dataclass
class Chain:
    """What a sync knows of the completed syncs of its job: the pointer, and every record at or after it."""

    pointer: dict[str, Any] | None
    known: list[dict[str, Any]]

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.known[-1] if self.known else None


async def chain(storage: Storage, job: SyncJob) -> Chain:
    """The latest completed syncs of ``job``, at a cost that does not grow with its history.

    Records are written in this order: the three files, the completion record ``done/<time>.done``, then the pointer
    ``latest.json`` (a copy of that record). The pointer is read, then the completion records listed *after* its
    own (one LIST with StartAfter, normally empty). A crash between a completion record and the pointer leaves the
    pointer on an older sync (that listing finds the newer record), or none after the job's first sync; whoever
    next finds that sync complete writes the pointer again (``pointer_behind``): the scheduler when it starts
    (``latest_completed``), a run of that sync's time (which does not run it again), the job's next sync. A crash
    before the completion record leaves no record (the sync is not complete; its files are overwritten by the next
    run for its time). Only when the pointer is missing (no sync yet, or it was deleted) are all the records
    listed.
    """
    bucket = job.destination.bucket
    raw = await _read_optional(storage, bucket, pointer_key(job))
    if raw is None:
        return Chain(None, await completed(storage, job))
    pointer = orjson.loads(raw)
    after = await _records(storage, job, f"{records_dir(job)}done/", done_key(job, pointer["scheduled_ms"]))
    return Chain(pointer, [pointer] + [r for r in after if r["scheduled_ms"] > pointer["scheduled_ms"]])


def pointer_behind(known: Chain) -> dict[str, Any] | None:
    """The record the pointer should be a copy of when it is behind the completion records ``known`` found: the
    latest one, when the pointer is missing or names an older sync (a crash between a record and the pointer);
    None when it names the latest, or no sync is complete."""
    latest = known.latest
    if latest is None or (known.pointer is not None and known.pointer["scheduled_ms"] >= latest["scheduled_ms"]):
        return None
    return latest


async def catch_up_pointer(storage: Storage, job: SyncJob, known: Chain) -> None:
    """Write the pointer again when it is behind (``pointer_behind``)."""
    record = pointer_behind(known)
    if record is not None:
        await _put_pointer(storage, job, record)


async def latest_completed(storage: Storage, job: SyncJob) -> dict[str, Any] | None:
    """The latest completed sync of ``job``; its pointer written first when a crash left it behind or missing (the
    scheduler reads this when it starts, so a worker killed between a completion record and the pointer names the
    sync again once it starts, without waiting for the job's next sync)."""
    known = await chain(storage, job)
    await catch_up_pointer(storage, job, known)
    return known.latest


def scheduled_time(cadence: str, now_ms: int, done: Iterable[dict[str, Any]] = (), time_zone: str = "UTC") -> int:
    """The time the sync due at ``now_ms`` is stamped with (``schedule.slot_start``); ``once``: that of its
    completed sync (``done``), if any."""
    if cadence == "once":
        first = min((r["scheduled_ms"] for r in done), default=None)
        if first is not None:
            return first
    return schedule.slot_start(cadence, time_zone, now_ms)


async def record_failure(storage: Storage, job: SyncJob, scheduled_ms: int, reason: str, error: str,
                         now_ms: int) -> None:
    """Write the failure record of an attempt at ``scheduled_ms`` (best effort: S3 may be what failed)."""
    record = {"cohort": job.cohort.id, "project": job.cohort.project, "destination": job.destination.name,
              "routing_key": job.sync.routing_key, "scheduled_ms": scheduled_ms,
              "stamp": stamp(scheduled_ms, job.destination.hyphen_time), "reason": reason, "error": error,
              "failed_at_ms": now_ms}
    try:
        await storage.put_bytes(job.destination.bucket, failure_key(job, scheduled_ms), orjson.dumps(record),
                                "application/json")
    except Exception as exc:
        log.warning("cohort sync %s: could not record its failure at s3://%s/%s: %s", job.name,
                    job.destination.bucket, failure_key(job, scheduled_ms), exc)


# --- membership from the events ----------------------------------------------------------------------------------

class Membership:
    """Users' latest states, folded from export rows uploaded before ``until_ms``, counted on the day ``today``
    (``schedule.counted_day``: the day of ``until_ms - 1``, so that ``within_days: N`` covers N days before it)."""

    def __init__(self, cohorts: CohortSet, projects: Iterable[int], until_ms: int) -> None:
        self.cohorts, self.projects, self.until_ms = cohorts, frozenset(projects), until_ms
        self.today = schedule.counted_day(until_ms)
        self.states: dict[int, UserState] = {}
        self._props_at: dict[int, int] = {}       # amplitude_id -> upload time of the row its properties are from
        self._user_id_at: dict[int, int] = {}     # amplitude_id -> upload time of the row its user_id is from
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
                after = msgspec.structs.replace(after, properties=before.properties)
            else:
                self._props_at[aid] = uploaded_ms
        user_id = row.get("user_id")
        if isinstance(user_id, str) and user_id:
            if uploaded_ms < self._user_id_at.get(aid, -1):  # likewise the user_id
                after = msgspec.structs.replace(after, user_id=before.user_id)
            else:
                self._user_id_at[aid] = uploaded_ms
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


# --- the files ---------------------------------------------------------------------------------------------------

def _ids_of(path: Path) -> Iterator[tuple[int, str]]:
    """(amplitudeID, userID) of each line of a sync file, header skipped (``csvfiles.read_ids``)."""
    with open(path, "rb") as f:
        yield from csvfiles.read_ids(f)


def write_files(spool_dir: Path, previous: Iterable[int | tuple[int, str]], members: Iterable[int],
                states: Mapping[int, UserState], properties: list[str],
                user_id_property: str | None) -> dict[str, int]:
    """The three sync files in ``spool_dir`` (``<diff_type>.csv``), in one merge pass; the users per file.

    ``previous``: the previous sync's members, ascending, each with the userID its existing file listed (``_ids_of``)
    or alone. A user who exits keeps that userID (the one the destination knows it by), whatever its state is now:
    a user merged into another since has no state of its own; the userID of the state is written only when the
    previous file listed none. Its properties are the state's now, as every row's."""
    head = csvfiles.header(properties)
    counts = dict.fromkeys(csvfiles.DIFF_TYPES, 0)
    pairs = ((p, None) if isinstance(p, int) else p for p in previous)
    with ExitStack() as stack:
        files = {t: stack.enter_context(open(spool_dir / f"{t}.csv", "wb")) for t in csvfiles.DIFF_TYPES}
        for f in files.values():
            f.write(head)
        for aid, diff_type, listed in csvfiles.diff_with(pairs, members, existing=True):
            st = states.get(aid, EMPTY)
            user_id = listed or (st.properties.get(user_id_property) if user_id_property else st.user_id)
            files[diff_type].write(csvfiles.row(aid, user_id, (st.properties.get(p) for p in properties)))
            counts[diff_type] += 1
    return counts


async def sync_job(storage: Storage, job: SyncJob, scheduled_ms: int, membership: Membership | None,
                   part_bytes: int = 8 << 20, echo: Callable[[str], None] = lambda _: None,
                   fold: Callable[[], Any] | None = None, now_ms: Callable[[], int] | None = None,
                   requests: list[str] | None = None, base: Base | None = None) -> SyncResult:
    """Write the sync of ``job`` at ``scheduled_ms`` from ``membership`` (folded until ``scheduled_ms``; or made by
    ``await fold()`` when first needed), unless a completion record says it is written. ``requests``: the "sync now"
    requests it runs (``stream.cohorts.requests``), listed in its completion record so that none is run again.

    ``base``: the latest completed sync the caller knows of (the scheduler's, for a ``once`` sync: each of its syncs
    is another, stamped with a minute of its own, so one that another run completed since would be run again).
    When a sync after it other than this one is complete, as the chain is read or just before the completion
    record, this sync is not run or not completed, and the result lists those syncs (``superseded``): the caller
    learns what they ran (their ``requests``) rather than running it twice.

    The diff follows the latest completed sync before ``scheduled_ms`` and nothing else: a sync older than the
    latest completed one is refused, and so is the completion of one during which another run completed a sync
    (``ChainError``; its files stay without a record, and the next run for its time overwrites them).
    """
    dest, bucket = job.destination, job.destination.bucket
    now_ms = now_ms or (lambda: int(time.time() * 1000))
    keys, done = sync_keys(job, scheduled_ms), done_key(job, scheduled_ms)
    result = SyncResult(job, scheduled_ms, keys, done)
    known = await chain(storage, job)
    this = next((r for r in known.known if r["scheduled_ms"] == scheduled_ms), None)
    later = [r for r in known.known if r["scheduled_ms"] > scheduled_ms]
    if this is None and base is not None and (since := base.since(known.known, scheduled_ms)):
        result.superseded = since
        echo(f"{job.name}: the sync of {stamp(since[-1]['scheduled_ms'])} was completed by another run; this sync "
             f"of {stamp(scheduled_ms)} is not run")
        return result
    if this is None and later:   # an older time than the pointer's: is it complete itself?
        raw = await _read_optional(storage, bucket, done)
        if raw is None:
            raise ChainError(f"{job.name}: the sync of {stamp(later[-1]['scheduled_ms'])} is complete already; "
                             f"a sync of the earlier {stamp(scheduled_ms)} now would break the chain of entering and "
                             "exiting files (each relative to the previous completed sync): sync a later time")
        this = orjson.loads(raw)
    if this is not None:
        result.skipped = True
        await catch_up_pointer(storage, job, known)     # a crash left the pointer behind or missing: catch up
        echo(f"{job.name}: the sync of {stamp(scheduled_ms)} is complete already ({done})")
        return result
    before = [r for r in known.known if r["scheduled_ms"] < scheduled_ms]
    previous = before[-1] if before else None
    if membership is None:
        membership = await fold()
    if job.cohort.static:
        from stream.cohorts import static
        members = await static.members_of(storage, job, membership)
    else:
        members = membership.members(job.cohort)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stream-cohort-") as tmp:
        spool = Path(tmp)
        prev_path = spool / "previous.csv"
        with open(prev_path, "wb") as f:  # noqa: ASYNC230 (a local spool file)
            if previous is not None:
                result.previous = previous["stamp"]
                try:
                    async for chunk in storage.read(bucket, previous["keys"]["existing"]):
                        f.write(chunk)
                except Exception as exc:
                    if not _missing(exc):
                        raise
                    raise ChainError(
                        f"{job.name}: the existing file of the previous completed sync ({previous['stamp']}), "
                        f"s3://{bucket}/{previous['keys']['existing']}, is missing: this sync's entering and "
                        "exiting files are relative to it. Put it back, or delete the sync records under "
                        f"s3://{bucket}/{records_dir(job)} to start again (the next entering file then holds every "
                        "member)") from None
        counts = write_files(spool, _ids_of(prev_path) if previous else (), members, membership.states,
                             job.sync.properties, dest.user_id_property)
        crash_point("cohorts.diffed")
        for diff_type in csvfiles.DIFF_TYPES:
            path = spool / f"{diff_type}.csv"
            await storage.put_file(PutRequest(bucket, keys[diff_type], path, path.stat().st_size,
                                              "text/csv; charset=utf-8", None, {}))
            crash_point("cohorts.file_written")
            echo(f"{job.name}: wrote s3://{bucket}/{keys[diff_type]} ({counts[diff_type]} users)")
    # another run (the worker, a CLI run) may have completed a sync meanwhile: this one's diff must still follow
    # the latest completed sync before it, and no later sync may be complete
    meanwhile = [r for r in await _records(storage, job, f"{records_dir(job)}done/",
                                           done_key(job, previous["scheduled_ms"]) if previous else "")
                 if r["scheduled_ms"] != scheduled_ms and (previous is None or r["scheduled_ms"] >
                                                           previous["scheduled_ms"])]
    if meanwhile and base is not None and (since := base.since(meanwhile, scheduled_ms)):
        result.superseded = since
        echo(f"{job.name}: the sync of {stamp(since[-1]['scheduled_ms'])} was completed by another run meanwhile; "
             f"this sync of {stamp(scheduled_ms)} is not completed (its files stay without a record)")
        return result
    if meanwhile:
        raise ChainError(f"{job.name}: the sync of {stamp(meanwhile[0]['scheduled_ms'])} was completed by another "
                         f"run while this sync of {stamp(scheduled_ms)} was diffed against "
                         f"{result.previous or 'no previous sync'}; not completed (its files are overwritten by the "
                         "next run): run it again")
    result.members, result.entering, result.exiting = counts["existing"], counts["entering"], counts["exiting"]
    record = {"cohort": job.cohort.id, "project": job.cohort.project, "destination": dest.name,
              "cadence": job.sync.cadence, "routing_key": job.sync.routing_key, "scheduled_ms": scheduled_ms,
              "stamp": stamp(scheduled_ms, dest.hyphen_time), "keys": keys, "members": result.members,
              "entering": result.entering, "exiting": result.exiting, "previous": result.previous,
              "completed_at_ms": now_ms()}
    if requests:
        record["requests"] = list(requests)
    await storage.put_bytes(bucket, done, orjson.dumps(record), "application/json")
    crash_point("cohorts.completed")
    await _put_pointer(storage, job, record)
    labels = {"cohort": job.cohort.id, "destination": dest.name}
    metrics.COHORT_MEMBERS.labels(**labels).set(result.members)
    metrics.COHORT_ENTERING.labels(**labels).inc(result.entering)
    metrics.COHORT_EXITING.labels(**labels).inc(result.exiting)
    metrics.COHORT_SYNC_DURATION.labels(**labels).observe(time.monotonic() - started)
    echo(f"{job.name}: sync of {stamp(scheduled_ms)} complete: {result.members} members, {result.entering} "
         f"entering, {result.exiting} exiting ({done})")
    return result


@dataclass(frozen=True)
class Base:
    """The latest completed sync a caller of ``sync_job`` knows of: its scheduled time (None: none)."""

    scheduled_ms: int | None

    def since(self, records: Iterable[dict[str, Any]], scheduled_ms: int) -> list[dict[str, Any]]:
        """The completion records among ``records`` after this one, other than that of ``scheduled_ms``, oldest
        first."""
        return sorted((r for r in records if r["scheduled_ms"] != scheduled_ms
                       and (self.scheduled_ms is None or r["scheduled_ms"] > self.scheduled_ms)),
                      key=lambda r: r["scheduled_ms"])


async def _put_pointer(storage: Storage, job: SyncJob, record: dict[str, Any]) -> None:
    await storage.put_bytes(job.destination.bucket, pointer_key(job), orjson.dumps(record), "application/json")


def failure_reason(exc: BaseException) -> str:
    """The metric label of a failed sync: an S3 failure reason, or one of ``FAILURE_REASONS``."""
    if isinstance(exc, ChainError):
        return "chain"
    from stream.s3.errors import classify
    failure = classify(exc)
    return failure.reason if failure else "other"


class _FoldError(Exception):
    """Reading the events failed (once per scheduled time: the jobs that need it fail with it)."""


async def run_syncs(settings: Settings, jobs: list[SyncJob], now_ms: int,
                    storage_of: Callable[[CohortDestinationSettings], Any] | None = None,
                    source: Any = None, echo: Callable[[str], None] = lambda _: None,
                    at_ms: int | None = None, clock_ms: Callable[[], int] | None = None,
                    requests: Mapping[str, list[str]] | None = None,
                    bases: Mapping[str, Base] | None = None) -> list[SyncResult]:
    """Each job's sync due at ``now_ms`` (or, with ``at_ms``, the sync of that scheduled time); the events are read
    once per scheduled time the jobs need. A job that fails does not stop the others: its result carries the error
    and its reason, the failure is counted (``stream_cohort_sync_failures_total``) and recorded in its bucket.
    ``requests``: per job name, the "sync now" requests its sync runs; ``bases``: per job name, the latest completed
    sync the caller knows of (``sync_job``)."""
    own_source = source is None
    if source is None:
        from stream.cohorts.changelog import ChangelogSource
        source = ChangelogSource(settings)
    storage_of = storage_of or (lambda d: _s3_storage(settings, d))
    clock_ms = clock_ms or (lambda: int(time.time() * 1000))
    results: list[SyncResult] = []

    async def fail(job: SyncJob, t: int, exc: BaseException, storage: Storage | None) -> None:
        cause = exc.__cause__ if isinstance(exc, _FoldError) and exc.__cause__ else exc
        reason = "events" if isinstance(exc, _FoldError) else failure_reason(exc)
        error = f"{type(cause).__name__}: {cause}"
        metrics.COHORT_SYNC_FAILURES.labels(cohort=job.cohort.id, destination=job.destination.name,
                                            reason=reason).inc()
        log.warning("cohort sync %s of %s failed (%s): %s", job.name, stamp(t), reason, error)
        echo(f"{job.name}: the sync of {stamp(t)} failed ({reason}): {error}")
        if storage is not None:
            await record_failure(storage, job, t, reason, error, clock_ms())
        results.append(SyncResult(job, t, sync_keys(job, t), done_key(job, t), error=error, reason=reason))

    async with _Storages(storage_of) as storages:
        plan: dict[int, list[SyncJob]] = {}
        for job in jobs:
            try:
                storage = await storages.get(job.destination)
                once = [r for r in [await latest_completed(storage, job)] if r] if job.sync.cadence == "once" \
                    and at_ms is None else []
                t = at_ms if at_ms is not None else scheduled_time(job.sync.cadence, now_ms, once, job.sync.time_zone)
            except Exception as exc:
                await fail(job, at_ms if at_ms is not None else now_ms - now_ms % MINUTE_MS, exc, None)
                continue
            plan.setdefault(t, []).append(job)
        for t, due in sorted(plan.items()):
            folded: list[Membership] = []
            fold_error: list[BaseException] = []

            async def fold(t: int = t, due: list[SyncJob] = due, folded: list[Membership] = folded,
                           fold_error: list[BaseException] = fold_error) -> Membership:
                if fold_error:
                    raise _FoldError() from fold_error[0]
                if not folded:
                    if hasattr(source, "view"):     # the cohorts stage's state
                        echo(f"reading the cohort state as of {stamp(t)} UTC")
                        try:
                            folded.append(await source.view(settings.cohort_set, t))
                        except Exception as exc:
                            fold_error.append(exc)
                            raise _FoldError() from exc
                        return folded[0]
                    echo(f"reading the events uploaded before {stamp(t)} UTC")
                    membership = Membership(settings.cohort_set, {j.cohort.project for j in due}, t)
                    try:
                        await source.fold(membership)
                    except Exception as exc:
                        fold_error.append(exc)
                        raise _FoldError() from exc
                    echo(f"{membership.rows} rows folded into {len(membership.states)} users")
                    folded.append(membership)
                return folded[0]

            for job in due:
                storage = None
                try:
                    storage = await storages.get(job.destination)
                    results.append(await sync_job(storage, job, t, None, settings.s3.upload_part_bytes, echo,
                                                  fold, clock_ms, (requests or {}).get(job.name),
                                                  (bases or {}).get(job.name)))
                except Exception as exc:
                    await fail(job, t, exc, storage)
    if own_source and hasattr(source, "close"):
        await source.close()
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
    """Every completed sync of ``jobs`` and every failed attempt (the latest of each scheduled time: its record has
    ``reason`` and ``error``), read from their buckets' sync records, by job then scheduled time."""
    storage_of = storage_of or (lambda d: _s3_storage(settings, d))
    out = []
    async with _Storages(storage_of) as storages:
        for job in jobs:
            storage = await storages.get(job.destination)
            rows = await completed(storage, job) + await failures(storage, job)
            out += [(job, r) for r in sorted(rows, key=lambda r: (r["scheduled_ms"], "error" in r))]
    return out
