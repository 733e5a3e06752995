"""SQS message bodies -> the S3 objects they announce: pure parsing, no AWS call; every problem is returned, not raised.

A body is one of (FORMATS.md §5.1): the ``s3:TestEvent`` S3 sends when a notification configuration is saved
(acknowledge and ignore it), an event notification with ``Records``, or something unreadable. An SNS envelope
(``"Type": "Notification"`` with the S3 JSON as a string in ``"Message"``, i.e. S3 -> SNS -> SQS without raw
delivery) is unwrapped first. Each record becomes an ``S3Object`` (``ObjectCreated:*`` only), an ``IgnoredRecord``
(other events, kept with their name so they can be counted) or an ``Unreadable`` (with why). Messages name the SQS
message id given by the caller, the field path and the cure.

Choices:

* Keys are form-decoded as S3 encodes them: ``+`` is a space, then ``%XX`` as UTF-8.
* ``eventVersion`` must have major version 2 (2.1, 2.2, 2.3, 2.4+, or "2"); unknown fields are ignored.
* ``eventName`` may carry an ``s3:`` prefix (MinIO writes ``s3:ObjectCreated:Put``); it is dropped.
* ``eventSource`` is not checked, so S3-compatible stores that write ``minio:s3`` are read too.
* The ETag is kept without surrounding quotes, as notifications write it (GetObject quotes it).
* ``eventTime`` must be ``YYYY-MM-DDTHH:MM:SS[.fff]`` with ``Z`` or ``±hh:mm``; fractions below 1 ms are dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any
from urllib.parse import unquote_plus

_CREATED = "ObjectCreated:"
_TEST_EVENT = "s3:TestEvent"
_SUPPORTED_MAJOR = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EVENT_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")


class MessageKind(str, Enum):
    TEST_EVENT = "test_event"
    RECORDS = "records"
    UNREADABLE = "unreadable"


class UnreadableReason(str, Enum):
    """Why a message or a record cannot be read: a small fixed set, fit for a metric label."""

    NOT_JSON = "not_json"
    NOT_S3_EVENT = "not_s3_event"
    BAD_RECORD = "bad_record"
    UNSUPPORTED_VERSION = "unsupported_version"


@dataclass(frozen=True, slots=True)
class S3Object:
    """An object announced by an ``ObjectCreated:*`` record; ``key`` is decoded, ``size`` in bytes."""

    bucket: str
    key: str
    size: int | None
    etag: str | None
    sequencer: str | None
    version_id: str | None
    event_name: str
    event_time_ms: int


@dataclass(frozen=True, slots=True)
class IgnoredRecord:
    """A record of an event that is not a creation (``ObjectRemoved:Delete``, ...); counted, then dropped."""

    event_name: str
    bucket: str | None
    key: str | None


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A message or one of its records that cannot be read; ``message`` names the SQS message id and the cure."""

    reason: UnreadableReason
    message: str


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one SQS message holds.

    ``TEST_EVENT``: nothing (delete the message). ``UNREADABLE``: ``unreadable`` holds one entry for the whole
    message. ``RECORDS``: each record is in ``objects``, ``ignored`` or ``unreadable``, in message order.
    """

    kind: MessageKind
    objects: tuple[S3Object, ...] = ()
    ignored: tuple[IgnoredRecord, ...] = ()
    unreadable: tuple[Unreadable, ...] = ()


class _BadRecord(Exception):
    def __init__(self, reason: UnreadableReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_message(body: str, message_id: str) -> Parsed:
    """Parse one SQS message body; ``message_id`` (the SQS MessageId) is named in every problem reported."""
    where = f"SQS message {message_id}"
    doc = _json(body)
    if doc is None:
        return _unreadable(UnreadableReason.NOT_JSON, f"{where}: the body is not JSON (it starts with "
                           f"{body[:40]!r}); only S3 event notifications should be sent to this queue")
    if isinstance(doc, Mapping) and doc.get("Type") is not None and "Records" not in doc:
        doc = _unwrap_sns(doc, where)
        if isinstance(doc, Unreadable):
            return Parsed(MessageKind.UNREADABLE, unreadable=(doc,))
    if not isinstance(doc, Mapping):
        return _unreadable(UnreadableReason.NOT_S3_EVENT, f"{where}: the body is JSON but not an object; "
                           "only S3 event notifications should be sent to this queue")
    if "Records" not in doc:
        if doc.get("Event") == _TEST_EVENT:
            return Parsed(MessageKind.TEST_EVENT)
        return _unreadable(UnreadableReason.NOT_S3_EVENT, f"{where}: no \"Records\" and not an s3:TestEvent "
                           f"(keys: {', '.join(sorted(map(str, doc))[:8])}); configure the bucket's event "
                           "notification (not EventBridge) to send to this queue")
    records = doc["Records"]
    if not isinstance(records, list):
        return _unreadable(UnreadableReason.NOT_S3_EVENT, f"{where}: \"Records\" is not a list")
    objects: list[S3Object] = []
    ignored: list[IgnoredRecord] = []
    unreadable: list[Unreadable] = []
    for index, record in enumerate(records):
        try:
            found = _record(record)
        except _BadRecord as exc:
            unreadable.append(Unreadable(exc.reason, f"{where}: Records[{index}]{exc.detail}"))
            continue
        (objects if isinstance(found, S3Object) else ignored).append(found)
    return Parsed(MessageKind.RECORDS, tuple(objects), tuple(ignored), tuple(unreadable))


def sequencer_after(a: str, b: str) -> bool:
    """Whether sequencer ``a`` comes after ``b`` (same key only): right-pad the shorter with zeros, then compare."""
    width = max(len(a), len(b))
    # S3 writes upper-case hex; comparing upper-cased text keeps a lower-case copy from reordering events
    return a.upper().ljust(width, "0") > b.upper().ljust(width, "0")


def event_time_ms(text: str) -> int:
    """``2024-03-09T07:15:02.123Z`` -> epoch milliseconds; ValueError if the text is not in that form."""
    match = _EVENT_TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time like 2024-03-09T07:15:02.123Z")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction, zone = match.group(7) or "", match.group(8)
    offset = timedelta() if zone == "Z" else timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid time ({exc})") from None
    when -= offset if zone[0] != "-" else -offset
    return (when - _EPOCH) // timedelta(milliseconds=1) + int(fraction[:3].ljust(3, "0"))


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _unreadable(reason: UnreadableReason, message: str) -> Parsed:
    return Parsed(MessageKind.UNREADABLE, unreadable=(Unreadable(reason, message),))


def _unwrap_sns(envelope: Mapping[str, Any], where: str) -> Any:
    kind = envelope.get("Type")
    if kind != "Notification":
        return Unreadable(UnreadableReason.NOT_S3_EVENT, f"{where}: an SNS {kind!r} message, not a Notification; "
                          "confirm the subscription in SNS if asked, and send only S3 event notifications here")
    inner = envelope.get("Message")
    doc = _json(inner) if isinstance(inner, str) else None
    if doc is None:
        return Unreadable(UnreadableReason.NOT_JSON, f"{where}: the SNS notification's \"Message\" is not JSON "
                          "text; the topic should carry only S3 event notifications")
    return doc


def _record(record: Any) -> S3Object | IgnoredRecord:
    if not isinstance(record, Mapping):
        raise _BadRecord(UnreadableReason.BAD_RECORD, " is not an object")
    version = _text(record, "eventVersion")
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) != _SUPPORTED_MAJOR:
        raise _BadRecord(UnreadableReason.UNSUPPORTED_VERSION,
                         f".eventVersion is {version!r}: only major version {_SUPPORTED_MAJOR} (2.x) is read; "
                         "S3 has changed its event format, upgrade stream")
    event_name = _text(record, "eventName").removeprefix("s3:")
    s3 = _object(record, "s3")
    bucket = _text(_object(s3, "bucket", "s3."), "name", "s3.bucket.")
    obj = _object(s3, "object", "s3.")
    raw_key = _text(obj, "key", "s3.object.")
    try:
        key = unquote_plus(raw_key, errors="strict")
    except UnicodeDecodeError:
        raise _BadRecord(UnreadableReason.BAD_RECORD, f".s3.object.key {raw_key!r} does not decode to UTF-8 "
                         "(S3 form-encodes keys: + is a space, then %XX)") from None
    if not event_name.startswith(_CREATED):
        return IgnoredRecord(event_name, bucket, key)
    time_text = _text(record, "eventTime")
    try:
        time_ms = event_time_ms(time_text)
    except ValueError as exc:
        raise _BadRecord(UnreadableReason.BAD_RECORD, f".eventTime: {exc}") from None
    size = obj.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise _BadRecord(UnreadableReason.BAD_RECORD, f".s3.object.size is {size!r}, not a number of bytes")
    etag = _optional_text(obj, "eTag", "s3.object.")
    return S3Object(
        bucket=bucket,
        key=key,
        size=size,
        etag=etag.strip('"') if etag is not None else None,
        sequencer=_optional_text(obj, "sequencer", "s3.object."),
        version_id=_optional_text(obj, "versionId", "s3.object."),
        event_name=event_name,
        event_time_ms=time_ms,
    )


def _object(parent: Mapping[str, Any], name: str, path: str = "") -> Mapping[str, Any]:
    value = parent.get(name)
    if not isinstance(value, Mapping):
        raise _BadRecord(UnreadableReason.BAD_RECORD, f".{path}{name} is missing or not an object")
    return value


def _text(parent: Mapping[str, Any], name: str, path: str = "") -> str:
    value = parent.get(name)
    if not isinstance(value, str) or not value:
        raise _BadRecord(UnreadableReason.BAD_RECORD, f".{path}{name} is missing or not a non-empty string")
    return value


def _optional_text(parent: Mapping[str, Any], name: str, path: str) -> str | None:
    value = parent.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadRecord(UnreadableReason.BAD_RECORD, f".{path}{name} is {value!r}, not a string")
    return value
