"""The event contract: which input keys are accepted, their types, and where they go.

Input is an Amplitude HTTP V2 event object (FORMATS.md §2.2), the keys its
official SDKs send, plus ``uuid``, ``server_received_time`` and
``server_upload_time`` for producers that carry their own. Output is one row of
Amplitude's raw export (FORMATS.md §1.3), always with every column, in
``EXPORT_FIELDS`` order, ``null`` where nothing is known (until the identity
stage fills its columns, ``IDENTITY_FIELDS``).

Where an accepted input key has no export column, its value is kept in ``data``
under its own name; revenue keys go into ``event_properties`` as
``$price``, ``$quantity``... as Amplitude's exports show them.
"""

from __future__ import annotations

from enum import Enum

IDENTITY_FIELDS: tuple[str, ...] = (
    "amplitude_event_type", "amplitude_id", "group_properties", "paying", "processed_time", "start_version",
    "user_creation_time", "user_properties",
)
"""The columns the identity stage fills, last in a row: it replaces that tail without re-encoding the rest."""

EXPORT_FIELDS: tuple[str, ...] = (
    "$insert_id", "$schema", "adid", "amplitude_attribution_ids", "app",
    "city", "client_event_time", "client_upload_time", "country", "data", "device_brand", "device_carrier",
    "device_family", "device_id", "device_manufacturer", "device_model", "device_type", "dma", "event_id",
    "event_properties", "event_time", "event_type", "groups", "idfa", "ip_address",
    "is_attribution_event", "language", "library", "location_lat", "location_lng", "os_name", "os_version",
    "platform", "region", "sample_rate", "server_received_time",
    "server_upload_time", "session_id", "user_id", "uuid", "version_name",
) + IDENTITY_FIELDS
"""The export columns in row order: alphabetical, then the identity stage's columns, alphabetical."""


class Kind(Enum):
    STR = "string"
    INT = "integer"
    NUM = "number"
    DICT = "object"
    BOOL = "boolean"


class Where(Enum):
    COLUMN = "column"          # an export column of the given name
    DATA = "data"              # data[<input key>]
    REVENUE = "revenue"        # event_properties["$" + <input key>]
    SPECIAL = "special"        # handled by the normalizer itself


# input key -> (kind, where, export column or None)
INPUT_FIELDS: dict[str, tuple[Kind, Where, str | None]] = {
    # identity and type: validated by the normalizer
    "event_type": (Kind.STR, Where.SPECIAL, "event_type"),
    "user_id": (Kind.STR, Where.SPECIAL, "user_id"),
    "device_id": (Kind.STR, Where.SPECIAL, "device_id"),
    "insert_id": (Kind.STR, Where.SPECIAL, "$insert_id"),
    "uuid": (Kind.STR, Where.SPECIAL, "uuid"),
    "time": (Kind.INT, Where.SPECIAL, "client_event_time"),
    "server_received_time": (Kind.INT, Where.SPECIAL, "server_received_time"),
    "server_upload_time": (Kind.INT, Where.SPECIAL, "server_upload_time"),
    # plain columns
    "event_properties": (Kind.DICT, Where.COLUMN, "event_properties"),
    "user_properties": (Kind.DICT, Where.COLUMN, "user_properties"),
    "group_properties": (Kind.DICT, Where.COLUMN, "group_properties"),
    "groups": (Kind.DICT, Where.COLUMN, "groups"),
    "app_version": (Kind.STR, Where.COLUMN, "version_name"),
    "version_name": (Kind.STR, Where.COLUMN, "version_name"),
    "platform": (Kind.STR, Where.COLUMN, "platform"),
    "os_name": (Kind.STR, Where.COLUMN, "os_name"),
    "os_version": (Kind.STR, Where.COLUMN, "os_version"),
    "device_brand": (Kind.STR, Where.COLUMN, "device_brand"),
    "device_manufacturer": (Kind.STR, Where.COLUMN, "device_manufacturer"),
    "device_model": (Kind.STR, Where.COLUMN, "device_model"),
    "carrier": (Kind.STR, Where.COLUMN, "device_carrier"),
    "country": (Kind.STR, Where.COLUMN, "country"),
    "region": (Kind.STR, Where.COLUMN, "region"),
    "city": (Kind.STR, Where.COLUMN, "city"),
    "dma": (Kind.STR, Where.COLUMN, "dma"),
    "language": (Kind.STR, Where.COLUMN, "language"),
    "library": (Kind.STR, Where.COLUMN, "library"),
    "ip": (Kind.STR, Where.COLUMN, "ip_address"),
    "idfa": (Kind.STR, Where.COLUMN, "idfa"),
    "adid": (Kind.STR, Where.COLUMN, "adid"),
    "location_lat": (Kind.NUM, Where.COLUMN, "location_lat"),
    "location_lng": (Kind.NUM, Where.COLUMN, "location_lng"),
    "event_id": (Kind.INT, Where.COLUMN, "event_id"),
    "session_id": (Kind.INT, Where.COLUMN, "session_id"),
    # revenue: event_properties["$<key>"]
    "price": (Kind.NUM, Where.REVENUE, None),
    "quantity": (Kind.INT, Where.REVENUE, None),
    "revenue": (Kind.NUM, Where.REVENUE, None),
    "productId": (Kind.STR, Where.REVENUE, None),
    "revenueType": (Kind.STR, Where.REVENUE, None),
    "currency": (Kind.STR, Where.REVENUE, None),
    # accepted, no export column: kept in data
    "idfv": (Kind.STR, Where.DATA, None),
    "android_id": (Kind.STR, Where.DATA, None),
    "android_app_set_id": (Kind.STR, Where.DATA, None),
    "user_agent": (Kind.STR, Where.DATA, None),
    "partner_id": (Kind.STR, Where.DATA, None),
    "plan": (Kind.DICT, Where.DATA, None),
    "ingestion_metadata": (Kind.DICT, Where.DATA, None),
    "extra": (Kind.DICT, Where.DATA, None),
    "$skip_user_properties_sync": (Kind.BOOL, Where.DATA, None),
}

MAX_STRING = 1024
"""Amplitude limits every string value to 1024 characters (FORMATS.md §2.2)."""

INVALID_IDS = frozenset({
    "anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown", "",
    "00000000-0000-0000-0000-000000000000", "{}", "lmy47d", "0", "-1",
})
"""IDs Amplitude refuses, compared case-insensitively (FORMATS.md §2.2)."""
