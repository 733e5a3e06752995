"""The cohorts of the admin API, the console and the CLI, read from the sync records and files on S3.

What a cohort's screens show comes from what its syncs leave in their buckets (``stream.cohorts.sync``): each
completion record (``done/<time>.done``: the files' keys and the existing, entering and exiting counts) and each
failed attempt's record, and the CSV files themselves. Whatever computes the members, these are the same, so the
screens need neither the events nor the cohorts stage's state: any worker (and the CLI) answers.

- ``list_doc``: the definitions and where each is synced;
- ``cohort_doc``: one cohort's definition, its syncs' history (oldest first) and member counts per completed sync,
  and, for a static cohort, its uploaded list's size;
- ``read_file``: the bytes of one file a completed sync of the cohort wrote (no other key of the bucket);
- ``memberships``: the cohorts a user is in, from the existing file of each sync's latest completed sync, read
  whole (one GET per sync: a lookup costs what those files weigh).
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

from stream.cohorts import static
from stream.cohorts.rules import Cohort
from stream.cohorts.sync import SyncJob, _Storages, all_jobs, chain, completed, failures
from stream.settings import CohortDestinationSettings, Settings

StorageOf = Callable[[CohortDestinationSettings], Any]


class CohortLookupError(Exception):
    """A cohort, file or lookup that is not there (``status``: 400 or 404); the message says what to ask instead."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def cohort_of(settings: Settings, cohort_id: str) -> Cohort:
    cohort = settings.cohort_set.cohort(cohort_id) if settings.cohort_set else None
    if cohort is None:
        known = ", ".join(c.id for c in settings.cohort_set.cohorts) if settings.cohort_set else ""
        raise CohortLookupError(404, f"no cohort {cohort_id!r} in the settings (cohorts: {known or 'none'})")
    return cohort


def jobs_of(settings: Settings, cohort: Cohort) -> list[SyncJob]:
    return [SyncJob(d, s, cohort) for d in settings.cohort_destinations for s in d.syncs if s.cohort == cohort.id]


def _sync_doc(job: SyncJob) -> dict[str, Any]:
    d, s = job.destination, job.sync
    return {"destination": d.name, "bucket": d.bucket, "routing_key": s.routing_key, "cadence": s.cadence,
            "time_zone": s.time_zone, "properties": list(s.properties)}


def definition_doc(settings: Settings, cohort: Cohort) -> dict[str, Any]:
    raw = next((d for d in settings.cohorts if d.get("id") == cohort.id), {})
    return {"id": cohort.id, "project": cohort.project, "name": cohort.name, "static": cohort.static,
            "definition": raw, "syncs": [_sync_doc(j) for j in jobs_of(settings, cohort)]}


def list_doc(settings: Settings) -> dict[str, Any]:
    cohorts = settings.cohort_set.cohorts if settings.cohort_set else ()
    return {"cohorts": [definition_doc(settings, c) for c in cohorts]}


def history_row(job: SyncJob, record: dict[str, Any]) -> dict[str, Any]:
    """One completed sync (``state: complete``, its counts and files) or failed attempt (``state: failed``)."""
    base = {"destination": job.destination.name, "routing_key": job.sync.routing_key, "stamp": record["stamp"],
            "scheduled_ms": record["scheduled_ms"]}
    if "error" in record:
        return {**base, "state": "failed", "reason": record.get("reason"), "error": record["error"],
                "failed_at_ms": record.get("failed_at_ms")}
    return {**base, "state": "complete", "members": record["members"], "entering": record["entering"],
            "exiting": record["exiting"], "previous": record.get("previous"),
            "completed_at_ms": record.get("completed_at_ms"), "bucket": job.destination.bucket,
            "keys": record["keys"]}


def counts(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Member counts over time, per sync (destination and routing key): one point per completed sync, oldest
    first."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in history:
        if r["state"] != "complete":
            continue
        series = out.setdefault((r["destination"], r["routing_key"]), {
            "destination": r["destination"], "routing_key": r["routing_key"], "points": []})
        series["points"].append({k: r[k] for k in ("stamp", "scheduled_ms", "members", "entering", "exiting")})
    return list(out.values())


async def cohort_doc(settings: Settings, cohort_id: str, storage_of: StorageOf) -> dict[str, Any]:
    cohort = cohort_of(settings, cohort_id)
    doc = definition_doc(settings, cohort)
    rows: list[dict[str, Any]] = []
    uploaded: dict[str, Any] | None = None
    async with _Storages(storage_of) as storages:
        for job in jobs_of(settings, cohort):
            storage = await storages.get(job.destination)
            records = await completed(storage, job) + await failures(storage, job)
            rows += [history_row(job, r) for r in records]
        if cohort.static:
            for d in {j.destination.name: j.destination for j in jobs_of(settings, cohort)}.values():
                found = await static.read(await storages.get(d), d.bucket,
                                          static.members_key(d.records_prefix, d.name, cohort))
                if found is not None and (uploaded is None or found["uploaded_at_ms"] > uploaded["uploaded_at_ms"]):
                    uploaded = {"members": len(found["user_ids"]), "uploaded_at_ms": found["uploaded_at_ms"],
                                "by": found.get("by")}
    rows.sort(key=lambda r: (r["scheduled_ms"], r["destination"], r["routing_key"], r["state"] == "failed"))
    doc["history"] = rows
    doc["counts"] = counts(rows)
    if cohort.static:
        doc["uploaded"] = uploaded
    return doc


async def read_file(settings: Settings, cohort_id: str, key: str, storage_of: StorageOf
                    ) -> AsyncIterator[bytes]:
    """The chunks of ``key``, when it is a file of a completed sync of the cohort (a 404 for any other key, so
    the console serves the cohort's files and nothing else of the bucket)."""
    cohort = cohort_of(settings, cohort_id)
    async with _Storages(storage_of) as storages:
        for job in jobs_of(settings, cohort):
            storage = await storages.get(job.destination)
            if not key.startswith(job.destination.path_prefix):
                continue
            for r in await completed(storage, job):
                if key in r["keys"].values():
                    async for chunk in storage.read(job.destination.bucket, key):
                        yield chunk
                    return
    raise CohortLookupError(404, f"{key!r} is not a file of a completed sync of cohort {cohort_id}: the cohort's "
                            "history lists its files")


def _rows_of(path: str) -> Any:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader, None)
        yield from reader


async def memberships(settings: Settings, storage_of: StorageOf, user_id: str | None = None,
                      amplitude_id: int | None = None, project: int | None = None) -> dict[str, Any]:
    """The cohorts the user (by user_id or amplitude_id; of ``project`` only, if given) is in: per sync, the
    latest completed sync's existing file, and the user's row in it."""
    if (user_id is None) == (amplitude_id is None):
        raise CohortLookupError(400, "give user_id or amplitude_id (one of them): the user to look up")
    jobs = [j for j in all_jobs(settings) if project is None or j.cohort.project == project]
    found, checked = [], []
    async with _Storages(storage_of) as storages:
        for job in jobs:
            storage = await storages.get(job.destination)
            latest = (await chain(storage, job)).latest
            where = {"cohort": job.cohort.id, "destination": job.destination.name,
                     "routing_key": job.sync.routing_key}
            checked.append({**where, "stamp": latest["stamp"] if latest else None})
            if latest is None:
                continue
            key = latest["keys"]["existing"]
            with tempfile.NamedTemporaryFile(prefix="stream-members-") as spool:
                async for chunk in storage.read(job.destination.bucket, key):
                    spool.write(chunk)
                spool.flush()
                for row in _rows_of(spool.name):
                    if len(row) < 2:
                        continue
                    if (amplitude_id is not None and row[0] == str(amplitude_id)) or \
                            (user_id is not None and row[1] == user_id):
                        found.append({**where, "name": job.cohort.name, "project": job.cohort.project,
                                      "stamp": latest["stamp"], "amplitude_id": int(row[0]), "user_id": row[1] or None,
                                      "bucket": job.destination.bucket, "key": key})
    return {"user_id": user_id, "amplitude_id": amplitude_id, "project": project, "memberships": found,
            "checked": checked}
