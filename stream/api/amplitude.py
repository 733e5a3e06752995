"""Amplitude HTTP V2 (/2/httpapi) and Batch (/batch) requests: parsing, validation, response bodies (pure).

Request body (FORMATS.md §2.1): ``{"api_key": ..., "events": [...], "options": {"min_id_length": n}}``. The
envelope is read in one msgspec pass into the raw bytes of each event, which go through ``normalize_stamped`` (the
ingest stage's validator, its fast path included, with the server's times and the client's address; its two
halves, ``stamped_fast`` and ``stamped_reference``) without ever being decoded into dicts here.

A request is accepted or rejected whole, as Amplitude's documented 400 says ("Invalid field values on some
events") and as its official SDKs expect: on a 400 that lists event indexes, amplitude-analytics drops the
listed events and sends the others again in a new request, so accepting them now would store them twice
(without insert_id) or make the SDK's retry carry events the server already holds.

Response bodies are Amplitude's (FORMATS.md §2.3); error bodies add a ``detail`` sentence naming the event
index and field, which the SDKs ignore.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from stream.events.depth import MAX_DEPTH, depth_over
from stream.events.normalize import (
    Normalized,
    Reason,
    Rejected,
    Rules,
    stamped_fast,
    stamped_reference,
    too_deep,
)

ERR_PATH = "Invalid request path"
ERR_NO_BODY = "Missing request body"
ERR_JSON = "Invalid JSON request body"
ERR_MISSING = "Request missing required field"
ERR_EVENT_JSON = "Invalid event JSON"
ERR_API_KEY = "Invalid API key"
ERR_FIELDS = "Invalid field values on some events"
ERR_TOO_LARGE = "Payload too large"
ERR_THROTTLED = "Too many requests for some devices and users"

EVENT_FIELD = "event"
"""The field named in events_with_invalid_fields when the event itself is unreadable (not UTF-8, not JSON, not an
object, too large)."""

_MISSING_REASONS = (Reason.MISSING_EVENT_TYPE, Reason.MISSING_ID)
_DEPTH_LIMIT = MAX_DEPTH + 1   # depth_over's default limit


@dataclass(frozen=True)
class ApiError:
    """A request answered before (or instead of) producing anything: status and JSON body."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    auth_failure: bool = False   # refused for its credential (missing or unknown): counts against the address


def error(status: int, message: str, detail: str, **extra: Any) -> ApiError:
    return ApiError(status, {"code": status, "error": message, **extra, "detail": detail})


def too_large(detail: str) -> ApiError:
    return error(413, ERR_TOO_LARGE, detail)


@dataclass(frozen=True)
class AmplitudeRequest:
    api_key: str
    events: list[msgspec.Raw]
    min_id_length: int | None


class _Envelope(msgspec.Struct):
    """A body as most requests send it, read in one pass: anything else (a missing or empty key, no events, a value
    of another type) is read again the long way, which says why."""

    api_key: str = ""
    events: list[msgspec.Raw] = []
    options: dict[str, Any] | None = None


_envelope = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_events = msgspec.json.Decoder(list[msgspec.Raw]).decode
_any = msgspec.json.Decoder().decode
_one_pass = msgspec.json.Decoder(_Envelope).decode


def parse(body: bytes, max_events: int) -> AmplitudeRequest | ApiError:
    """The request's API key, raw events and min_id_length, or the 400/413 that answers it.

    The body is read in one pass (``_Envelope``); whatever that pass does not take is read again as an object of
    raw values, then its events as an array of raw events, to say what is wrong with it."""
    try:
        env = _one_pass(body)
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        pass
    else:
        min_id = env.options.get("min_id_length") if env.options is not None else None
        if env.api_key and 0 < len(env.events) <= max_events and (
                min_id is None or (type(min_id) is int and min_id >= 1)):
            return AmplitudeRequest(env.api_key, env.events, min_id)
    return parse_slowly(body, max_events)


def parse_slowly(body: bytes, max_events: int) -> AmplitudeRequest | ApiError:
    """``parse`` without its one pass: the body as an object of raw values, then its events as an array of raw
    events, each step saying what is wrong (the same answer as ``parse`` for every body)."""
    if not body.strip():
        return error(400, ERR_NO_BODY, "the request has no body; send {\"api_key\": ..., \"events\": [...]}")
    try:
        return _parse(_envelope(body), max_events)
    except RecursionError:   # nested past the decoder's stack: not an Amplitude body (events nest at most 40 deep)
        return error(400, ERR_JSON, "the body nests objects and arrays too deeply to be read; events may nest at "
                     f"most {MAX_DEPTH} levels deep")
    except msgspec.ValidationError:
        return error(400, ERR_JSON, "the body must be a JSON object: {\"api_key\": ..., \"events\": [...]}")
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        try:
            body.decode()
        except UnicodeDecodeError as u:
            return error(400, ERR_JSON, f"the body is not UTF-8 ({u.reason} at byte {u.start}); send JSON "
                         "encoded as UTF-8")
        return error(400, ERR_JSON, f"the body is not valid JSON: {exc}")


def _parse(env: dict[str, msgspec.Raw], max_events: int) -> AmplitudeRequest | ApiError:
    key = _decode_or_none(env.get("api_key"))
    if key is None or key == "":
        return replace(error(400, ERR_MISSING, "api_key is missing: put the project's API key in the body's api_key",
                             missing_field="api_key"), auth_failure=True)
    if type(key) is not str:   # shown masked like a key, but never str() of a list or object (it may nest deep)
        shown = mask(str(key)) if type(key) in (int, float, bool) else mask("")
        return replace(error(400, f"{ERR_API_KEY}: {shown}", "api_key must be a string"), auth_failure=True)
    raw_events = env.get("events")
    if raw_events is None or bytes(raw_events) == b"null":
        return error(400, ERR_MISSING, "events is missing: send the events as an array under \"events\"",
                     missing_field="events")
    try:
        events = _events(raw_events)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return error(400, ERR_JSON, "events must be an array of event objects")
    if not events:
        return error(400, ERR_MISSING, "events is empty: send at least one event", missing_field="events")
    if len(events) > max_events:
        return too_large(f"the request holds {len(events)} events; the limit is {max_events} per request "
                         "(api.amplitude_max_events): split them into smaller requests")
    min_id: int | None = None
    if "options" in env:
        options = _decode_or_none(env["options"])
        if options is not None:
            if type(options) is not dict:
                return error(400, ERR_JSON, "options must be an object such as {\"min_id_length\": 5}")
            min_id = options.get("min_id_length")
            if min_id is not None and (type(min_id) is not int or min_id < 1):
                return error(400, ERR_JSON, "options.min_id_length must be a positive integer")
    return AmplitudeRequest(key, events, min_id)


def _decode_or_none(raw: msgspec.Raw | None) -> Any:
    return None if raw is None else _any(raw)


def mask(key: str) -> str:
    """Enough of a key to recognise it in a log, not enough to use it."""
    return key[:4] + "…" if len(key) > 4 else "…"


def unknown_key(key: str) -> ApiError:
    # amplitude-analytics stops retrying (and drops the events) on an error starting "Invalid API key:"
    return replace(error(400, f"{ERR_API_KEY}: {mask(key)}", "no project has this API key (projects[].api_keys); "
                         "check the key the SDK is initialised with"), auth_failure=True)


ERR_AUTH_LIMITED = "Too many failed authentications from this address"


def auth_limited_detail(retry_after_s: int, max_failures: int, window_s: float) -> str:
    return (f"this address sent {max_failures} requests with a missing or unknown key within {window_s:g}s, the "
            "most allowed (api.max_failed_auth per api.failed_auth_window_s); nothing of the request was stored: "
            f"fix the key, then send it again after {retry_after_s} seconds (Retry-After)")


def auth_limited(retry_after_s: int, max_failures: int, window_s: float, events: int) -> ApiError:
    """The 429 for an address over the failed-authentication limit, before its key is compared. Every event is
    listed as throttled, so amplitude-analytics sends them again after 30 s rather than at once."""
    extra = {"throttled_events": list(range(events))} if events else {}
    return ApiError(429, {"code": 429, "error": ERR_AUTH_LIMITED, **extra,
                          "detail": auth_limited_detail(retry_after_s, max_failures, window_s)},
                    {"Retry-After": str(retry_after_s)})


@dataclass
class Validated:
    accepted: list[Normalized]
    rejected: list[tuple[int, Rejected]]   # (event index, why)


def request_nonce() -> str:
    """A fresh random name for this request's events: their uuids derive from it, so an SDK's retry of the same
    events gets new uuids (it is a new occurrence; dedupe recognises it by insert_id)."""
    return "http/" + secrets.token_hex(16)


_UUID_TAIL = (1 << 48) - 1


class EventUuids:
    """The uuids of a request's events that carry none: the SHA-1 of the request's nonce, once, gives a random
    version-4 uuid, and event ``i`` gets it with ``i`` added to its last 48 bits (distinct within a request of fewer
    than 2**48 events; 74 random bits apart from any other request's). One hash a request instead of one an
    event: nothing derives these uuids again (dedupe goes by insert_id), so only their freshness matters."""

    __slots__ = ("head", "tail")

    def __init__(self, nonce: str):
        h = hashlib.sha1(nonce.encode()).hexdigest()
        self.head = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-"   # version 4, RFC 4122
        self.tail = int(h[20:32], 16)

    def __call__(self, i: int) -> str:
        return f"{self.head}{(self.tail + i) & _UUID_TAIL:012x}"


def validate(events: Sequence[msgspec.Raw], project: int, received_ms: int, nonce: str, rules: Rules,
             client_ip: str | None = None, start: int = 0, stop: int | None = None,
             into: Validated | None = None) -> Validated:
    """Normalize every event with the ingest stage's rules, stamping the request's receive time.

    ``server_received_time``/``server_upload_time`` are the server's to set: values an event carries are
    replaced by the receive time. Events without a ``uuid`` get ``EventUuids(nonce)(index)``, random per
    request. ``"ip": "$remote"`` becomes ``client_ip`` (Amplitude: use the request's address).

    ``start``/``stop``: only the events ``events[start:stop]`` (indexes counted in ``events``), added to ``into``:
    a request validated slice after slice into one ``Validated`` gets what one call over it gives.
    """
    out = Validated([], []) if into is None else into
    accept, reject = out.accepted.append, out.rejected.append
    uuids = EventUuids(nonce)
    for i, raw in enumerate(events[start:stop] if start or stop is not None else events, start):
        value = bytes(raw)
        uuid_s = uuids(i)
        # the fast path first: an event it takes nests within the limit (it decodes no deeper), so only the events
        # it declines have their depth checked (depth_over, its own first test inline: an event with fewer
        # brackets than the limit cannot nest past it), before the reference path, as normalize_stamped asks
        res: Normalized | Rejected | None = stamped_fast(value, project, received_ms, "", rules, client_ip, uuid_s)
        if res is None:
            if value.count(b"{") + value.count(b"[") > _DEPTH_LIMIT and (depth := depth_over(value)) is not None:
                reject((i, too_deep(depth)))
                continue
            res = stamped_reference(value, project, received_ms, "", rules, client_ip, uuid_s)
        if type(res) is Normalized:
            accept(res)
        else:
            reject((i, res))
    return out


def invalid_body(rejected: Sequence[tuple[int, Rejected]], shown: int = 5) -> ApiError:
    """The 400 naming every rejected event by index under its field, as Amplitude's body does."""
    invalid: dict[str, list[int]] = {}
    missing: dict[str, list[int]] = {}
    for i, r in rejected:
        target = missing if r.reason in _MISSING_REASONS else invalid
        target.setdefault(r.field or EVENT_FIELD, []).append(i)
    unreadable = EVENT_FIELD in invalid and all(r.field is None for _, r in rejected)
    message = ERR_EVENT_JSON if unreadable else ERR_FIELDS if invalid else ERR_MISSING
    body: dict[str, Any] = {"code": 400, "error": message}
    if invalid:
        body["events_with_invalid_fields"] = invalid
    if missing:
        body["events_with_missing_fields"] = missing
    parts = [f"events[{i}]{'.' + r.field if r.field else ''}: {r.detail}" for i, r in rejected[:shown]]
    more = f" (and {len(rejected) - shown} more)" if len(rejected) > shown else ""
    body["detail"] = "; ".join(parts) + more + ". No event of this request was stored: fix or drop the listed " \
        "events and send the others again"
    return ApiError(400, body)


def success_body(events: int, payload_bytes: int, upload_ms: int) -> dict[str, Any]:
    return {"code": 200, "events_ingested": events, "payload_size_bytes": payload_bytes,
            "server_upload_time": upload_ms}
