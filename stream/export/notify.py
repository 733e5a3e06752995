"""Failure notifications: one message per incident after repeated failed uploads, one when exports succeed again.

An *incident* starts with the first failed upload after a success and lasts while the destination's latest
ledger record is a failure. Once it counts ``notify.after_failures`` failure records (every worker's, from the
ledger: at most one a minute per worker and reason), one notification goes out on each channel of the
destination (webhooks, email), and a ``notice`` record (reason ``failing``) says so in the ledger; the next
success sends one ``resolved`` message and records it. The exporter that owns partition 0 decides, so one worker
speaks for the destination; the notices in the ledger keep a restarted worker from sending the same incident
again.

A message says what failed, where, the missing permission, the statement that grants it and the hours
affected; it is built from the error table's words (``stream.s3.errors``), which never carry a secret, and
scrubbed of every configured secret again before it leaves.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiohttp
import orjson

from stream.export.completion import iso_hour, iso_ms
from stream.export.ledger import Kind, LedgerRecord, facts
from stream.redact import SecretFilter, configured_secrets
from stream.s3.arn import s3_arn
from stream.s3.client import Target
from stream.s3.policy import statement_for
from stream.settings import DestinationSettings, Settings

log = logging.getLogger(__name__)

AppendLedger = Callable[[LedgerRecord], Awaitable[None]]

MISSING = {"access_denied": "s3:PutObject", "kms_denied": "kms:GenerateDataKey", "assume_role": "sts:AssumeRole"}
"""The permission a failure reason points at, for the statement a notification suggests."""


@dataclass(frozen=True)
class Incident:
    started: int                       # written_at of its first failure
    failures: int
    last: LedgerRecord                 # its latest failure
    hours: tuple[int, ...]             # hours whose objects failed


class NoticeBook:
    """One exporter's failures and notices, folded from its ledger records in order (pure)."""

    def __init__(self) -> None:
        self.started: int | None = None
        self.failures = 0
        self.last: LedgerRecord | None = None
        self.hours: set[int] = set()
        self.notice: LedgerRecord | None = None      # the latest notice
        self.latest_at = 0
        self._seen: set[tuple[int, int, str, str]] = set()

    def add(self, r: LedgerRecord) -> None:
        """Take a record (a record seen twice -- the exporter's own, then from the ledger -- counts once)."""
        self.latest_at = max(self.latest_at, r.written_at)
        if r.kind == Kind.ERROR.value:
            ident = (r.written_at, r.partition, r.key, r.reason)
            if ident in self._seen:
                return
            self._seen.add(ident)
            if self.started is None:
                self.started, self.failures, self.hours = r.written_at, 0, set()
            self.failures += 1
            self.last = r
            if r.hour >= 0:
                self.hours.add(r.hour)
        elif r.kind in (Kind.OBJECT.value, Kind.MARKER.value) and self.started is not None and \
                r.written_at >= self.started:
            self.started, self.last, self._seen = None, None, set()
        elif r.kind == Kind.NOTICE.value:
            self.notice = r

    def incident(self) -> Incident | None:
        if self.started is None or self.last is None:
            return None
        return Incident(self.started, self.failures, self.last, tuple(sorted(self.hours)))


def incident(records: Sequence[LedgerRecord]) -> Incident | None:
    """The incident ``records`` (one exporter's, in order) end with, None if none is going on."""
    book = NoticeBook()
    for r in records:
        book.add(r)
    return book.incident()


def message(dest: DestinationSettings, name: str, inc: Incident, target: Target,
            worker_principal: str | None) -> dict[str, Any]:
    """The notification document of an incident (the JSON webhook body; the text of the email and Slack)."""
    r = inc.last
    doc: dict[str, Any] = {
        "event": "export_failing", "destination": name, "project": dest.project, "bucket": dest.bucket,
        "since": iso_ms(inc.started), "failures": inc.failures, "reason": r.reason, "detail": r.detail,
        "hours_affected": [iso_hour(h) for h in inc.hours]}
    missing = MISSING.get(r.reason)
    if missing is not None:
        resource = (s3_arn(dest.bucket, f"{r.key.rsplit('/', 1)[0]}/*", region=target.region)
                    if r.key and missing.startswith("s3:")
                    else target.encryption.kms_key_id if missing.startswith("kms:") else target.role_arn)
        where, statement = statement_for(missing, resource, target, worker_principal)
        doc.update(missing_permission=missing, add_to=where, statement=statement)
    doc["text"] = _text(doc)
    return doc


def resolved(dest: DestinationSettings, name: str, started: int, now_ms: int) -> dict[str, Any]:
    doc = {"event": "export_resolved", "destination": name, "project": dest.project, "bucket": dest.bucket,
           "since": iso_ms(started), "resolved_at": iso_ms(now_ms)}
    doc["text"] = (f"stream: exports to destination {name} (s3://{dest.bucket}) succeed again, after failing since "
                   f"{doc['since']}.")
    return doc


def _text(doc: dict[str, Any]) -> str:
    lines = [f"stream: exports to destination {doc['destination']} (s3://{doc['bucket']}) have failed "
             f"{doc['failures']} times since {doc['since']}: {doc['reason']}.", doc["detail"]]
    if "statement" in doc:
        lines += [f"To fix it, add to {doc['add_to']}:", orjson.dumps(doc["statement"],
                                                                    option=orjson.OPT_INDENT_2).decode()]
    if doc["hours_affected"]:
        lines.append("Hours affected: " + ", ".join(doc["hours_affected"]) + " (they are exported once it is fixed; "
                     "nothing is lost meanwhile).")
    return "\n".join(lines)


class Notifier:
    """Sends an exporter's notifications on its destination's channels."""

    def __init__(self, settings: Settings, dest: DestinationSettings, name: str, target: Target):
        self.settings, self.dest, self.name, self.target = settings, dest, name, target
        self.scrub = SecretFilter(configured_secrets(settings)).scrub

    def enabled(self) -> bool:
        return bool(self.dest.notify.emails or self.dest.notify.webhooks)

    def due(self, book: NoticeBook) -> tuple[str, dict[str, Any]] | None:
        """What to send now, given the exporter's failures and notices: ("failing", doc), ("resolved", doc), or
        None."""
        last = book.notice
        inc = book.incident()
        if inc is not None:
            if inc.failures < self.dest.notify.after_failures:
                return None
            if last is not None and last.reason == "failing" and facts(last).get("incident") == inc.started:
                return None
            return "failing", message(self.dest, self.name, inc, self.target, self.settings.s3.worker_principal_arn)
        if last is not None and last.reason == "failing":
            return "resolved", resolved(self.dest, self.name, facts(last)["incident"], book.latest_at)
        return None

    async def notify(self, book: NoticeBook, record: AppendLedger, now_ms: int) -> str | None:
        """Send what is due, and record it (a ``notice``); the kind sent, None if nothing was."""
        due = self.due(book) if self.enabled() else None
        if due is None:
            return None
        kind, doc = due
        channels = await self.send(kind, doc)
        started = doc.get("since")
        inc = book.incident()
        rec = LedgerRecord(self.name, self.dest.project, "", -1, -1, self.dest.bucket, "", -1, -1, 0, {}, 0, kind,
                           now_ms, Kind.NOTICE.value, orjson.dumps({
                               "incident": inc.started if inc is not None else facts(book.notice)["incident"],
                               "channels": channels, "since": started}).decode())
        await record(rec)
        book.add(rec)
        log.warning("export %s: sent the %s notification (%s)", self.name, kind, ", ".join(channels) or "no channel")
        return kind

    async def send(self, kind: str, doc: dict[str, Any]) -> list[str]:
        """Send on every channel; the channels that took it (a failing channel is logged, not retried)."""
        doc = orjson.loads(self.scrub(orjson.dumps(doc).decode()))
        sent = []
        hooks = {w.name: w for w in self.settings.notifications.webhooks}
        for name in self.dest.notify.webhooks:
            hook = hooks[name]
            body = {"text": doc["text"]} if hook.format == "slack" else doc
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=hook.timeout_s)) as session:
                    async with session.post(hook.url, json=body) as resp:
                        if resp.status >= 300:
                            raise RuntimeError(f"HTTP {resp.status}")
                sent.append(f"webhook:{name}")
            except Exception as exc:
                log.warning("export %s: the %s notification to webhook %s failed: %s", self.name, kind, name, exc)
        if self.dest.notify.emails and self.settings.notifications.smtp is not None:
            try:
                await asyncio.to_thread(self._mail, kind, doc)
                sent.append("email")
            except Exception as exc:
                log.warning("export %s: the %s notification email failed: %s", self.name, kind, exc)
        return sent

    def _mail(self, kind: str, doc: dict[str, Any]) -> None:
        smtp = self.settings.notifications.smtp
        assert smtp is not None
        msg = EmailMessage()
        msg["From"], msg["To"] = smtp.sender, ", ".join(self.dest.notify.emails)
        msg["Subject"] = (f"[stream] exports to {self.name} are failing: {doc['reason']}" if kind == "failing" else
                          f"[stream] exports to {self.name} succeed again")
        msg.set_content(doc["text"] + "\n")
        with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s) as s:
            if smtp.starttls:
                s.starttls()
            if smtp.username:
                s.login(smtp.username, smtp.password.get_secret_value() if smtp.password else "")
            s.send_message(msg)
