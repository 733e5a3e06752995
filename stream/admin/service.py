"""The admin actions, one implementation each: the admin API (``stream.admin.api``) and the CLI call these.

Each action reads what it needs from Kafka (the export ledger, the control topic) and S3, or writes a control
record; none needs the worker that serves the API to run the exporters themselves. A backfill runs where it is
started -- in the CLI's process, or in the worker that answered the API -- and reports its progress in the
ledger, so any worker's API (and the CLI) shows it, and a cancellation through the control topic reaches it
wherever it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream import kafka
from stream.clock import Clock, SystemClock
from stream.export import control
from stream.export.backfill import Backfill, BackfillRefused, Request, hour_text, new_job_id, parse_hour
from stream.export.exporter import exporters_of
from stream.export.history import history
from stream.export.layout import written_prefixes
from stream.export.ledger import Kind, LedgerRecord, facts
from stream.export.mirror_apply import mirror_log_of
from stream.export.status_cli import read_status
from stream.export.verify import segment_sources_of, verify
from stream.s3 import policy
from stream.s3.client import target_client, target_of
from stream.s3.storage import S3Storage
from stream.settings import DestinationSettings, Settings

log = logging.getLogger(__name__)


class AdminError(Exception):
    """An action that cannot be done as asked: ``status`` is the HTTP status, the message says why and what to
    do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Admin:
    def __init__(self, settings: Settings, clock: Clock | None = None, ctl: control.Control | None = None):
        self.settings, self.clock = settings, clock or SystemClock()
        self.control = ctl            # the worker's followed control state (None in the CLI: read when needed)
        self.jobs: dict[str, asyncio.Task] = {}   # backfills running in this process
        # the storage of a cohort destination (a Storage or an async context manager of one): S3 unless set
        self.cohort_storage_of: Callable[[Any], Any] | None = None
        # where "sync now" requests are recorded (stream.cohorts.requests; the topic unless set)
        self.sync_requests: Any = None
        from stream.cohorts.duty import DUTY
        self.duty = DUTY          # this process's sync duty: known (not None) when it runs the cohorts stage

    def destination(self, name: str) -> DestinationSettings:
        d = self.settings.destination(name)
        if d is None:
            known = ", ".join(x.name for x in self.settings.destinations) or "none"
            raise AdminError(404, f"no destination {name!r} in the settings (destinations: {known})")
        return d

    async def _ledger(self) -> list[LedgerRecord]:
        return [LedgerRecord.decode(m.value) for m in await kafka.read_all(
            self.settings, self.settings.topics.name("export_ledger"))]

    # --- status and history -------------------------------------------------------------------------------------
    async def status(self, hours: int = 48) -> dict[str, Any]:
        ctl = self.control or await control.read_control(self.settings)
        doc = await read_status(self.settings, hours)
        for d in doc["destinations"]:
            if ctl.is_paused(d["destination"]):
                d["enabled"], d["state"] = False, "disabled"
        return doc

    async def history(self, name: str, hours: int = 48) -> dict[str, Any]:
        dest = self.destination(name)
        records = await self._ledger()
        partitions = await kafka.partition_count(self.settings, self.settings.topics.name("accepted")) or \
            self.settings.topics.partitions
        out = {"destination": name, "exporters": []}
        for exporter, what in exporters_of(dest):
            mine = [r for r in records if r.destination == exporter or
                    (r.kind == Kind.JOB.value and r.destination == dest.name)]
            out["exporters"].append({"exporter": exporter, "exports": what, "hours": history(
                mine, hours, self.clock.now_ms(), partitions if what == "events" else 1)})
        return out

    # --- enable / disable --------------------------------------------------------------------------------------
    async def set_enabled(self, name: str, enabled: bool, exports: str = "all", by: str = "admin") -> dict[str, Any]:
        """Turn a destination's exports (or one data set: events, merged_ids) off or on at runtime."""
        dest = self.destination(name)
        names = [n for n, what in exporters_of(dest) if exports in ("all", what)]
        if not names:
            raise AdminError(400, f"destination {name} does not export {exports} (exports: {dest.exports})")
        if enabled and not dest.enabled:
            raise AdminError(409, f"destination {name} is disabled in the settings (enabled: false); set it to true "
                             "and restart the workers")
        exporter = dest.name if exports == "all" else names[0]
        await control.append(self.settings, control.exports_record(exporter, enabled, self.clock.now_ms(), by))
        doc: dict[str, Any] = {"destination": name, "exporters": names, "enabled": enabled}
        if enabled:
            lost = await self.lost_offsets(names)
            if lost:
                doc["data_lost"] = lost
                doc["hint"] = ("the pause outlived the topic's retention: the offsets listed were deleted before they "
                               f"were exported; rebuild their hours with stream exports backfill {name} --from <hour> "
                               "--to <hour> --source archive")
        return doc

    async def lost_offsets(self, exporters: list[str]) -> list[dict[str, Any]]:
        """Per exporter and partition, committed offsets its topic no longer holds."""
        out = []
        for name in exporters:
            topic = self.settings.topics.name("identity_merges" if name.endswith(".merged-ids") else "accepted")
            c = AIOKafkaConsumer(group_id=f"{self.settings.worker.app_id}-export-{name}",
                                 **{**kafka.client_args(self.settings.kafka), "enable_auto_commit": False})
            await c.start()
            try:
                tps = [TopicPartition(topic, p) for p in sorted(await kafka.partitions(c, topic))]
                begins = await c.beginning_offsets(tps) if tps else {}
                for tp in tps:
                    committed = await c.committed(tp)
                    if committed is not None and committed < begins[tp]:
                        out.append({"exporter": name, "partition": tp.partition, "first_offset": committed,
                                    "last_offset": begins[tp] - 1})
            finally:
                await kafka.stop_all(c)
        return out

    # --- verification and policies -------------------------------------------------------------------------------
    async def verify(self, name: str) -> dict[str, Any]:
        dest = self.destination(name)
        doc = await verify(self.settings, dest)
        p = kafka.producer(self.settings.kafka)
        await p.start()
        try:
            from stream.export.verify import verified_record
            for exporter, _ in exporters_of(dest):
                rec = verified_record(exporter, dest, doc, self.clock.now_ms())
                await (await p.send(self.settings.topics.name("export_ledger"), rec.encode(),
                                    key=rec.message_key()))
        finally:
            await kafka.stop_all(p)
        return doc

    def policy(self, name: str, enforce_encryption: bool = False) -> dict[str, Any]:
        """The policies to paste for a destination or an import source (``stream.s3.policy``), with where each
        goes."""
        src = self.settings.source(name)
        if src is not None and self.settings.destination(name) is None:
            return self.source_policy(name)
        if self.settings.cohort_destination(name) is not None and self.settings.destination(name) is None:
            return self.cohort_policy(name, enforce_encryption)
        if self.settings.destination(name) is None:
            def names(xs: Any) -> str:
                return ", ".join(x.name for x in xs) or "none"
            s = self.settings
            raise AdminError(404, f"no destination, cohort destination or import source {name!r} in the settings "
                             f"(destinations: {names(s.destinations)}; cohort destinations: "
                             f"{names(s.cohort_destinations)}; sources: {names(s.sources)})")
        dest = self.destination(name)
        target = target_of(dest, self.settings.s3)
        prefixes = [p for _, p in written_prefixes(dest, segment_sources_of(self.settings, dest.project))]
        reads: list[str] = []
        if dest.archive:    # its hours rebuilt from its own objects, and the project's mirror log in its bucket
            prefixes.append(f"{self.settings.mirror.log_prefix}{dest.project}/")
            reads = prefixes
        principal = self.settings.s3.worker_principal_arn
        doc: dict[str, Any] = {
            "destination": name, "writer": policy.writer_of(target, principal), "prefixes": prefixes,
            "bucket_policy": policy.bucket_policy(target, prefixes, principal, enforce_encryption, reads),
            "role_policy": policy.role_policy(target, prefixes, reads)}
        if dest.encryption.type == "sse-kms":
            doc["kms_key_policy_statement"] = policy.kms_key_policy_statement(target, principal)
        return _with_trust(doc, target, principal)

    def cohort_policy(self, name: str, enforce_encryption: bool = False) -> dict[str, Any]:
        """A cohort destination's policies (``stream.s3.policy.cohort_bucket_policy``): put the files and the sync
        records, read back the previous existing file and the records, list the records; KMS for SSE-KMS."""
        dest = self.settings.cohort_destination(name)
        if dest is None:
            known = ", ".join(x.name for x in self.settings.cohort_destinations) or "none"
            raise AdminError(404, f"no cohort destination {name!r} in the settings (cohort destinations: {known})")
        target = target_of(dest, self.settings.s3)
        records = f"{dest.records_prefix}{dest.name}/"
        principal = self.settings.s3.worker_principal_arn
        doc: dict[str, Any] = {
            "cohort_destination": name, "writer": policy.writer_of(target, principal),
            "prefixes": [dest.path_prefix, records],
            "bucket_policy": policy.cohort_bucket_policy(target, dest.path_prefix, records, principal,
                                                         enforce_encryption),
            "role_policy": policy.cohort_role_policy(target, dest.path_prefix, records)}
        if dest.encryption.type == "sse-kms":
            doc["kms_key_policy_statement"] = policy.kms_key_policy_statement(target, principal)
        return _with_trust(doc, target, principal)

    def source_policy(self, name: str) -> dict[str, Any]:
        """An import source's read role (FORMATS.md 7.1): list and read under its prefix, decrypt (SSE-KMS
        objects), and read and write the bucket's notification configuration when it has a queue; with the trust
        policy when the source names a role."""
        src = self.settings.source(name)
        if src is None:
            known = ", ".join(x.name for x in self.settings.sources) or "none"
            raise AdminError(404, f"no source {name!r} in the settings (sources: {known})")
        target = target_of(src, self.settings.s3)
        principal = self.settings.s3.worker_principal_arn
        doc: dict[str, Any] = {
            "source": name, "reader": policy.writer_of(target, principal),
            "role_policy": policy.reader_role_policy(target, src.prefix, notifications=bool(src.queue_url),
                                                     kms=True)}
        return _with_trust(doc, target, principal)

    # --- dead letters -------------------------------------------------------------------------------------------
    async def dead_letters(self, hours: int = 24, samples: int = 20) -> dict[str, Any]:
        since = self.clock.now_ms() - hours * 3_600_000
        return {"hours": hours, **dead_letter_doc(await _read_dead_letters(self.settings, since), samples)}

    # --- backfills -----------------------------------------------------------------------------------------------
    def request(self, name: str, first: str, end: str, exports: str = "all", source: str = "auto",
                by: str = "admin") -> Request:
        self.destination(name)
        try:
            return Request(name, parse_hour(first), parse_hour(end), exports, source,
                           new_job_id(self.clock.now_ms()), by)
        except BackfillRefused as exc:
            raise AdminError(400, str(exc)) from None

    async def run_backfill(self, req: Request, on_progress: Callable[[dict[str, Any]], None] = lambda d: None,
                           cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Run a backfill here until it ends (done, cancelled or failed); raises AdminError when refused."""
        dest = self.destination(req.destination)
        ctl = self.control
        follower = None
        if ctl is None:           # the CLI: follow the control topic for a cancellation from the API
            ctl = control.Control()
            follower = control.ControlTail(self.settings, ctl)
            await follower.start()
            follow_task = asyncio.create_task(follower.run())
        producer = kafka.producer(self.settings.kafka)
        await producer.start()
        ledger_topic = self.settings.topics.name("export_ledger")

        async def append(rec: LedgerRecord) -> None:
            await (await producer.send(ledger_topic, rec.encode(), key=rec.message_key()))
        archive = self.settings.archive_of(dest.project)
        try:
            async with contextlib.AsyncExitStack() as stack:
                s3 = await stack.enter_async_context(target_client(target_of(dest, self.settings.s3), self.settings.s3))
                storage = archive_storage = S3Storage(s3, dest.encryption, self.settings.s3.upload_part_bytes,
                                                      self.settings.s3.read_timeout_s)
                spool = Path(self.settings.worker.data_dir) / "spool" / f"backfill-{req.job}"
                if archive is not None and archive.name != dest.name:
                    a3 = await stack.enter_async_context(target_client(target_of(archive, self.settings.s3),
                                                                       self.settings.s3))
                    archive_storage = S3Storage(a3, archive.encryption, self.settings.s3.upload_part_bytes,
                                                self.settings.s3.read_timeout_s)
                job = Backfill(self.settings, req, storage, append, self.clock, spool,
                               cancelled or (lambda: req.job in ctl.cancelled), on_progress, archive_storage,
                               mirror_log_of(self.settings, dest, archive_storage))
                return await job.run()
        except BackfillRefused as exc:
            raise AdminError(409, str(exc)) from None
        finally:
            await kafka.stop_all(producer)
            if follower is not None:
                follow_task.cancel()
                try:
                    await follow_task
                except BaseException:
                    pass

    async def start_backfill(self, req: Request) -> dict[str, Any]:
        """Start a backfill in this process (the API); its first progress document once it is known to run."""
        started: asyncio.Future = asyncio.get_running_loop().create_future()

        def progress(doc: dict[str, Any]) -> None:
            if not started.done():
                started.set_result(doc)

        async def run() -> None:
            try:
                await self.run_backfill(req, progress)
            except AdminError as exc:
                if not started.done():
                    started.set_exception(exc)
            except Exception as exc:
                log.exception("backfill %s failed", req.job)
                if not started.done():
                    started.set_exception(AdminError(500, f"{type(exc).__name__}: {exc}"))
            finally:
                self.jobs.pop(req.job, None)
        self.jobs[req.job] = asyncio.create_task(run(), name=f"backfill {req.job}")
        return await started

    async def backfills(self, destination: str | None = None) -> list[dict[str, Any]]:
        """Every backfill the ledger knows, latest first: its latest progress document."""
        latest: dict[str, dict[str, Any]] = {}
        for r in await self._ledger():
            if r.kind == Kind.JOB.value and (destination is None or r.destination == destination):
                doc = facts(r)
                if doc.get("state") == "running" and time.time() * 1000 - r.written_at > 60_000 and \
                        doc["job"] not in self.jobs:
                    doc = {**doc, "state": "interrupted"}
                latest[doc["job"]] = doc
        return sorted(latest.values(), key=lambda d: d.get("started_at", 0), reverse=True)

    async def backfill(self, job: str) -> dict[str, Any]:
        for doc in await self.backfills():
            if doc["job"] == job:
                return doc
        raise AdminError(404, f"no backfill {job!r} in the ledger")

    async def cancel(self, job: str, by: str = "admin") -> dict[str, Any]:
        doc = await self.backfill(job)
        if doc["state"] != "running":
            raise AdminError(409, f"backfill {job} is {doc['state']}, not running")
        await control.append(self.settings, control.cancel_record(job, self.clock.now_ms(), by))
        return {**doc, "cancel": "requested: the backfill stops after the hours it is rebuilding"}


    async def import_status(self) -> list[dict[str, Any]]:
        from stream.imports import ops
        return await ops.status(self.settings)

    async def import_history(self, name: str, limit: int, before: str | None) -> dict[str, Any]:
        """A page of the source's mirror files, latest applied first (``stream.imports.ops.history``)."""
        from stream.imports import ops
        try:
            return await ops.history(self.settings, name, limit, before)
        except ops.Refused as exc:
            raise AdminError(400, str(exc)) from None
        except LookupError as exc:
            raise AdminError(404, str(exc.args[0])) from None

    async def import_preview(self, name: str, key: str | None, rows: int) -> dict[str, Any]:
        from stream.imports import ops
        from stream.imports.reader import FileError
        try:
            return await ops.preview(self.settings, name, key, rows)
        except ops.Refused as exc:
            raise AdminError(400, str(exc)) from None
        except LookupError as exc:
            raise AdminError(404, str(exc.args[0])) from None
        except FileError as exc:
            raise AdminError(422, f"the file cannot be read: {exc}") from None

    async def import_retry(self, name: str, keys: list[str]) -> dict[str, Any]:
        from stream.imports import ops
        try:
            records = await ops.retry(self.settings, name, keys)
        except ops.Refused as exc:
            raise AdminError(400, str(exc)) from None
        except LookupError as exc:
            raise AdminError(404, str(exc.args[0])) from None
        return {"source": name, "queued": [r.url for r in records]}

    async def profile(self, project: int, user_id: str) -> dict[str, Any]:
        """A user's current profile, read from the profiles table's changelog (``stream.admin.profiles``); 404 for
        a project without a source of profiles, a user without a profile, and a deleted one."""
        from stream.admin import profiles
        if project not in self.settings.profiles_projects():
            have = ", ".join(str(p) for p in sorted(self.settings.profiles_projects())) or "none"
            raise AdminError(404, f"project {project} has no source of profiles (data_type: profiles), so no "
                             f"profiles are kept for it; projects with one: {have}")
        from stream.kafka import ReadStalled
        try:
            p = await profiles.read_profile(self.settings, project, user_id)
        except ReadStalled as exc:
            raise AdminError(503, f"the profile of user {user_id!r} in project {project} could not be read: {exc}") \
                from None
        if p is None:
            raise AdminError(404, f"no profile of user {user_id!r} in project {project}: no row of a source of "
                             "profiles has set one yet (a file not imported yet, or one whose profiles stage has "
                             "not applied it: see stream import status and the stage's consumer lag)")
        if p.deleted:
            _, file, row = p.seq
            raise AdminError(404, f"the profile of user {user_id!r} in project {project} was deleted, by row {row} "
                             f"of {file}")
        return profiles.profile_doc(project, user_id, p)

    def _sync_requests(self) -> Any:
        from stream.cohorts.requests import KafkaRequestLog
        if self.sync_requests is None:
            self.sync_requests = KafkaRequestLog(self.settings)
        return self.sync_requests

    async def cohort_sync(self, cohort_id: str, destination: str | None = None, by: str = "admin") -> dict[str, Any]:
        """"Sync now": the cohort's syncs (to ``destination`` only, if given), recorded as a request on the sync
        requests topic (``stream.cohorts.requests``), which the worker holding the sync duty runs in turn with its
        scheduled syncs, whichever worker took it. What each sync will do is worked out from its latest completed
        sync (``schedule.request_answer``)."""
        from stream import metrics
        from stream.cohorts import requests, schedule
        from stream.cohorts.sync import SyncError, _Storages, chain, jobs_of, records_dir
        try:
            jobs = jobs_of(self.settings, cohort_id, destination)
        except SyncError as exc:
            raise AdminError(404, str(exc)) from None
        now = self.clock.now_ms()
        syncs = []
        async with _Storages(self._cohort_storage()) as storages:
            for job in jobs:
                try:
                    latest = (await chain(await storages.get(job.destination), job)).latest
                except Exception as exc:
                    raise AdminError(502, f"the sync records of {job.name} could not be read from "
                                     f"s3://{job.destination.bucket}/{records_dir(job)} ({type(exc).__name__}: "
                                     f"{exc}); nothing was queued: check this worker's access to the bucket (stream "
                                     f"policy {job.destination.name}) and ask again") from None
                syncs.append(schedule.request_answer(job, latest["scheduled_ms"] if latest else None, now))
        request_id = requests.new_request_id(now)
        log_ = self._sync_requests()
        await log_.append(requests.request_record(request_id, cohort_id, destination, jobs, now, by))
        metrics.COHORT_SYNC_REQUESTS.labels("queued").inc()
        topic = self.settings.topics.name("cohort_sync_requests")
        try:
            holder = requests.Book().add_all(await log_.read()).holder_at(self.clock.now_ms())
        except Exception as exc:       # the request is recorded: say what could not be told
            log.warning("cohort sync request %s: reading %s for its holder failed: %s", request_id, topic, exc)
            holder, known = None, False
        else:
            known = True
        waiting = holder is None and self.duty.held is None and known
        if holder is not None or self.duty.held is not None:
            who = f" ({holder['worker']})" if holder is not None else ""
            note = (f"queued on {topic}: the worker holding the sync duty{who} runs it in turn with its scheduled "
                    "syncs")
        elif waiting:
            note = (f"queued on {topic}, waiting for a worker running the cohorts stage: none has held the sync duty "
                    f"in the last {requests.HOLDER_LEASE_MS // 60_000} minutes. A worker with cohorts in "
                    "worker.stages runs it once it starts, unless the request is more than "
                    f"{requests.MAX_AGE_MS // 3_600_000} hours old by then")
        else:
            note = (f"queued on {topic}; whether a worker holds the sync duty could not be read: the worker holding "
                    "it runs the request in turn with its scheduled syncs")
        return {"request": request_id, "cohort": cohort_id, "destination": destination, "syncs": syncs,
                "runs_on": holder["worker"] if holder is not None else None, "waiting_for_worker": waiting,
                "note": note}

    async def cohort_requests(self, cohort_id: str) -> list[dict[str, Any]]:
        """The cohort's "sync now" requests not run yet (and not too old to run), oldest first."""
        from stream.cohorts import requests
        book = requests.Book().add_all(await self._sync_requests().read())
        return [requests.pending_doc(r) for r in book.pending(self.clock.now_ms(), cohort_id)]

    # --- cohorts, read from their sync records and files (stream.admin.cohorts) -------------------------------------
    def _cohort_storage(self) -> Callable[[Any], Any]:
        from stream.cohorts.sync import _s3_storage
        return self.cohort_storage_of or (lambda d: _s3_storage(self.settings, d))

    def cohorts(self) -> dict[str, Any]:
        from stream.admin import cohorts
        return cohorts.list_doc(self.settings)

    async def cohort(self, cohort_id: str) -> dict[str, Any]:
        """A cohort's definition, its syncs' history, its member counts per completed sync, and its "sync now"
        requests not run yet (``requested``)."""
        from stream.admin import cohorts
        try:
            doc = await cohorts.cohort_doc(self.settings, cohort_id, self._cohort_storage())
        except cohorts.CohortLookupError as exc:
            raise AdminError(exc.status, str(exc)) from None
        try:
            doc["requested"] = await self.cohort_requests(cohort_id)
        except Exception as exc:       # the rest of the page is read from the buckets: shown without them
            log.warning("cohort %s: its sync now requests could not be read from %s (%s: %s)", cohort_id,
                        self.settings.topics.name("cohort_sync_requests"), type(exc).__name__, exc)
            doc["requested"] = None
        return doc

    async def cohort_file(self, cohort_id: str, key: str) -> tuple[bytes, Any]:
        """(the first chunk, an iterator of the others) of a file a completed sync of the cohort wrote."""
        from stream.admin import cohorts
        chunks = cohorts.read_file(self.settings, cohort_id, key, self._cohort_storage())
        try:
            first = await anext(chunks, b"")
        except cohorts.CohortLookupError as exc:
            raise AdminError(exc.status, str(exc)) from None
        return first, chunks

    async def memberships(self, user_id: str | None = None, amplitude_id: int | None = None,
                          project: int | None = None) -> dict[str, Any]:
        """The cohorts a user is in, per sync, from its latest completed sync's existing file."""
        from stream.admin import cohorts
        try:
            return await cohorts.memberships(self.settings, self._cohort_storage(), user_id, amplitude_id, project)
        except cohorts.CohortLookupError as exc:
            raise AdminError(exc.status, str(exc)) from None

    async def upload_members(self, cohort_id: str, user_ids: list[Any], by: str = "admin") -> dict[str, Any]:
        """Replace a static cohort's members (``stream.cohorts.static``) in each bucket it is synced to; its next
        syncs list them."""
        from stream.admin import cohorts
        from stream.cohorts import static
        try:
            cohort = cohorts.cohort_of(self.settings, cohort_id)
        except cohorts.CohortLookupError as exc:
            raise AdminError(exc.status, str(exc)) from None
        if not cohort.static:
            raise AdminError(409, f"cohort {cohort_id} is defined by a rule, not a list: only a cohort with static: "
                             "true takes uploaded members")
        dests = list({j.destination.name: j.destination for j in cohorts.jobs_of(self.settings, cohort)}.values())
        if not dests:
            raise AdminError(409, f"cohort {cohort_id} is synced to no cohort destination, and its list is kept in "
                             "the buckets it is synced to: add a sync of it (cohort_destinations[].syncs) first")
        try:
            return await static.upload(dests, self._cohort_storage(), cohort, user_ids, self.clock.now_ms(), by)
        except static.StaticError as exc:
            raise AdminError(400 if exc.__cause__ is None else 502, str(exc)) from None


def _with_trust(doc: dict[str, Any], target: Any, principal: str | None) -> dict[str, Any]:
    """``doc`` with the trust policy of the target's role (if it names one) and a note when the workers' own
    principal is unknown."""
    trust = policy.trust_policy(target, principal)
    if trust is not None:
        doc["trust_policy"] = trust
    if principal is None:
        doc["note"] = (f"{policy.UNKNOWN_PRINCIPAL} stands for the workers' own role: set s3.worker_principal_arn "
                       "to have it written in")
    return doc


async def _read_dead_letters(settings: Settings, since_ms: int) -> list[dict[str, Any]]:
    from stream.deadletters import read_dead_letters
    return [d async for d in read_dead_letters(settings, since_ms=since_ms) if d is not None]


def dead_letter_doc(records: list[dict[str, Any]], samples: int) -> dict[str, Any]:
    """Dead letters by reason, counts by hour and reason, and the latest samples (credentials already redacted)."""
    from stream.events.deadletter import describe, source_of, summarize
    by_hour: dict[str, dict[str, int]] = {}
    for d in records:
        h = hour_text(d["rejected_at"] - d["rejected_at"] % 3_600_000)
        by_hour.setdefault(h, {})
        by_hour[h][d["reason"]] = by_hour[h].get(d["reason"], 0) + 1
    latest = records[-samples:] if samples > 0 else []
    return {"total": len(records), "by_reason": summarize(records),
            "by_hour": [{"hour": h, "reasons": r} for h, r in sorted(by_hour.items())],
            "samples": [{"reason": d["reason"], "field": d["field"], "source": source_of(d), "detail": d["detail"],
                         "rejected_at": d["rejected_at"], "line": describe(d, 300),
                         "value": (d["value"] or b"")[:2000].decode("utf-8", "backslashreplace")}
                        for d in reversed(latest)]}


def progress_line(doc: dict[str, Any], width: int = 30) -> str:
    """``[#####.....] 12/48 hours, 1,234,567 events, 8,000 ev/s, ETA 3m20s``: a backfill's progress bar."""
    total, done = max(doc["hours_total"], 1), doc["hours_done"]
    filled = int(width * done / total)
    eta = doc.get("eta_s")
    eta_s = f", ETA {int(eta // 60)}m{int(eta % 60):02d}s" if eta is not None else ""
    return (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{doc['hours_total']} hours, {doc['events']:,} events, "
            f"{doc['events_per_s']:,.0f} ev/s{eta_s} ({doc['state']})")


def dumps(doc: Any) -> str:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()


__all__ = ["Admin", "AdminError", "dumps", "hour_text", "progress_line"]
