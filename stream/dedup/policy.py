"""Dedupe decisions: pure functions of the batch and what the state holds.

An event with a dedupe key (project, device_id, insert_id) is a duplicate when
the state holds an earlier occurrence of that key -- a different uuid -- whose
server_upload_time is less than the window before its own. The first occurrence
is what the state remembers (its time and uuid), so a replay of that same event
(same uuid) is not a duplicate of itself, and after the window the key is
accepted again and remembered anew. Events without insert_id are never
deduplicated (FORMATS.md §2.2).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

DAY_MS = 86_400_000
_VALUE = struct.Struct(">q16s")


class Decisions(NamedTuple):
    keep: list[bool]                       # per event
    writes: list[tuple[bytes, bytes]]      # (key, value) to store, in order
    duplicates: int


def encode_value(first_seen_ms: int, uuid: bytes) -> bytes:
    return _VALUE.pack(first_seen_ms, uuid)


def decode_value(value: bytes) -> tuple[int, bytes]:
    return _VALUE.unpack(value)


def decide(keys: Sequence[bytes], times: Sequence[int], uuids: Sequence[bytes],
           stored: Sequence[bytes | None], window_ms: int) -> Decisions:
    """Which events of one batch to keep, and what to remember.

    ``stored[i]`` is the state's value for ``keys[i]`` before this batch (a
    multi-get); events earlier in the same batch count as seen.
    """
    keep: list[bool] = []
    writes: list[tuple[bytes, bytes]] = []
    seen: dict[bytes, bytes] = {}
    dups = 0
    for key, t, u, v in zip(keys, times, uuids, stored):
        if not key:
            keep.append(True)
            continue
        v = seen.get(key, v)
        if v is not None:
            first_t, first_u = _VALUE.unpack(v)
            if first_u == u:          # the first occurrence itself, replayed
                keep.append(True)
                continue
            if t - first_t < window_ms:
                keep.append(False)
                dups += 1
                continue
        nv = _VALUE.pack(t, u)
        seen[key] = nv
        writes.append((key, nv))
        keep.append(True)
    return Decisions(keep, writes, dups)


_LEN = struct.Struct(">H")


def encode_changelog(writes: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The writes of one batch as one changelog value: (u16 key length, key, 24-byte value)*."""
    parts = []
    for k, v in writes:
        parts.append(_LEN.pack(len(k)))
        parts.append(k)
        parts.append(v)
    return b"".join(parts)


def decode_changelog(data: bytes) -> list[tuple[bytes, bytes]]:
    out, i, n, vs = [], 0, len(data), _VALUE.size
    while i < n:
        (kl,) = _LEN.unpack_from(data, i)
        i += 2
        out.append((data[i:i + kl], data[i + kl:i + kl + vs]))
        i += kl + vs
    return out
