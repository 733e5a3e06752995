"""Daily snapshots of the profiles that changed, to the destinations with ``exports: profiles``.

For each such destination, once a UTC day has ended (and ``GRACE_MS`` more: a mutation applied after that is not
of that day), the profiles of its project whose properties changed that day (``Profile.changed_ms``) are written as
one object, ``<prefix><project>/profiles/<project>_profiles_<YYYY-MM-DD>.json.gz``: gzip (no timestamp in its
header) of ``stream.imports.profiles.snapshot_line`` lines ordered by user_id. A day without a change has no object.

Exactly once: a day's object is written only when the destination's listing does not have it, whole, by one
PutObject that is conditional (``If-None-Match: *``, ``Storage.put_new``): S3 keeps the first put of the key and
refuses the others, so a crash before the put writes it at the next look, a crash after leaves it as it is, and two
replicas that both listed the day as missing (partition 0 of profiles.mutations, whose owner writes, moving during
a look: ``stream.agents.profiles`` checks it at the start of a look and again before each put) leave the first
one's object, whole. An S3-compatible store that ignores the condition keeps the last put instead; a day's body
holds the profiles whose latest change is in the day, so the second body is the same bytes unless a profile of the
day changed again between the two reads (docs/imports.md, "Profiles").

The state is read from the profiles table's compacted changelog, every partition up to its end offset as it is when
the read starts (``read_stored``; a slow broker makes the read slower, not short, and one that fetches nothing for a
minute fails the look, which the next look repeats): a day's snapshot holds each profile changed that day as it is
when the snapshot is written, so a profile changed again on a later day before its day's snapshot was written (the
writer was down past midnight) is in the later day's snapshot only.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Mapping
from typing import Any

from stream import metrics
from stream.clock import Clock
from stream.crashpoints import crash_point
from stream.imports.profiles import Profile, days_due, decode, snapshot_body, snapshot_key
from stream.kafka import iter_all
from stream.s3.client import target_client, target_of
from stream.s3.storage import S3Storage, Storage
from stream.settings import DestinationSettings, Settings
from stream.topics import profiles_changelog

log = logging.getLogger(__name__)

GRACE_MS = 10 * 60_000
"""After a day's end, how long the profiles stage may still be applying mutations it took during the day."""


async def read_stored(settings: Settings, poll_ms: int = 1000, **consumer: Any) -> dict[bytes, Profile]:
    """Every stored profile (deleted ones too, as tombstones): the latest record of each key of the changelog up to
    its end offsets when the read starts (``stream.kafka.iter_all``); ``consumer``: more aiokafka consumer settings."""
    out: dict[bytes, Profile] = {}
    async for r in iter_all(settings, profiles_changelog(settings), poll_ms, **consumer):
        if r.key is None:
            continue
        p = decode(r.value)
        if p is None:
            out.pop(r.key, None)
        else:
            out[r.key] = p
    return out


def planned(stored: Mapping[bytes, Profile], dest: DestinationSettings, have: set[str],
            now_ms: int) -> list[tuple[str, bytes]]:
    """(key, gzip body) of each snapshot of ``dest`` that is due and not among the keys it ``have`` (pure)."""
    out = []
    for day in days_due(stored, dest.project, now_ms, GRACE_MS):
        key = snapshot_key(dest.prefix, dest.project, day)
        if key not in have:
            out.append((key, gzip.compress(snapshot_body(stored, dest.project, day), mtime=0)))
    return out


def _always() -> bool:
    return True


async def write_to(storage: Storage, stored: Mapping[bytes, Profile], dest: DestinationSettings,
                   now_ms: int, owns: Callable[[], bool] = _always) -> list[str]:
    """Write the due snapshots of ``dest`` that its bucket does not have; their URLs. ``owns``: whether this replica
    still has the duty, asked before each put; once it says no, nothing more is put (the new owner writes the rest)."""
    have = {o.key async for o in storage.list(dest.bucket, f"{dest.prefix}{dest.project}/profiles/")}
    written = []
    for key, body in planned(stored, dest, have, now_ms):
        if not owns():
            log.info("profiles: snapshot s3://%s/%s not written: this replica no longer owns the snapshots' duty "
                     "(partition 0 of profiles.mutations); its new owner writes it", dest.bucket, key)
            break
        crash_point("profiles.snapshot_planned")
        if not await storage.put_new(dest.bucket, key, body, "application/gzip"):
            log.info("profiles: snapshot s3://%s/%s not written: another replica wrote it since this one listed the "
                     "bucket (a conditional put keeps the first)", dest.bucket, key)
            continue
        crash_point("profiles.snapshot_written")
        metrics.PROFILE_SNAPSHOTS.labels(dest.name).inc()
        log.info("profiles: snapshot s3://%s/%s written (%d bytes)", dest.bucket, key, len(body))
        written.append(f"s3://{dest.bucket}/{key}")
    return written


async def write_due(settings: Settings, clock: Clock, owns: Callable[[], bool] = _always) -> list[str]:
    """The due snapshots of every enabled destination with ``exports: profiles``, written while ``owns()`` (asked
    before each put); their URLs."""
    dests = [d for d in settings.destinations if d.enabled and d.exports_profiles()]
    if not dests:
        return []
    stored = await read_stored(settings)
    written = []
    for d in dests:
        async with target_client(target_of(d, settings.s3), settings.s3) as s3:
            storage = S3Storage(s3, d.encryption, settings.s3.upload_part_bytes, settings.s3.read_timeout_s)
            written += await write_to(storage, stored, d, clock.now_ms(), owns)
    return written
