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


class VerificationGate:
    """Holds an exporter back until its destination's access verification passes (``ExportCycle`` asks it each
    cycle, and reads nothing while it says no). It probes at once, then every ``s3.permanent_retry_s``; each
    failure is recorded (``verified`` failed, and an ``error`` the status view and the notifications count) and
    the destination is failing meanwhile. Open at once when verification is off, or was passed before."""

    def __init__(self, settings: Settings, dest: DestinationSettings, name: str, records: list[LedgerRecord],
                 append: Callable[[LedgerRecord], Awaitable[None]], clock: Clock,
                 on_error: Callable[[LedgerRecord], Awaitable[None]] | None = None):
        self.settings, self.dest, self.name, self.append, self.clock = settings, dest, name, append, clock
        self.on_error = on_error
        self.open = not dest.verify or already_verified(records)
        self._next = 0

    async def __call__(self) -> bool:
        if self.open:
            return True
        now = self.clock.now_ms()
        if now < self._next:
            await asyncio.sleep(min(0.5, (self._next - now) / 1000))
            return False
        doc = await verify(self.settings, self.dest)
        now = self.clock.now_ms()
        self._next = now + int(self.settings.s3.permanent_retry_s * 1000)
        await self.append(verified_record(self.name, self.dest, doc, now))
        if doc["ok"]:
            metrics.EXPORT_FAILING.labels(self.name).set(0)
            log.info("export %s: access verified (%s)", self.name, ", ".join(s["where"] for s in doc["steps"]))
            self.open = True
            return True
        failed = next(s for s in doc["steps"] if not s["ok"])
        metrics.EXPORT_FAILING.labels(self.name).set(1)
        rec = LedgerRecord(self.name, self.dest.project, "", -1, -1, self.dest.bucket, "", -1, -1, 0, {}, 0,
                           failed["reason"], now, Kind.ERROR.value, failed["message"])
        await self.append(rec)
        if self.on_error is not None:
            await self.on_error(rec)
        log.error("export %s: access verification failed at %s %s: %s; nothing is exported until it passes "
                  "(retried every %.0fs; destinations[].verify: false skips it)", self.name, failed["step"],
                  failed["where"], failed["message"], self.settings.s3.permanent_retry_s)
        return False
