"""Raw event bytes -> an Amplitude export row, or a rejection with a reason code.

``normalize`` is pure: the same bytes, project and source coordinates give the
same row (``uuid`` comes from the coordinates, the server times from the
record's timestamp), so a replay of a message produces the same event.
"""

from __future__ import annotations

import binascii
import hashlib
import math
import re
import sys
import threading
import uuid as uuidlib
from enum import Enum
from functools import partial
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NamedTuple, NewType, Union

import msgspec

from stream.events.depth import MAX_DEPTH, depth_over
from stream.events.fields import EXPORT_FIELDS, INPUT_FIELDS, INVALID_IDS, MAX_STRING, Kind, Where
from stream.events.timefmt import (_FRACTIONS, _FRACTIONS_B, _second_bytes, _second_cache, format_ms, format_ms_bytes,
                                   parse_ms, second_bytes)

UUID_NAMESPACE = uuidlib.UUID("6f1d2c3a-9b1e-5c7d-8e2f-3a4b5c6d7e8f")
"""Namespace of the uuid5 derived from an event's source coordinates."""


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def uuid5_str(name: str, _ns: bytes = UUID_NAMESPACE.bytes, _sha1=hashlib.sha1) -> str:
    """``str(uuid.uuid5(UUID_NAMESPACE, name))``, straight from the hex digest (no UUID object)."""
    h = _sha1(_ns + name.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_VERSION_5 = bytes((b & 0x0F) | 0x50 for b in range(256))
"""A digest's byte 6 -> the uuid's: version 5 in its high nibble."""
_VARIANT_RFC = bytes((b & 0x3F) | 0x80 for b in range(256))
"""A digest's byte 8 -> the uuid's: the RFC 4122 variant in its two high bits."""
_TEXT_GROUPS = ((0, 0, 8), (9, 8, 4), (14, 12, 4), (19, 16, 4), (24, 20, 12))
"""The canonical text's runs of hex digits: (where in the text, where in the digest's 40 hex digits, how many)."""
_TEXT_TEMPLATE = b"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"


def uuid5_many(prefix: str, numbers: Sequence[int]) -> tuple[list[bytes], list[bytes]]:
    """For each ``n`` of ``numbers``, ``uuid5_str(prefix + str(n))`` as ASCII bytes, and the uuid's 16 bytes: the
    same uuids as one call each, for about half their cost (``uuid5_texts``)."""
    raw = _uuid5_raw(prefix, [b"%d" % n for n in numbers])
    return _uuid5_text(raw), _uuids_of(raw)


def uuid5_two(first: str, second: str, numbers: Sequence[int]) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """``uuid5_texts(first, numbers)`` and ``uuid5_many(second, numbers)``, the numbers' digits written once (an
    import row's insert_id and uuid)."""
    digits = [b"%d" % n for n in numbers]
    raw = _uuid5_raw(second, digits)
    return _uuid5_text(_uuid5_raw(first, digits)), _uuid5_text(raw), _uuids_of(raw)


def uuid5_texts(prefix: str, numbers: Sequence[int]) -> list[bytes]:
    """For each ``n`` of ``numbers``, ``uuid5_str(prefix + str(n))`` as ASCII bytes: the SHA-1 state of the
    namespace and ``prefix`` is copied for each number instead of hashed again, and the version, the variant and the
    text are written for all of them at once (an operation a field over the digests, not a string a uuid)."""
    return _uuid5_text(_uuid5_raw(prefix, [b"%d" % n for n in numbers]))


def _uuid5_raw(prefix: str, digits: list[bytes]) -> bytearray:
    """The uuids of ``prefix`` and each of ``digits`` (a number's text): their 16 bytes, each followed by its
    digest's last 4."""
    copy = hashlib.sha1(UUID_NAMESPACE.bytes + prefix.encode()).copy
    digests = []
    add = digests.append
    for d in digits:
        h = copy()
        h.update(d)
        add(h.digest())
    raw = bytearray(b"".join(digests))
    raw[6::20] = raw[6::20].translate(_VERSION_5)
    raw[8::20] = raw[8::20].translate(_VARIANT_RFC)
    return raw


def uuid5_strs(prefix: str, numbers: Sequence[int]) -> tuple[list[str], list[bytes]]:
    """``uuid5_many`` with the texts as str: for each ``n`` of ``numbers``, ``uuid5_str(prefix + str(n))`` and the
    uuid's 16 bytes (the ingest stage's uuids of a poll's offsets: ``normalize_message``'s ``uuid_s`` and
    ``uuid_b``)."""
    raw = _uuid5_raw(prefix, [b"%d" % n for n in numbers])
    text = _uuid5_joined(raw).decode("ascii")
    return [text[i:i + 36] for i in range(0, len(text), 36)], _uuids_of(raw)


def _uuids_of(raw: bytearray) -> list[bytes]:
    """The 16 bytes of each uuid of ``_uuid5_raw``."""
    whole = bytes(raw)
    return [whole[i:i + 16] for i in range(0, len(whole), 20)]


def _uuid5_text(raw: bytearray) -> list[bytes]:
    texts = _uuid5_joined(raw)
    return [texts[i:i + 36] for i in range(0, len(texts), 36)]


def _uuid5_joined(raw: bytearray) -> bytes:
    """The canonical texts of the uuids of ``_uuid5_raw``, one after the other."""
    count = len(raw) // 20
    if not count:
        return b""
    hex_units = memoryview(binascii.hexlify(raw)).cast("I")   # 40 digits a uuid, copied 4 at a time
    text = bytearray(_TEXT_TEMPLATE * count)
    view = memoryview(text)
    for at, src, size in _TEXT_GROUPS:
        units = view[at:at + 36 * (count - 1) + size].cast("I")   # a group's units in each of the texts
        for k in range(size // 4):
            units[k::9] = hex_units[src // 4 + k::10]
    return bytes(text)


def uuid_bytes(s: str) -> bytes:
    """The 16 bytes of a canonical uuid string."""
    return bytes.fromhex(s.replace("-", ""))


def uuid5_bytes(name: str) -> bytes:
    return uuid_bytes(uuid5_str(name))


def uuid_str(b: bytes) -> str:
    """16 bytes -> the canonical ``8-4-4-4-12`` form."""
    x = b.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


MAX_TIME_MS = 253_402_300_799_999
"""The last millisecond of 9999-12-31: the latest time an export timestamp (``YYYY-MM-DD ...``) can show."""


class Reason(str, Enum):
    """Why an input was rejected: a small fixed set, used as a metric label."""

    EMPTY_MESSAGE = "empty_message"
    TOO_LARGE = "too_large"
    INVALID_KEY = "invalid_key"
    INVALID_UTF8 = "invalid_utf8"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_PROJECT = "unknown_project"
    MISSING_EVENT_TYPE = "missing_event_type"
    MISSING_ID = "missing_id"
    INVALID_ID = "invalid_id"
    INVALID_TYPE = "invalid_type"
    INVALID_VALUE = "invalid_value"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_IDENTIFY = "invalid_identify"    # a user/group property update that cannot be applied (identity stage)
    TOO_MANY_PROPERTIES = "too_many_properties"  # an update naming more properties than the limit (identity stage)
    BAD_CSV_ROW = "bad_csv_row"              # an imported CSV row with the wrong number of columns, or bad quoting
    UNREADABLE_FILE = "unreadable_file"      # an import file that cannot be read at all (truncated gzip, not parquet)
    INVALID_BATCH = "invalid_batch"          # a message of an internal topic that is not an EventBatch
    PROCESSING_ERROR = "processing_error"    # an unexpected failure on this record (a bug: please report it)
    INVALID_MUTATION_TYPE = "invalid_mutation_type"  # a mirror row whose $mutation_type is not INSERT/UPDATE/DELETE
    MISSING_USER_ID = "missing_user_id"      # a mirror row without user_id (mirror requires one, as the vendor's)
    UNKNOWN_INSERT_ID = "unknown_insert_id"  # a mirror UPDATE or DELETE naming no event the mirror index holds


class Rejected(NamedTuple):
    reason: Reason
    field: str | None
    detail: str


class Normalized(NamedTuple):
    project: int
    dedupe_key: bytes        # b"" when the event has no insert_id (never deduplicated)
    upload_ms: int           # server_upload_time, epoch ms: drives the export hour
    uuid: bytes              # 16 bytes: identifies this occurrence of the event
    line: bytes              # the export row, JSON
    device_id: str | None    # the ids as exported (an id shorter than min_id_length is None); one of the two is set
    user_id: str | None
    clamped: bool = False    # a server time ahead of the ingest clock by more than the allowed skew was replaced

    @property
    def partition_key(self) -> str:
        """device_id, or user_id when the event has no device_id: what the target partition is hashed from."""
        return self.device_id if self.device_id is not None else self.user_id  # type: ignore[return-value]


class Rules(NamedTuple):
    """The settings normalize depends on (a subset of IngestSettings)."""

    max_event_bytes: int = 1024 * 1024
    min_id_length: int = 5
    keep_unknown_fields: bool = False
    max_clock_skew_ms: int = 300_000

    @classmethod
    def of(cls, ingest: Any) -> Rules:
        """The rules the ingest settings (``settings.ingest``) set: what every path that stamps server times from
        a Kafka record or a file (the ingest stage, the S3 import) validates with."""
        return cls(ingest.max_event_bytes, ingest.min_id_length, ingest.unknown_fields == "keep",
                   int(ingest.max_clock_skew_s * 1000))


def clamp_server_time(t: int, now_ms: int | None, max_skew_ms: int) -> int:
    """A server time as stamped: ``t``, unless it is ahead of the ingest clock ``now_ms`` by more than the allowed
    skew, when it is the ingest clock. A producer's clock (a record timestamp, a ``server_upload_time`` it wrote)
    then never holds hours open: the hour of a far-future time would otherwise stay open until it passed, and its
    partition's later events with it. Times in the past are kept: replays and backfills rely on them."""
    return now_ms if now_ms is not None and t > now_ms + max_skew_ms else t


_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode
_encode_into = msgspec.json.Encoder().encode_into


class _RowBuffer(threading.local):
    """The fast path's row is encoded into a buffer of its thread's, then copied out: ``encode`` starts each output
    at 512 bytes and grows it (reallocations and copies for a 1.5 KB row), a buffer kept from one row to the next
    is grown already."""

    def __init__(self) -> None:
        self.buf = bytearray(4096)


_row_buffer = _RowBuffer()
_EMPTY: dict[str, Any] = {}
"""The empty object of a row's column the event leaves empty: only encoded (never kept, never changed)."""
_TEMPLATE: dict[str, Any] = dict.fromkeys(EXPORT_FIELDS)
_DATA_KEYS = tuple(k for k, (_, where, _) in INPUT_FIELDS.items() if where is Where.DATA)
_REVENUE_KEYS = tuple(k for k, (_, where, _) in INPUT_FIELDS.items() if where is Where.REVENUE)
_KIND_NAMES = {Kind.STR: "a string", Kind.INT: "an integer", Kind.NUM: "a number", Kind.DICT: "an object",
               Kind.BOOL: "a boolean"}


class _Bad(Exception):
    def __init__(self, reason: Reason, field: str | None, detail: str):
        self.rejected = Rejected(reason, field, detail)


def _type_name(v: Any) -> str:
    return {str: "string", bool: "boolean", int: "integer", float: "number", dict: "object", list: "array"}.get(
        type(v), type(v).__name__)


def _coerce(key: str, kind: Kind, v: Any) -> Any:
    """Check one value against its kind; numeric strings are accepted for numbers."""
    t = type(v)
    if kind is Kind.STR:
        if t is str:
            if len(v) > MAX_STRING:
                raise _Bad(Reason.INVALID_VALUE, key, f"{key} is {len(v)} characters long; the limit is {MAX_STRING}")
            return v
    elif kind is Kind.DICT:
        if t is dict:
            return v
    elif kind is Kind.INT:
        if t is int:
            return v
        if t is float and math.isfinite(v):
            return int(v)
        if t is str:
            s = v.strip()
            digits = s[1:] if s[:1] == "-" else s
            if digits.isdecimal():  # what int() reads: "²" passes isdigit() and "--5" lstrip("-"), not int()
                try:
                    return int(s)
                except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
                    raise _Bad(Reason.INVALID_VALUE, key, f"{key} has {len(digits)} digits; the limit is "
                               f"{sys.get_int_max_str_digits()}") from None
    elif kind is Kind.NUM:
        if t is int or (t is float and math.isfinite(v)):
            return v
        if t is str:
            try:
                f = float(v)
            except ValueError:
                pass
            else:
                if math.isfinite(f):
                    return f
    elif kind is Kind.BOOL:
        if t is bool:
            return v
    raise _Bad(Reason.INVALID_TYPE, key, f"{key} must be {_KIND_NAMES[kind]}, got {_type_name(v)}")


def _id(key: str, v: Any, min_len: int) -> str | None:
    if v is None:
        return None
    if type(v) is not str:
        raise _Bad(Reason.INVALID_TYPE, key, f"{key} must be a string, got {_type_name(v)}")
    if v.lower() in INVALID_IDS:
        raise _Bad(Reason.INVALID_ID, key, f"{key} {v!r} is not a valid id")
    if len(v) > MAX_STRING:
        raise _Bad(Reason.INVALID_VALUE, key, f"{key} is {len(v)} characters long; the limit is {MAX_STRING}")
    return v if len(v) >= min_len else None  # Amplitude removes ids shorter than min_id_length


def too_deep(depth: int) -> Rejected:
    return Rejected(Reason.INVALID_VALUE, None, f"the event nests objects and arrays more than {MAX_DEPTH} levels "
                    f"deep ({depth} seen); Amplitude's limit is {MAX_DEPTH}: flatten its properties")


def decode(value: bytes | None, key: bytes | None, rules: Rules) -> dict[str, Any] | Rejected:
    """The message bytes as a JSON object, or why they are not one (too deep included: ``depth_over``)."""
    if not value:
        return Rejected(Reason.EMPTY_MESSAGE, None, "the message has no value")
    if len(value) > rules.max_event_bytes:
        return Rejected(Reason.TOO_LARGE, None,
                        f"the event is {len(value)} bytes; the limit is {rules.max_event_bytes} "
                        "(ingest.max_event_bytes)")
    if key is not None:
        try:
            key.decode()
        except UnicodeDecodeError as exc:
            return Rejected(Reason.INVALID_KEY, None,
                            f"the message key is not UTF-8 ({exc.reason} at byte {exc.start})")
    if (depth := depth_over(value)) is not None:  # before the decoder recurses into it
        return too_deep(depth)
    try:
        obj = _json_decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        try:
            value.decode()
        except UnicodeDecodeError as uexc:
            return Rejected(Reason.INVALID_UTF8, None,
                            f"the message is not UTF-8 ({uexc.reason} at byte {uexc.start})")
        return Rejected(Reason.MALFORMED_JSON, None, f"the message is not valid JSON: {exc}")
    if type(obj) is not dict:
        return Rejected(Reason.NOT_AN_OBJECT, None, f"the message is a JSON {_type_name(obj)}, not an object")
    return obj


def from_row(project: int, row: dict[str, Any]) -> Normalized:
    """The event of an export row built earlier by ``normalize`` (a mirror INSERT's, kept as its row), with the
    fields normalize gave it: the same dedupe key, upload time and uuid."""
    device_id, user_id, insert_id = row.get("device_id"), row.get("user_id"), row.get("$insert_id")
    dedupe_key = (b"%d\x00%s\x00%s" % (project, (device_id or "").encode(), insert_id.encode())
                  if insert_id else b"")
    return Normalized(project, dedupe_key, parse_ms(row["server_upload_time"]),
                      bytes.fromhex(row["uuid"].replace("-", "")), _json_encode(row), device_id, user_id)


def normalize(obj: dict[str, Any], project: int, timestamp_ms: int, origin: str,
              rules: Rules, now_ms: int | None = None) -> Normalized | Rejected:
    """Validate one decoded event and build its export row.

    ``timestamp_ms`` stamps server_received_time and server_upload_time when the
    event has none (the record's timestamp, so a replay stamps the same time);
    ``origin`` names the source coordinates (``topic/partition/offset``) from which
    the uuid is derived when the event has none. ``now_ms``, the ingest clock, replaces server times ahead of it
    by more than ``rules.max_clock_skew_ms`` (``clamp_server_time``); None stamps them as given.
    """
    try:
        return _fast_obj(obj, project, timestamp_ms, origin, rules, now_ms)
    except (msgspec.ValidationError, _NotFast, TypeError):   # TypeError: a nested object key JSON cannot write
        pass
    return _reference(obj, project, timestamp_ms, origin, rules, now_ms)


def _reference(obj: dict[str, Any], project: int, timestamp_ms: int, origin: str, rules: Rules,
               now_ms: int | None = None) -> Normalized | Rejected:
    """``normalize`` without its fast path: every input the fast path takes, it takes with the same answer, and it
    says why it refuses any other."""
    try:
        return _normalize(obj, project, timestamp_ms, origin, rules, now_ms)
    except _Bad as bad:
        return bad.rejected


def _normalize(obj: dict[str, Any], project: int, timestamp_ms: int, origin: str, rules: Rules,
               now_ms: int | None) -> Normalized:
    row = dict(_TEMPLATE)
    data: dict[str, Any] = {}
    revenue: dict[str, Any] | None = None
    fields = INPUT_FIELDS
    for k, v in obj.items():
        spec = fields.get(k)
        if spec is None:
            if not rules.keep_unknown_fields:
                raise _Bad(Reason.UNKNOWN_FIELD, k, f"{k!r} is not an event field (ingest.unknown_fields=keep "
                           "stores such values under data)")
            data[k] = v
            continue
        if v is None:
            continue
        kind, where, column = spec
        if where is Where.SPECIAL:
            continue  # read below
        v = _coerce(k, kind, v)
        if where is Where.COLUMN:
            row[column] = v
        elif where is Where.DATA:
            data[k] = v
        else:
            if revenue is None:
                revenue = {}
            revenue["$" + k] = v

    if data:
        data = {**{k: data[k] for k in _DATA_KEYS if k in data}, **data}
    if revenue:
        revenue = {"$" + k: revenue["$" + k] for k in _REVENUE_KEYS if "$" + k in revenue}
    if obj.get("version_name") is not None:  # version_name wins over app_version, whatever the key order
        row["version_name"] = obj["version_name"]

    event_type = obj.get("event_type")
    if event_type is None or event_type == "":
        raise _Bad(Reason.MISSING_EVENT_TYPE, "event_type", "event_type is missing or empty")
    event_type = _coerce("event_type", Kind.STR, event_type)
    user_id = _id("user_id", obj.get("user_id"), rules.min_id_length)
    device_id = _id("device_id", obj.get("device_id"), rules.min_id_length)
    if user_id is None and device_id is None:
        raise _Bad(Reason.MISSING_ID, "user_id", f"the event needs a user_id or a device_id of at least "
                   f"{rules.min_id_length} characters")
    insert_id = obj.get("insert_id")
    if insert_id is not None:
        insert_id = _coerce("insert_id", Kind.STR, insert_id) or None

    given_received = _time(obj, "server_received_time", timestamp_ms)
    given_uploaded = _time(obj, "server_upload_time", timestamp_ms)
    received = clamp_server_time(given_received, now_ms, rules.max_clock_skew_ms)
    uploaded = clamp_server_time(given_uploaded, now_ms, rules.max_clock_skew_ms)
    client_time = _time(obj, "time", received)

    uid = _uuid(obj.get("uuid"), origin)

    if revenue:
        props = row["event_properties"]
        row["event_properties"] = {**props, **revenue} if props else revenue
    received_s = format_ms(received)
    uploaded_s = received_s if uploaded == received else format_ms(uploaded)
    client_s = received_s if client_time == received else format_ms(client_time)
    row["$insert_id"] = insert_id
    row["app"] = project
    row["event_type"] = event_type
    row["user_id"] = user_id
    row["device_id"] = device_id
    row["client_event_time"] = client_s
    # We do not know the SDK's upload time: it is taken as the receive time, so
    # event_time = client_event_time + (server_received_time - client_upload_time)
    # = client_event_time (FORMATS.md §1.3).
    row["client_upload_time"] = received_s
    row["event_time"] = client_s
    row["server_received_time"] = received_s
    row["server_upload_time"] = uploaded_s
    row["processed_time"] = uploaded_s
    row["uuid"] = uuid_str(uid)
    row["data"] = data
    for k in ("event_properties", "user_properties", "group_properties", "groups"):
        if row[k] is None:
            row[k] = {}
    if row["session_id"] is None:
        row["session_id"] = -1
    try:
        line = _json_encode(row)
    except TypeError:   # an object key that is neither text nor a number (normalize takes any dict; JSON has none)
        key = next((k for k in row if _unwritable(row[k])), None)
        raise _Bad(Reason.INVALID_VALUE, key, f"{key or 'the event'} holds an object whose key is neither text "
                   "nor a number: give its keys as text") from None
    dedupe_key = (b"%d\x00%s\x00%s" % (project, (device_id or "").encode(), insert_id.encode())
                  if insert_id else b"")
    return Normalized(project, dedupe_key, uploaded, uid, line, device_id, user_id,
                      received != given_received or uploaded != given_uploaded)


def _unwritable(value: Any) -> bool:
    """Whether JSON cannot write ``value``: an object in it, at any depth, has a key that is neither text nor a
    number."""
    try:
        _json_encode(value)
    except TypeError:
        return True
    return False


def _uuid(u: Any, origin: str) -> bytes:
    if u is None:
        return uuid5_bytes(origin)
    try:
        return uuidlib.UUID(_coerce("uuid", Kind.STR, u)).bytes
    except ValueError:
        raise _Bad(Reason.INVALID_VALUE, "uuid", f"uuid {u!r} is not a UUID") from None


def _time(obj: dict[str, Any], key: str, default: int) -> int:
    v = obj.get(key)
    if v is None:
        return default
    ms = _coerce(key, Kind.INT, v)
    if not 0 <= ms <= MAX_TIME_MS:
        raise _Bad(Reason.INVALID_VALUE, key, f"{key} must be epoch milliseconds from 0 to {MAX_TIME_MS} "
                   f"(9999-12-31), got {ms}")
    return ms


# --- the fast path --------------------------------------------------------------
# msgspec checks every type in C; the row is built positionally in C. Any
# input the fast path does not take (a type error, a numeric string, an unknown
# key, a semantic check) goes through the reference path above, which either
# accepts it or says exactly why not. tests/unit/events check that both paths
# write the same bytes for every input the fast path takes.

_S = Annotated[str, msgspec.Meta(max_length=MAX_STRING)]
_N = int | float | None
_O = dict[str, Any] | None
"""A nested object is decoded and encoded again, as the reference path does, never copied through as raw text:
the text may be spelled in other ways (``{"a": 1}``, ``1.50``, ``"\\u00e9"``, a key twice) that the row must not
keep, and only a decode tells them apart (checking the text with a regex costs several times more)."""


class _Fast(msgspec.Struct, forbid_unknown_fields=True):
    event_type: _S | None = None
    user_id: _S | None = None
    device_id: _S | None = None
    insert_id: _S | None = None
    uuid: _S | None = None
    time: int | None = None
    server_received_time: int | None = None
    server_upload_time: int | None = None
    event_properties: _O = None
    user_properties: _O = None
    group_properties: _O = None
    groups: _O = None
    app_version: _S | None = None
    version_name: _S | None = None
    platform: _S | None = None
    os_name: _S | None = None
    os_version: _S | None = None
    device_brand: _S | None = None
    device_manufacturer: _S | None = None
    device_model: _S | None = None
    carrier: _S | None = None
    country: _S | None = None
    region: _S | None = None
    city: _S | None = None
    dma: _S | None = None
    language: _S | None = None
    library: _S | None = None
    ip: _S | None = None
    idfa: _S | None = None
    adid: _S | None = None
    location_lat: _N = None
    location_lng: _N = None
    event_id: int | None = None
    session_id: int | None = None
    price: _N = None
    quantity: int | None = None
    revenue: _N = None
    productId: _S | None = None
    revenueType: _S | None = None
    currency: _S | None = None
    idfv: _S | None = None
    android_id: _S | None = None
    android_app_set_id: _S | None = None
    user_agent: _S | None = None
    partner_id: _S | None = None
    plan: _O = None
    ingestion_metadata: _O = None
    extra: _O = None
    skip_user_properties_sync: bool | None = msgspec.field(default=None, name="$skip_user_properties_sync")


assert {f.encode_name for f in msgspec.structs.fields(_Fast)} == set(INPUT_FIELDS), "_Fast must mirror INPUT_FIELDS"


FAST_NESTING = 8
"""The deepest an object field's value (itself the first level) nests in the events ``_fast_decode`` takes: the
event nests one level more, within MAX_DEPTH, so the fast path needs no ``depth_over`` of the text (two scans of
it, a microsecond an event). A deeper event fails to decode and goes to the reference path, which checks."""
assert FAST_NESTING + 1 <= MAX_DEPTH + 1, "an event _fast_decode takes must be within depth_over's limit"


def _nested_type(levels: int) -> Any:
    """The type of a JSON object nested at most ``levels`` levels, itself the first: what msgspec decodes as
    ``dict[str, Any]`` does (the same values), with a ValidationError one level deeper instead of recursing on.
    Its type tree doubles with each level (a list's and an object's values), so ``levels`` stays small."""
    value: Any = Union[str, int, float, bool, None]
    for _ in range(levels - 1):
        value = Union[str, int, float, bool, None, list[value], dict[str, value]]
    return dict[str, value]


_Nested = NewType("_Nested", _nested_type(FAST_NESTING))
"""A NewType, which msgspec reads as its type: the class's annotations are evaluated without walking its tree."""


class _FastText(_Fast):
    """``_Fast`` as ``_fast_decode`` reads it from JSON text: its object fields at most ``FAST_NESTING`` deep."""

    event_properties: _Nested | None = None
    user_properties: _Nested | None = None
    group_properties: _Nested | None = None
    groups: _Nested | None = None
    plan: _Nested | None = None
    ingestion_metadata: _Nested | None = None
    extra: _Nested | None = None


_fast_decode = msgspec.json.Decoder(_FastText).decode
_ROW_NAMES = tuple(f.replace("$", "dollar_") for f in EXPORT_FIELDS)
_Row = msgspec.defstruct("_Row", _ROW_NAMES, rename=dict(zip(_ROW_NAMES, EXPORT_FIELDS)))
"""The export row as a Struct: built positionally in C, encoded with its columns in order."""


class _NotFast(Exception):
    pass


def _fast(value: bytes, project: int, timestamp_ms: int, origin: str, rules: Rules, now_ms: int | None) -> Normalized:
    return _fast_row(_fast_decode(value), project, timestamp_ms, origin, rules, now_ms)


_fast_convert = partial(msgspec.convert, type=_Fast)
_FLOATS = ("location_lat", "location_lng", "price", "revenue")
"""The fields of a number kind: a decoded object's floats may be NaN or infinite, which msgspec.convert passes and
the reference path refuses (JSON text cannot hold them: msgspec's JSON decoder refuses them itself)."""


def _fast_obj(obj: dict[str, Any], project: int, timestamp_ms: int, origin: str, rules: Rules,
              now_ms: int | None) -> Normalized:
    """The fast path for an event already decoded (the S3 import's converted rows, rewritten API events): msgspec
    checks the types in C as it does for JSON text."""
    e = _fast_convert(obj)
    for v in (e.location_lat, e.location_lng, e.price, e.revenue):   # _FLOATS
        if type(v) is float and not math.isfinite(v):
            raise _NotFast
    return _fast_row(e, project, timestamp_ms, origin, rules, now_ms)


_INVALID_LENGTHS = frozenset(map(len, INVALID_IDS))
"""The lengths of the invalid ids: a text whose ``lower()`` is one of them (ASCII) has its length, as every
character whose lowercase is ASCII lowers to exactly one character (checked over all of Unicode by the tests)."""
_CASED_LENGTHS = frozenset(len(x) for x in INVALID_IDS if any(c.isalpha() for c in x))
"""The lengths of the invalid ids that have a letter: an id of another of their lengths (``_INVALID_LENGTHS``) is
one of them only as it is (a character lowers to an ASCII character that is not a letter only when it is that
character: checked over all of Unicode by the tests), so it is not lowered."""


_cached_second = _second_cache.get
"""``format_ms``'s cache of the seconds' text, read (its dict is cleared, never replaced)."""
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z").match
"""A uuid already written as ``str(uuid.UUID(...))`` writes it: kept as it is (parsing it costs 1.9 µs)."""


def _data(e: _Fast) -> dict[str, Any]:
    """The data column of an event that sets one of its fields (``_fast_row``)."""
    data: dict[str, Any] = {}
    if e.idfv is not None:
        data["idfv"] = e.idfv
    if e.android_id is not None:
        data["android_id"] = e.android_id
    if e.android_app_set_id is not None:
        data["android_app_set_id"] = e.android_app_set_id
    if e.user_agent is not None:
        data["user_agent"] = e.user_agent
    if e.partner_id is not None:
        data["partner_id"] = e.partner_id
    if e.plan is not None:
        data["plan"] = e.plan
    if e.ingestion_metadata is not None:
        data["ingestion_metadata"] = e.ingestion_metadata
    if e.extra is not None:
        data["extra"] = e.extra
    if e.skip_user_properties_sync is not None:
        data["$skip_user_properties_sync"] = e.skip_user_properties_sync
    return data


def _fast_row(e: _Fast, project: int, timestamp_ms: int, origin: str, rules: Rules,
              now_ms: int | None, uuid_s: str | None = None, write: _Writer | None = None,
              uuid_b: bytes | None = None) -> Normalized:
    """The export row of a decoded event; ``uuid_s`` (canonical) is the uuid of an event without one, when given,
    instead of ``uuid5(origin)``, and ``uuid_b``, when given with it, its 16 bytes. ``write``: the row's writer for
    events of ``fast_event_builder(keys)`` (``fast_row_writer(keys)``), which writes the same bytes as the ``_Row``
    below."""
    global _last_received
    if not e.event_type:
        raise _NotFast
    min_len = rules.min_id_length   # the ids as _id gives them, written out (no call an id)
    user_id = e.user_id
    if user_id is not None:
        n = len(user_id)   # looked up by its length first (_INVALID_LENGTHS, _CASED_LENGTHS)
        if n in _INVALID_LENGTHS and (user_id.lower() if n in _CASED_LENGTHS else user_id) in INVALID_IDS:
            raise _NotFast
        if n < min_len:
            user_id = None
    device_id = e.device_id
    if device_id is not None:
        n = len(device_id)
        if n in _INVALID_LENGTHS and (device_id.lower() if n in _CASED_LENGTHS else device_id) in INVALID_IDS:
            raise _NotFast
        if n < min_len:
            device_id = None
    if user_id is None and device_id is None:
        raise _NotFast
    received = timestamp_ms if e.server_received_time is None else e.server_received_time
    uploaded = timestamp_ms if e.server_upload_time is None else e.server_upload_time
    if not (0 <= received <= MAX_TIME_MS and 0 <= uploaded <= MAX_TIME_MS):
        raise _NotFast
    clamped = False
    if now_ms is not None:
        latest = now_ms + rules.max_clock_skew_ms
        if received > latest or uploaded > latest:   # clamp_server_time
            received = now_ms if received > latest else received
            uploaded = now_ms if uploaded > latest else uploaded
            clamped = True
    client_time = received if e.time is None else e.time
    if not 0 <= client_time <= MAX_TIME_MS:
        raise _NotFast
    if e.uuid is None:
        if uuid_s is None:
            uid_s = uuid5_str(origin)
            uuid_b = None
        else:
            uid_s = uuid_s
    else:
        uuid_b = None   # the event's own
        if _CANONICAL_UUID(e.uuid):
            uid_s = e.uuid
        else:
            try:
                uid_s = str(uuidlib.UUID(e.uuid))
            except ValueError:
                raise _NotFast from None
    insert_id = e.insert_id or None
    last = _last_received   # read once: a pair, never torn
    if received == last[0]:   # every event of a request (or of an import chunk) has the same received time
        received_s = last[1]
    else:
        received_s = format_ms(received)
        _last_received = (received, received_s)
    uploaded_s = received_s if uploaded == received else format_ms(uploaded)
    if client_time == received:
        client_s = received_s
    else:   # format_ms's text from its cache of seconds, without its call (and format_ms when not cached)
        second = client_time // 1000
        prefix = _cached_second(second)
        client_s = format_ms(client_time) if prefix is None else prefix + _FRACTIONS[client_time - second * 1000]

    if (e.idfv is None and e.android_id is None and e.android_app_set_id is None and e.user_agent is None
            and e.partner_id is None and e.plan is None and e.ingestion_metadata is None and e.extra is None
            and e.skip_user_properties_sync is None):
        data = _EMPTY   # the column's empty object, shared (only encoded)
    else:
        data = _data(e)
    props = e.event_properties
    if (e.price is not None or e.quantity is not None or e.revenue is not None or e.productId is not None
            or e.revenueType is not None or e.currency is not None):
        revenue = {}
        if e.price is not None:
            revenue["$price"] = e.price
        if e.quantity is not None:
            revenue["$quantity"] = e.quantity
        if e.revenue is not None:
            revenue["$revenue"] = e.revenue
        if e.productId is not None:
            revenue["$productId"] = e.productId
        if e.revenueType is not None:
            revenue["$revenueType"] = e.revenueType
        if e.currency is not None:
            revenue["$currency"] = e.currency
        props = {**props, **revenue} if props is not None else revenue

    if write is not None:
        line = write(e, insert_id, project, client_s, received_s, uploaded_s, data, device_id, props, user_id, uid_s)
        dedupe_key = (b"%d\x00%s\x00%s" % (project, (device_id or "").encode(), insert_id.encode())
                      if insert_id else b"")
        return _new(Normalized, (project, dedupe_key, uploaded,
                                 bytes.fromhex(uid_s.replace("-", "")) if uuid_b is None else uuid_b, line,
                                 device_id, user_id, clamped))
    # one positional argument per export column, in EXPORT_FIELDS order (the fast and reference paths are
    # compared byte for byte by the tests; _ROW_SOURCES says the same for fast_row_writer)
    row = _Row(
        insert_id, None, e.adid, None,                          # $insert_id $schema adid amplitude_attribution_ids
        project, e.city,                                        # app city
        client_s, received_s, e.country, data,                  # client_event_time client_upload_time country data
        e.device_brand, e.carrier, None, device_id,             # device_brand device_carrier device_family device_id
        e.device_manufacturer, e.device_model, None, e.dma,     # device_manufacturer device_model device_type dma
        e.event_id, props if props is not None else _EMPTY,     # event_id event_properties
        client_s, e.event_type,                                 # event_time event_type
        e.groups if e.groups is not None else _EMPTY,           # groups
        e.idfa, e.ip, None, e.language, e.library,              # idfa ip_address is_attribution_event language library
        e.location_lat, e.location_lng, e.os_name,              # location_lat location_lng os_name
        e.os_version, e.platform,                               # os_version platform
        e.region, None, received_s, uploaded_s,                 # region sample_rate server_received/upload_time
        e.session_id if e.session_id is not None else -1,       # session_id
        user_id, uid_s,                                         # user_id uuid
        e.version_name if e.version_name is not None else e.app_version,  # version_name
        # IDENTITY_FIELDS
        None, None,                                             # amplitude_event_type amplitude_id
        e.group_properties if e.group_properties is not None else _EMPTY,  # group_properties
        None, uploaded_s,                                       # paying processed_time
        None, None,                                             # start_version user_creation_time
        e.user_properties if e.user_properties is not None else _EMPTY,  # user_properties
    )
    buf = _row_buffer.buf
    _encode_into(row, buf)
    line = bytes(buf)
    dedupe_key = f"{project}\x00{device_id or ''}\x00{insert_id}".encode() if insert_id else b""
    return _new(Normalized, (project, dedupe_key, uploaded,
                             bytes.fromhex(uid_s.replace("-", "")) if uuid_b is None else uuid_b, line, device_id,
                             user_id, clamped))


FastEvent = _Fast
"""The fast path's decoded event (one attribute per input field; ``skip_user_properties_sync`` for
``$skip_user_properties_sync``)."""
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1


_SET_BY_CALLERS = ("insert_id", "uuid", "skip_user_properties_sync")
"""The fields of a built event its caller may set (the S3 import's ids and sync flag): reset by each build."""


def fast_event_builder(keys: tuple[str, ...], missing: object) -> Callable[[tuple[Any, ...]], _Fast | None] | None:
    """A function of the values of the input fields ``keys`` (``missing`` for one absent) that gives the event
    ``msgspec.convert`` gives of the dict of those fields (``_fast_obj``'s first step), or None when an input is
    one ``_fast_obj`` may not take: a value of another type than the field's, a string over ``MAX_STRING``
    characters, an integer beyond 64 bits, a float that is not finite, an object with a key that is not a string.
    For a caller whose events come as the same fields every time (the S3 import's converter output), with the
    checks written out for those fields (generated once): no dict of the fields, no ``msgspec.convert``. None when a
    key is not an input field or is given twice (such events go through ``normalize``).

    The event is the builder's own, filled again by each call (its fields of ``keys`` and ``_SET_BY_CALLERS``; the
    others stay None): use it before the next call, in one thread (0.65 µs an event less than a new Struct)."""
    names = {f.encode_name: f.name for f in msgspec.structs.fields(_Fast)}
    if not keys or len(set(keys)) != len(keys) or any(k not in names for k in keys):
        return None
    lines = ["def build(values):", *_checks(keys)]
    lines.append("    e = _e")
    lines.extend(f"    e.{names[k]} = v{i}" for i, k in enumerate(keys))
    lines.extend(f"    e.{name} = None" for name in _SET_BY_CALLERS if name not in {names[k] for k in keys})
    lines.append("    return e")
    env: dict[str, Any] = {"_M": missing, "_e": _Fast(), "_finite": math.isfinite, "_str_keys": _str_keys}
    exec(compile("\n".join(lines), "<fast_event_builder>", "exec"), env)   # noqa: S102 -- names of _Fast's fields
    return env["build"]


def _checks(keys: tuple[str, ...], text_keys: frozenset[str] = frozenset()) -> list[str]:
    """The lines of a generated function of ``values`` that check the values of the input fields ``keys`` as
    ``fast_event_builder`` says (returning None for one it does not take), leaving each in ``v<i>`` (None for one
    absent or null); an object of a field of ``text_keys`` is known to have text keys (its caller built it so)."""
    lines = [f"    {''.join(f'v{i}, ' for i in range(len(keys)))}= values"]
    for i, key in enumerate(keys):
        v = f"v{i}"
        lines.append(f"    if {v} is _M or {v} is None:")
        lines.append(f"        {v} = None")
        kind = INPUT_FIELDS[key][0]
        if kind is Kind.STR:
            lines.append(f"    elif type({v}) is not str or len({v}) > {MAX_STRING}:")
        elif kind is Kind.INT:
            lines.append(f"    elif type({v}) is not int or not {_INT_MIN} <= {v} <= {_INT_MAX}:")
        elif kind is Kind.NUM:
            lines.append(f"    elif not (type({v}) is int and {_INT_MIN} <= {v} <= {_INT_MAX} "
                         f"or type({v}) is float and _finite({v})):")
        elif kind is Kind.BOOL:
            lines.append(f"    elif type({v}) is not bool:")
        else:
            assert kind is Kind.DICT
            lines.append(f"    elif type({v}) is not dict:" if key in text_keys else
                         f"    elif type({v}) is not dict or not _str_keys({v}):")
        lines.append("        return None")
    return lines


def _str_keys(d: dict[Any, Any]) -> bool:
    for k in d:
        if type(k) is not str:
            return False
    return True


def normalize_fast_event(e: _Fast, project: int, timestamp_ms: int, rules: Rules, now_ms: int | None,
                         uuid_s: str, write: _Writer | None = None) -> Normalized | None:
    """``normalize`` of the dict whose ``msgspec.convert`` is ``e`` (``fast_event_builder``), when it takes the fast
    path, else None (the caller then normalizes the dict). An event without a uuid gets ``uuid_s`` (canonical).
    ``write``: ``fast_row_writer`` of the builder's keys, which writes the same row in less time."""
    try:
        return _fast_row(e, project, timestamp_ms, "", rules, now_ms, uuid_s, write)
    except (_NotFast, TypeError):   # TypeError: a nested object key JSON cannot write; the reference path says why
        return None


_Writer = Callable[..., bytes]
_ROW_SOURCES: tuple[tuple[str, str], ...] = (
    ("$insert_id", "insert_id"), ("$schema", "None"), ("adid", "e.adid"), ("amplitude_attribution_ids", "None"),
    ("app", "project"), ("city", "e.city"), ("client_event_time", "client_s"), ("client_upload_time", "received_s"),
    ("country", "e.country"), ("data", "data"), ("device_brand", "e.device_brand"), ("device_carrier", "e.carrier"),
    ("device_family", "None"), ("device_id", "device_id"), ("device_manufacturer", "e.device_manufacturer"),
    ("device_model", "e.device_model"), ("device_type", "None"), ("dma", "e.dma"), ("event_id", "e.event_id"),
    ("event_properties", "props if props is not None else {}"), ("event_time", "client_s"),
    ("event_type", "e.event_type"), ("groups", "e.groups if e.groups is not None else {}"), ("idfa", "e.idfa"),
    ("ip_address", "e.ip"), ("is_attribution_event", "None"), ("language", "e.language"), ("library", "e.library"),
    ("location_lat", "e.location_lat"), ("location_lng", "e.location_lng"), ("os_name", "e.os_name"),
    ("os_version", "e.os_version"), ("platform", "e.platform"), ("region", "e.region"), ("sample_rate", "None"),
    ("server_received_time", "received_s"), ("server_upload_time", "uploaded_s"),
    ("session_id", "e.session_id if e.session_id is not None else -1"), ("user_id", "user_id"), ("uuid", "uid_s"),
    ("version_name", "e.version_name if e.version_name is not None else e.app_version"),
    ("amplitude_event_type", "None"), ("amplitude_id", "None"),
    ("group_properties", "e.group_properties if e.group_properties is not None else {}"), ("paying", "None"),
    ("processed_time", "uploaded_s"), ("start_version", "None"), ("user_creation_time", "None"),
    ("user_properties", "e.user_properties if e.user_properties is not None else {}"),
)
"""Each export column as ``_fast_row`` fills it (its ``_Row(...)`` call, in the same order), over its locals."""
assert tuple(c for c, _ in _ROW_SOURCES) == EXPORT_FIELDS, "_ROW_SOURCES must follow EXPORT_FIELDS"
_WRITER_ARGS = ("e", "insert_id", "project", "client_s", "received_s", "uploaded_s", "data", "device_id", "props",
                "user_id", "uid_s")
_TIMES = ("client_s", "received_s", "uploaded_s")
"""_fast_row's locals that are always ``format_ms`` text (digits, "-", " ", ":" and "."): written without escaping."""
_PROPS_FIELDS = frozenset(("event_properties", "price", "quantity", "revenue", "productId", "revenueType", "currency"))
"""The event's fields ``_fast_row``'s ``props`` is made of."""


def _row_join(given: set[str], field: Callable[[str], str], raw: tuple[str, ...] = _TIMES) -> tuple[str, str]:
    """The export row as generated code over ``_fast_row``'s locals (``_WRITER_ARGS``): the lines that encode the
    times it writes, and a ``b"".join`` of the row's bytes, the columns that read none of the event's fields
    ``given`` (and no local but ``props`` without them) written as constants, ``e.<name>`` of a field read as
    ``field(name)``, and the locals ``raw`` (text JSON writes as it is: the times, and the row maker's ids) as
    ``"<local>_b"`` between quotes."""
    pieces: list[str] = []      # the join's arguments: constant bytes (repr) and expressions
    text = ""                   # constant JSON not yet added to pieces
    for i, (column, source) in enumerate(_ROW_SOURCES):
        text += ("{" if i == 0 else ",") + _json_encode(column).decode() + ":"
        reads = set(re.findall(r"\be\.(\w+)", source))
        words = set(re.findall(r"\b[a-z_]+\b", source)) & set(_WRITER_ARGS[1:])
        if words == {"props"}:
            constant = not reads and not (given & _PROPS_FIELDS)
        else:
            constant = not words and not (reads & given)
        if constant:
            value = eval(source, {"e": _Fast(), "props": None})   # noqa: S307 -- _ROW_SOURCES' own expressions
            text += _json_encode(value).decode()
            continue
        if source in raw:
            text += '"'
            pieces.extend((repr(text.encode()), f"{source}_b"))
            text = '"'
        else:
            expr = re.sub(r"\be\.(\w+)", lambda m: field(m.group(1)) if m.group(1) in given else "None", source)
            pieces.extend((repr(text.encode()), f"_enc({expr})"))
            text = ""
    pieces.append(repr((text + "}").encode()))
    times = "".join(f"    {t}_b = {t}.encode()\n" for t in _TIMES if f"{t}_b" in pieces)
    return times, f"b''.join(({', '.join(pieces)}))"


def fast_row_writer(keys: tuple[str, ...]) -> _Writer | None:
    """The export row's writer for the events of ``fast_event_builder(keys, ...)`` (``_fast_row``'s ``write``): the
    same bytes as ``_Row``'s encoding, with the columns those events always leave empty written once, here, and
    the others encoded each call (a 49-column Struct built and encoded costs about 0.8 µs more). None where the
    builder is None."""
    names = {f.encode_name: f.name for f in msgspec.structs.fields(_Fast)}
    if not keys or len(set(keys)) != len(keys) or any(k not in names for k in keys):
        return None
    given = {names[k] for k in keys} | set(_SET_BY_CALLERS)   # the event's fields a call may find set
    times, join = _row_join(given, lambda name: f"e.{name}")
    code = f"def write({', '.join(_WRITER_ARGS)}):\n{times}    return {join}\n"
    env: dict[str, Any] = {"_enc": _json_encode}
    exec(compile(code, "<fast_row_writer>", "exec"), env)   # noqa: S102 -- _ROW_SOURCES' own expressions
    return env["write"]


_DATA_FIELDS = ("idfv", "android_id", "android_app_set_id", "user_agent", "partner_id", "plan", "ingestion_metadata",
                "extra")
"""The fields ``_fast_row`` keeps under ``data``, in its order (``$skip_user_properties_sync`` after them)."""
_REVENUE_FIELDS = ("price", "quantity", "revenue", "productId", "revenueType", "currency")
"""The fields ``_fast_row`` adds to ``event_properties`` with a ``$``, in its order."""
_CALLER_FIELDS = ("insert_id", "uuid", "$skip_user_properties_sync")
_Maker = Callable[[tuple[Any, ...], int, int, Rules, "int | None", bytes, bytes, bytes, bool], "Normalized | None"]


def fast_row_maker(keys: tuple[str, ...], missing: object, sync_except: tuple[str, ...]) -> _Maker | None:
    """``fast_event_builder(keys, missing)``, the ids and sync flag set on its event, then ``normalize_fast_event``
    with ``fast_row_writer(keys)``, as one function generated for those fields (the fields not among them known to
    be None: no Struct filled and read, no checks of fields that never come): ``make(values, project, timestamp_ms,
    rules, now_ms, insert_id_b, uid_s_b, uuid, sync)`` gives the same ``Normalized``, or None where either of the
    two gives None, for an event whose insert_id is the text of the bytes ``insert_id_b`` (not empty, and written
    in JSON as it is: ASCII without a quote, a backslash or a control character, such as a uuid's text), whose uuid
    is the canonical text ``uid_s_b`` (bytes) of the 16 bytes ``uuid``, and whose ``$skip_user_properties_sync``
    is true when ``sync`` and its event_type is none of ``sync_except``, else absent (``uuid5_many`` gives the
    ids' text and bytes of a chunk of rows at once). None (use the builder) where the builder is None or ``keys``
    holds insert_id, uuid, ``$skip_user_properties_sync`` or no event_type."""
    code = fast_row_maker_code(keys, missing, sync_except)
    if code is None:
        return None
    setup, body, env = code
    lines = ["def make(values, project, timestamp_ms, rules, now_ms, insert_id_b, uid_s_b, uuid, sync):", *setup,
             *body]
    exec(compile("\n".join(lines), "<fast_row_maker>", "exec"), env)   # noqa: S102 -- names of _Fast's fields
    return env["make"]


def fast_row_maker_code(keys: tuple[str, ...], missing: object, sync_except: tuple[str, ...],
                        text_keys: frozenset[str] = frozenset(),
                        ) -> tuple[list[str], list[str], dict[str, Any]] | None:
    """The code of ``fast_row_maker``'s function (lines indented by four spaces, over its arguments) and the names
    it reads, for a caller that writes it into a function of its own (the import's loop over a chunk's rows,
    ``stream.imports.rows``): its setup, lines of ``project`` and ``rules`` alone (a loop runs them once), and its
    body, which declines an event by a line ``return None`` alone and whose last line returns the ``Normalized``
    (``return _new(...)``), its export row in the local ``line``. None where ``fast_row_maker`` is. An object
    value of a field of ``text_keys`` is taken to have only text keys, unchecked: for a caller that builds those
    objects with keys of its own (the converter's objects of the output)."""
    names = {f.encode_name: f.name for f in msgspec.structs.fields(_Fast)}
    if (not keys or len(set(keys)) != len(keys) or any(k not in names for k in keys)
            or any(k in keys for k in _CALLER_FIELDS) or "event_type" not in keys):
        return None
    var = {names[k]: f"v{i}" for i, k in enumerate(keys)}

    def f(name: str) -> str:
        return var.get(name, "None")

    setup = ["    min_len = rules.min_id_length", "    project_b = _enc(project)",
             "    project_nul = f'{project}\\x00'"]
    lines = _checks(keys, text_keys)
    add = lines.append
    add(f"    if not {f('event_type')}:")
    add("        return None")
    for name in ("user_id", "device_id"):   # _fast_row's ids
        add(f"    {name} = {f(name)}")
        if name in var:
            add(f"    if {name} is not None:")   # an id of another length cannot be one (see _INVALID_LENGTHS)
            add(f"        id_len = len({name})")   # as _fast_row looks an id up
            add(f"        if id_len in _INVALID_LENGTHS and ({name}.lower() if id_len in _CASED_LENGTHS else {name}) "
                "in _INVALID_IDS:")
            add("            return None")
            add(f"        if len({name}) < min_len:")
            add(f"            {name} = None")
    add("    if user_id is None and device_id is None:")
    add("        return None")
    for local, name in (("received", "server_received_time"), ("uploaded", "server_upload_time")):
        add(f"    {local} = timestamp_ms" + (f" if {var[name]} is None else {var[name]}" if name in var else ""))
    add(f"    if not (0 <= received <= {MAX_TIME_MS} and 0 <= uploaded <= {MAX_TIME_MS}):")
    add("        return None")
    add("    clamped = False")
    add("    if now_ms is not None:")
    add("        latest = now_ms + rules.max_clock_skew_ms")
    add("        if received > latest or uploaded > latest:")
    add("            received = now_ms if received > latest else received")   # clamp_server_time
    add("            uploaded = now_ms if uploaded > latest else uploaded")
    add("            clamped = True")
    add("    client_time = received" + (f" if {var['time']} is None else {var['time']}" if "time" in var else ""))
    add(f"    if not 0 <= client_time <= {MAX_TIME_MS}:")
    add("        return None")
    # the times' text as bytes (_row_join's <time>_b), format_ms's: the received time's kept from the last event
    # (a chunk's rows share it), a client time's second found in timefmt's cache of them and its milliseconds'
    # text in _FRACTIONS_B
    add("    last = _last[0]")
    add("    if received == last[0]:")
    add("        received_s_b = last[1]")
    add("    else:")
    add("        received_s_b = _format_b(received)")
    add("        _last[0] = (received, received_s_b)")
    add("    uploaded_s_b = received_s_b if uploaded == received else _format_b(uploaded)")
    add("    if client_time == received:")
    add("        client_s_b = received_s_b")
    add("    else:")
    add("        second = client_time // 1000")
    add("        client_s_b = (_seconds.get(second) or _second_b(second)) + _FRACTIONS_B[client_time - second * 1000]")
    data_given = [name for name in _DATA_FIELDS if name in var]
    if data_given:
        add("    data = {}")
        for name in data_given:
            add(f"    if {var[name]} is not None:")
            add(f"        data[{name!r}] = {var[name]}")
        add(f"    if sync and {var['event_type']} not in _SYNC_EXCEPT:")
        add("        data['$skip_user_properties_sync'] = True")
    else:   # the data column is one of two constants
        add(f"    data_b = {_json_encode({'$skip_user_properties_sync': True})!r} "
            f"if sync and {var['event_type']} not in _SYNC_EXCEPT else b'{{}}'")
    add(f"    props = {f('event_properties')}")
    revenue = [name for name in _REVENUE_FIELDS if name in var]
    if revenue:
        add(f"    if {' or '.join(f'{var[name]} is not None' for name in revenue)}:")
        add("        revenue = {}")
        for name in revenue:
            add(f"        if {var[name]} is not None:")
            add(f"            revenue[{'$' + name!r}] = {var[name]}")
        add("        props = {**props, **revenue} if props is not None else revenue")
    _, join = _row_join(set(var), f, _TIMES + ("insert_id", "uid_s"))     # the times' and ids' bytes are above
    if not data_given:
        if join.count("_enc(data)") != 1:   # a check that -O keeps: the row's data column is written once
            raise RuntimeError("the row maker's join writes the data column other than once: check _row_join")
        join = join.replace("_enc(data)", "data_b")
    if join.count("_enc(project)") != 1:
        raise RuntimeError("the row maker's join writes the app column other than once: check _row_join")
    add("    try:")
    add(f"        line = {join.replace('_enc(project)', 'project_b')}")
    add("    except TypeError:   # an object key, at any depth, JSON cannot write: the reference path says which")
    add("        return None")
    add("    dedupe_key = f'{project_nul}{device_id or \"\"}\\x00'.encode() + insert_id_b")
    add("    return _new(_Normalized, (project, dedupe_key, uploaded, uuid, line, device_id, user_id, clamped))")
    env: dict[str, Any] = {"_M": missing, "_finite": math.isfinite, "_str_keys": _str_keys, "_enc": _json_encode,
                           "_INVALID_IDS": INVALID_IDS, "_INVALID_LENGTHS": _INVALID_LENGTHS,
                           "_CASED_LENGTHS": _CASED_LENGTHS, "_format_b": format_ms_bytes, "_last": [(None, b"")],
                           "_seconds": _second_bytes, "_second_b": second_bytes, "_FRACTIONS_B": _FRACTIONS_B,
                           "_SYNC_EXCEPT": tuple(sync_except), "_new": tuple.__new__, "_Normalized": Normalized}
    return setup, lines, env


_last_received: tuple[int | None, str] = (None, "")
"""The last received time _fast_row formatted, and its text."""
_new = tuple.__new__
"""``Normalized(...)`` without the Python-level ``__new__`` of a NamedTuple (0.25 µs an event)."""


def _is_utf8(b: bytes) -> bool:
    """Whether ``b`` is UTF-8 text (a message key the fast path may take)."""
    try:
        b.decode()
    except UnicodeDecodeError:
        return False
    return True


REMOTE_IP = "$remote"
"""An ``ip`` that asks for the address the request came from (Amplitude's HTTP API)."""
SERVER_TIMES = ("server_received_time", "server_upload_time")


def normalize_stamped(value: bytes, project: int, timestamp_ms: int, origin: str, rules: Rules,
                      remote_ip: str | None = None, uuid_s: str | None = None) -> Normalized | Rejected:
    """``normalize_message`` of an event the server stamps, without a key: the HTTP API's events. An event nested
    past MAX_DEPTH is rejected as ``decode`` rejects it (the API checks the depth of the events the fast path
    declines itself, so that a too-deep event is told so before it is told it is too large). Whatever the event
    carries under server_received_time and server_upload_time (however the key is spelled in JSON, whatever the
    value) is dropped, so both are ``timestamp_ms``; ``"ip": "$remote"`` becomes ``remote_ip`` (dropped when None). An
    event without a uuid gets ``uuid_s`` (canonical) when given, else ``uuid5(origin)``."""
    got = stamped_fast(value, project, timestamp_ms, origin, rules, remote_ip, uuid_s)
    if got is not None:
        return got
    return stamped_reference(value, project, timestamp_ms, origin, rules, remote_ip, uuid_s)


def stamped_fast(value: bytes, project: int, timestamp_ms: int, origin: str, rules: Rules,
                 remote_ip: str | None = None, uuid_s: str | None = None) -> Normalized | None:
    """``normalize_stamped``'s fast path: its answer, or None where the fast path declines (then
    ``stamped_reference`` answers). It needs no depth checked first: an event it takes nests at most
    ``FAST_NESTING`` + 1 levels, within MAX_DEPTH, and it declines any deeper one (the API checks the depth of
    those alone)."""
    if value and len(value) <= rules.max_event_bytes:
        try:
            e = _fast_decode(value)
        except (msgspec.MsgspecError, UnicodeDecodeError):
            return None
        e.server_received_time = e.server_upload_time = None
        if e.ip == REMOTE_IP:
            e.ip = remote_ip or None
        if e.ip is None or len(e.ip) <= MAX_STRING:   # a forwarded address over the limit: rejected below
            try:
                return _fast_row(e, project, timestamp_ms, origin, rules, None, uuid_s)
            except _NotFast:
                pass
    return None


def stamped_reference(value: bytes, project: int, timestamp_ms: int, origin: str, rules: Rules,
                      remote_ip: str | None = None, uuid_s: str | None = None) -> Normalized | Rejected:
    """``normalize_stamped`` without its fast path (``decode`` checks the event's depth)."""
    obj = decode(value, None, rules)
    if isinstance(obj, Rejected):
        return obj
    for k in SERVER_TIMES:
        obj.pop(k, None)
    if obj.get("ip") == REMOTE_IP:
        if remote_ip:
            obj["ip"] = remote_ip
        else:
            del obj["ip"]
    if uuid_s is not None and obj.get("uuid") is None:
        obj["uuid"] = uuid_s
    return _reference(obj, project, timestamp_ms, origin, rules)


def normalize_message(value: bytes | None, key: bytes | None, project: int, timestamp_ms: int, origin: str,
                      rules: Rules, now_ms: int | None = None, uuid_s: str | None = None,
                      uuid_b: bytes | None = None) -> Normalized | Rejected:
    """One raw message -> its export row or why it was rejected (see ``normalize``). ``uuid_s`` and ``uuid_b``,
    when given, must be ``uuid5_str(origin)`` and its 16 bytes (``uuid5_strs`` makes a poll's at once): an event
    without a uuid takes them instead of hashing ``origin``."""
    if value and len(value) <= rules.max_event_bytes and (key is None or key.isascii() or _is_utf8(key)):
        # _fast_decode refuses an event nested past FAST_NESTING (a ValidationError, before it recurses further):
        # decode checks its depth
        try:
            return _fast_row(_fast_decode(value), project, timestamp_ms, origin, rules, now_ms, uuid_s, None,
                             uuid_b)   # _fast
        except (msgspec.MsgspecError, UnicodeDecodeError, _NotFast):
            pass
    obj = decode(value, key, rules)
    if isinstance(obj, Rejected):
        return obj
    return _reference(obj, project, timestamp_ms, origin, rules, now_ms)
