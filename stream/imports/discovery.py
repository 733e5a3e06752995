"""Discovery of import files: S3 event notifications on SQS and the list scan -> ``ImportFile`` records.

Discovery only finds files. Each discovery is one ``ImportFile`` record produced to imports.files, keyed by
``<source>:<key>``, so every discovery of one object lands on the partition that owns its processed-files state;
that partition's owner decides whether the file was imported already. Finding a file twice (a notification
delivered twice, a file found by both a notification and the scan) costs one skipped record, never a second
import; missing a file is the failure to avoid, so every path below errs on the side of sending again.

Two ways in:

* ``poll_queue``: long-polls the source's SQS queue. A message is deleted only once every record it produced is
  acknowledged by Kafka (``send`` returns the acknowledgement); a crash in between leaves the message on the queue,
  which delivers it again after its visibility timeout. Test events and messages that announce nothing the sources
  want are deleted at once. Unreadable messages are logged with why and left on the queue, so that its redrive
  policy moves them to a dead-letter queue where someone can look at them. Sources sharing a queue share its
  messages: each poller produces the records of every enabled source on the queue, so whichever poller receives a
  message, no source misses it.
* ``scan_source`` / ``run_scanner``: lists the prefix. Incremental listings start after the greatest key found so
  far (files named in the order they are written, as Amplitude asks); a full pass every ``scan.full_pass_s`` finds
  files whose names sort before it. ``ScanState`` remembers what it already sent (bounded, see ``SCAN_MEMORY``), so
  a scan sends only what is new.

Errors reaching SQS or S3 are retried for good, each failure logged with what to do about it and counted
(``stream_import_sqs_errors_total``); the pollers never give up and never exit quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from stream import metrics
from stream.crashpoints import crash_point
from stream.imports.files import ImportFile
from stream.imports.notifications import MessageKind, S3Object, parse_message
from stream.retry import pause, retry_until_done
from stream.s3 import errors as s3errors
from stream.s3 import sqs
from stream.s3.arn import queue_arn, s3_arn
from stream.s3.client import Target, target_client, target_of
from stream.settings import ScanSettings, Settings, SourceSettings

log = logging.getLogger(__name__)

Send = Callable[[ImportFile], Awaitable[Awaitable[Any]]]
"""``ack = await send(record)`` hands the record to the producer; ``await ack`` waits for the broker to acknowledge
it (raising if it was not written), as ``await AIOKafkaProducer.send(...)`` returns a future."""

OnEvent = Callable[[str, str], object]
"""``on_event(outcome, message_id)``: called for each outcome a message goes through (``MESSAGE_OUTCOMES``), and
with ``"visibility_extended"``."""

MESSAGE_OUTCOMES = ("received", "deleted", "test_event", "ignored", "unreadable")

SQS_MESSAGES, SQS_VISIBILITY_EXTENSIONS, SQS_ERRORS, FILES_DISCOVERED, SCAN_LISTED = (
    metrics.IMPORT_SQS_MESSAGES, metrics.IMPORT_SQS_VISIBILITY_EXTENSIONS, metrics.IMPORT_SQS_ERRORS,
    metrics.IMPORT_FILES_DISCOVERED, metrics.IMPORT_SCAN_LISTED)

# --- which keys a source imports -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _compiled_filter(pattern: str) -> Callable[[str], bool]:
    from stream.imports.converter.javaregex import compile_java_regex
    regex = compile_java_regex(pattern)
    return lambda key: regex.fullmatch(key) is not None


def _key_filter(source: SourceSettings) -> Callable[[str], bool]:
    compiled = source.compiled
    if source.filter_pattern is not None and getattr(compiled, "filter_pattern", None) is None:
        return _compiled_filter(source.filter_pattern)
    return compiled.key_filter


def wanted(source: SourceSettings, key: str) -> bool:
    """Whether ``key`` is a file of ``source``: under its prefix, not a "folder" (a key ending in ``/``, as the
    console creates), and matching the filter pattern in full (the source's ``filter_pattern``, else the
    converter's ``keyValidatorConfig.filterPattern``, else every key).

    The pattern may match either the whole key or the key after the prefix: Amplitude's own examples are written
    both ways (``folder1/folder2/ds=.../.*\\.parquet`` names the folders, ``\\w+\\_\\d{4}-...json.gz`` only the
    file), and a pattern pasted from Amplitude must keep working on a source that has a prefix. Either way the
    prefix bounds what is imported: a pattern never takes a key from outside it."""
    if not key.startswith(source.prefix) or key.endswith("/"):
        return False
    matches = _key_filter(source)
    return bool(matches(key) or (source.prefix and matches(key[len(source.prefix):])))


def outside(source: SourceSettings, key: str) -> str | None:
    """Why ``key`` is not a file of ``source`` (see ``wanted``), for a person; None when it is one."""
    if wanted(source, key):
        return None
    pattern = source.filter_pattern or getattr(source.compiled, "filter_pattern", None)
    rule = f"under {source.prefix!r}" if source.prefix else "in the bucket"
    if pattern is not None:
        rule += f", matching the filter pattern {pattern!r} in full (the whole key or the key after the prefix)"
    what = "a folder, not a file" if key.endswith("/") else "not one of them"
    return (f"s3://{source.bucket}/{key} is not a file of source {source.name}: its files are the keys {rule}, "
            f"and this key is {what}; name a key of the source")


def from_notification(source: SourceSettings, obj: S3Object) -> ImportFile | None:
    """The discovery record of an object a notification announced, or None when it is not a file of ``source``
    (another bucket, or a key ``wanted`` refuses)."""
    if obj.bucket != source.bucket or not wanted(source, obj.key):
        return None
    return ImportFile(source=source.name, bucket=obj.bucket, key=obj.key, event_time_ms=obj.event_time_ms,
                      found_by="sqs", size=obj.size, etag=obj.etag, sequencer=obj.sequencer)


# --- one SQS message -------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MessagePlan:
    """What to do with one SQS message.

    ``outcome``: ``test_event`` and ``ignored`` are deleted at once; ``records`` is deleted once every record is
    acknowledged; ``unreadable`` is left on the queue (its readable records are still sent, so that a message
    with one bad record delays none of the files it names).
    """

    outcome: Literal["test_event", "ignored", "records", "unreadable"]
    records: tuple[ImportFile, ...] = ()
    skipped: tuple[str, ...] = ()      # why each record that produced nothing was skipped, for the debug log
    problems: tuple[str, ...] = ()     # why the message (or some of its records) cannot be read

    @property
    def delete_now(self) -> bool:
        return self.outcome in ("test_event", "ignored")


def plan_message(sources: Sequence[SourceSettings], body: str, message_id: str) -> MessagePlan:
    """Parse one message body and turn the objects it announces into the discovery records of ``sources`` (the
    enabled sources whose queue this is)."""
    parsed = parse_message(body, message_id)
    if parsed.kind is MessageKind.TEST_EVENT:
        return MessagePlan("test_event")
    problems = tuple(u.message for u in parsed.unreadable)
    if parsed.kind is MessageKind.UNREADABLE:
        return MessagePlan("unreadable", problems=problems)
    records: list[ImportFile] = []
    skipped = [f"{r.event_name} of s3://{r.bucket}/{r.key} is not a creation" for r in parsed.ignored]
    for obj in parsed.objects:
        found = [r for r in (from_notification(s, obj) for s in sources) if r is not None]
        if found:
            records += found
        else:
            skipped.append(f"s3://{obj.bucket}/{obj.key} is no file of source "
                           f"{', '.join(s.name for s in sources)} (bucket, prefix or filter pattern)")
    if problems:
        return MessagePlan("unreadable", tuple(records), tuple(skipped), problems)
    return MessagePlan("records" if records else "ignored", tuple(records), tuple(skipped))


def sources_on_queue(settings: Settings, source: SourceSettings) -> list[SourceSettings]:
    """``source`` and the other enabled sources of ``settings`` reading the same queue."""
    return [source] + [s for s in settings.sources
                       if s.enabled and s.name != source.name and s.queue_url == source.queue_url]


# --- the list scan ---------------------------------------------------------------------------------------------

SCAN_MEMORY = 100_000
"""(key, etag) pairs a ``ScanState`` remembers, least recently listed forgotten first: about 30 MB for keys of 60
characters. A prefix holding more wanted files than this has its oldest ones sent again on every full pass (the
imports.files consumer skips them as already imported); incremental scans, which start after the greatest key,
are not affected."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ListingKind = Literal["full", "incremental"]


class ScanState:
    """What one source's scanner knows between listings: where incremental listings start, when the last full pass
    ran, and the files it already sent.

    Discoveries are remembered only once Kafka acknowledged them (``remember``), so a listing that fails halfway
    sends again, next time, whatever it could not deliver.
    """

    def __init__(self, memory: int = SCAN_MEMORY,
                 full_pass_s: float = ScanSettings.model_fields["full_pass_s"].default) -> None:
        if memory < 1:
            raise ValueError(f"memory must hold at least one key, got {memory}")
        self.start_after: str | None = None     # the greatest key found so far
        self.last_full_ms: int | None = None    # when the last full pass that completed started
        self.memory = memory
        self.full_pass_s = full_pass_s
        self._seen: OrderedDict[str, str | None] = OrderedDict()   # key -> etag, least recently listed first

    def __len__(self) -> int:
        return len(self._seen)

    def next_listing(self, now_ms: int, full_pass_s: float | None = None) -> tuple[ListingKind, str | None]:
        """The listing to run now: ``("full", None)`` at first and once ``full_pass_s`` (default: the state's)
        passed since the last full pass began, else ``("incremental", <start after>)``."""
        every_ms = (self.full_pass_s if full_pass_s is None else full_pass_s) * 1000
        if self.last_full_ms is None or now_ms - self.last_full_ms >= every_ms:
            return "full", None
        return "incremental", self.start_after

    def completed(self, kind: ListingKind, started_ms: int) -> None:
        """A listing that began at ``started_ms`` went through to its end, its discoveries acknowledged."""
        if kind == "full":
            self.last_full_ms = started_ms

    def observe(self, source: SourceSettings, contents: Iterable[Mapping[str, Any]]) -> list[ImportFile]:
        """The new discoveries among listed objects (ListObjectsV2 ``Contents`` entries): the wanted keys not
        remembered with the same etag. Known ones count as listed again (they move to the recent end of the
        memory); nothing is remembered until ``remember``."""
        found: list[ImportFile] = []
        for obj in contents:
            key = obj["Key"]
            if not wanted(source, key):
                continue
            etag = obj.get("ETag")
            etag = etag.strip('"') if isinstance(etag, str) else None
            if key in self._seen and self._seen[key] == etag:
                self._seen.move_to_end(key)
                continue
            found.append(ImportFile(source=source.name, bucket=source.bucket, key=key,
                                    event_time_ms=_ms(obj["LastModified"]), found_by="scan", size=obj.get("Size"),
                                    etag=etag))
        return found

    def remember(self, records: Iterable[ImportFile]) -> None:
        """Records acknowledged by Kafka: not to be sent again while remembered; incremental listings now start
        after the greatest of their keys."""
        for r in records:
            self._seen[r.key] = r.etag
            self._seen.move_to_end(r.key)
            if self.start_after is None or r.key > self.start_after:
                self.start_after = r.key
        while len(self._seen) > self.memory:
            self._seen.popitem(last=False)


def _ms(when: datetime | float) -> int:
    if isinstance(when, datetime):
        aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        return (aware - _EPOCH) // timedelta(milliseconds=1)
    return int(when)


async def scan_source(settings: Settings, source: SourceSettings, send: Send, state: ScanState, *,
                      now_ms: int) -> int:
    """One listing of the source's prefix (full or incremental, as ``state`` plans it); each page's new files are
    sent and acknowledged before the next page is read. Returns the files discovered. S3 and Kafka errors are
    raised (``run_scanner`` logs them and tries again); the pages already acknowledged stay remembered."""
    kind, start_after = state.next_listing(now_ms, source.scan.full_pass_s)
    target = target_of(source, settings.s3)
    args: dict[str, Any] = {"Bucket": source.bucket, "Prefix": source.prefix}
    if start_after is not None:
        args["StartAfter"] = start_after
    listed = found = pages = 0
    began = time.monotonic()
    async with target_client(target, settings.s3) as s3:
        async for page in s3.get_paginator("list_objects_v2").paginate(**args):
            contents = page.get("Contents") or []
            listed += len(contents)
            pages += 1
            SCAN_LISTED.labels(source.name).inc(len(contents))
            new = state.observe(source, contents)
            if new:
                await _send_all(send, new)
                state.remember(new)
                FILES_DISCOVERED.labels(source.name, "scan").inc(len(new))
                found += len(new)
            if pages % 100 == 0:
                log.info("import %s: %s scan of s3://%s/%s in progress: %d objects listed, %d files discovered",
                         source.name, kind, source.bucket, source.prefix, listed, found)
    state.completed(kind, now_ms)
    log.info("import %s: %s scan of s3://%s/%s%s: %d objects listed, %d new files discovered (%.1fs)", source.name,
             kind, source.bucket, source.prefix, f" after {start_after}" if start_after else "", listed, found,
             time.monotonic() - began)
    return found


async def _send_all(send: Send, records: Sequence[ImportFile]) -> None:
    """Send every record and wait for every acknowledgement; raise the first failure once none is left pending."""
    acks: list[asyncio.Future[Any]] = []
    try:
        for r in records:
            acks.append(asyncio.ensure_future(await send(r)))
    except Exception:
        if acks:    # settle what was handed over, so that the enqueue failure is the one raised
            await asyncio.wait(acks)
            for a in acks:
                _ack_error(a)
        raise
    await asyncio.wait(acks)
    errors = [e for e in map(_ack_error, acks) if e is not None]
    if errors:
        raise errors[0]


def _ack_error(ack: asyncio.Future[Any]) -> BaseException | None:
    """Why a finished acknowledgement failed (a producer stopped under it cancels it), or None."""
    if ack.cancelled():
        return RuntimeError("the acknowledgement was cancelled (the producer stopped)")
    return ack.exception()


async def run_scanner(settings: Settings, source: SourceSettings, send: Send, *, stop: Callable[[], bool],
                      interval_s: float | None = None, state: ScanState | None = None) -> None:
    """``scan_source`` every ``interval_s`` (default ``source.scan.interval_s``) until ``stop()``. A failed scan is
    logged with what to do and tried again at the next interval."""
    state = state if state is not None else ScanState(full_pass_s=source.scan.full_pass_s)
    interval = source.scan.interval_s if interval_s is None else interval_s
    target = target_of(source, settings.s3)
    failures = 0
    log.info("import %s: scanning s3://%s/%s every %gs (a full pass every %gs)", source.name, source.bucket,
             source.prefix, interval, source.scan.full_pass_s)
    while not stop():
        try:
            await scan_source(settings, source, send, state, now_ms=time.time_ns() // 1_000_000)
            failures = 0
        except Exception as exc:  # noqa: BLE001 -- any failure: logged with its cure, the next interval tries again
            failures += 1
            log.warning("import %s: the list scan failed (%d in a row), next try in %gs: %s", source.name,
                        failures, interval, _scan_problem(exc, target))
        await pause(interval, stop, check_s=0.25)


async def scan_while_owner(settings: Settings, source: SourceSettings, send: Send, *, owns: Callable[[], bool],
                           stop: Callable[[], bool], idle_s: float = 5.0) -> None:
    """``scan_source`` every ``scan.interval_s`` while ``owns()`` (the worker's scanner runs in the replica that owns
    imports.files partition 0, so that one scans at a time), looking again every ``idle_s`` while it does not,
    until ``stop()``. A failed scan is logged and tried again at the next interval."""
    state = ScanState()
    while not stop():
        try:
            mine = owns()
        except Exception:   # no assignment yet (the consumer is still joining its group)
            mine = False
        if mine:
            try:
                await scan_source(settings, source, send, state, now_ms=time.time_ns() // 1_000_000)
            except Exception as exc:  # noqa: BLE001 -- any failure: logged, the next interval tries again
                log.warning("import %s: the list scan failed (%s); next try in %.0fs", source.name, exc,
                            source.scan.interval_s)
        await pause(source.scan.interval_s if mine else idle_s, stop)


def _scan_problem(exc: BaseException, target: Target) -> str:
    if s3errors.classify(exc) is not None:
        return s3errors.explain(exc, target, "s3:ListBucket", s3_arn(target.bucket, region=target.region)).message
    return f"{type(exc).__name__}: {exc} (files found so far were sent; the broker may be unreachable)"


# --- the SQS poller --------------------------------------------------------------------------------------------

def _sqs_cure(failure: s3errors.Failure, exc: BaseException, source: SourceSettings, target: Target,
              action: str) -> str:
    arn = queue_arn(source.queue_url or "", target.region)
    who = target.as_role() or " (the worker's own credentials)"
    if failure.reason == "no_such_queue":
        return (f"queue {source.queue_url} does not exist in region {target.region}: check sources[].queue_url and "
                f"queue_region (`stream import setup {source.name}` wires the bucket's notification to the queue)")
    if failure.reason in ("kms_denied", "kms_key_unusable"):
        return (f"the queue {arn} is encrypted with a KMS key this worker cannot use{who}: grant kms:Decrypt on "
                "the queue's key, or make sure the key is enabled")
    if failure.reason == "access_denied":
        return (f"missing {action} on {arn}{who}: allow sqs:ReceiveMessage, sqs:DeleteMessage and "
                f"sqs:ChangeMessageVisibility on the queue (`stream import check {source.name}` probes it)")
    if failure.reason == "credentials":
        return "the AWS credentials are missing, invalid or expired: check the worker's credentials or role"
    if failure.reason == "assume_role":
        return (f"cannot assume role {target.role_arn}: its trust policy must allow this worker's identity "
                "sts:AssumeRole (with the configured external id, if any)")
    if failure.kind == "transient":
        return "retrying; if it lasts, check that the worker reaches the SQS endpoint of the queue's region"
    return f"{type(exc).__name__}: {exc} (`stream import check {source.name}` probes the queue)"


def _sqs_target(settings: Settings, source: SourceSettings) -> Target:
    target = target_of(source, settings.s3)
    return dataclasses.replace(target, region=source.queue_region or target.region)


@dataclass
class _Message:
    raw: Mapping[str, Any]
    plan: MessagePlan
    acks: list[asyncio.Future[Any]] = dataclasses.field(default_factory=list)
    failed: str | None = None     # why its records were not all sent

    @property
    def id(self) -> str:
        return str(self.raw.get("MessageId", "?"))

    @property
    def receipt(self) -> str:
        return str(self.raw["ReceiptHandle"])


class _Poller:
    def __init__(self, settings: Settings, source: SourceSettings, send: Send, sqs: Any, target: Target,
                 stop: Callable[[], bool], on_event: OnEvent | None, wait_s: int, visibility_s: int) -> None:
        self.settings, self.source, self.send, self.sqs, self.target = settings, source, send, sqs, target
        self.stop, self.on_event = stop, on_event
        self.wait_s, self.visibility_s = wait_s, visibility_s
        self.sources = sources_on_queue(settings, source)
        self.url = source.queue_url or ""
        self.window = {o: 0 for o in MESSAGE_OUTCOMES} | {"files": 0}
        self.window_began = time.monotonic()

    def count(self, outcome: str, message_id: str, n: int = 1) -> None:
        if outcome == "visibility_extended":
            SQS_VISIBILITY_EXTENSIONS.labels(self.source.name).inc(n)
        else:
            SQS_MESSAGES.labels(self.source.name, outcome).inc(n)
            self.window[outcome] += n
        if self.on_event is not None:
            self.on_event(outcome, message_id)

    def failed(self, action: str, failure: s3errors.Failure, exc: BaseException) -> None:
        SQS_ERRORS.labels(self.source.name, failure.reason).inc()
        log.warning("import %s: %s on %s failed (%s): %s", self.source.name, action, self.url, failure.reason,
                    _sqs_cure(failure, exc, self.source, self.target, action))

    async def call(self, action: str, method: str, **kwargs: Any) -> Any:
        """An SQS call, retried until it succeeds; each failure logged with the cure and counted."""
        def on_failure(failure: s3errors.Failure, exc: BaseException) -> None:
            self.failed(action, failure, exc)

        s3 = self.settings.s3
        return await retry_until_done(f"import {self.source.name}: {action}",
                                      lambda: getattr(self.sqs, method)(QueueUrl=self.url, **kwargs),
                                      classify=sqs.classify, on_failure=on_failure, first_delay=0.5,
                                      max_delay=s3.retry_max_s, permanent_delay=s3.permanent_retry_s)

    async def receive(self) -> list[Mapping[str, Any]] | None:
        """The next messages (maybe none), or None when ``stop()`` came first (a receive in flight is cancelled:
        what it may have received comes back after the visibility timeout)."""
        call = self.call("sqs:ReceiveMessage", "receive_message", MaxNumberOfMessages=10,
                         WaitTimeSeconds=self.wait_s, VisibilityTimeout=self.visibility_s,
                         MessageSystemAttributeNames=["ApproximateReceiveCount"])
        done, answer = await _unless_stopped(call, self.stop)
        return (answer.get("Messages") or []) if done else None

    async def handle(self, raw: list[Mapping[str, Any]]) -> bool:
        """One batch of messages; False when some records could not be sent (the caller backs off)."""
        received = time.monotonic()
        messages = []
        for m in raw:
            msg = _Message(m, plan_message(self.sources, str(m.get("Body", "")), str(m.get("MessageId", "?"))))
            self.count("received", msg.id)
            self._report(msg)
            messages.append(msg)
        await self.delete([m for m in messages if m.plan.delete_now])

        sending = [m for m in messages if m.plan.records]
        for i, msg in enumerate(sending):
            try:
                for record in msg.plan.records:
                    msg.acks.append(asyncio.ensure_future(await self.send(record)))
            except Exception as exc:  # noqa: BLE001 -- the producer refused: the messages stay on the queue
                for rest in sending[i:]:
                    rest.failed = f"{type(exc).__name__}: {exc}"
                break
        await self.wait_for_acks(sending, received)

        acked = []
        for msg in sending:
            failures = [e for e in map(_ack_error, msg.acks) if e is not None]
            if failures and msg.failed is None:
                msg.failed = f"{type(failures[0]).__name__}: {failures[0]}"
            if msg.failed is not None:
                log.warning("import %s: the discovery records of SQS message %s were not all written to Kafka (%s); "
                            "the message stays on the queue and is received again after its visibility timeout "
                            "(%ds)", self.source.name, msg.id, msg.failed, self.visibility_s)
                continue
            for record in msg.plan.records:
                FILES_DISCOVERED.labels(record.source, "sqs").inc()
            self.window["files"] += len(msg.plan.records)
            if msg.plan.outcome == "records":
                acked.append(msg)
        if acked:
            crash_point("import.discovered")
            await self.delete(acked)
        self._summary()
        return not any(m.failed for m in sending)

    def _report(self, msg: _Message) -> None:
        plan = msg.plan
        if plan.outcome in ("test_event", "ignored", "unreadable"):
            self.count(plan.outcome, msg.id)
        for why in plan.skipped:
            log.debug("import %s: SQS message %s: %s; skipped", self.source.name, msg.id, why)
        if plan.problems:
            count = msg.raw.get("Attributes", {}).get("ApproximateReceiveCount", "?")
            log.warning("import %s: unreadable SQS message %s (received %s times), left on the queue for its redrive "
                        "policy (%d readable records still sent): %s", self.source.name, msg.id, count,
                        len(plan.records), "; ".join(plan.problems))

    async def wait_for_acks(self, messages: list[_Message], received: float) -> None:
        """Wait until every record is acknowledged (or failed), extending the visibility of the messages still
        waiting each time half of their visibility timeout has passed."""
        extended = received
        while True:
            pending = [a for m in messages for a in m.acks if not a.done()]
            if not pending:
                return
            left = extended + self.visibility_s / 2 - time.monotonic()
            if left > 0:
                await asyncio.wait(pending, timeout=left)
                continue
            waiting = [m for m in messages if m.plan.outcome == "records" and any(not a.done() for a in m.acks)]
            extended = time.monotonic()
            await self.extend(waiting)

    async def extend(self, messages: list[_Message]) -> None:
        if not messages:
            return
        entries = [{"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": self.visibility_s}
                   for i, m in enumerate(messages)]
        # one attempt: a visibility that cannot be extended only means a duplicate discovery, and retrying past the
        # timeout would be pointless
        action = "sqs:ChangeMessageVisibility"
        try:
            answer = await self.sqs.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
        except Exception as exc:
            failure = sqs.classify(exc)
            if failure is None:
                raise
            self.failed(action, failure, exc)
            return
        for ok in answer.get("Successful", []):
            self.count("visibility_extended", messages[int(ok["Id"])].id)
        for bad in answer.get("Failed", []):
            log.warning("import %s: could not extend the visibility of SQS message %s (%s: %s); it may be delivered "
                        "again, and its files discovered twice (harmless)", self.source.name,
                        messages[int(bad["Id"])].id, bad.get("Code"), bad.get("Message"))
        log.info("import %s: Kafka is slow to acknowledge; extended the visibility of %d SQS messages by %ds",
                 self.source.name, len(answer.get("Successful", [])), self.visibility_s)

    async def delete(self, messages: list[_Message]) -> None:
        if not messages:
            return
        entries = [{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(messages)]
        answer = await self.call("sqs:DeleteMessage", "delete_message_batch", Entries=entries)
        for ok in answer.get("Successful", []):
            self.count("deleted", messages[int(ok["Id"])].id)
        for bad in answer.get("Failed", []):
            log.warning("import %s: could not delete SQS message %s (%s: %s); it will be delivered again and its "
                        "files discovered twice (harmless)", self.source.name, messages[int(bad["Id"])].id,
                        bad.get("Code"), bad.get("Message"))

    def _summary(self, every_s: float = 60) -> None:
        if time.monotonic() - self.window_began < every_s:
            return
        w = self.window
        if w["received"]:
            log.info("import %s: %d SQS messages in the last %.0fs: %d files discovered, %d test events, %d ignored, "
                     "%d unreadable, %d deleted", self.source.name, w["received"], time.monotonic() - self.window_began,
                     w["files"], w["test_event"], w["ignored"], w["unreadable"], w["deleted"])
        self.window = dict.fromkeys(w, 0)
        self.window_began = time.monotonic()


async def poll_queue(settings: Settings, source: SourceSettings, send: Send, *, stop: Callable[[], bool],
                     on_event: OnEvent | None = None, wait_s: int = 20, visibility_s: int = 60) -> None:
    """Long-poll ``source.queue_url`` until ``stop()``, producing a discovery record for every created object the
    sources on the queue import, and deleting each message once all its records are acknowledged.

    ``wait_s`` is the long poll (at most 20 s, and kept below the S3 settings' read timeout); ``visibility_s`` the
    visibility timeout asked for each received message, extended while Kafka is slow to acknowledge. Records that
    cannot be written leave their message on the queue and pause the polling (backing off up to
    ``s3.retry_max_s``). A batch received before ``stop()`` is finished first.
    """
    if not source.queue_url:
        raise ValueError(f"source {source.name} has no queue_url to poll")
    if not 1 <= visibility_s <= 43200:
        raise ValueError(f"visibility_s must be 1..43200 seconds, got {visibility_s}")
    # a long poll that outlasts the client's read timeout would fail every time
    wait = max(0, min(int(wait_s), 20, int(settings.s3.read_timeout_s) - 5))
    target = _sqs_target(settings, source)
    async with target_client(target, settings.s3, service="sqs") as sqs:
        poller = _Poller(settings, source, send, sqs, target, stop, on_event, wait, visibility_s)
        log.info("import %s: polling %s (%s) for the notifications of s3://%s/%s%s", source.name, source.queue_url,
                 target.region, source.bucket, source.prefix,
                 "" if len(poller.sources) == 1 else
                 f" and of sources {', '.join(s.name for s in poller.sources[1:])} on the same queue")
        delay = 0.5
        while not stop():
            messages = await poller.receive()
            if messages is None:
                break
            if not messages:
                continue
            if await poller.handle(messages):
                delay = 0.5
            else:
                await pause(delay, stop, check_s=0.25)
                delay = min(delay * 2, settings.s3.retry_max_s)
    log.info("import %s: stopped polling %s", source.name, source.queue_url)


# --- waiting that ``stop()`` can cut short ---------------------------------------------------------------------

async def _unless_stopped(aw: Awaitable[Any], stop: Callable[[], bool], check_s: float = 0.25) -> tuple[bool, Any]:
    """(True, result) of ``aw``, or (False, None) once ``stop()`` is true first (``aw`` is then cancelled)."""
    task = asyncio.ensure_future(aw)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=check_s)
            if done:
                return True, task.result()
            if stop():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return False, None
    except asyncio.CancelledError:
        task.cancel()
        raise


__all__ = [
    "FILES_DISCOVERED", "MESSAGE_OUTCOMES", "SCAN_LISTED", "SCAN_MEMORY", "SQS_ERRORS", "SQS_MESSAGES",
    "SQS_VISIBILITY_EXTENSIONS", "MessagePlan", "OnEvent", "ScanState", "Send", "from_notification", "plan_message",
    "poll_queue", "queue_arn", "run_scanner", "scan_source", "scan_while_owner", "sources_on_queue", "wanted",
]
