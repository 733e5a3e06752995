"""``stream import setup`` and ``stream import check``: wire an import source's bucket to its SQS queue, and probe
what the importer needs, naming the missing permission and the cure.

Set-up (FORMATS.md §4.1, §5, §7.2), for a source with a ``queue_url``:

1. GetQueueAttributes: the queue's ARN and its current policy (``sqs:GetQueueAttributes``).
2. GetBucketNotificationConfiguration: what the bucket already sends where (``s3:GetBucketNotification``).
3. The plan, before anything changes: S3 keeps a single notification configuration per bucket, and putting one
   replaces the whole of it. Like Amplitude, a bucket that already has one is refused unless ``--merge`` is given,
   which keeps the existing configurations and adds (or replaces, by Id) stream's ``stream-<source>`` queue
   configuration: ``s3:ObjectCreated:*`` under the source's prefix. A merge that S3 would refuse because another
   configuration takes the same events for overlapping keys is refused here, naming it.
4. SetQueueAttributes Policy (``sqs:SetQueueAttributes``): a statement (Sid ``stream-s3-<bucket>``) letting
   ``s3.amazonaws.com`` send messages, conditioned on the bucket's ARN (``aws:SourceArn``) and, when the bucket is
   known to belong to the queue's account, on that account (``aws:SourceAccount``). Other statements are kept.
   It comes before the notification, as S3 checks that it may send to the queue when the notification is put.
5. PutBucketNotificationConfiguration (``s3:PutBucketNotification``). S3 then sends an ``s3:TestEvent`` message,
   which the importer acknowledges and ignores.

Each step is done only when something differs, so running it again changes nothing and says so; ``--dry-run``
reads, plans and prints the documents it would write.

Check, for any source: ListObjectsV2 under the prefix (``s3:ListBucket``), a one-byte GetObject of the first listed
object (``s3:GetObject``, and ``kms:Decrypt`` for an SSE-KMS object), the queue (``sqs:GetQueueAttributes``: its
depth; ReceiveMessage is not probed, as it would hide a message from the importer for its visibility timeout), the
queue policy, and a notification of the bucket that sends the source's new objects to the queue
(``s3:GetBucketNotification``). Failures are worded by ``stream.s3.errors``, with the SQS cases it does not cover.

The queue is reached with the source's credentials (its role, else the worker's own) at the source's endpoint,
in ``queue_region`` (default: the bucket's region).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import click
from botocore.exceptions import BotoCoreError, ClientError

from stream.errors import ConfigError, StreamError
from stream.s3 import sqs as sqs_codes
from stream.s3.arn import account_of, partition_of, s3_arn
from stream.s3.arn import queue_arn as queue_arn_of_url
from stream.s3.client import Target, target_client, target_of
from stream.s3.errors import Problem, classify, explain
from stream.settings import Settings, SourceSettings, load_settings

VERSION = "2012-10-17"
CREATED = "s3:ObjectCreated:*"
S3_SERVICE = "s3.amazonaws.com"
MIN_MESSAGE_BYTES = 64 * 1024
"""S3 event notifications can be up to 64 KB (FORMATS.md §5.1): a queue's MaximumMessageSize must take them."""
CONFIG_HELP = "YAML configuration file (examples/stream.yaml); STREAM_* environment variables override it."

_KINDS = (("QueueConfigurations", "queue configuration", "QueueArn"),
          ("TopicConfigurations", "topic configuration", "TopicArn"),
          ("LambdaFunctionConfigurations", "Lambda configuration", "LambdaFunctionArn"))
_KMS_KEY = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+")
_DENIED_TO_OWNER = frozenset({"AccessDenied", "403", "Forbidden"})
_WOULD = {"added": "add", "updated": "update"}
AWS_ERRORS = (ClientError, BotoCoreError, aiohttp.ClientError, OSError)
"""What a call to S3 or SQS raises when it fails (OSError covers timeouts and broken connections)."""


class SetupError(StreamError):
    """``stream import setup`` stopped: the message names the step, what is wrong and the cure; ``lines`` are the
    steps done before it."""

    def __init__(self, message: str, lines: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.lines = list(lines)


class NotificationConflict(SetupError):
    """The bucket's notification configuration holds others' entries that putting stream's would replace, or that
    would overlap it."""


# --- the notification configuration (pure) --------------------------------------------------------------------------

def notification_id(source: str) -> str:
    return f"stream-{source}"


def queue_configuration(source: str, queue_arn: str, prefix: str) -> dict[str, Any]:
    """Stream's entry: every new object under ``prefix`` to the queue. S3's API names the filter rules ``prefix``
    and ``suffix`` in lower case (some S3-compatible stores accept nothing else); S3 may answer ``Prefix``."""
    cfg: dict[str, Any] = {"Id": notification_id(source), "QueueArn": queue_arn, "Events": [CREATED]}
    if prefix:
        cfg["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
    return cfg


def _rules(cfg: dict[str, Any]) -> dict[str, str]:
    return {str(r.get("Name", "")).lower(): str(r.get("Value", ""))
            for r in cfg.get("Filter", {}).get("Key", {}).get("FilterRules", [])}


def _normal(cfg: dict[str, Any]) -> str:
    """One configuration entry, comparable whatever the order of its events and the case of its rule names."""
    return json.dumps({**cfg, "Events": sorted(cfg.get("Events", [])), "Filter": sorted(_rules(cfg).items())},
                      sort_keys=True)


def strip_response(doc: dict[str, Any]) -> dict[str, Any]:
    """A GetBucketNotificationConfiguration answer as the NotificationConfiguration it describes."""
    return {k: v for k, v in doc.items() if k != "ResponseMetadata"}


def same_notifications(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two NotificationConfigurations say the same (entries in any order)."""
    def norm(doc: dict[str, Any]) -> tuple:
        doc = strip_response(doc)
        return (tuple(sorted(_normal(c) for key, _, _ in _KINDS for c in doc.get(key) or [])),
                "EventBridgeConfiguration" in doc)
    return norm(a) == norm(b)


def _keys_text(cfg: dict[str, Any]) -> str:
    rules = _rules(cfg)
    parts = []
    if rules.get("prefix"):
        parts.append(f"under {rules['prefix']}")
    if rules.get("suffix"):
        parts.append(f"ending {rules['suffix']}")
    return " ".join(parts) if parts else "of every key"


def entry_text(cfg: dict[str, Any], arn_key: str = "QueueArn") -> str:
    """``other: s3:ObjectCreated:Put under logs/ -> arn:aws:sqs:...``"""
    return f"{cfg.get('Id') or '(no id)'}: {', '.join(cfg.get('Events', []))} {_keys_text(cfg)} -> " \
        f"{cfg.get(arn_key, '?')}"


def describe_entry(kind: str, cfg: dict[str, Any], arn_key: str) -> str:
    """``queue configuration other: s3:ObjectCreated:Put under logs/ -> arn:aws:sqs:...``"""
    return f"{kind} {entry_text(cfg, arn_key)}"


def _entries(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], str]]:
    """(configuration key, kind, entry, ARN key) of every entry of a NotificationConfiguration."""
    return [(key, kind, c, arn_key) for key, kind, arn_key in _KINDS for c in doc.get(key) or []]


def _foreign(doc: dict[str, Any], ours: str) -> list[str]:
    """Descriptions of everything in ``doc`` that is not stream's entry ``ours``."""
    found = [describe_entry(kind, c, arn_key) for key, kind, c, arn_key in _entries(doc)
             if not (key == "QueueConfigurations" and c.get("Id") == ours)]
    if "EventBridgeConfiguration" in doc:
        found.append("EventBridge delivery (every event to the account's default event bus)")
    return found


def _overlaps(cfg: dict[str, Any], prefix: str) -> bool:
    """Whether S3 would refuse ``cfg`` next to an ``s3:ObjectCreated:*`` entry for keys under ``prefix``: they
    share an event type and a key could match both filters (S3 allows one destination per event and key)."""
    if not any(e.startswith("s3:ObjectCreated:") for e in cfg.get("Events", [])):
        return False
    theirs = _rules(cfg).get("prefix", "")
    return theirs.startswith(prefix) or prefix.startswith(theirs)


def notification_plan(existing: dict[str, Any], queue_arn: str, prefix: str, *, source: str, bucket: str,
                      merge: bool) -> dict[str, Any]:
    """The NotificationConfiguration to put on ``bucket`` so that it sends the objects created under ``prefix`` to
    ``queue_arn``, given the ``existing`` one (a GetBucketNotificationConfiguration answer).

    ``existing`` itself when stream's entry is already there as it should be; stream's entry alone when the bucket
    has none; with ``merge``, the existing entries with stream's added or replaced (by Id). Raises
    ``NotificationConflict`` when the bucket has entries of others and ``merge`` is false (putting stream's would
    replace them), or when one of them takes the same events for overlapping keys (S3 would refuse the merge).
    """
    existing = strip_response(existing)
    ours = queue_configuration(source, queue_arn, prefix)
    queues = list(existing.get("QueueConfigurations") or [])
    if any(c.get("Id") == ours["Id"] and _normal(c) == _normal(ours) for c in queues):
        return existing
    foreign = _foreign(existing, ours["Id"])
    if foreign and not merge:
        raise NotificationConflict(
            f"bucket {bucket} already has a notification configuration ({'; '.join(foreign)}), which putting "
            f"stream's would replace: rerun with --merge to keep {'it' if len(foreign) == 1 else 'them'} and add "
            f"{ours['Id']}")
    for key, kind, c, arn_key in _entries(existing):
        if not (key == "QueueConfigurations" and c.get("Id") == ours["Id"]) and _overlaps(c, prefix):
            raise NotificationConflict(
                f"bucket {bucket}: {describe_entry(kind, c, arn_key)} takes s3:ObjectCreated events of keys that "
                f"{ours['Id']} would take too ({_keys_text(ours)}), and S3 sends an event of a key to one "
                "destination only: narrow its filter or remove it, then rerun")
    at = next((i for i, c in enumerate(queues) if c.get("Id") == ours["Id"]), None)
    if at is None:
        queues.append(ours)
    else:
        queues[at] = ours
    return {**existing, "QueueConfigurations": queues}


# --- the queue policy (pure) ----------------------------------------------------------------------------------------

def statement_id(bucket: str) -> str:
    return f"stream-s3-{bucket}"


def queue_statement(queue_arn: str, bucket: str, account_id: str | None) -> dict[str, Any]:
    """S3 may send the bucket's notifications to the queue (and only that bucket's, of that account)."""
    source_arn = s3_arn(bucket, partition=partition_of(queue_arn))
    condition: dict[str, Any] = {"ArnEquals": {"aws:SourceArn": source_arn}}
    if account_id:
        condition["StringEquals"] = {"aws:SourceAccount": account_id}
    return {"Sid": statement_id(bucket), "Effect": "Allow", "Principal": {"Service": S3_SERVICE},
            "Action": "sqs:SendMessage", "Resource": queue_arn, "Condition": condition}


def _statements(policy: dict[str, Any] | None) -> list[dict[str, Any]]:
    st = (policy or {}).get("Statement") or []
    return [st] if isinstance(st, dict) else list(st)


def queue_policy(queue_arn: str, bucket: str, account_id: str | None,
                 existing: dict[str, Any] | None = None) -> dict[str, Any]:
    """The queue's policy with stream's statement for ``bucket`` added, or replaced by its Sid; every other
    statement (and the policy's Id) is kept as it is."""
    ours = queue_statement(queue_arn, bucket, account_id)
    statements = _statements(existing)
    at = next((i for i, s in enumerate(statements) if s.get("Sid") == ours["Sid"]), None)
    if at is None:
        statements.append(ours)
    else:
        statements[at] = ours
    return {"Version": VERSION, **{k: v for k, v in (existing or {}).items() if k != "Statement"},
            "Statement": statements}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def same_statement(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two policy statements say the same; SQS may answer ``SQS:SendMessage`` for ``sqs:SendMessage``."""
    def norm(st: dict[str, Any] | None) -> str | None:
        if st is None:
            return None
        return json.dumps({**st, "Action": sorted(str(x).lower() for x in _listed(st.get("Action", [])))},
                          sort_keys=True)
    return norm(a) == norm(b)


def sending_statement(policy: dict[str, Any] | None, bucket_arn_: str) -> dict[str, Any] | None:
    """The first Allow statement of a queue policy that lets S3 send messages from the bucket: its principal is
    ``s3.amazonaws.com`` (or anyone), its action ``sqs:SendMessage`` (or a wildcard), and its ``aws:SourceArn``
    condition, if any, matches the bucket. Other conditions are not evaluated."""
    for st in _statements(policy):
        if st.get("Effect") != "Allow":
            continue
        principal = st.get("Principal")
        if not (principal == "*" or (isinstance(principal, dict) and (
                S3_SERVICE in _listed(principal.get("Service", [])) or "*" in _listed(principal.get("AWS", []))))):
            continue
        if not any(str(a).lower() in ("sqs:sendmessage", "sqs:*", "*") for a in _listed(st.get("Action", []))):
            continue
        arns = [v for cond in (st.get("Condition") or {}).values() if isinstance(cond, dict)
                for k, v in cond.items() if k.lower() == "aws:sourcearn"]
        if arns and not any(fnmatch.fnmatchcase(bucket_arn_, str(p)) for v in arns for p in _listed(v)):
            continue
        return st
    return None


# --- wording the failures -------------------------------------------------------------------------------------------

def _who(target: Target) -> str:
    return f"role {target.role_arn}" if target.role_arn else "this worker's identity"


def problem_of(exc: BaseException, target: Target, action: str, resource: str, queue_url: str = "") -> Problem:
    """``stream.s3.errors.explain``, with the SQS cases it does not word (a missing queue, a denied SQS action)
    and denials worded for a reader rather than a writer."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if action.startswith("sqs:"):
            if code in sqs_codes.NO_QUEUE:
                return Problem("no_such_queue", None, None, f"queue {queue_url} does not exist (or these credentials "
                               "cannot see it): check queue_url and queue_region")
            if code in sqs_codes.DENIED:
                return Problem("access_denied", action, resource, f"missing {action} on {resource}{target.as_role()}: "
                               f"grant it to {_who(target)} (and check that the queue policy does not deny it)")
        msg = str(exc.response.get("Error", {}).get("Message", ""))
        if action == "s3:PutBucketNotification" and code == "InvalidArgument" and "validate" in msg.lower():
            return Problem("other", None, None, f"S3 could not send its test message to the queue ({msg}): the queue "
                           f"policy must let {S3_SERVICE} sqs:SendMessage from {resource}, and for a queue encrypted "
                           f"with a KMS key, the key policy must let {S3_SERVICE} kms:GenerateDataKey and kms:Decrypt")
        failure = classify(exc)
        if failure is not None and failure.reason == "kms_denied" and action == "s3:GetObject":
            found = _KMS_KEY.search(msg)
            key = found.group(0) if found else "the key that encrypts the objects"
            return Problem("kms_denied", "kms:Decrypt", found.group(0) if found else None,
                           f"missing kms:Decrypt on {key}{target.as_role()}: allow it to {_who(target)} in the key's "
                           "policy (and in the identity's policy)")
        if failure is not None and failure.reason == "access_denied":
            return Problem("access_denied", action, resource, f"missing {action} on {resource}{target.as_role()}: "
                           f"grant it to {_who(target)} (and check that the bucket policy does not deny it)")
    return explain(exc, target, action, resource)


# --- set-up ---------------------------------------------------------------------------------------------------------

def _source_of(settings: Settings, name: str) -> tuple[int, SourceSettings]:
    for i, src in enumerate(settings.sources):
        if src.name == name:
            return i, src
    names = ", ".join(s.name for s in settings.sources) or "(none)"
    raise ConfigError(f"no source named {name!r}; sources: {names}")


@dataclass(frozen=True)
class _Where:
    source: SourceSettings
    index: int
    bucket: Target
    queue: Target

    @property
    def bucket_arn(self) -> str:
        return s3_arn(self.bucket.bucket, region=self.bucket.region)


def _where(settings: Settings, name: str) -> _Where:
    i, src = _source_of(settings, name)
    target = target_of(src, settings.s3)
    return _Where(src, i, target, replace(target, region=src.queue_region or target.region))


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


async def _bucket_notifications(s3: Any, where: _Where, account: str | None) -> tuple[dict[str, Any], str | None]:
    """The bucket's notification configuration, and ``account`` when the bucket is known to belong to it: asked
    with ExpectedBucketOwner first, which S3 answers with 403 when the bucket has another owner."""
    bucket = where.bucket.bucket
    if account:
        try:
            return strip_response(await s3.get_bucket_notification_configuration(
                Bucket=bucket, ExpectedBucketOwner=account)), account
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) not in _DENIED_TO_OWNER:
                raise
    return strip_response(await s3.get_bucket_notification_configuration(Bucket=bucket)), None


async def setup_source(settings: Settings, name: str, *, merge: bool, dry_run: bool) -> list[str]:
    """Let the queue of source ``name`` receive its bucket's ObjectCreated notifications: the queue policy, then the
    bucket's notification configuration. The lines say what changed, or was already right, step by step. Raises
    ConfigError for an unknown source, SetupError (with the lines of the steps done) when a step fails."""
    where = _where(settings, name)
    src, bucket = where.source, where.bucket.bucket
    if not src.queue_url:
        raise SetupError(f"source {name} has no queue: create a standard SQS queue in {where.queue.region} and set "
                         f"sources[{where.index}].queue_url to its URL")
    lines: list[str] = []
    queue_arn = queue_arn_of_url(src.queue_url, where.queue.region)
    changed = False

    def fail(exc: BaseException, action: str, resource: str) -> SetupError:
        target = where.queue if action.startswith("sqs:") else where.bucket
        return SetupError(problem_of(exc, target, action, resource, src.queue_url).message, lines)

    async with AsyncExitStack() as stack:
        sqs = await stack.enter_async_context(target_client(where.queue, settings.s3, "sqs"))
        s3 = await stack.enter_async_context(target_client(where.bucket, settings.s3))
        try:
            attrs = (await sqs.get_queue_attributes(QueueUrl=src.queue_url, AttributeNames=["QueueArn", "Policy"])
                     )["Attributes"]
        except AWS_ERRORS as exc:
            raise fail(exc, "sqs:GetQueueAttributes", queue_arn) from None
        queue_arn = attrs["QueueArn"]
        lines.append(f"queue {src.queue_url}: {queue_arn}")
        if queue_arn.endswith(".fifo"):
            raise SetupError(f"queue {src.queue_url} is a FIFO queue, to which S3 sends no event notifications: "
                             "use a standard queue", lines)
        queue_region = queue_arn.split(":")[3]
        if queue_region != where.bucket.region:
            raise SetupError(f"queue {src.queue_url} is in {queue_region} and bucket {bucket} in "
                             f"{where.bucket.region}: S3 sends notifications to a queue of the bucket's region only",
                             lines)
        try:
            existing, account = await _bucket_notifications(s3, where, account_of(queue_arn))
        except AWS_ERRORS as exc:
            raise fail(exc, "s3:GetBucketNotification", where.bucket_arn) from None
        try:
            plan = notification_plan(existing, queue_arn, src.prefix, source=name, bucket=bucket, merge=merge)
        except NotificationConflict as exc:
            raise NotificationConflict(str(exc), lines) from None

        try:
            current = json.loads(attrs["Policy"]) if attrs.get("Policy") else None
        except ValueError:
            raise SetupError(f"queue {src.queue_url}: its policy is not JSON; fix or remove it, then rerun",
                             lines) from None
        policy = queue_policy(queue_arn, bucket, account, current)
        sid = statement_id(bucket)
        had = next((s for s in _statements(current) if s.get("Sid") == sid), None)
        sender = s3_arn(bucket, partition=partition_of(queue_arn))
        grant = f"{S3_SERVICE} may send messages from {sender}" + (f" of account {account}" if account else "")
        if same_statement(had, queue_statement(queue_arn, bucket, account)):
            lines.append(f"queue policy: statement {sid} already in place ({grant})")
        else:
            verb = "added" if had is None else "updated"
            if dry_run:
                lines.append(f"queue policy: would {_WOULD[verb]} statement {sid} ({grant}); the policy to "
                             f"set: {_dump(policy)}")
            else:
                try:
                    await sqs.set_queue_attributes(QueueUrl=src.queue_url, Attributes={"Policy": _dump(policy)})
                except AWS_ERRORS as exc:
                    raise fail(exc, "sqs:SetQueueAttributes", queue_arn) from None
                changed = True
                kept = len(policy["Statement"]) - 1
                lines.append(f"queue policy: {verb} statement {sid} ({grant})" +
                             (f"; kept {kept} other statement(s)" if kept else ""))

        ours = queue_configuration(name, queue_arn, src.prefix)
        entry = entry_text(ours)
        if same_notifications(plan, existing):
            lines.append(f"notification s3://{bucket}: {entry} already in place")
        else:
            was = next((c for c in existing.get("QueueConfigurations") or [] if c.get("Id") == ours["Id"]), None)
            verb = "added" if was is None else "updated"
            kept = _foreign(existing, ours["Id"])
            if dry_run:
                lines.append(f"notification s3://{bucket}: would {_WOULD[verb]} {entry}; the configuration "
                             f"to put: {_dump(plan)}")
            else:
                try:
                    await s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=plan)
                except AWS_ERRORS as exc:
                    raise fail(exc, "s3:PutBucketNotification", where.bucket_arn) from None
                changed = True
                lines.append(f"notification s3://{bucket}: {verb} {entry}" +
                             (f"; kept {'; '.join(kept)}" if kept else ""))
                lines.append(f"notification s3://{bucket}: S3 sent the queue an s3:TestEvent message, which the "
                             "importer acknowledges and ignores")
    if dry_run:
        lines.append(f"source {name}: dry run; nothing changed")
    else:
        lines.append(f"source {name}: {'set up' if changed else 'nothing changed'}")
    return lines


# --- check ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckLine:
    """One probe of ``stream import check``: what was probed, whether it passed, what was found (or went wrong),
    and what to do about a failure. A step that could not be probed yet (``probed`` false) is not a failure."""

    what: str
    ok: bool
    detail: str
    cure: str | None = None
    probed: bool = field(default=True)

    def render(self) -> str:
        if not self.probed:
            return f"{self.what}: not probed ({self.detail})"
        if self.ok:
            return f"{self.what}: ok ({self.detail})" if self.detail else f"{self.what}: ok"
        return f"{self.what}: {self.detail}: {self.cure}" if self.cure else f"{self.what}: {self.detail}"


def exit_code(lines: Sequence[CheckLine]) -> int:
    """0 when every probe passed, 1 when any failed."""
    return 0 if all(line.ok for line in lines) else 1


def _failed(what: str, problem: Problem) -> CheckLine:
    # the error table words a failure "what is wrong: what to do"; kept whole when it is worded otherwise
    detail, sep, cure = problem.message.partition(": ")
    if problem.reason in ("other", "server_error", "throttled", "connection", "timeout") or not sep:
        return CheckLine(what, False, problem.message)
    return CheckLine(what, False, detail, cure)


async def check_source(settings: Settings, name: str) -> list[CheckLine]:
    """Probe what the importer of source ``name`` does, in order; a step that needs an earlier one that failed is
    left out. Raises ConfigError for an unknown source."""
    where = _where(settings, name)
    src, target, bucket = where.source, where.bucket, where.bucket.bucket
    lines: list[CheckLine] = []
    setup_cmd = f"run `stream import setup {name}` (with --merge if the bucket sends other notifications)"
    async with AsyncExitStack() as stack:
        s3 = await stack.enter_async_context(target_client(target, settings.s3))
        listing = f"list s3://{bucket}/{src.prefix}"
        first: dict[str, Any] | None = None
        listed, bucket_ok = False, True
        try:
            page = await s3.list_objects_v2(Bucket=bucket, Prefix=src.prefix, MaxKeys=1)
            first, listed = (page.get("Contents") or [None])[0], True
            lines.append(CheckLine(listing, True, f"first key {first['Key']}" if first else "no object yet"))
        except AWS_ERRORS as exc:
            problem = problem_of(exc, target, "s3:ListBucket", where.bucket_arn)
            lines.append(_failed(listing, problem))
            bucket_ok = problem.reason == "access_denied"   # else the bucket's other probes fail the same way

        if listed and first is None:
            lines.append(CheckLine(f"read s3://{bucket}/{src.prefix}", True, "no object under the prefix yet; "
                                   "s3:GetObject, and kms:Decrypt for SSE-KMS objects, are probed once there is one",
                                   probed=False))
        elif first is not None:
            key, reading = first["Key"], f"read s3://{bucket}/{first['Key']}"
            try:   # one byte: a range past the end of an empty object is refused (InvalidRange)
                got = await s3.get_object(Bucket=bucket, Key=key, **({"Range": "bytes=0-0"} if first.get("Size")
                                                                     else {}))
                async with got["Body"] as body:
                    await body.read()
                kms = got.get("SSEKMSKeyId") if got.get("ServerSideEncryption") == "aws:kms" else None
                read = "first byte read" if first.get("Size") else "empty object read"
                lines.append(CheckLine(reading, True, read + (f"; SSE-KMS with key {kms}, so kms:Decrypt is granted"
                                                               if kms else "")))
            except AWS_ERRORS as exc:
                lines.append(_failed(reading, problem_of(exc, target, "s3:GetObject",
                                                         f"{where.bucket_arn}/{src.prefix}*")))

        if not src.queue_url:
            lines.append(CheckLine("queue", True, f"none configured: the list scan alone finds files (set "
                                   f"sources[{where.index}].queue_url and run `stream import setup {name}` to be "
                                   "notified of new files)", probed=False))
            return lines
        sqs = await stack.enter_async_context(target_client(where.queue, settings.s3, "sqs"))
        queue = f"queue {src.queue_url}"
        try:
            attrs = (await sqs.get_queue_attributes(QueueUrl=src.queue_url, AttributeNames=["All"]))["Attributes"]
        except AWS_ERRORS as exc:
            lines.append(_failed(queue, problem_of(exc, where.queue, "sqs:GetQueueAttributes",
                                                   queue_arn_of_url(src.queue_url, where.queue.region),
                                                   src.queue_url)))
            return lines
        queue_arn = attrs["QueueArn"]
        sender = s3_arn(bucket, partition=partition_of(queue_arn))
        lines.append(_queue_line(queue, attrs, target.region))
        statement = sending_statement(json.loads(attrs["Policy"]) if attrs.get("Policy") else None, sender)
        if statement is None:
            lines.append(CheckLine("queue policy", False, f"it does not let {S3_SERVICE} send messages from "
                                   f"{sender}, so S3 cannot deliver the "
                                   "notifications", setup_cmd))
        else:
            lines.append(CheckLine("queue policy", True, f"statement {statement.get('Sid') or '(no Sid)'} lets "
                                   f"{S3_SERVICE} send messages from {sender}"))

        if not bucket_ok:
            return lines
        notification = f"notification s3://{bucket}"
        try:
            doc = strip_response(await s3.get_bucket_notification_configuration(Bucket=bucket))
        except AWS_ERRORS as exc:
            lines.append(_failed(notification, problem_of(exc, target, "s3:GetBucketNotification",
                                                          where.bucket_arn)))
            return lines
        lines.append(_notification_line(notification, doc, queue_arn, src.prefix, setup_cmd))
    return lines


def _queue_line(what: str, attrs: dict[str, str], bucket_region: str) -> CheckLine:
    arn = attrs["QueueArn"]
    size = int(attrs.get("MaximumMessageSize") or MIN_MESSAGE_BYTES)
    if arn.endswith(".fifo"):
        return CheckLine(what, False, "it is a FIFO queue, to which S3 sends no event notifications",
                         "use a standard queue")
    if arn.split(":")[3] != bucket_region:
        return CheckLine(what, False, f"it is in {arn.split(':')[3]} and the bucket in {bucket_region}; S3 sends "
                         "notifications to a queue of the bucket's region only", "use a queue of the bucket's region")
    if size < MIN_MESSAGE_BYTES:
        return CheckLine(what, False, f"its MaximumMessageSize is {size} bytes, less than the 64 KiB an S3 "
                         "notification can take", "raise it to 65536 bytes or more")
    if attrs.get("KmsMasterKeyId") == "alias/aws/sqs":
        return CheckLine(what, False, "it is encrypted with the AWS managed key alias/aws/sqs, which S3 cannot use",
                         "use SSE-SQS, or a customer managed key whose key policy lets s3.amazonaws.com "
                         "kms:GenerateDataKey and kms:Decrypt")
    return CheckLine(what, True, f"{arn}; {attrs.get('ApproximateNumberOfMessages', '?')} message(s) waiting, "
                     f"{attrs.get('ApproximateNumberOfMessagesNotVisible', '?')} in flight")


def _notification_line(what: str, doc: dict[str, Any], queue_arn: str, prefix: str, cure: str) -> CheckLine:
    to_queue = [c for c in doc.get("QueueConfigurations") or [] if c.get("QueueArn") == queue_arn]
    for c in to_queue:
        rules = _rules(c)
        if CREATED in c.get("Events", []) and prefix.startswith(rules.get("prefix", "")) and not rules.get("suffix"):
            return CheckLine(what, True, entry_text(c))
    if not to_queue:
        return CheckLine(what, False, f"no notification of the bucket sends to {queue_arn}", cure)
    return CheckLine(what, False, "what it sends to the queue misses new objects of the source ("
                     f"{'; '.join(entry_text(c) for c in to_queue)}), which only the "
                     f"list scan finds then: {CREATED} {'under ' + prefix if prefix else 'of every key'} is needed",
                     cure)


# --- the commands ---------------------------------------------------------------------------------------------------

def settings_of(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _known(settings: Settings, name: str, config: str | None) -> None:
    if settings.source(name) is None:
        names = ", ".join(s.name for s in settings.sources) or "(none)"
        raise click.ClickException(f"no source named {name!r} in {config or 'the environment'}; sources: {names}")


def config_option(f):
    return click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG",
                        help=CONFIG_HELP)(f)


import_group = click.Group("import", help="The S3 import sources (sources[] of the configuration): set up the "
                           "bucket's notifications to the queue, check the access the importer needs, preview a "
                           "file's conversion, see what was imported, import a file again.")


@import_group.command("setup")
@click.argument("source")
@click.option("--merge", is_flag=True, help="Keep the bucket's existing notification configurations and add "
              "stream's to them; without it, a bucket that has any is refused, as putting ours would replace them.")
@click.option("--dry-run", is_flag=True, help="Read and plan, print the documents that would be written; change "
              "nothing.")
@config_option
def setup_command(source: str, merge: bool, dry_run: bool, config: str | None) -> None:
    """Make SOURCE's bucket notify its queue of new objects: the queue policy that lets S3 send to the queue, then
    an s3:ObjectCreated:* notification under the source's prefix. Running it again changes nothing."""
    settings = settings_of(config)
    _known(settings, source, config)
    try:
        lines = asyncio.run(setup_source(settings, source, merge=merge, dry_run=dry_run))
    except SetupError as exc:
        for line in exc.lines:
            click.echo(line)
        raise click.ClickException(str(exc)) from None
    for line in lines:
        click.echo(line)


@import_group.command("check")
@click.argument("source")
@config_option
def check_command(source: str, config: str | None) -> None:
    """Probe what SOURCE's importer needs: list and read under the prefix, the queue, its policy, and the bucket's
    notification to it. Each failure names the missing permission or setting and the cure; exits 1 on any."""
    settings = settings_of(config)
    _known(settings, source, config)
    lines = asyncio.run(check_source(settings, source))
    for line in lines:
        click.echo(line.render())
    if exit_code(lines):
        raise click.ClickException(f"{sum(not line.ok for line in lines)} problem(s) found; see above")
    click.echo("all checks passed")
