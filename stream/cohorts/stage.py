"""The cohorts stage: cohort membership kept in-stream, per user, so that a sync reads users' states, never events.

Two steps, each an engine without faust (``stream.agents.cohorts`` wires them):

1. ``Rekeyer`` reads events.accepted (events are keyed by device) and identity.merges, and writes compact records
   (``schemas/cohort_record.avsc``) to the cohorts topic, on the partition ``amplitude_id % partitions``: per event
   its user, the keys of the cohort conditions it matches, its day, its user_id and the user properties cohorts
   read. Every events.accepted partition also sends each cohorts partition a PROGRESS record once it has passed a
   time: every event uploaded before it was sent before the record (``Progress``: the latest upload time read
   minus a grace, or, while the partition is caught up with its end, the clock minus the grace).
2. ``CohortState`` folds those records into one ``StoredUser`` per amplitude_id in a store (RocksDB with a
   compacted changelog in the worker): daily counters per condition, properties and user_id by upload time, the
   source offsets it took per (events.accepted partition, source) -- a replay of an event (an upstream stage that
   wrote it again, this stage re-reading after a crash) is at or below them and dropped. A merge moves the merged
   user's state to its survivor's partition (MERGE_OUT, MERGE_IN), where counters add up and the newer properties
   and user_id, by upload time, win; the merged id keeps a forwarding state, so that its late events count for
   the survivor. Windows expire by a day index (``x`` keys: the day each user next has something to drop), so a
   new day touches only the users it expires, never every user. A user stays after its events left the topic's
   retention, for ``state_days`` after its latest event's day; no window may be longer (``rules.MAX_WINDOW_DAYS``
   is checked against it when the settings load).

A sync at T reads the states once every cohorts partition has passed T (``SyncView``): each state is viewed as of
T (``view``): counters of events uploaded at or after T are taken off (``recent`` keeps them by upload minute for
``RECENT_MS``), properties and user_id are the latest uploaded before T, a user first seen at T or later is not
there yet. So a sync made while traffic flows has exactly the events uploaded before T.

Store keys: ``u`` + amplitude_id (8 bytes big-endian, so that a scan is in amplitude_id order) -> ``StoredUser``;
``x`` + day (4 bytes) + amplitude_id -> b"" (the day index); ``p`` + events.accepted partition (4 bytes) -> its
progress (8 bytes) and the day of the latest upload it read (4 bytes); ``e`` -> the day up to which windows were
expired (4 bytes): the newest upload day read by any partition, less ``EXPIRY_LAG_DAYS``.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import orjson

from stream.cohorts.membership import UserState, _day, event_day
from stream.cohorts.rules import CohortSet, day_of_ms
from stream.events.timefmt import DAY_MS, HOUR_MS

MINUTE_MS = 60_000
RECENT_MS = 26 * HOUR_MS
"""How long after an upload its counters stay separable by upload minute: a sync at T that reads the state up to
this long after T still counts exactly the events uploaded before T (a daily slot is retried within its day)."""
MINUTE_BUCKETS_MS = 15 * MINUTE_MS
"""For this long after an upload its counters are kept by upload minute (a ``once`` sync, stamped with a minute, is
exact when read within it: it waits only for the grace); after, by upload hour (the state an active user's events
rewrite stays small: BENCHMARKS.md, Cohorts)."""
EXPIRY_LAG_DAYS = 2
"""Windows are expired as of this many days before the state's day, so that a sync of a slot up to that old still
finds every counter it needs; an older one is refused (``SyncView.check``)."""
DEFAULT_GRACE_MS = 60_000

ACTIVITY, PROGRESS, MERGE_OUT, MERGE_IN = "ACTIVITY", "PROGRESS", "MERGE_OUT", "MERGE_IN"

_U, _X, _P, _E = b"u", b"x", b"p", b"e"
_LAST = (_P, _E)
_Q = struct.Struct(">q")
_PROGRESS = struct.Struct(">qi")     # the time passed, the day of the latest upload read (-1: none)
_I = struct.Struct(">i")


def user_key(amplitude_id: int) -> bytes:
    return _U + _Q.pack(amplitude_id)


def index_key(day: int, amplitude_id: int) -> bytes:
    return _X + _I.pack(day) + _Q.pack(amplitude_id)


def progress_key(partition: int) -> bytes:
    return _P + _I.pack(partition)


def partition_of(amplitude_id: int, partitions: int) -> int:
    """The cohorts partition of a user."""
    return amplitude_id % partitions


class StoredUser(msgspec.Struct, array_like=True, tag=2, gc=False):
    """One user's cohort state (module docstring), its condition keys written once: ``keys`` are the condition keys
    it counts, and ``counts`` and ``recent`` name a key by its index there. ``counts``: key index -> day -> events;
    ``recent``: upload minute -> day -> events of the last ``RECENT_MS`` by key index (a column per key, a key
    without events of that minute and day 0); ``props``/``uids``: (upload ms, value), oldest first, the latest
    before the last ``RECENT_MS`` and every later one; ``marks``: ``<partition>/<source>`` -> the highest source
    offset taken; ``merged_into``: the survivor, once this id was merged (then the state is kept only to answer a
    replay of the merge). On the wire: msgpack, an array of the tag 2 and the fields in this order
    (``decode_user`` also reads the layout before it, ``StoredUserV1``)."""

    project: int | None = None
    first_ms: int = 0
    last_day: int = 0
    keys: list[str] = []
    counts: dict[int, dict[int, int]] = {}
    recent: dict[int, dict[int, list[int]]] = {}
    props: list[tuple[int, dict[str, Any]]] = []
    uids: list[tuple[int, str]] = []
    marks: dict[str, int] = {}
    index_day: int | None = None
    merged_into: int | None = None


class StoredUserV1(msgspec.Struct, array_like=True, gc=False):
    """The layout a state was stored in before ``StoredUser``: each condition key written out in ``counts`` and
    again in every bucket of ``recent`` (upload minute -> condition key -> day -> events). Read (``decode_user``) and
    written again as a ``StoredUser`` by the next write of its user."""

    project: int | None = None
    first_ms: int = 0
    last_day: int = 0
    counts: dict[str, dict[int, int]] = {}
    recent: dict[int, dict[str, dict[int, int]]] = {}
    props: list[tuple[int, dict[str, Any]]] = []
    uids: list[tuple[int, str]] = []
    marks: dict[str, int] = {}
    index_day: int | None = None
    merged_into: int | None = None


_enc = msgspec.msgpack.Encoder().encode
_dec = msgspec.msgpack.Decoder(StoredUser).decode
_dec_v1 = msgspec.msgpack.Decoder(StoredUserV1).decode
_V1_HEAD = b"\x9a"     # a msgpack array of 10 elements: the fields of ``StoredUserV1`` (``StoredUser``'s has 12)


def encode_user(u: StoredUser) -> bytes:
    return _enc(u)


def decode_user(data: bytes) -> StoredUser:
    """A stored state, in either layout (``StoredUserV1``: converted)."""
    if data[:1] == _V1_HEAD:
        return from_v1(_dec_v1(data))
    return _dec(data)


class SeenUser(msgspec.Struct, array_like=True, tag=2, gc=False):
    """A ``StoredUser`` as a sync reads it (``view``): its ``marks``, which only the stage reads, are left encoded
    (the state keeps one per events.accepted partition and source its events came through)."""

    project: int | None = None
    first_ms: int = 0
    last_day: int = 0
    keys: list[str] = []
    counts: dict[int, dict[int, int]] = {}
    recent: dict[int, dict[int, list[int]]] = {}
    props: list[tuple[int, dict[str, Any]]] = []
    uids: list[tuple[int, str]] = []
    marks: msgspec.Raw = msgspec.Raw(b"\x80")
    index_day: int | None = None
    merged_into: int | None = None


_dec_seen = msgspec.msgpack.Decoder(SeenUser).decode


def decode_seen(data: bytes) -> StoredUser | SeenUser:
    """A stored state as a sync reads it, in either layout."""
    if data[:1] == _V1_HEAD:
        return from_v1(_dec_v1(data))
    return _dec_seen(data)


def _add_at(row: list[int], i: int, n: int) -> None:
    """``row[i] += n``, the row grown with zeros to reach ``i``."""
    if len(row) <= i:
        row.extend([0] * (i + 1 - len(row)))
    row[i] += n


def from_v1(old: StoredUserV1) -> StoredUser:
    """The same state in ``StoredUser``'s layout: the keys in the order they first appear (``counts``, then the
    buckets of ``recent``)."""
    keys: list[str] = []
    at: dict[str, int] = {}

    def index(key: str) -> int:
        i = at.get(key)
        if i is None:
            i = at[key] = len(keys)
            keys.append(key)
        return i
    counts = {index(k): days for k, days in old.counts.items()}
    recent: dict[int, dict[int, list[int]]] = {}
    for m, bucket in old.recent.items():
        rows: dict[int, list[int]] = {}
        for k, days in bucket.items():
            i = index(k)
            for d, n in days.items():
                row = rows.get(d)
                if row is None:
                    row = rows[d] = []
                _add_at(row, i, n)
        recent[m] = rows
    return StoredUser(old.project, old.first_ms, old.last_day, keys, counts, recent, old.props, old.uids, old.marks,
                      old.index_day, old.merged_into)


def counts_by_key(u: StoredUser) -> dict[str, dict[int, int]]:
    """``u.counts`` by condition key."""
    keys = u.keys
    return {keys[i]: days for i, days in u.counts.items()}


def recent_by_key(u: StoredUser) -> dict[int, dict[str, dict[int, int]]]:
    """``u.recent`` as upload minute -> condition key -> day -> events (the keys with events only)."""
    keys = u.keys
    out: dict[int, dict[str, dict[int, int]]] = {}
    for m, rows in u.recent.items():
        bucket: dict[str, dict[int, int]] = {}
        for d, row in rows.items():
            for i, n in enumerate(row):
                if n:
                    bucket.setdefault(keys[i], {})[d] = n
        out[m] = bucket
    return out


def _latest_before(log: list[tuple[int, Any]], t_ms: int) -> Any:
    if not log:
        return None
    if log[-1][0] < t_ms:           # all before (the common case)
        return log[-1][1]
    out = None
    for ms, value in log:
        if ms < t_ms:
            out = value
        else:
            break
    return out


def view(u: StoredUser | SeenUser, t_ms: int) -> UserState | None:
    """The user as a sync at ``t_ms`` sees it: only what was uploaded before ``t_ms``; None when it is not a user
    of its own then (first seen at ``t_ms`` or later, or merged into another)."""
    if u.merged_into is not None or u.first_ms >= t_ms:
        return None
    keys = u.keys
    counts = {keys[i]: days for i, days in u.counts.items()}
    later = [m for m in u.recent if m >= t_ms]
    if later:
        counts = {k: dict(days) for k, days in counts.items()}
        for m in later:
            for d, row in u.recent[m].items():
                for i, n in enumerate(row):
                    if not n:
                        continue
                    mine = counts.get(keys[i])
                    if mine is None:
                        continue
                    left = mine.get(d, 0) - n
                    if left > 0:
                        mine[d] = left
                    else:
                        mine.pop(d, None)
    return UserState(project=u.project, user_id=_latest_before(u.uids, t_ms), counts=counts,
                     properties=_latest_before(u.props, t_ms) or {})


def _insert(log: list[tuple[int, Any]], ms: int, value: Any) -> list[tuple[int, Any]]:
    """``log`` with ``value`` set at ``ms``; unchanged when that value is the one in force then already (a user's
    properties mostly stay the same from event to event: the log grows with changes, not events)."""
    i = len(log)
    while i > 0 and log[i - 1][0] > ms:
        i -= 1
    if i > 0 and log[i - 1][1] == value:
        return log
    out = list(log)
    out.insert(i, (ms, value))
    return out


def _trim_log(log: list[tuple[int, Any]], cutoff: int) -> list[tuple[int, Any]]:
    """Entries at or after ``cutoff``, and the latest before it (the value in force at ``cutoff``)."""
    if len(log) < 2 or log[1][0] >= cutoff:
        return log           # nothing before the one in force at ``cutoff`` (the log is sorted by time)
    before = [i for i, (ms, _) in enumerate(log) if ms < cutoff]
    return log[before[-1]:] if before else log


def _trim(u: StoredUser, latest: int) -> StoredUser:
    """Without what no sync can ask any more: ``recent`` buckets of uploads older than ``RECENT_MS`` before the
    user's latest one, minute buckets older than ``MINUTE_BUCKETS_MS`` joined into their hour's (a sync stamped
    with another minute than an hour's and read that late after its time is exact to the hour), properties and
    user_ids no longer in force then. ``u`` is its caller's own, and so are its buckets: changed in place and
    returned (``recent`` keeps its order: each bucket where it was, an hour's bucket first made where its first
    minute was)."""
    cutoff = latest - RECENT_MS
    hours_from = latest - MINUTE_BUCKETS_MS
    oldest = cutoff - HOUR_MS
    recent = u.recent
    for m in recent:
        if m < oldest or (m < hours_from and m % HOUR_MS):
            break
    else:   # no bucket to drop or to join into its hour's (the common case): ``recent`` as it is
        recent = None
    if recent is not None:
        # in place when every minute to join finds its hour's bucket before it (the common case once the hour's is
        # made): removed, its counters added into the hour's; else the buckets made again in order
        kept: set[int] = set()
        stale: list[int] = []
        for m in recent:
            if m < oldest:
                stale.append(m)
            elif m >= hours_from or not m % HOUR_MS:
                kept.add(m)
            elif m - m % HOUR_MS in kept:
                stale.append(m)
            else:
                u.recent = _rebucketed(recent, oldest, hours_from)
                break
        else:
            for m in stale:
                v = recent.pop(m)
                if m >= oldest:
                    _add_rows(recent[m - m % HOUR_MS], v)
    props, uids = u.props, u.uids
    if len(props) > 1 and props[1][0] < cutoff:
        u.props = _trim_log(props, cutoff)
    if len(uids) > 1 and uids[1][0] < cutoff:
        u.uids = _trim_log(uids, cutoff)
    return u


def _rebucketed(recent: dict[int, dict[int, list[int]]], oldest: int,
                hours_from: int) -> dict[int, dict[int, list[int]]]:
    """``recent`` without the buckets before ``oldest``, the minutes before ``hours_from`` added into their hour's
    (made where its first minute was); the buckets are the caller's own: added into in place."""
    out: dict[int, dict[int, list[int]]] = {}
    for m, v in recent.items():
        if m < oldest:
            continue
        key = m if m >= hours_from else m - m % HOUR_MS
        into = out.get(key)
        if into is None:
            out[key] = v
            continue
        _add_rows(into, v)
    return out


def _add_rows(into: dict[int, list[int]], other: Mapping[int, list[int]], remap: list[int] | None = None) -> None:
    """A bucket of ``recent`` added into another in place (``remap``: ``other``'s key index -> ``into``'s)."""
    for d, row in other.items():
        mine = into.get(d)
        if mine is None:
            if remap is None:
                into[d] = list(row)
                continue
            mine = into[d] = []
        for i, n in enumerate(row):
            if n:
                _add_at(mine, i if remap is None else remap[i], n)


def fold_merged(survivor: StoredUser, merged: StoredUser) -> StoredUser:
    """The survivor after ``merged`` joined it: counters add up, properties and user_ids are one log by upload time
    (the newest wins, whoever had it), the first upload is the earliest."""
    keys = list(survivor.keys)
    at = {k: i for i, k in enumerate(keys)}
    remap = []
    for k in merged.keys:
        i = at.get(k)
        if i is None:
            i = at[k] = len(keys)
            keys.append(k)
        remap.append(i)
    counts = {i: dict(days) for i, days in survivor.counts.items()}
    for j, days in merged.counts.items():
        mine = counts.setdefault(remap[j], {})
        for d, n in days.items():
            mine[d] = mine.get(d, 0) + n
    recent = {m: {d: list(row) for d, row in v.items()} for m, v in survivor.recent.items()}
    for m, v in merged.recent.items():
        _add_rows(recent.setdefault(m, {}), v, remap)
    props, uids = list(survivor.props), list(survivor.uids)
    for ms, p in merged.props:
        props = _insert(props, ms, p)
    for ms, uid in merged.uids:
        uids = _insert(uids, ms, uid)
    marks = dict(survivor.marks)
    for k, o in merged.marks.items():
        marks[k] = max(o, marks.get(k, -1))
    first = min(survivor.first_ms, merged.first_ms) if survivor.project is not None else merged.first_ms
    return msgspec.structs.replace(
        survivor, project=survivor.project if survivor.project is not None else merged.project, first_ms=first,
        last_day=max(survivor.last_day, merged.last_day), keys=keys, counts=counts, recent=recent, props=props,
        uids=uids, marks=marks)


def _unused_keys_dropped(u: StoredUser) -> StoredUser:
    """``u`` without the keys that neither ``counts`` nor ``recent`` count any more (their windows expired, or no
    cohort has them), the others' indexes moved down in order."""
    used = set(u.counts)
    for rows in u.recent.values():
        for row in rows.values():
            used.update(i for i, n in enumerate(row) if n)
    if len(used) == len(u.keys):
        return u
    remap = [-1] * len(u.keys)
    keys: list[str] = []
    for i, k in enumerate(u.keys):
        if i in used:
            remap[i] = len(keys)
            keys.append(k)
    counts = {remap[i]: days for i, days in u.counts.items()}
    recent: dict[int, dict[int, list[int]]] = {}
    for m, rows in u.recent.items():
        moved: dict[int, list[int]] = {}
        _add_rows(moved, rows, remap)
        recent[m] = moved
    return msgspec.structs.replace(u, keys=keys, counts=counts, recent=recent)


# --- records of the cohorts topic --------------------------------------------------------------------------------

class CohortRecord(msgspec.Struct, array_like=True, gc=False):
    """One record of the cohorts topic, with the fields of ``schemas/cohort_record.avsc``, which documents them. On
    the wire: msgpack, the fields in the schema's order (a benchmark showed fastavro's per-record cost to be most
    of the stage's: BENCHMARKS.md, Cohorts); a message is an array of them (``decode_all``)."""

    kind: str
    amplitude_id: int = -1
    partition: int = -1
    source: str = ""
    source_offset: int = -1
    uploaded_ms: int = 0
    project: int = 0
    day: int = 0
    conditions: list[str] = []
    user_id: str | None = None
    properties: bytes | None = None
    into: int = -1
    state: bytes | None = None

    def encode(self) -> bytes:
        return _rec_enc(self)


_rec_enc = msgspec.msgpack.Encoder().encode
_records_dec = msgspec.msgpack.Decoder(list[CohortRecord]).decode


def decode_all(data: bytes) -> list[CohortRecord]:
    """The records of one cohorts topic message (a msgpack array), so that one message carries what one input
    batch sends to one partition."""
    return _records_dec(data)


def _array(values: list[bytes]) -> bytes:
    """A msgpack array of already encoded elements."""
    n = len(values)
    head = bytes((0x90 | n,)) if n < 16 else (b"\xdc" + n.to_bytes(2, "big") if n < 1 << 16 else
                                             b"\xdd" + n.to_bytes(4, "big"))
    return head + b"".join(values)


Sent = tuple[int, bytes, bytes]
"""(cohorts partition, key, value): a message to produce, holding one or more records (``decode_all``)."""


def _grouped(sends: list[Sent]) -> list[Sent]:
    """One message per target partition (the records joined in order), the key of its first."""
    by: dict[int, tuple[bytes, list[bytes]]] = {}
    for q, k, v in sends:
        by.setdefault(q, (k, []))[1].append(v)
    return [(q, k, _array(vs)) for q, (k, vs) in sorted(by.items())]


class Progress:
    """How far each events.accepted partition has passed (pure): the latest upload time read minus ``grace_ms``, or,
    while the partition is caught up with its end (the agent knows from its consumer), the time that end was read
    minus it (the clock's, when it was read now). Never goes back.

    The end a consumer knows is the one its last fetch of the partition answered: a partition it stopped fetching
    (paused while its records wait to be handled) has a stale end, which says nothing of the records appended
    since; caught up with it, the partition has passed the time of that fetch, not the clock's."""

    def __init__(self, grace_ms: int = DEFAULT_GRACE_MS) -> None:
        self.grace_ms = grace_ms
        self.read: dict[int, int] = {}
        self.passed: dict[int, int] = {}

    def saw(self, partition: int, uploaded_ms: int) -> None:
        if uploaded_ms > self.read.get(partition, -1):
            self.read[partition] = uploaded_ms

    def advance(self, partition: int, now_ms: int, caught_up: bool, end_read_ms: int | None = None) -> int | None:
        """The partition's new progress, or None when it did not move. ``end_read_ms``: when the end it is caught
        up with was read (None: now)."""
        t = self.read.get(partition, -1) - self.grace_ms
        if caught_up:
            t = max(t, (now_ms if end_read_ms is None else min(now_ms, end_read_ms)) - self.grace_ms)
        if t > self.passed.get(partition, -1):
            self.passed[partition] = t
            return t
        return None


def row_fields(cohorts: CohortSet) -> tuple[str, ...]:
    """The top-level fields of an export row that ``Rekeyer.activity`` reads for ``cohorts``, sorted: the user, the
    project, the event's type and day, its user_id and user_properties, and the fields the conditions' filters
    test."""
    names = {"amplitude_id", "app", "event_type", "event_time", "server_upload_time", "user_id", "user_properties"}
    for c in cohorts.conditions.values():
        for f in c.filters:
            names.add(f.column if f.column is not None else f.name)
    return tuple(sorted(names))


def row_decoder(fields: tuple[str, ...]) -> Callable[[bytes], dict[str, Any]]:
    """A JSON export row -> a dict of ``fields`` alone (a field the row lacks: None, which ``.get`` answers alike);
    the rest of the row is skipped, not built (half the time of decoding the whole row)."""
    row_type = msgspec.defstruct("Row", [(f"f{i}", Any, None) for i in range(len(fields))],
                                 rename={f"f{i}": name for i, name in enumerate(fields)})
    decode, astuple = msgspec.json.Decoder(row_type).decode, msgspec.structs.astuple
    return lambda line: dict(zip(fields, astuple(decode(line))))


_BASE_FIELDS = ("amplitude_id", "app", "event_type", "event_time", "server_upload_time", "user_id",
                "user_properties")


class RowReader:
    """The fast path of ``Rekeyer.activity``'s read of a row: an export row decoded into a Struct of the fields it
    reads, where each object holding what it reads (``user_properties``; a filter's ``column``) is a Struct of the
    names read in it alone: the rest of the row, and of those objects, is skipped, not built (``row_decoder``
    builds a dict of the row's fields and each object whole). ``read`` raises ``msgspec.DecodeError`` for a line it
    cannot decode so (not JSON, not an object, a holder that is neither an object nor null): the caller then takes
    the reference path (``row_decoder``), which gives the same record (or the same error) for any line
    (``tests/unit/cohorts/test_rekey_fast.py``)."""

    def __init__(self, cohorts: CohortSet) -> None:
        holders: dict[str, set[str]] = {"user_properties": set(cohorts.all_properties)}
        top = set(_BASE_FIELDS) - {"user_properties"}
        for c in cohorts.conditions.values():
            for f in c.filters:
                if f.column is None:
                    top.add(f.name)
                else:
                    holders.setdefault(f.column, set()).add(f.name)
        # a name both a field and an object read in: the reference path alone (``usable``)
        self.usable = not (top & holders.keys())
        self.top = tuple(sorted(top))
        self.holders = {h: tuple(sorted(names)) for h, names in sorted(holders.items())}
        # the fields ``fast_activity`` reads by their own names, the filters' by ``attr``
        self.attr = {name: name if name in _BASE_FIELDS else f"t{i}" for i, name in enumerate(self.top)}
        self.attr.update({h: h if h in _BASE_FIELDS else f"h{i}" for i, h in enumerate(self.holders)})
        self.inner: dict[str, dict[str, str]] = {h: {n: f"p{i}" for i, n in enumerate(names)}
                                                  for h, names in self.holders.items()}
        fields: list[tuple[str, Any, Any]] = [(self.attr[n], Any, None) for n in self.top]
        holder_types: dict[str, Any] = {}
        for h, names in self.holders.items():
            inner = holder_types[h] = msgspec.defstruct(f"Holder{self.attr[h]}",
                                                        [(a, Any, None) for a in self.inner[h].values()],
                                                        rename={a: n for n, a in self.inner[h].items()}, gc=False)
            fields.append((self.attr[h], inner | None, None))   # type: ignore[operator]
        row_type = msgspec.defstruct("FastRow", fields, rename={a: n for n, a in self.attr.items()}, gc=False)
        self.read: Callable[[bytes], Any] = msgspec.json.Decoder(row_type).decode
        self.filtered = any(c.filters for c in cohorts.conditions.values())
        # a row the identity stage's device side read (``stream.identity.device.Seen``): its fields are those read
        # here when the conditions' filters read nothing but user_properties; only its user_properties are decoded
        self.seeable = self.usable and set(self.top) == set(_BASE_FIELDS) - {"user_properties"} \
            and set(self.holders) == {"user_properties"}
        self.row_type = row_type
        self.read_props: Callable[[bytes], Any] = msgspec.json.Decoder(holder_types["user_properties"]).decode

    def of_seen(self, seen: Any, props: Any) -> Any:
        """The row ``read`` would give for a row the device side read (``Seen``; its user_properties as
        ``read_props`` decoded them), for a row whose event_time has a day: the fields of ``_BASE_FIELDS`` from what
        was read, in ``top``'s order, but server_upload_time, which such a row's record does not read (None)."""
        return self.row_type(seen.out_amplitude_id, seen.app, seen.event_time, seen.event_type, None, seen.user_id,
                             props)

    def as_row(self, r: Any) -> dict[str, Any]:
        """A read row as the dict a condition's filters test (each holder a dict of the names read in it)."""
        row = {n: getattr(r, self.attr[n]) for n in self.top}
        for h, names in self.inner.items():
            held = getattr(r, self.attr[h])
            row[h] = None if held is None else {n: getattr(held, a) for n, a in names.items()}
        return row


_NO_DAY = object()
DAYS_KEPT = 4096
"""The day numbers of dates ``Rekeyer.fast_activity`` keeps (a row's date parsed once, not once a row); past that
many dates it forgets them all."""


class Rekeyer:
    """Step 1 (module docstring): events.accepted batches and identity.merges records -> cohorts topic records."""

    def __init__(self, cohorts: CohortSet, partitions: int, grace_ms: int = DEFAULT_GRACE_MS) -> None:
        self.cohorts, self.partitions = cohorts, partitions
        self.projects = frozenset(c.project for c in cohorts.cohorts)
        self.progress = Progress(grace_ms)
        self.decode_row = row_decoder(row_fields(cohorts))
        self._names: dict[int, list[str]] = {}     # per project: the user properties kept, sorted
        self.reader = RowReader(cohorts)
        self._kept: dict[int, list[tuple[str, str]]] = {}   # per project: (property, its attribute), sorted
        self._days: dict[str, int | None] = {}     # a row's date (its time's first 10 characters) -> its day number

    def batch(self, partition: int, batch: Any) -> list[Sent]:
        """The records of one events.accepted batch (``EventBatch``) read from ``partition``."""
        by: dict[int, list[CohortRecord]] = {}     # cohorts partition -> its records, in order
        self._records(partition, batch, by)
        # a message per partition (``_grouped``: keyed by its first record's user), its records encoded at once
        return [(q, _Q.pack(recs[0].amplitude_id), _rec_enc(recs)) for q, recs in sorted(by.items())]

    def take(self, batches: Iterable[tuple[int, Any]], seen: Sequence[Sequence[Any] | None] | None = None
             ) -> list[Sent]:
        """The records of several events.accepted batches ((partition read from, ``EventBatch``), in the order
        read), a message per cohorts partition for all of them: the records each partition gets, in the same
        order as ``batch`` of each in turn would send them, in fewer messages. ``seen``: per batch, per row, what
        the identity stage's device side read of it (``stream.identity.device.Seen``; None: the row is read here),
        the same records without reading the rows again."""
        by: dict[int, list[CohortRecord]] = {}
        for i, (partition, batch) in enumerate(batches):
            self._records(partition, batch, by, seen[i] if seen is not None else None)
        return [(q, _Q.pack(recs[0].amplitude_id), _rec_enc(recs)) for q, recs in sorted(by.items())]

    def _records(self, partition: int, batch: Any, by: dict[int, list[CohortRecord]],
                 seen: Sequence[Any] | None = None) -> None:
        """A batch's records added to ``by`` (cohorts partition -> its records, in order)."""
        if batch.times:
            self.progress.saw(partition, max(batch.times))
        if batch.project not in self.projects or not batch.lines:
            return
        source, offsets = batch.source_of_events()
        src = str(source)
        decode_row, activity, partitions = self.decode_row, self.activity, self.partitions
        read, fast = (self.reader.read, self.fast_activity) if self.reader.usable else (None, None)
        if seen is not None and self.reader.seeable:
            self._seen_records(partition, batch, by, seen, src, offsets)
            return
        for uploaded_ms, line, offset in zip(batch.times, batch.lines, offsets):
            if read is not None:
                try:
                    r = read(line)
                except msgspec.DecodeError:     # the reference path: the same record, or its error
                    rec = activity(decode_row(line), partition, src, offset, uploaded_ms)
                else:
                    rec = fast(r, partition, src, offset, uploaded_ms)
            else:
                rec = activity(decode_row(line), partition, src, offset, uploaded_ms)
            if rec is not None:
                q = rec.amplitude_id % partitions       # partition_of
                recs = by.get(q)
                if recs is None:
                    by[q] = [rec]
                else:
                    recs.append(rec)

    def _seen_records(self, partition: int, batch: Any, by: dict[int, list[CohortRecord]], seen: Sequence[Any],
                      src: str, offsets: Sequence[int]) -> None:
        """``_records`` of a batch whose rows the device side read (``seen``, per row): each row's fields from what
        it read, its user_properties decoded once per distinct JSON of the batch (a user's rows carry the same);
        a row it did not read as it came (None), an event_type it read as "" (absent or empty), an event_time
        without a day (its day is then its server_upload_time's, which the device side does not read) or
        user_properties that are not an object: read here."""
        reader, fast, partitions = self.reader, self.fast_activity, self.partitions
        read_props, of_seen, read, decode_row = reader.read_props, reader.of_seen, reader.read, self.decode_row
        props_of: dict[bytes, Any] = {}
        days = self._days
        for uploaded_ms, line, offset, s in zip(batch.times, batch.lines, offsets, seen):
            r = None
            if s is not None and s.event_type and s.event_time is not None:
                day = days.get(s.event_time[:10], _NO_DAY)
                if day is _NO_DAY:
                    day = self._date_day(s.event_time[:10])
            else:
                day = None
            if day is not None:
                raw = s.out_user_properties
                props = props_of.get(raw)
                if props is None:
                    try:
                        props = props_of[raw] = read_props(raw)
                    except msgspec.DecodeError:
                        props = None
                if props is not None:
                    r = of_seen(s, props)
            if r is None:
                try:
                    r = read(line)
                except msgspec.DecodeError:     # the reference path: the same record, or its error
                    rec = self.activity(decode_row(line), partition, src, offset, uploaded_ms)
                else:
                    rec = fast(r, partition, src, offset, uploaded_ms)
            else:
                rec = fast(r, partition, src, offset, uploaded_ms)
            if rec is not None:
                q = rec.amplitude_id % partitions       # partition_of
                recs = by.get(q)
                if recs is None:
                    by[q] = [rec]
                else:
                    recs.append(rec)

    def _date_day(self, date: str) -> int | None:
        """The day number of a row's date (its time's first 10 characters; ``_day``), kept for the rows after it."""
        days = self._days
        if len(days) >= DAYS_KEPT:
            days.clear()
        day = days[date] = _day(date)
        return day

    def activity(self, row: Mapping[str, Any], partition: int, source: str, offset: int,
                 uploaded_ms: int) -> CohortRecord | None:
        aid = row.get("amplitude_id")
        project = row.get("app")
        if not isinstance(aid, int) or isinstance(aid, bool) or not isinstance(project, int):
            return None
        day = event_day(row)
        if day is None:
            day = day_of_ms(uploaded_ms)
        day = min(day, day_of_ms(uploaded_ms))    # a device ahead of the clock counts on its upload's day
        # a candidate is of the row's project and event type already: one without filters matches
        keys = [c.key for c in self.cohorts.candidates(row) if not c.filters or c.matches(row)]
        given = row.get("user_properties")
        props = None
        if isinstance(given, Mapping):
            names = self._names.get(project)
            if names is None:
                names = self._names[project] = sorted(self.cohorts.properties_of(project))
            props = orjson.dumps({n: given[n] for n in names if given.get(n) is not None})
        user_id = row.get("user_id")
        return CohortRecord(ACTIVITY, aid, partition, source, offset, uploaded_ms, project, day, keys,
                            user_id if isinstance(user_id, str) and user_id else None, props)

    def fast_activity(self, r: Any, partition: int, source: str, offset: int,
                      uploaded_ms: int) -> CohortRecord | None:
        """``activity`` of a row read by ``RowReader.read``: the same record."""
        aid, project = r.amplitude_id, r.app
        if not isinstance(aid, int) or isinstance(aid, bool) or not isinstance(project, int):
            return None
        day = None
        days = self._days
        for text in (r.event_time, r.server_upload_time):      # event_day
            if isinstance(text, str):
                date = text[:10]
                day = days.get(date, _NO_DAY)
                if day is _NO_DAY:
                    day = self._date_day(date)
                if day is not None:
                    break
        upload_day = uploaded_ms // DAY_MS      # day_of_ms
        if day is None or day > upload_day:     # a device ahead of the clock counts on its upload's day
            day = upload_day
        candidates = self.cohorts.by_event.get((project, r.event_type), ())
        if not candidates:
            keys = []
        elif self.reader.filtered:
            row = self.reader.as_row(r)
            keys = [c.key for c in candidates if not c.filters or c.matches(row)]
        else:
            keys = [c.key for c in candidates]
        given = r.user_properties
        props = None
        if given is not None:
            kept = self._kept.get(project)
            if kept is None:
                attr = self.reader.inner["user_properties"]
                kept = self._kept[project] = [(n, attr[n]) for n in sorted(self.cohorts.properties_of(project))]
            values = {}
            for n, a in kept:
                v = getattr(given, a)
                if v is not None:
                    values[n] = v
            props = orjson.dumps(values)
        user_id = r.user_id
        return CohortRecord(ACTIVITY, aid, partition, source, offset, uploaded_ms, project, day, keys,
                            user_id if isinstance(user_id, str) and user_id else None, props)

    def merge(self, record: Mapping[str, Any]) -> list[Sent]:
        """An identity.merges record: MERGE_OUT to the merged id's partition."""
        merged, into = record.get("merged_amplitude_id"), record.get("amplitude_id")
        if not isinstance(merged, int) or not isinstance(into, int) or merged == into:
            return []
        rec = CohortRecord(MERGE_OUT, merged, uploaded_ms=int(record.get("merge_server_time") or 0), into=into)
        return _grouped([(partition_of(merged, self.partitions), _Q.pack(merged), rec.encode())])

    def advance(self, partition: int, now_ms: int, caught_up: bool, end_read_ms: int | None = None) -> list[Sent]:
        """PROGRESS records to every cohorts partition when ``partition`` moved on (call after its records were
        sent, e.g. on a timer; ``Progress.advance``)."""
        t = self.progress.advance(partition, now_ms, caught_up, end_read_ms)
        if t is None:
            return []
        read = self.progress.read.get(partition)
        day = day_of_ms(read) if read is not None else -1
        value = CohortRecord(PROGRESS, partition=partition, uploaded_ms=t, day=day).encode()
        return [(q, _I.pack(partition), _array([value])) for q in range(self.partitions)]


# --- step 2: the state -------------------------------------------------------------------------------------------

class Store(Protocol):
    """One cohorts partition's keys (RocksDB in the worker; a dict in tests)."""

    def get(self, key: bytes) -> bytes | None: ...

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]: ...


class MemoryStore:
    """A sorted in-memory ``Store`` (tests, benchmarks)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        for k in sorted(k for k in self.data if start <= k < end):
            yield k, self.data[k]

    def write(self, ops: Iterable[tuple[bytes, bytes | None]]) -> None:
        for k, v in ops:
            if v is None:
                self.data.pop(k, None)
            else:
                self.data[k] = v


class RdictStore:
    """A ``Store`` on a RocksDB (rocksdict ``Rdict`` in raw mode): a table partition's, or a sync's spool."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        for k, v in self.db.items(from_key=start):
            if k >= end:
                return
            yield k, v

    def write(self, ops: Iterable[tuple[bytes, bytes | None]]) -> None:
        from rocksdict import WriteBatch
        wb = WriteBatch(raw_mode=True)
        for k, v in ops:
            if v is None:
                wb.delete(k)
            else:
                wb.put(k, v)
        self.db.write(wb)


@dataclass
class Applied:
    """What applying records decided: the store writes (a value of None deletes; each is also the changelog's
    record of its key), the records to send on, and counts for the metrics."""

    writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    sends: list[Sent] = field(default_factory=list)
    applied: int = 0
    replayed: int = 0
    expired: int = 0
    forgotten: int = 0


_LATER = object()
"""In ``_Txn.pending``: the key's value is its user's state in ``_Txn.users``, encoded once when the writes are
taken."""


class _Txn:
    """The keys one ``CohortState.apply`` wrote, over its store. A user's state it wrote stays decoded until the
    writes are taken (``writes``), so that a user with several records in one message is decoded and encoded once,
    not once a record; the writes are the same, in the same order."""

    __slots__ = ("pending", "store", "users")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: dict[bytes, Any] = {}
        self.users: dict[bytes, StoredUser] = {}

    def get(self, key: bytes) -> bytes | None:
        pending = self.pending
        if key in pending:
            v = pending[key]
            return encode_user(self.users[key]) if v is _LATER else v
        return self.store.get(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        self.pending[key] = value
        self.users.pop(key, None)

    def user(self, key: bytes) -> StoredUser | None:
        """The state at ``key``, the object written last when this apply wrote it: the caller owns it (may change it,
        then must ``keep`` it)."""
        u = self.users.get(key)
        if u is not None:
            return u
        raw = self.get(key)
        return decode_user(raw) if raw is not None else None

    def keep(self, key: bytes, u: StoredUser) -> None:
        self.pending[key] = _LATER
        self.users[key] = u

    def scan(self, start: bytes, end: bytes) -> list[tuple[bytes, bytes]]:
        """The keys from ``start`` up to ``end`` (excluded) as this apply has them, in key order: the store's, with
        what the apply wrote (a record applied after others sees their writes, as if each were in the store)."""
        found = dict(self.store.scan(start, end))
        for k, v in self.pending.items():
            if start <= k < end:
                if v is None:
                    found.pop(k, None)
                else:
                    found[k] = encode_user(self.users[k]) if v is _LATER else v
        return sorted(found.items())

    def writes(self) -> list[tuple[bytes, bytes | None]]:
        """What the apply wrote, the progress (and the expiry day) last: a sync trusts a partition's progress once it
        has read it, reading the changelog only to its end offsets, so every state the records before the progress
        changed must come before it, though in a take the progress key may first have been written before them."""
        users = self.users
        out = [(k, encode_user(users[k]) if v is _LATER else v) for k, v in self.pending.items()]
        return [w for w in out if w[0][:1] not in _LAST] + [w for w in out if w[0][:1] in _LAST]


class CohortState:
    """Step 2 (module docstring) for the partitions of one process: ``apply`` the records of one partition, then
    write ``Applied.writes`` to its store and changelog and send ``Applied.sends``."""

    def __init__(self, cohorts: CohortSet, partitions: int, state_days: int,
                 store_of: Callable[[int], Store]) -> None:
        self.cohorts, self.partitions, self.state_days = cohorts, partitions, state_days
        self.store_of = store_of
        self._props: dict[bytes, dict[str, Any]] = {}
        self._marks: dict[tuple[int, str], str] = {}     # (partition, source) -> its key in ``StoredUser.marks``

    def apply(self, partition: int, records: Iterable[tuple[bytes | None, bytes]]) -> Applied:
        """Apply the records of ``partition``'s messages (key, value), in order: one message or several (a take),
        each user's state decoded, encoded and written once for all of them."""
        store = self.store_of(partition)
        out = Applied()
        tx = _Txn(store)
        touched: dict[int, None] = {}    # users ACTIVITY records changed since their day index was last written
        for rec in (r for _, value in records for r in decode_all(value)):
            kind = rec.kind
            if kind == ACTIVITY:
                self._activity(rec, tx, out, touched)
                continue
            if touched:                  # what the other kinds read is as it would be after each record
                self._index(touched, tx)
            if kind == PROGRESS:
                self._progress(partition, rec, tx, store, out)
            elif kind == MERGE_OUT:
                self._merge_out(rec, tx, out)
            elif kind == MERGE_IN:
                self._merge_in(rec, tx, out)
        if touched:
            self._index(touched, tx)
        out.writes = tx.writes()
        out.sends = _grouped(out.sends)
        return out

    def _index(self, touched: dict[int, None], tx: _Txn) -> None:
        """The day index of the users ``touched`` names, written for their states as they are now (once, however
        many of their records came before)."""
        users = tx.users
        for aid in touched:
            self._store(aid, users[user_key(aid)], tx)
        touched.clear()

    def _properties(self, raw: bytes) -> dict[str, Any]:
        """A record's properties decoded, the same object for the same bytes while it is cached (a user's mostly
        stay the same from event to event; no one changes a logged value in place)."""
        cache = self._props
        props = cache.get(raw)
        if props is None:
            if len(cache) >= 4096:
                cache.clear()
            props = cache[raw] = orjson.loads(raw)
        return props

    # the user's index entry: the first day it has something to drop
    def _next_day(self, u: StoredUser) -> int:
        best = u.last_day + self.state_days
        conditions, keys = self.cohorts.conditions, u.keys
        for i, counts in u.counts.items():
            c = conditions.get(keys[i])
            if c is None:
                day = min(counts, default=u.last_day)      # a condition no cohort has: drop it soon
            elif c.within_days is not None and counts:
                day = min(counts) + c.within_days
            else:
                continue
            if day < best:
                best = day
        return best

    def _store(self, aid: int, u: StoredUser, tx: _Txn) -> None:
        day = self._next_day(u) if u.merged_into is None else u.last_day + self.state_days
        if day != u.index_day:
            if u.index_day is not None:
                tx.put(index_key(u.index_day, aid), None)
            tx.put(index_key(day, aid), b"")
            u = msgspec.structs.replace(u, index_day=day)
        tx.keep(user_key(aid), u)

    def _activity(self, rec: CohortRecord, tx: _Txn, out: Applied, touched: dict[int, None]) -> None:
        ukey = _U + _Q.pack(rec.amplitude_id)       # user_key
        u = tx.users.get(ukey)
        if u is None:
            u = tx.user(ukey)
        if u is not None and u.merged_into is not None:   # a late event of a merged id: the survivor's
            fwd = msgspec.structs.replace(rec, amplitude_id=u.merged_into, source=f"{rec.source}@{rec.amplitude_id}")
            out.sends.append((partition_of(u.merged_into, self.partitions), _Q.pack(u.merged_into), fwd.encode()))
            return
        marks = self._marks
        mark = marks.get((rec.partition, rec.source))
        if mark is None:
            if len(marks) >= 4096:
                marks.clear()
            mark = marks[(rec.partition, rec.source)] = f"{rec.partition}/{rec.source}"
        if u is not None and rec.source_offset <= u.marks.get(mark, -1):
            out.replayed += 1
            return
        if u is None:
            u = StoredUser(project=rec.project, first_ms=rec.uploaded_ms, last_day=rec.day)
        # ``u`` is this apply's own (decoded for it, or the object it wrote): changed in place
        counts, recent = u.counts, u.recent
        uploaded, day = rec.uploaded_ms, rec.day
        upload_day = uploaded // DAY_MS      # day_of_ms
        minute = uploaded - uploaded % MINUTE_MS
        conditions, keys = self.cohorts.conditions, u.keys
        row = None
        for key in rec.conditions:
            c = conditions.get(key)
            if c is None:
                continue
            within = c.within_days
            if not (day > upload_day - within if within is not None else c.keeps(day, upload_day)):
                continue              # it could never count (``Condition.keeps``)
            try:
                i = keys.index(key)
            except ValueError:        # a user's first event of this condition
                i = len(keys)
                keys.append(key)
            days = counts.get(i)
            if days is None:
                days = counts[i] = {}
            days[day] = days.get(day, 0) + 1
            if row is None:
                bucket = recent.get(minute)
                if bucket is None:
                    bucket = recent[minute] = {}
                row = bucket.get(day)
                if row is None:
                    row = bucket[day] = []
            if len(row) <= i:
                row.extend([0] * (i + 1 - len(row)))
            row[i] += 1
        # the logs' latest value, in force already (the common case), leaves them as they are (``_insert``)
        if rec.properties is not None:
            props, log = self._properties(rec.properties), u.props
            if not log or log[-1][0] > uploaded or log[-1][1] is not props:
                u.props = _insert(log, uploaded, props)
        uid = rec.user_id
        if uid is not None:
            log = u.uids
            if not log or log[-1][0] > uploaded or log[-1][1] != uid:
                u.uids = _insert(log, uploaded, uid)
        if u.project is None:
            u.project = rec.project
        if uploaded < u.first_ms:
            u.first_ms = uploaded
        if day > u.last_day:
            u.last_day = day
        u.marks[mark] = rec.source_offset
        # the logs are in upload order: their last entries are their latest
        latest = max(u.first_ms, uploaded, u.props[-1][0] if u.props else uploaded,
                     u.uids[-1][0] if u.uids else uploaded)
        tx.keep(ukey, _trim(u, latest))     # its day index is written once the user's records are in (``_index``)
        touched[rec.amplitude_id] = None
        out.applied += 1

    def _merge_out(self, rec: CohortRecord, tx: _Txn, out: Applied) -> None:
        had = tx.user(user_key(rec.amplitude_id))
        u = had if had is not None else StoredUser(first_ms=rec.uploaded_ms, last_day=day_of_ms(rec.uploaded_ms))
        if u.merged_into is not None and u.merged_into != rec.into:
            return                    # merged into another already: the first merge stands
        if had is not None:           # sent again on a replay: the survivor drops what it already has
            state = encode_user(msgspec.structs.replace(u, merged_into=None, index_day=None))
            send = CohortRecord(MERGE_IN, rec.amplitude_id, uploaded_ms=rec.uploaded_ms, into=rec.into, state=state)
            out.sends.append((partition_of(rec.into, self.partitions), _Q.pack(rec.into), send.encode()))
        self._store(rec.amplitude_id, msgspec.structs.replace(u, merged_into=rec.into), tx)

    def _merge_in(self, rec: CohortRecord, tx: _Txn, out: Applied) -> None:
        u = tx.user(user_key(rec.into))
        if u is not None and u.merged_into is not None:   # the survivor was merged on: on to its survivor
            fwd = msgspec.structs.replace(rec, into=u.merged_into)
            out.sends.append((partition_of(u.merged_into, self.partitions), _Q.pack(u.merged_into), fwd.encode()))
            return
        mark = f"merge/{rec.amplitude_id}"
        if u is not None and mark in u.marks:
            out.replayed += 1
            return
        merged = decode_user(rec.state or b"")
        u = fold_merged(u, merged) if u is not None else merged
        u = msgspec.structs.replace(u, marks={**u.marks, mark: 0})
        self._store(rec.into, u, tx)
        out.applied += 1

    # progress and expiry
    def _progress(self, partition: int, rec: CohortRecord, tx: _Txn, store: Store, out: Applied) -> None:
        get, put = tx.get, tx.put
        key = progress_key(rec.partition)
        raw = get(key)
        if raw is not None and _Q.unpack(raw[:8])[0] >= rec.uploaded_ms:
            return
        put(key, _PROGRESS.pack(rec.uploaded_ms, rec.day))
        # windows move with the days of the uploads read (the newest of any partition), never with the clock alone
        read_days = [_PROGRESS.unpack(v)[1] for _, v in tx.scan(_P, _P + b"\xff") if len(v) == 12]
        read_days.append(rec.day)
        day = max(read_days) - EXPIRY_LAG_DAYS
        if max(read_days) < 0:
            return
        raw_e = get(_E)
        done = _I.unpack(raw_e)[0] if raw_e is not None else None
        if done is not None and day <= done:
            return
        self.expire(day, tx, store, out)
        put(_E, _I.pack(day))

    def passed(self, get: Callable[[bytes], bytes | None]) -> int | None:
        """The time the partition has passed: the least progress of all events.accepted partitions (None until
        each has sent one)."""
        least = None
        for p in range(self.partitions):
            raw = get(progress_key(p))
            if raw is None:
                return None
            t = _Q.unpack(raw[:8])[0]
            least = t if least is None else min(least, t)
        return least

    def expire(self, today: int, tx: _Txn, store: Store, out: Applied) -> None:
        """Drop what can no longer count on ``today`` or later, for the users the day index names up to it."""
        for k, _ in tx.scan(_X, _X + _I.pack(today + 1)):
            aid = _Q.unpack(k[5:])[0]
            tx.put(k, None)
            u = tx.user(user_key(aid))
            if u is None:
                continue
            if u.index_day != _I.unpack(k[1:5])[0]:
                continue                 # a stale entry
            u = msgspec.structs.replace(u, index_day=None)
            if u.last_day + self.state_days <= today:
                tx.put(user_key(aid), None)
                out.forgotten += 1
                continue
            counts: dict[int, dict[int, int]] = {}
            for i, days in u.counts.items():
                c = self.cohorts.conditions.get(u.keys[i])
                if c is None:
                    continue
                kept = {d: n for d, n in days.items() if c.keeps(d, today)}
                if kept:
                    counts[i] = kept
            self._store(aid, _unused_keys_dropped(msgspec.structs.replace(u, counts=counts)), tx)
            out.expired += 1


# --- what a sync reads -------------------------------------------------------------------------------------------

class NotPassed(Exception):
    """The state has not passed the sync's time on every partition yet."""


class SyncView:
    """The states of every cohorts partition as a sync at ``t_ms`` reads them (``Membership``'s interface for
    ``sync.sync_job``): ``stores`` are each partition's keys (the table's compacted changelog, read to its end into
    a local store; or the stores themselves)."""

    def __init__(self, cohorts: CohortSet, stores: Mapping[int, Store], accepted_partitions: int, t_ms: int,
                 profile_of: Callable[[int, str], Mapping[str, Any] | None] | None = None) -> None:
        from stream.cohorts.schedule import counted_day
        self.cohorts, self.stores, self.accepted_partitions, self.t_ms = cohorts, stores, accepted_partitions, t_ms
        self.profile_of = profile_of
        self._recent: dict[int, UserState] = {}
        self.today = counted_day(t_ms)
        self.states = _States(self)
        self.rows = 0

    def passed(self) -> int | None:
        """The least time every partition has passed (None: some partition has no progress yet)."""
        least = None
        for store in self.stores.values():
            for p in range(self.accepted_partitions):
                raw = store.get(progress_key(p))
                if raw is None:
                    return None
                t = _Q.unpack(raw[:8])[0]
                least = t if least is None else min(least, t)
        return least

    def check(self) -> None:
        """Raise ``NotPassed`` while some partition has not passed ``t_ms``; ``ValueError`` when the windows were
        expired past what a sync of ``t_ms`` counts."""
        passed = self.passed()
        if passed is None or passed < self.t_ms:
            raise NotPassed(f"the cohort state has passed {_iso(passed)} only, not the sync's time {_iso(self.t_ms)}")
        for store in self.stores.values():
            raw = store.get(_E)
            if raw is not None and _I.unpack(raw)[0] > self.today:
                raise ValueError(f"the sync of {_iso(self.t_ms)} is more than {EXPIRY_LAG_DAYS} days older than the "
                                 "cohort state, whose windows have moved past it: sync a later time")

    def users(self) -> Iterator[tuple[int, UserState]]:
        """Every user there at ``t_ms``, in amplitude_id order (a merge of the partitions' scans). The latest few
        are kept for ``state``, which the sync asks right after for each member's row."""
        unpack, t_ms, recent = _Q.unpack, self.t_ms, self._recent
        profiled = self._profiled if self.profile_of is not None else None
        # merged by key: ``u`` + the amplitude_id big-endian, in amplitude_id order
        scans = [store.scan(_U, _U + b"\xff") for store in self.stores.values()]
        for k, raw in heapq.merge(*scans) if len(scans) > 1 else scans[0] if scans else ():
            st = view(decode_seen(raw), t_ms)
            if st is None:
                continue
            if profiled is not None:
                st = profiled(st) or st
            aid = unpack(k[1:])[0]
            recent[aid] = st
            if len(recent) > 64:
                del recent[next(iter(recent))]
            yield aid, st

    def members(self, cohort: Any) -> Iterator[int]:
        """The amplitude_ids in ``cohort`` at ``t_ms``, ascending, streamed."""
        from stream.cohorts.membership import is_member
        for aid, st in self.users():
            if is_member(st, cohort, self.today):
                yield aid

    def state(self, aid: int) -> UserState | None:
        st = self._recent.get(aid)
        if st is not None:
            return st
        key = user_key(aid)
        home = self.stores.get(partition_of(aid, len(self.stores)))
        raw = home.get(key) if home is not None else None
        if raw is not None:
            return self._profiled(view(decode_seen(raw), self.t_ms))
        for store in self.stores.values():
            raw = store.get(key)
            if raw is not None:
                return self._profiled(view(decode_seen(raw), self.t_ms))
        return None

    def _profiled(self, st: UserState | None) -> UserState | None:
        """A user of a project with a source of profiles reads its profile's properties, the names the cohorts and
        their syncs read (``profile_of``: None for no profile or a deleted one, then the rows' stay)."""
        if st is None or self.profile_of is None or st.project is None or st.user_id is None:
            return st
        props = self.profile_of(st.project, st.user_id)
        if props is None:
            return st
        names = self.cohorts.properties_of(st.project)
        return msgspec.structs.replace(st, properties={n: props[n] for n in sorted(names) if props.get(n) is not None})


class _States(Mapping[int, UserState]):
    """``SyncView.states``: a user's state by amplitude_id, looked up (``sync.write_files`` reads each member's)."""

    def __init__(self, v: SyncView) -> None:
        self.v = v

    def __getitem__(self, aid: int) -> UserState:
        st = self.v.state(aid)
        if st is None:
            raise KeyError(aid)
        return st

    def get(self, aid: int, default: Any = None) -> Any:
        st = self.v.state(aid)
        return default if st is None else st

    def __iter__(self) -> Iterator[int]:
        return (aid for aid, _ in self.v.users())

    def __len__(self) -> int:
        return sum(1 for _ in self.v.users())


def _iso(ms: int | None) -> str:
    import time
    return "nothing" if ms is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


__all__ = ["DAY_MS", "CohortRecord", "CohortState", "MemoryStore", "Rekeyer", "StoredUser", "SyncView", "view"]


class LocalStage:
    """Both steps in one process on in-memory stores, records routed at once (unit tests, benchmarks); also the
    ``source`` of ``sync.run_syncs`` (``view``)."""

    def __init__(self, cohorts: CohortSet, partitions: int, state_days: int, grace_ms: int = 0) -> None:
        self.partitions = partitions
        self.rekeyer = Rekeyer(cohorts, partitions, grace_ms)
        self.stores = {q: MemoryStore() for q in range(partitions)}
        self.state = CohortState(cohorts, partitions, state_days, self.stores.__getitem__)
        self.totals = Applied()

    def deliver(self, sends: list[Sent]) -> None:
        while sends:
            by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
            for q, k, v in sends:
                by_partition.setdefault(q, []).append((k, v))
            sends = []
            for q, records in sorted(by_partition.items()):
                applied = self.state.apply(q, records)
                self.stores[q].write(applied.writes)
                sends += applied.sends
                for name in ("applied", "replayed", "expired", "forgotten"):
                    setattr(self.totals, name, getattr(self.totals, name) + getattr(applied, name))

    def accepted(self, partition: int, batch: Any) -> None:
        self.deliver(self.rekeyer.batch(partition, batch))

    def merge(self, record: Mapping[str, Any]) -> None:
        self.deliver(self.rekeyer.merge(record))

    def advance(self, now_ms: int, caught_up: bool = True) -> None:
        for p in range(self.partitions):
            self.deliver(self.rekeyer.advance(p, now_ms, caught_up))

    async def view(self, cohorts: CohortSet, t_ms: int) -> SyncView:
        v = SyncView(cohorts, self.stores, self.partitions, t_ms)
        v.check()
        return v
