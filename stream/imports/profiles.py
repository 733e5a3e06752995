"""Profiles: the current properties of each (project, user_id), set by a mirror source of ``data_type: profiles``
(pure).

A profiles row is a user_id, its properties (``user_properties`` in the converter's output) and a mutation type
(``stream.export.mirror``): INSERT and UPDATE set the user's properties to the row's -- the row is the user's
current state, not a change to merge -- and DELETE removes the user. Each stored profile keeps the sequence of the
mutation that set it (the file's LastModified, its URL, the row number), and a mutation older than it changes
nothing: a replay after a crash, or a file read again, leaves the state as it was, and the order the vendor leaves
open is fixed to the order of the files. A deleted user is kept as a tombstone with its sequence, so that an older
UPDATE arriving after the DELETE does not bring the user back; ``properties`` is then None.

The state is a RocksDB table keyed ``project (4 bytes) + user_id`` on a compacted changelog; it is read by the
admin API, the console, the cohort rules' user-property conditions, and exported to the destinations that ask for
profiles as a daily snapshot of the profiles changed that day (:func:`snapshot_line`).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Any

import orjson

from stream.export.mirror import Op

_PROJECT = struct.Struct(">I")


def key(project: int, user_id: str) -> bytes:
    return _PROJECT.pack(project) + user_id.encode()


def split_key(k: bytes) -> tuple[int, str]:
    return _PROJECT.unpack_from(k)[0], k[_PROJECT.size:].decode()


@dataclass(frozen=True)
class Profile:
    properties: dict[str, Any] | None
    """The user's current properties; None once deleted."""
    seq: tuple[int, str, int]
    """The sequence of the mutation that set them."""
    changed_ms: int
    """When this worker applied that mutation (epoch ms): the day of the snapshot that exports it."""

    @property
    def deleted(self) -> bool:
        return self.properties is None


def applied(current: Profile | None, op: Op, properties: dict[str, Any] | None, seq: tuple[int, str, int],
            now_ms: int) -> Profile | None:
    """The profile after a mutation; None when the mutation is not newer than the stored one (it changes
    nothing). A newer mutation that sets what is already there moves the sequence on, not ``changed_ms``: the
    profile is not in the next snapshot for it."""
    if current is not None and seq <= current.seq:
        return None
    new = None if op is Op.DELETE else dict(properties or {})
    if current is not None and current.properties == new:
        return Profile(new, seq, current.changed_ms)
    return Profile(new, seq, now_ms)


def encode(p: Profile) -> bytes:
    return orjson.dumps({"properties": p.properties, "seq": list(p.seq), "changed_ms": p.changed_ms})


def decode(value: bytes | None) -> Profile | None:
    if value is None:
        return None
    r = orjson.loads(value)
    s = r["seq"]
    return Profile(r["properties"], (int(s[0]), str(s[1]), int(s[2])), int(r["changed_ms"]))


def _ts(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}000"


def snapshot_line(project: int, user_id: str, p: Profile) -> bytes:
    """One line of a profiles snapshot: the user, its properties (null and ``"deleted": true`` once deleted) and
    when they last changed, in the export's timestamp format."""
    return orjson.dumps({"app": project, "user_id": user_id, "user_properties": p.properties,
                         "deleted": p.deleted, "updated_time": _ts(p.changed_ms)})
