"""ISO-8601 strings and parquet INT96 timestamps to and from epoch milliseconds; bad input raises ValueError."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import date

DAY_MS = 86_400_000
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# Julian day number of 1970-01-01: parquet INT96 counts days from the Julian epoch.
JULIAN_EPOCH_DAY = 2_440_588
_NANOS_PER_DAY = 86_400 * 10**9

_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?"
)


def civil_to_ms(year: int, month: int, day: int, hour: int, minute: int, second: int, millis: int) -> int:
    """Epoch ms of a UTC wall-clock time; ValueError when the date does not exist (2024-02-30)."""
    if not (0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 59):
        raise ValueError("time of day out of range")
    days = date(year, month, day).toordinal() - EPOCH_ORDINAL
    return (((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + millis


def iso_to_ms(text: str) -> int:
    """``YYYY-MM-DDTHH:MM:SS[.fraction][Z|±hh:mm]`` -> epoch ms; no zone means UTC, the fraction is truncated to ms."""
    m = _ISO.fullmatch(text)
    if m is None:
        raise ValueError("not YYYY-MM-DDTHH:MM:SS")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, zone = m.group(7), m.group(8)
    millis = int((fraction or "0")[:3].ljust(3, "0"))
    ms = civil_to_ms(year, month, day, hour, minute, second, millis)
    return ms - zone_offset_ms(zone) if zone else ms


def zone_offset_ms(zone: str) -> int:
    """``Z`` or ``±hh:mm`` -> the offset east of UTC in ms."""
    if zone == "Z":
        return 0
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 18 or minutes > 59 or (hours == 18 and minutes):
        raise ValueError("zone offset out of range")
    offset = (hours * 60 + minutes) * 60_000
    return -offset if zone[0] == "-" else offset


def ms_to_iso(ms: int) -> str:
    """Epoch ms -> ``YYYY-MM-DDTHH:MM:SS`` in UTC, with ``.SSS`` only when the milliseconds are not zero."""
    days, rest = divmod(ms, DAY_MS)
    try:
        day = date.fromordinal(EPOCH_ORDINAL + days)
    except (ValueError, OverflowError):
        raise ValueError("outside years 1-9999") from None
    seconds, millis = divmod(rest, 1000)
    hour, seconds = divmod(seconds, 3600)
    minute, second = divmod(seconds, 60)
    text = f"{day.isoformat()}T{hour:02d}:{minute:02d}:{second:02d}"
    return f"{text}.{millis:03d}" if millis else text


def int96_to_ms(text: str) -> int:
    """Base64 of a parquet INT96 (8-byte LE nanoseconds of the day, 4-byte LE Julian day) -> epoch ms."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != 12:
        raise ValueError(f"{len(raw)} bytes, an INT96 has 12")
    nanos = int.from_bytes(raw[:8], "little")
    if nanos >= _NANOS_PER_DAY:
        raise ValueError("nanoseconds beyond one day")
    julian_day = int.from_bytes(raw[8:], "little")
    return (julian_day - JULIAN_EPOCH_DAY) * DAY_MS + nanos // 1_000_000

