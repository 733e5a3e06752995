"""Segment tracking-API requests (/v1/track ... /v1/batch): write key, parsing, limits, response bodies (pure).

Status codes follow Segment (FORMATS.md §3.1): 200 for a readable request, whatever its messages; 400 for a body
that is not JSON or too large. A message Segment would not accept (no userId/anonymousId, a track without event,
over 32 KB, ...) does not fail its request: the others are stored, it goes to the dead-letter topic, and the 200
body lists it. One departure: a missing or unknown write key answers 401 with a JSON body (Segment accepts the
request and drops the data, which hides a misconfigured SDK).

Bodies: ``{"success": true}`` when every message was stored (Segment's own 200 body is unverified; its SDKs
check the status only); with rejected messages also ``accepted``, ``rejected`` and ``errors`` (the first 20).
Errors are ``{"success": false, "code": ..., "message": ...}``: segment-analytics-python reads ``code`` and
``message`` from an error body.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from stream.api.amplitude import ApiError, auth_limited_detail
from stream.api.throttle import Throttled
from stream.events.depth import MAX_DEPTH, depth_over, value_depth_over
from stream.events.normalize import Reason, Rejected, too_deep
from stream.events.segment import full_message

SINGLE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
MAX_ERRORS_SHOWN = 20
MAX_READ_DEPTH = 200
"""Deepest nesting of a message (or of a batch's context and integrations) that is read at all. A message nested
more than ``MAX_DEPTH`` (40) levels is rejected alone and dead-lettered as it came, which needs it encoded again,
and orjson encodes at most 254 levels: a request holding anything deeper than this is refused whole (400)."""


def error(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, {"success": False, "code": code, "message": message})


def write_key_from_header(authorization: str | None) -> str | None:
    """The write key of ``Authorization: Basic base64(<writeKey>:)``; None without one."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user.partition(":")[0] or None


def missing_key() -> ApiError:
    return replace(error(401, "unauthorized", "no write key: send it as the HTTP Basic user name (Authorization: "
                         "Basic base64(<writeKey>:)) or as writeKey in the body"), auth_failure=True)


def unknown_key() -> ApiError:
    return replace(error(401, "unauthorized", "the write key is not configured for any source "
                         "(projects[].segment_sources[].write_key); check the key the SDK is initialised with"),
                   auth_failure=True)


def auth_limited(retry_after_s: int, max_failures: int, window_s: float) -> ApiError:
    """The 429 for an address over the failed-authentication limit, before its write key is compared."""
    return ApiError(429, {"success": False, "code": "too_many_failed_authentications",
                          "message": auth_limited_detail(retry_after_s, max_failures, window_s)},
                    {"Retry-After": str(retry_after_s)})


def throttled(t: Throttled, window_s: float) -> ApiError:
    """The 429 for a request some anonymousId (the device) or userId of which is over api.segment_device_eps."""
    n = len(t.devices) + len(t.users)
    return ApiError(429, {
        "success": False, "code": "too_many_requests",
        "message": f"{n} of the request's anonymousIds and userIds would send more than {t.body()['eps_threshold']} "
                   f"events per second over {window_s:g}s (api.segment_device_eps); nothing of the request was "
                   "stored: send it again after Retry-After seconds",
        "throttled_anonymous_ids": t.devices, "throttled_user_ids": t.users}, {"Retry-After": str(t.retry_after_s)})


def too_deep_request(where: str) -> ApiError:
    return error(400, "too_deep", f"{where} nests objects and arrays more than {MAX_READ_DEPTH} levels deep, the "
                 f"most this API reads; no message of the request was stored. A message may nest at most {MAX_DEPTH} "
                 "levels deep (deeper ones are dead-lettered one by one): flatten the properties")


def parse_body(body: bytes) -> dict[str, Any] | ApiError:
    if not body.strip():
        return error(400, "invalid_json", "the request has no body; send a JSON object")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if depth_over(body, MAX_READ_DEPTH) is not None:   # orjson reads at most 1024 levels
            return too_deep_request("the body")
        try:
            body.decode()
        except UnicodeDecodeError as u:
            return error(400, "invalid_json", f"the body is not UTF-8 ({u.reason} at byte {u.start}); send JSON "
                         "encoded as UTF-8")
        return error(400, "invalid_json", f"the body is not valid JSON: {exc}")
    if type(obj) is not dict:
        return error(400, "invalid_json", "the body must be a JSON object")
    return obj


@dataclass
class Messages:
    """A request's messages: the full ones (index, message) and the rejected ones (index, why, original)."""

    full: list[tuple[int, dict[str, Any]]]
    rejected: list[tuple[int, Rejected, Any]]


@dataclass
class Batch:
    """A call's messages and what applies to all of them, checked once before its messages are (``batch_of``)."""

    items: list[Any]
    call_type: str | None
    sent_at: Any
    ctx: dict[str, Any] | None
    integrations: dict[str, Any] | None
    too_many: Rejected | None   # a /v1/batch of more than max_messages: why each of its messages is rejected


def batch_of(obj: dict[str, Any], call_type: str | None, *, max_messages: int) -> Batch | ApiError:
    """The head of ``messages``: the call's messages, its batch-level fields, or the 400 a malformed batch gets."""
    if call_type is not None:
        return Batch([obj], call_type, None, None, None, None)
    items = obj.get("batch")
    if type(items) is not list:
        return error(400, "invalid_json", "a batch needs \"batch\": an array of messages")
    sent_at, ctx, integrations = obj.get("sentAt"), obj.get("context"), obj.get("integrations")
    if ctx is not None and type(ctx) is not dict:
        return error(400, "invalid_json", "the batch's context must be an object")
    if integrations is not None and type(integrations) is not dict:
        return error(400, "invalid_json", "the batch's integrations must be an object")
    for name, value in (("context", ctx), ("integrations", integrations)):
        if value is not None and value_depth_over(value, MAX_READ_DEPTH - 1) is not None:
            return too_deep_request(f"the batch's {name}")
    too_many = None if len(items) <= max_messages else Rejected(
        Reason.TOO_LARGE, "batch", f"the batch holds {len(items)} messages; the limit is {max_messages} "
        "(api.segment_max_batch_messages): send smaller batches")
    return Batch(items, None, sent_at, ctx, integrations, too_many)


def check(batch: Batch, received_ms: int, *, max_message_bytes: int,
          new_id: Callable[[], str] = lambda: str(uuid.uuid4()), start: int = 0, stop: int | None = None,
          into: Messages | None = None) -> Messages | ApiError:
    """The step of ``messages`` for each message: the full messages of ``batch.items[start:stop]`` (indexes counted
    in ``batch.items``), added to ``into``. A call checked slice after slice into one ``Messages`` gets what one call
    over it gives; a message nested past ``MAX_READ_DEPTH`` answers the whole call with a 400 wherever it is."""
    out = Messages([], []) if into is None else into
    call_type, ctx, integrations = batch.call_type, batch.ctx, batch.integrations
    items = batch.items[start:stop] if start or stop is not None else batch.items
    for i, msg in enumerate(items, start):
        # nothing encodes a message before its depth is known (orjson refuses past 254 levels)
        depth = value_depth_over(msg)
        if depth is not None and value_depth_over(msg, MAX_READ_DEPTH) is not None:
            return too_deep_request("the message" if call_type is not None else f"message {i} of the batch")
        if batch.too_many is not None:
            out.rejected.append((i, batch.too_many, msg))
            continue
        if depth is not None:
            out.rejected.append((i, too_deep(depth), msg))
            continue
        if call_type is None:
            size = len(orjson.dumps(msg))
            if size > max_message_bytes:
                out.rejected.append((i, Rejected(Reason.TOO_LARGE, None, f"the message is {size} bytes; the limit "
                                                 f"is {max_message_bytes} (api.segment_max_message_bytes)"), msg))
                continue
        full = full_message(msg, call_type, received_ms=received_ms, message_id=new_id(),
                            batch_sent_at=batch.sent_at, batch_context=ctx, batch_integrations=integrations)
        if isinstance(full, Rejected):
            out.rejected.append((i, full, msg))
        elif (ctx or integrations) and (depth := value_depth_over(full)) is not None:
            out.rejected.append((i, too_deep(depth), msg))   # the batch's context made it too deep
        else:
            out.full.append((i, full))
    return out


def messages(obj: dict[str, Any], call_type: str | None, received_ms: int, *, max_message_bytes: int,
             max_messages: int, new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> Messages | ApiError:
    """The full messages of one call (``call_type`` None: a /v1/batch), each checked against Segment's limits: the
    batch's head (``batch_of``), then every message (``check``) in one go. The service runs the same steps with
    the event loop let through between slices of messages; this is what those slices add up to."""
    batch = batch_of(obj, call_type, max_messages=max_messages)
    if isinstance(batch, ApiError):
        return batch
    return check(batch, received_ms, max_message_bytes=max_message_bytes, new_id=new_id)


def success_body(accepted: int, rejected: list[tuple[int, Rejected]]) -> dict[str, Any]:
    if not rejected:
        return {"success": True}
    return {"success": True, "accepted": accepted, "rejected": len(rejected),
            "errors": [{"index": i, "reason": r.reason.value, "field": r.field, "message": r.detail}
                       for i, r in rejected[:MAX_ERRORS_SHOWN]]}
