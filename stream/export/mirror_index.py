"""The mirror index: which hours hold the events of a (project, insert_id), kept for ``mirror.index_days`` (pure).

A mirror UPDATE or DELETE names its event by insert_id; the event was exported in the hour of its
``server_upload_time``, which the source of the mutations does not know. The index answers it. It is filled from
``events.accepted`` for the projects that have a mirror source, re-keyed by insert_id so that the partition
that reads a mutation holds its entries, and kept in RocksDB: key ``project (4 bytes) + insert_id``, value a
sorted list of entries of 8 bytes each: the hour (hours since the epoch) and a 32-bit hash of the device_id
(an insert_id can name events of several devices, as dedupe keeps one per (device_id, insert_id)). About
``len(insert_id) + 12`` bytes of data per event before RocksDB's own overhead (BENCHMARKS.md, "Mirror index").

Entries older than ``mirror.index_days`` (90 by default, longer than the 7 days of dedupe) are dropped when their
key is next written, never answered when read, and a key no write refreshed for that long is dropped by RocksDB's
TTL in its compactions (the table's changelog is kept as long, then deleted by time). The device hash only decides
whether an INSERT names an event already held (then an UPDATE when ``mirror.insert_is_update``): two devices whose
hashes collide on one insert_id (about one pair in four billion) would make such an INSERT an update of the other
device's event; an UPDATE or DELETE with a device_id is matched on the device_id itself in the rewrite.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence

import orjson

from stream.events.timefmt import DAY_MS, HOUR_MS

Entry = tuple[int, int]
"""(hour number: hours since the epoch, crc32 of the device_id)."""

_ENTRY = struct.Struct(">II")
_PROJECT = struct.Struct(">I")


def key(project: int, insert_id: str) -> bytes:
    return _PROJECT.pack(project) + insert_id.encode()


def split_key(k: bytes) -> tuple[int, str]:
    return _PROJECT.unpack_from(k)[0], k[_PROJECT.size:].decode()


def device_hash(device_id: str | None) -> int:
    return zlib.crc32((device_id or "").encode())


def entry(hour_ms: int, device_id: str | None) -> Entry:
    return hour_ms // HOUR_MS, device_hash(device_id)


def encode(entries: Sequence[Entry]) -> bytes:
    return b"".join(_ENTRY.pack(h, d) for h, d in entries)


def decode(value: bytes | None) -> list[Entry]:
    if not value:
        return []
    return [_ENTRY.unpack_from(value, i) for i in range(0, len(value), _ENTRY.size)]


def oldest_hour(now_ms: int, keep_days: int) -> int:
    """The first hour number the index still keeps at ``now_ms``."""
    return (now_ms - keep_days * DAY_MS) // HOUR_MS


def added(entries: Iterable[Entry], new: Iterable[Entry], oldest: int) -> list[Entry]:
    """The entries with ``new`` added, each once, sorted, without those older than hour number ``oldest``."""
    return sorted({e for e in (*entries, *new) if e[0] >= oldest})


def hours_of(entries: Iterable[Entry], device_id: str | None, oldest: int) -> list[int]:
    """The hours (epoch ms) that hold events the mutation names: those of its device when it carries one,
    else of every device; none older than ``oldest``."""
    want = None if device_id is None else device_hash(device_id)
    return sorted({h * HOUR_MS for h, d in entries if h >= oldest and (want is None or d == want)})


def entries_of(project: int, hour_ms: int, blob: bytes) -> dict[bytes, list[Entry]]:
    """The index entries of an accepted batch of one project and hour (its rows joined by newlines), by key;
    rows without an insert_id name nothing a mutation could find and are left out."""
    out: dict[bytes, list[Entry]] = {}
    hour = hour_ms // HOUR_MS
    for line in blob.split(b"\n"):
        if not line:
            continue
        event = orjson.loads(line)
        insert_id = event.get("$insert_id")
        if not isinstance(insert_id, str) or not insert_id:
            continue
        device = event.get("device_id")
        out.setdefault(key(project, insert_id), []).append((hour, device_hash(device if isinstance(device, str)
                                                                               else None)))
    return out


_LEN = struct.Struct(">H")
_VLEN = struct.Struct(">I")


def encode_writes(writes: Iterable[tuple[bytes, bytes]]) -> bytes:
    """(key, value) pairs as one message: (u16 key length, key, u32 value length, value)*. The value of a mirror
    index message (a batch of entries per key) and of a record of the index table's changelog (the values one
    batch wrote) alike."""
    parts = []
    for k, v in writes:
        parts += (_LEN.pack(len(k)), k, _VLEN.pack(len(v)), v)
    return b"".join(parts)


def decode_writes(data: bytes) -> list[tuple[bytes, bytes]]:
    out, i, n = [], 0, len(data)
    while i < n:
        (kl,) = _LEN.unpack_from(data, i)
        i += _LEN.size
        k = data[i:i + kl]
        i += kl
        (vl,) = _VLEN.unpack_from(data, i)
        i += _VLEN.size
        out.append((k, data[i:i + vl]))
        i += vl
    return out


def merged(current: Sequence[bytes | None], incoming: Sequence[bytes], oldest: int) -> list[bytes]:
    """Each key's stored value with its incoming entries added (``added``), as values to write."""
    return [encode(added(decode(c), decode(v), oldest)) for c, v in zip(current, incoming)]
