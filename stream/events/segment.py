"""Segment tracking-API messages: the full message as the Segment S3 layout stores it, and both mappings to Amplitude.

Pure functions, no I/O. Three contracts:

1. ``full_message`` completes one message of a Segment call (FORMATS.md §3.2, §3.3): the call's type, the
   batch-level ``context``/``integrations`` merged in (the message's own keys win), a ``messageId`` (the dedupe
   key; the caller supplies a fresh one for messages without), and the four times: ``receivedAt`` (when the
   request arrived), ``sentAt`` (the message's or the batch's), ``originalTimestamp`` (the client's own
   ``timestamp``/``originalTimestamp``) and ``timestamp`` corrected for the device's clock skew::

       timestamp = receivedAt - (sentAt - originalTimestamp)

   Without ``sentAt`` there is nothing to correct with: ``timestamp = originalTimestamp``; without a client
   time, ``timestamp = originalTimestamp = receivedAt`` (both unverified as Segment behaviour, FORMATS.md §3.3).
   ``writeKey`` is never stored: it is a credential, and the source is already named by the S3 folder
   (``segment-logs/<source_id>/``). ``projectId`` is not added either (unverified whether Segment writes it).

2. ``to_amplitude`` maps a full message to an Amplitude HTTP V2 event (FORMATS.md §2.2), which then goes through
   the same validator as every other event (``stream.events.normalize``):

   ===================================  ==========================================================================
   Segment                              Amplitude HTTP V2 event
   ===================================  ==========================================================================
   ``anonymousId``                      ``device_id``
   ``userId``                           ``user_id`` (numbers become strings)
   ``messageId``                        ``insert_id`` (the dedupe key)
   ``timestamp`` (corrected)            ``time`` (epoch ms)
   track ``event``                      ``event_type``
   track ``properties``                 ``event_properties``; a numeric ``properties.revenue`` also ``revenue``
   page ``name`` / ``properties``       ``event_type`` ``Viewed <name> Page`` (``Loaded a Page`` without a name);
                                        ``event_properties`` = properties + ``name``/``category``
   screen ``name`` / ``properties``     ``Viewed <name> Screen`` (``Loaded a Screen``); as page
   identify ``traits``                  ``event_type`` ``$identify``, ``user_properties`` = ``{"$set": traits}``
   group ``groupId`` / ``traits``       ``event_type`` ``$groupidentify``, ``groups`` = ``{<type>: groupId}`` with
                                        ``<type>`` = ``traits.group_type`` or ``group``, ``group_properties`` =
                                        ``{"$set": traits}`` (without ``group_type``)
   alias ``previousId``                 ``event_type`` ``[Segment] Alias``, ``event_properties`` =
                                        ``{"previousId": ...}`` (Amplitude has no alias event in HTTP V2)
   ``context.traits`` (not identify)    ``user_properties``
   ``context.app.version``              ``app_version``
   ``context.device.type``              ``platform``
   ``context.os.name`` / ``.version``   ``os_name`` / ``os_version``
   ``context.device.manufacturer``      ``device_manufacturer``; ``.model`` -> ``device_model``
   ``context.device.advertisingId``     ``idfa`` when ``context.os.name`` is iOS, else ``adid``
   ``context.network.carrier``          ``carrier``
   ``context.location.country`` ...     ``country``, ``region``, ``city``; ``latitude``/``longitude`` ->
                                        ``location_lat``/``location_lng``
   ``context.ip``                       ``ip``
   ``context.locale``                   ``language``
   ``context.library.name``/``version`` ``library`` as ``<name>/<version>``
   ``context.userAgent``                ``user_agent``
   ===================================  ==========================================================================

   Context values of the wrong type are left out rather than failing the event (numbers become strings where
   Amplitude wants a string): a message is rejected for its identity, type or time, never for a stray context key.

3. ``from_amplitude_row`` maps an Amplitude export row (FORMATS.md §1.3) back to a Segment ``track`` message, the
   inverse of the table above for track events, so Amplitude events can be written in the Segment layout.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from stream.events.normalize import Reason, Rejected

TYPES = ("track", "identify", "page", "screen", "group", "alias")
MAX_MESSAGE_ID = 100
"""Segment requires messageId to be shorter than 100 characters (FORMATS.md §3.1)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def parse_time(value: str) -> int:
    """An ISO-8601 time -> epoch ms (UTC when it names no zone). Raises ValueError."""
    dt = datetime.fromisoformat(value.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MS


def format_time(ms: int) -> str:
    """Epoch ms -> ``2024-03-09T07:15:00.300Z``, the form Segment writes."""
    return (_EPOCH + ms * _MS).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _type_name(v: Any) -> str:
    return {str: "string", bool: "boolean", int: "integer", float: "number", dict: "object", list: "array",
            type(None): "null"}.get(type(v), type(v).__name__)


def _client_time(msg: dict[str, Any], key: str) -> tuple[str | None, int | None] | Rejected:
    v = msg.get(key)
    if v is None:
        return None, None
    if type(v) is not str:
        return Rejected(Reason.INVALID_TYPE, key, f"{key} must be an ISO-8601 string, got {_type_name(v)}")
    try:
        return v, parse_time(v)
    except ValueError:
        return Rejected(Reason.INVALID_VALUE, key, f"{key} {v[:40]!r} is not an ISO-8601 time "
                        "(e.g. 2024-03-09T07:15:00.000Z)")


def _id(msg: dict[str, Any], key: str) -> str | None | Rejected:
    v = msg.get(key)
    if v is None or v == "":
        return None
    if type(v) is int or type(v) is float:
        return str(v)
    if type(v) is not str:
        return Rejected(Reason.INVALID_TYPE, key, f"{key} must be a string, got {_type_name(v)}")
    return v


def full_message(msg: Any, call_type: str | None, *, received_ms: int, message_id: str,
                 batch_sent_at: Any = None, batch_context: dict[str, Any] | None = None,
                 batch_integrations: dict[str, Any] | None = None) -> dict[str, Any] | Rejected:
    """The complete message of one Segment call, or why it cannot be accepted.

    ``call_type`` is the endpoint's type (``track`` for /v1/track), None inside a batch, where the message must
    name its ``type``. ``message_id`` is used when the message has none.
    """
    if type(msg) is not dict:
        return Rejected(Reason.NOT_AN_OBJECT, None, f"the message is a JSON {_type_name(msg)}, not an object")
    kind = call_type or msg.get("type")
    if kind not in TYPES:
        if kind is None:
            return Rejected(Reason.MISSING_EVENT_TYPE, "type", "a message in a batch needs a type: one of "
                            + ", ".join(TYPES))
        return Rejected(Reason.INVALID_VALUE, "type", f"type {str(kind)[:40]!r} is not one of " + ", ".join(TYPES))
    user_id, anonymous_id = _id(msg, "userId"), _id(msg, "anonymousId")
    for v in (user_id, anonymous_id):
        if isinstance(v, Rejected):
            return v
    if user_id is None and (anonymous_id is None or kind == "alias"):
        return Rejected(Reason.MISSING_ID, "userId", "the message needs a userId or an anonymousId"
                        if kind != "alias" else "an alias message needs the new userId")
    for key, want in (("event", "track"), ("groupId", "group"), ("previousId", "alias")):
        if kind == want:
            v = msg.get(key)
            if v is None or v == "":
                return Rejected(Reason.MISSING_EVENT_TYPE if key == "event" else Reason.INVALID_VALUE, key,
                                f"a {kind} message needs {key}")
            if type(v) is not str and not (key != "event" and type(v) in (int, float)):
                return Rejected(Reason.INVALID_TYPE, key, f"{key} must be a string, got {_type_name(v)}")
    for key in ("properties", "traits", "context", "integrations"):
        if msg.get(key) is not None and type(msg[key]) is not dict:
            return Rejected(Reason.INVALID_TYPE, key, f"{key} must be an object, got {_type_name(msg[key])}")
    mid = msg.get("messageId")
    if mid is None or mid == "":
        mid = message_id
    elif type(mid) is not str:
        return Rejected(Reason.INVALID_TYPE, "messageId", f"messageId must be a string, got {_type_name(mid)}")
    elif len(mid) >= MAX_MESSAGE_ID:
        return Rejected(Reason.INVALID_VALUE, "messageId", f"messageId is {len(mid)} characters long; it must "
                        f"be shorter than {MAX_MESSAGE_ID}")

    original = _client_time(msg, "originalTimestamp")
    if isinstance(original, Rejected):
        return original
    if original[0] is None:
        original = _client_time(msg, "timestamp")
        if isinstance(original, Rejected):
            return original
    sent = _client_time(msg, "sentAt") if msg.get("sentAt") is not None else _client_time(
        {"sentAt": batch_sent_at}, "sentAt")
    if isinstance(sent, Rejected):
        return sent
    (original_s, original_ms), (sent_s, sent_ms) = original, sent
    if original_ms is None:
        time_ms = received_ms
        original_s = format_time(received_ms)
    elif sent_ms is None:
        time_ms = original_ms
    else:
        time_ms = received_ms - (sent_ms - original_ms)

    out = {k: v for k, v in msg.items() if k != "writeKey"}
    out["type"] = kind
    out["messageId"] = mid
    if user_id is not None:
        out["userId"] = user_id
    out["context"] = {**(batch_context or {}), **(msg.get("context") or {})}
    out["integrations"] = {**(batch_integrations or {}), **(msg.get("integrations") or {})}
    out["originalTimestamp"] = original_s
    out["sentAt"] = sent_s
    out["timestamp"] = format_time(time_ms)
    out["receivedAt"] = format_time(received_ms)
    return out


# --- Segment -> Amplitude ---------------------------------------------------------------------------------------

def _str(v: Any) -> str | None:
    if type(v) is str:
        return v or None
    if type(v) in (int, float):
        return str(v)
    return None


def _num(v: Any) -> float | int | None:
    return v if type(v) in (int, float) else None


def _sub(d: dict[str, Any], key: str) -> dict[str, Any]:
    v = d.get(key)
    return v if type(v) is dict else {}


def _context_fields(ctx: dict[str, Any]) -> dict[str, Any]:
    app, os_, device, network = _sub(ctx, "app"), _sub(ctx, "os"), _sub(ctx, "device"), _sub(ctx, "network")
    location, library = _sub(ctx, "location"), _sub(ctx, "library")
    lib_name, lib_version = _str(library.get("name")), _str(library.get("version"))
    os_name = _str(os_.get("name"))
    ad_id = _str(device.get("advertisingId"))
    fields = {
        "app_version": _str(app.get("version")),
        "platform": _str(device.get("type")),
        "os_name": os_name,
        "os_version": _str(os_.get("version")),
        "device_manufacturer": _str(device.get("manufacturer")),
        "device_model": _str(device.get("model")),
        "carrier": _str(network.get("carrier")),
        "country": _str(location.get("country")),
        "region": _str(location.get("region")),
        "city": _str(location.get("city")),
        "location_lat": _num(location.get("latitude")),
        "location_lng": _num(location.get("longitude")),
        "ip": _str(ctx.get("ip")),
        "language": _str(ctx.get("locale")),
        "library": f"{lib_name}/{lib_version}" if lib_name and lib_version else lib_name,
        "user_agent": _str(ctx.get("userAgent")),
    }
    if ad_id:
        fields["idfa" if (os_name or "").lower() in ("ios", "iphone os", "ipados") else "adid"] = ad_id
    return {k: v for k, v in fields.items() if v is not None}


def to_amplitude(full: dict[str, Any]) -> dict[str, Any]:
    """The Amplitude HTTP V2 event of a full Segment message (see the module's table)."""
    kind = full["type"]
    props = _sub(full, "properties")
    traits = _sub(full, "traits")
    ev: dict[str, Any] = {}
    if kind == "track":
        ev["event_type"] = full["event"]
        ev["event_properties"] = props
        if _num(props.get("revenue")) is not None:
            ev["revenue"] = props["revenue"]
    elif kind in ("page", "screen"):
        name = _str(full.get("name"))
        noun = "Page" if kind == "page" else "Screen"
        ev["event_type"] = f"Viewed {name} {noun}" if name else f"Loaded a {noun}"
        extra = {k: full[k] for k in ("name", "category") if full.get(k) is not None}
        ev["event_properties"] = {**props, **extra}
    elif kind == "identify":
        ev["event_type"] = "$identify"
        ev["user_properties"] = {"$set": traits}
    elif kind == "group":
        group_type = traits.get("group_type")
        ev["event_type"] = "$groupidentify"
        ev["groups"] = {group_type if type(group_type) is str and group_type else "group": str(full["groupId"])}
        ev["group_properties"] = {"$set": {k: v for k, v in traits.items() if k != "group_type"}}
    else:  # alias
        ev["event_type"] = "[Segment] Alias"
        ev["event_properties"] = {"previousId": str(full["previousId"])}
    if full.get("userId") is not None:
        ev["user_id"] = full["userId"]
    if full.get("anonymousId") is not None and kind != "alias":
        ev["device_id"] = full["anonymousId"]
    ev["insert_id"] = full["messageId"]
    ev["time"] = parse_time(full["timestamp"])
    ctx = _sub(full, "context")
    ctx_traits = _sub(ctx, "traits")
    if ctx_traits and kind != "identify" and "user_properties" not in ev:
        ev["user_properties"] = ctx_traits
    ev.update(_context_fields(ctx))
    return ev


# --- Amplitude -> Segment ---------------------------------------------------------------------------------------

def _row_time(v: Any) -> str | None:
    """An export timestamp (``2024-03-09 07:15:00.123000``) -> Segment's ``2024-03-09T07:15:00.123Z``."""
    if type(v) is not str or not v:
        return None
    return format_time(parse_time(v))


def _prune(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if type(v) is dict:
            v = _prune(v)
        if v is not None and v != {}:
            out[k] = v
    return out


def from_amplitude_row(row: dict[str, Any]) -> dict[str, Any]:
    """A Segment ``track`` message for one Amplitude export row (FORMATS.md §1.3).

    ``messageId`` is the row's ``$insert_id`` (its dedupe key), else its ``uuid``; the times map as
    ``client_event_time`` -> originalTimestamp, ``client_upload_time`` -> sentAt, ``event_time`` -> timestamp,
    ``server_received_time`` -> receivedAt; the context is the inverse of ``to_amplitude``'s.
    """
    library = row.get("library")
    lib_name, _, lib_version = library.partition("/") if type(library) is str else ("", "", "")
    os_name = row.get("os_name")
    ios = type(os_name) is str and os_name.lower() in ("ios", "iphone os", "ipados")
    context = _prune({
        "app": {"version": row.get("version_name")},
        "device": {"type": row.get("platform"), "manufacturer": row.get("device_manufacturer"),
                   "model": row.get("device_model"),
                   "advertisingId": row.get("idfa") if ios else row.get("adid")},
        "os": {"name": os_name, "version": row.get("os_version")},
        "network": {"carrier": row.get("device_carrier")},
        "location": {"country": row.get("country"), "region": row.get("region"), "city": row.get("city"),
                     "latitude": row.get("location_lat"), "longitude": row.get("location_lng")},
        "ip": row.get("ip_address"),
        "locale": row.get("language"),
        "library": {"name": lib_name or None, "version": lib_version or None},
        "traits": row.get("user_properties") or None,
    })
    msg: dict[str, Any] = {"type": "track", "event": row.get("event_type"), "messageId": row.get("$insert_id")
                           or row.get("uuid")}
    if row.get("user_id") is not None:
        msg["userId"] = row["user_id"]
    if row.get("device_id") is not None:
        msg["anonymousId"] = row["device_id"]
    msg["properties"] = row.get("event_properties") or {}
    msg["context"] = context
    msg["integrations"] = {}
    msg["originalTimestamp"] = _row_time(row.get("client_event_time"))
    msg["sentAt"] = _row_time(row.get("client_upload_time"))
    msg["timestamp"] = _row_time(row.get("event_time"))
    msg["receivedAt"] = _row_time(row.get("server_received_time"))
    return msg
