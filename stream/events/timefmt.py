"""Amplitude's export timestamp strings: ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC.

Exported rows use a space between date and time and six fractional digits with
no zone (FORMATS.md §1.4); millisecond inputs give ``.123000``.
"""

from __future__ import annotations

import time

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

_second_cache: dict[int, str] = {}
_FRACTIONS = tuple(f".{i:03d}000" for i in range(1000))


def format_ms(ms: int) -> str:
    """Epoch milliseconds -> ``2024-03-09 07:15:02.123000`` (UTC)."""
    sec = ms // 1000
    prefix = _second_cache.get(sec)
    if prefix is None:
        if len(_second_cache) > 65536:
            _second_cache.clear()
        prefix = _second_cache[sec] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
    return prefix + _FRACTIONS[ms - sec * 1000]


_second_bytes: dict[int, bytes] = {}
"""Epoch second -> ``format_ms``'s text up to the milliseconds, as bytes (``second_bytes``)."""
_FRACTIONS_B = tuple(f.encode() for f in _FRACTIONS)


def second_bytes(sec: int) -> bytes:
    """``format_ms(sec * 1000)`` without its ``.000000``, as bytes, kept in ``_second_bytes`` (for writers of rows
    as bytes, which look it up there first and call this when it is not)."""
    if len(_second_bytes) >= 65536:
        _second_bytes.clear()
    b = _second_bytes[sec] = format_ms(sec * 1000)[:-7].encode()
    return b


def format_ms_bytes(ms: int) -> bytes:
    """``format_ms(ms).encode()``."""
    sec = ms // 1000
    return (_second_bytes.get(sec) or second_bytes(sec)) + _FRACTIONS_B[ms - sec * 1000]


def hour_start(ms: int) -> int:
    """The epoch-ms start of the UTC hour holding ``ms``."""
    return ms - ms % HOUR_MS


def hour_label(hour_ms: int) -> tuple[str, int]:
    """(``yyyy-MM-dd``, unpadded hour) of an hour, as the export key writes them."""
    t = time.gmtime(hour_ms // 1000)
    return time.strftime("%Y-%m-%d", t), t.tm_hour


def parse_ms(s: str) -> int:
    """``2024-03-09 07:15:02.123000`` (or with a ``T``) -> epoch milliseconds (UTC)."""
    import calendar
    secs = calendar.timegm(time.strptime(s[:19].replace("T", " "), "%Y-%m-%d %H:%M:%S"))
    frac = s[20:23] if len(s) > 20 else ""
    return secs * 1000 + (int(frac.ljust(3, "0")) if frac else 0)
