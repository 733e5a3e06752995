"""Access verification of a destination: the real operations its exports need, done once, before anything runs.

``stream exports verify DESTINATION`` (and ``POST /admin/destinations/<d>/verify``) probes, with the
destination's credentials or role and its encryption, exactly what the exporter will do (``stream.s3.probe``):
the bucket is there and in its region, a put under each key prefix its layout writes (events, merged IDs), and a
multipart put for SSE-KMS. Each failure names the missing permission and the policy statement that grants it
(``stream.s3.policy``).

A destination exports nothing before a verification has passed once (``destinations[].verify``, on by
default): the exporter probes before it first joins its consumer group, and while the probe fails the
destination is failing, with the missing permission in its status, and the probe is tried again every
``s3.permanent_retry_s``. A ``verified`` ledger record remembers the outcome, so a destination verified (or
that has written objects) is not probed again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from stream import metrics
from stream.clock import Clock
from stream.export.layout import written_prefixes
from stream.export.ledger import Kind, LedgerRecord
from stream.s3.client import target_of
from stream.s3.policy import statement_for
from stream.s3.probe import probe_writes
from stream.settings import DestinationSettings, Settings

log = logging.getLogger(__name__)


def segment_sources_of(settings: Settings, project: int) -> list[str]:
    return [s.source_id for p in settings.projects if p.id == project for s in p.segment_sources]


async def verify(settings: Settings, dest: DestinationSettings) -> dict[str, Any]:
    """The verification document: ``ok``, each step done (what, where, and the problem: reason, missing
    permission, message, and where the statement that grants it goes)."""
    target = target_of(dest, settings.s3)
    prefixes = [p for _, p in written_prefixes(dest, segment_sources_of(settings, dest.project))]
    steps = await probe_writes(target, prefixes, settings.s3)
    out = []
    for s in steps:
        step: dict[str, Any] = {"step": s.step, "where": s.where, "ok": s.problem is None}
        if s.problem is not None:
            p = s.problem
            step.update(reason=p.reason, missing=p.missing, message=p.message)
            if p.missing:
                where, statement = statement_for(p.missing, p.resource, target, settings.s3.worker_principal_arn)
                step.update(add_to=where, statement=statement)
        out.append(step)
    return {"destination": dest.name, "bucket": dest.bucket, "region": target.region,
            "encryption": dest.encryption.type, "role_arn": dest.role_arn, "prefixes": prefixes,
            "ok": all(s["ok"] for s in out), "steps": out}


def verified_record(name: str, dest: DestinationSettings, doc: dict[str, Any], now_ms: int) -> LedgerRecord:
    failed = next((s for s in doc["steps"] if not s["ok"]), None)
    return LedgerRecord(name, dest.project, "", -1, -1, dest.bucket, "", -1, -1, 0, {}, 0,
                        "ok" if failed is None else "failed", now_ms, Kind.VERIFIED.value,
                        "" if failed is None else failed["message"])


def already_verified(records: list[LedgerRecord]) -> bool:
    """The destination has written objects, or passed a verification: it is not probed again."""
    return any(r.kind == Kind.OBJECT.value or (r.kind == Kind.VERIFIED.value and r.reason == "ok") for r in records)


async def ensure_verified(settings: Settings, dest: DestinationSettings, name: str, records: list[LedgerRecord],
                          append: Callable[[LedgerRecord], Awaitable[None]], clock: Clock,
                          stop: Callable[[], bool]) -> bool:
    """Probe until the destination passes (or ``stop()``): True once it may export. Each failure is recorded
    (``verified`` failed, and an ``error`` the status view shows as failing with the missing permission)."""
    if not dest.verify or already_verified(records):
        return True
    names = [name]
    while not stop():
        doc = await verify(settings, dest)
        now = clock.now_ms()
        for name in names:
            await append(verified_record(name, dest, doc, now))
        if doc["ok"]:
            for name in names:
                metrics.EXPORT_FAILING.labels(name).set(0)
            log.info("export %s: access verified (%s)", dest.name, ", ".join(s["where"] for s in doc["steps"]))
            return True
        failed = next(s for s in doc["steps"] if not s["ok"])
        for name in names:
            metrics.EXPORT_FAILING.labels(name).set(1)
            await append(LedgerRecord(name, dest.project, "", -1, -1, dest.bucket, "", -1, -1, 0, {}, 0,
                                      failed["reason"], now, Kind.ERROR.value, failed["message"]))
        log.error("export %s: access verification failed at %s %s: %s; nothing is exported until it passes "
                  "(retried every %.0fs; destinations[].verify: false skips it)", dest.name, failed["step"],
                  failed["where"], failed["message"], settings.s3.permanent_retry_s)
        try:
            await asyncio.sleep(settings.s3.permanent_retry_s)
        except asyncio.CancelledError:
            raise
    return False
