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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from stream.events.normalize import Reason, Rejected
from stream.events.partitioning import partition_of
from stream.export.mirror import Op
from stream.imports.mutations import pop_op

_PROJECT = struct.Struct(">I")
PROPERTIES_FIELD = "user_properties"


def key(project: int, user_id: str) -> bytes:
    return _PROJECT.pack(project) + user_id.encode()


def split_key(k: bytes) -> tuple[int, str]:
    return _PROJECT.unpack_from(k)[0], k[_PROJECT.size:].decode()


def partition(k: bytes, partitions: int) -> int:
    """The partition of profiles.mutations, and so of the profiles table and its changelog, that holds a key:
    Kafka's default partitioner (murmur2), which the admin API computes again to read a user's profile."""
    return partition_of(k, partitions)


@dataclass(frozen=True)
class ProfileMutation:
    """One row of a source of profiles: what it does to the user's profile, and its sequence (the file's
    LastModified, its URL, the row number)."""

    user_id: str
    op: Op
    properties: dict[str, Any] | None     # None for a DELETE
    seq: tuple[int, str, int]


def mutation_of(ev: dict[str, Any], seq: tuple[int, str, int], max_bytes: int) -> ProfileMutation | Rejected:
    """The converter's output of one profiles row as a mutation, or why it is refused: a row needs a user_id
    (``missing_user_id``) and a mutation type (``invalid_mutation_type``; missing means UPDATE); the properties of
    an INSERT or UPDATE are its ``user_properties``, an object (none: no properties), at most ``max_bytes`` as
    JSON (``too_large``). A DELETE needs only the user_id."""
    op = pop_op(ev)
    if isinstance(op, Rejected):
        return op
    user_id = ev.get("user_id")
    if not isinstance(user_id, str) or not user_id.strip():
        return Rejected(Reason.MISSING_USER_ID, "user_id",
                        "a profiles row names its user by user_id: map the column that holds it to user_id in the "
                        "source's converter (rows without one are dropped, as Amplitude drops them)")
    if op is Op.DELETE:
        return ProfileMutation(user_id, op, None, seq)
    props = ev.get(PROPERTIES_FIELD)
    if props is None:
        props = {}
    if not isinstance(props, dict):
        return Rejected(Reason.INVALID_TYPE, PROPERTIES_FIELD,
                        f"a profile's user_properties must be an object of the user's properties, got "
                        f"{type(props).__name__}: map an object to user_properties in the source's converter")
    try:
        text = orjson.dumps(props, default=str)
    except TypeError:   # an object key that is not text, at any depth (this takes any dict; JSON has none)
        return Rejected(Reason.INVALID_VALUE, PROPERTIES_FIELD, f"{PROPERTIES_FIELD} holds an object whose key is "
                        "not text: give its keys as text")
    size = len(text)
    if size > max_bytes:
        return Rejected(Reason.TOO_LARGE, PROPERTIES_FIELD, f"the profile's user_properties are {size} bytes, over "
                        f"ingest.max_event_bytes ({max_bytes}): leave the largest properties out in the converter")
    return ProfileMutation(user_id, op, orjson.loads(text), seq)


def encode_mutation(project: int, m: ProfileMutation) -> tuple[bytes, bytes]:
    """(key, value) of the mutation's record on profiles.mutations (JSON: project, user_id, op, properties,
    seq)."""
    return key(project, m.user_id), orjson.dumps({"project": project, "user_id": m.user_id, "op": m.op.value,
                                                  "properties": m.properties, "seq": list(m.seq)})


def decode_mutation(value: bytes) -> tuple[int, ProfileMutation]:
    """(project, mutation) of a record written by :func:`encode_mutation`; raises ValueError for anything else."""
    try:
        r = orjson.loads(value)
        s = r["seq"]
        props = r["properties"]
        if props is not None and not isinstance(props, dict):
            raise TypeError("properties is not an object")
        return int(r["project"]), ProfileMutation(str(r["user_id"]), Op(r["op"]), props,
                                                  (int(s[0]), str(s[1]), int(s[2])))
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(f"not a profile mutation record: {type(exc).__name__}: {exc}") from None


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


def step(current: bytes | None, m: ProfileMutation, now_ms: int) -> tuple[bytes | None, str]:
    """What the profiles stage does with one mutation given the stored profile (encoded): the value to write to
    the table and its changelog (None: nothing), and the outcome, a metric label:

    - ``applied``: the profile changed (set, replaced, or deleted: a tombstone);
    - ``unchanged``: a newer mutation setting what is there: the sequence moves on, not ``changed_ms``;
    - ``replayed``: the very mutation that set the stored profile, handed over again (a crash after the table's
      write, before the commit): the stored value is written again, so that a changelog record lost with the
      crash is sent after all;
    - ``stale``: a mutation older than the stored one: nothing.
    """
    prev = decode(current)
    new = applied(prev, m.op, m.properties, m.seq, now_ms)
    if new is not None:
        return encode(new), "applied" if prev is None or new.properties != prev.properties else "unchanged"
    assert prev is not None
    if m.seq == prev.seq:
        return current, "replayed"
    return None, "stale"


def latest(records: Iterable[tuple[bytes | None, bytes | None]], k: bytes) -> Profile | None:
    """The profile of key ``k`` in the records of its changelog partition (key, value), in offset order: the last
    one's (a record without value, a tombstone of the compacted topic, removes it); None when none has it."""
    found: bytes | None = None
    for rk, rv in records:
        if rk == k:
            found = rv
    return decode(found)


DAY_MS = 86_400_000


def snapshot_key(prefix: str, project: int, day_ms: int) -> str:
    """The key of a project's profiles snapshot of the UTC day starting at ``day_ms``."""
    return f"{prefix}{project}/profiles/{project}_profiles_{time.strftime('%Y-%m-%d', time.gmtime(day_ms // 1000))}" \
        ".json.gz"


def days_due(stored: Mapping[bytes, Profile], project: int, now_ms: int, grace_ms: int) -> list[int]:
    """The UTC days (their start, ms) of ``project`` whose snapshot is due: a profile changed that day, and the day
    ended ``grace_ms`` ago or more (no mutation applied after that can be of that day), in order."""
    closed = (now_ms - grace_ms) // DAY_MS * DAY_MS
    days = {p.changed_ms // DAY_MS * DAY_MS for k, p in stored.items() if split_key(k)[0] == project}
    return sorted(d for d in days if d < closed)


def snapshot_body(stored: Mapping[bytes, Profile], project: int, day_ms: int) -> bytes:
    """The snapshot of the profiles of ``project`` changed in the day starting at ``day_ms``: a
    :func:`snapshot_line` each, ordered by user_id, newline-terminated (not compressed)."""
    users = sorted((split_key(k)[1], p) for k, p in stored.items()
                   if split_key(k)[0] == project and day_ms <= p.changed_ms < day_ms + DAY_MS)
    return b"".join(snapshot_line(project, u, p) + b"\n" for u, p in users)
