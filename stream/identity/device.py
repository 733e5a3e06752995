"""The device side of identity, in the dedupe agent's batch: amplitude_ids, user and group fields, links out.

Pure: ``resolve_batch`` takes the accepted rows of one events.valid batch and a
multi-get on the partition's identity state, and returns the enriched rows, the
rejected events, the links for the user side and the state writes with their
pre-images (the journal). ``apply_remaps`` does the same for a remap message.

**Ids** (``stream.identity.ids``). A device seen for the first time gets a new
id from its partition's counter. A user_id seen on a device for the first time
*links* them: the pair adopts the device's id when the device had no user yet,
or a new id when the device belonged to another user_id (a user_id that changes
on one device: Amplitude never merges two user_ids, so each user keeps its own
id on the shared device). Each new pair sends a link to identity.links, keyed by
user_id; the user side (``stream.identity.users``) adopts the first id it sees
for a user and *merges* every later one into it: a merge record, and a remap
back to the device's events.valid partition, which moves the pair (and the
device, when that user is still its current one) to the user's id.

**Races, and which id an event carries.** An event carries the id its device
(or its (device, user) pair) has in its partition's state when the event is
processed -- in events.valid order, where remap messages sit among the batches.
So while a merge is in flight (the link on its way to the user side, the remap
on its way back), a new device of a known user exports its own, pre-merge id;
from the remap on, it exports the user's. The merged-IDs file records the
merge, as Amplitude's does for events exported before a merge. Two devices of
one user on two partitions at once: each links; the link the user side reads
first gives the user its id, the other is merged into it -- which one wins
depends on the order the links reach the user's identity.links partition, and
is then fixed in the user table. An identify that arrives after the user's
events changes the properties of the events after it only (rows are never
rewritten).

**User fields** live per (partition, amplitude_id): ``user_creation_time`` is
the event_time of the user's first event on the partition, ``start_version``
the first version_name, ``paying`` whether a revenue event (``$revenue`` or
``$price`` in event_properties) was seen, ``user_properties`` the result of
every update in partition order (``stream.identity.ops``): a non-identify
event's user_properties are set, an ``$identify``'s operations applied. A
device's events see what its own partition knows; what was set through a device
on another partition arrives with the remap that merges the device into the
user (the remap carries the user side's fields: the earliest creation time and
its start_version, paying if any device paid, the properties the user side
knows overridden by what this partition had for the user and then by what this
device had set). Updates made on another partition after that merge are not
seen here. Group properties (``$groupidentify``: ``groups`` + ``group_properties``
operations) are kept per partition the same way, and every event with
``groups`` exports ``group_properties`` as ``{type: {name: properties}}``.

**Replays.** The output depends only on the rows and the state, and every
batch's writes are journaled with their pre-images under its events.valid
offset, so a batch read again after a crash (its offset at or below the
state's applied offset) first rolls the state back to before it and then
computes exactly the same rows, ids and links (``stream.identity.table``).
Links are deduplicated by the user side with a watermark per events.valid
partition; remaps are idempotent (a remap whose pair no longer has the old id
does nothing).

Export fields set here: amplitude_id, user_properties, group_properties (when
the event has groups), user_creation_time, start_version, paying,
processed_time (the Kafka timestamp of the events.valid message: deterministic
on replay), amplitude_event_type (``$identify`` and ``$groupidentify`` rows
carry their event type there too, *unverified*: Amplitude's docs list the field
without its values). Identify rows are exported like any other event, with the
properties after their operations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgspec

from stream.events.fields import EXPORT_FIELDS
from stream.events.timefmt import parse_ms
from stream.identity import ids
from stream.identity.ops import IdentifyError, check_identify, check_set, identify, set_values
from stream.identity.records import (
    COUNTER, Device, Link, Profile, Remap, dec_device, dec_profile, decode_int, device_key, enc, encode_int,
    group_key, pair_key, profile_key)

GetMany = Callable[[list[bytes]], list[bytes | None]]

_TYPED: dict[str, Any] = {"device_id": str | None, "user_id": str | None, "event_type": str,
                          "version_name": str | None, "event_time": str | None}
_NAMES = tuple(f.replace("$", "dollar_") for f in EXPORT_FIELDS)
_RowIO = msgspec.defstruct("_RowIO", [(n, _TYPED.get(n, msgspec.Raw)) for n in _NAMES],
                           rename=dict(zip(_NAMES, EXPORT_FIELDS)))
"""An export row with the columns this stage reads typed and every other one kept as its raw JSON."""
_decode_row = msgspec.json.Decoder(_RowIO).decode
_encode = msgspec.json.Encoder().encode
_json = msgspec.json.Decoder().decode
_EMPTY = b"{}"
_EMPTY_RAW = msgspec.Raw(_EMPTY)
IDENTIFY, GROUP_IDENTIFY = "$identify", "$groupidentify"


class Resolution(NamedTuple):
    lines: list[bytes]                           # the enriched rows of the events kept, in order
    keep: list[bool]                             # per input row: False when rejected
    rejected: list[tuple[int, IdentifyError]]    # (row index, why)
    links: list[Link]
    writes: dict[bytes, bytes | None]            # key -> new value (None: delete)
    before: dict[bytes, bytes | None]            # key -> its value before the batch
    allocated: int                               # ids allocated


class BatchState:
    """A batch's view of the partition's state: read by multi-get, written in memory, pre-images kept."""

    def __init__(self, get_many: GetMany):
        self._get_many = get_many
        self.values: dict[bytes, bytes | None] = {}
        self.writes: dict[bytes, bytes | None] = {}

    def load(self, keys: set[bytes]) -> None:
        want = [k for k in keys if k not in self.values]
        if want:
            self.values.update(zip(want, self._get_many(want)))

    def get(self, key: bytes) -> bytes | None:
        if key not in self.values:
            self.load({key})
        return self.values[key]

    def put(self, key: bytes, value: bytes | None) -> None:
        self.get(key)
        self.writes[key] = value

    def current(self, key: bytes) -> bytes | None:
        return self.writes[key] if key in self.writes else self.get(key)

    def before(self) -> dict[bytes, bytes | None]:
        return {k: self.values[k] for k in self.writes}


class _Props:
    """A user's (or group's) fields while a batch runs: the record, its properties decoded when needed."""

    __slots__ = ("profile", "props", "raw", "dirty")

    def __init__(self, profile: Profile):
        self.profile, self.props, self.raw, self.dirty = profile, None, profile.props, False

    def get(self) -> dict[str, Any]:
        if self.props is None:
            self.props = _json(self.raw)
        return self.props

    def replace(self, props: dict[str, Any]) -> None:
        if props != self.get():
            self.props, self.raw, self.dirty = props, _encode(props), True


def _device_of(row: Any) -> str:
    return row.device_id if row.device_id is not None else "\x01" + row.user_id


def _paid(line: bytes, event_properties: msgspec.Raw) -> bool:
    """A revenue event: ``$revenue`` or ``$price`` among its event_properties. The row's bytes are looked at
    first: without either name anywhere in it, which is nearly every row, nothing is decoded."""
    if b'"$revenue"' not in line and b'"$price"' not in line:
        return False
    props = _json(event_properties)
    return type(props) is dict and ("$revenue" in props or "$price" in props)


def _groups(raw: bytes) -> list[tuple[str, str]]:
    """(type, name) of an event's ``groups``: a name, or a list of names, per type."""
    g = _json(raw)
    out = []
    for t, names in g.items():
        for n in (names if type(names) is list else [names]):
            if type(n) is not str:
                raise IdentifyError("invalid_identify", f"groups.{t}",
                                    f"groups.{t} must be a group name or a list of names")
            out.append((t, n))
    return out


def resolve_batch(lines: Sequence[bytes], times: Sequence[int], project: int, partition: int,
                  processed_time: str, get_many: GetMany) -> Resolution:
    """Ids, user and group fields for the rows of one batch (see the module docstring)."""
    st = BatchState(get_many)
    n = len(lines)
    rows: list[Any] = [None] * n
    updates: list[tuple[str, Any] | None] = [None] * n      # ("identify" | "set", checked value)
    group_ops: list[dict[str, Any] | None] = [None] * n
    groups: list[list[tuple[str, str]]] = [[] for _ in range(n)]
    keep = [True] * n
    rejected: list[tuple[int, IdentifyError]] = []
    keys = {COUNTER}
    for i, line in enumerate(lines):
        r = _decode_row(line)
        try:
            up = r.user_properties
            if r.event_type == IDENTIFY:
                updates[i] = ("identify", check_identify(_json(up)))
            elif up != _EMPTY_RAW:
                raw = bytes(up)
                updates[i] = ("set", check_set(_json(raw), raw=raw))
            g = r.groups
            if g != _EMPTY_RAW:
                groups[i] = _groups(bytes(g))
                if r.event_type == GROUP_IDENTIFY:
                    group_ops[i] = check_identify(_json(bytes(r.group_properties)), "group_properties")
        except (IdentifyError, msgspec.DecodeError) as exc:
            keep[i] = False
            rejected.append((i, exc if isinstance(exc, IdentifyError) else
                             IdentifyError("invalid_identify", "user_properties", str(exc))))
            continue
        rows[i] = r
        dev = _device_of(r)
        keys.add(device_key(project, dev))
        if r.user_id:
            keys.add(pair_key(project, dev, r.user_id))
        for t, name in groups[i]:
            keys.add(group_key(project, t, name))
    st.load(keys)

    # ids, in order
    counter = decode_int(st.get(COUNTER), 0)
    counter0 = counter
    aids = [0] * n
    linked = [False] * n
    devices: dict[bytes, Device | None] = {}
    for i, r in enumerate(rows):
        if r is None:
            continue
        dk = device_key(project, _device_of(r))
        if dk in devices:
            d = devices[dk]
        else:
            v = st.get(dk)
            d = devices[dk] = dec_device(v) if v is not None else None
        uid = r.user_id or ""
        if d is not None and (not uid or uid == d.user):
            aids[i] = d.aid
            continue
        if d is None or d.user == "":
            if d is None:
                aid, counter = ids.allocate(counter, partition)
            else:
                aid = d.aid
        else:   # another user_id on this device: its own pair, known or new
            pk = pair_key(project, _device_of(r), uid)
            known = st.current(pk)
            if known is not None:
                aid = decode_int(known, 0)
            else:
                aid, counter = ids.allocate(counter, partition)
        if uid and (d is None or d.user != uid):
            pk = pair_key(project, _device_of(r), uid)
            if st.current(pk) is None:
                st.put(pk, encode_int(aid))
                linked[i] = True
        d = devices[dk] = Device(aid, uid)
        st.put(dk, enc.encode(d))
        aids[i] = aid
    if counter != counter0:
        st.put(COUNTER, encode_int(counter))

    # user and group fields, in order
    st.load({profile_key(project, a) for a, r in zip(aids, rows) if r is not None})
    profiles: dict[int, _Props] = {}
    group_state: dict[bytes, _Props] = {}
    out: list[bytes] = []
    links: list[Link] = []
    for i, r in enumerate(rows):
        if r is None:
            continue
        aid = aids[i]
        p = profiles.get(aid)
        if p is None:
            v = st.get(profile_key(project, aid))
            p = profiles[aid] = _Props(dec_profile(v) if v is not None else Profile(None, None, False))
        prof = p.profile
        if prof.created is None and r.event_time is not None:
            prof.created, p.dirty = r.event_time, True
        if prof.start_version is None and r.version_name is not None:
            prof.start_version, p.dirty = r.version_name, True
        if not prof.paying and _paid(lines[i], r.event_properties):
            prof.paying, p.dirty = True, True
        u = updates[i]
        if u is not None:
            p.replace(identify(p.get(), u[1]) if u[0] == "identify" else set_values(p.get(), u[1]))
        if groups[i]:
            shown: dict[str, dict[str, Any]] = {}
            for t, name in groups[i]:
                gk = group_key(project, t, name)
                g = group_state.get(gk)
                if g is None:
                    v = st.get(gk)
                    g = group_state[gk] = _Props(Profile(None, None, False, v if v is not None else _EMPTY))
                if group_ops[i] is not None:
                    g.replace(identify(g.get(), group_ops[i]))
                shown.setdefault(t, {})[name] = g.get()
            r.group_properties = msgspec.Raw(_encode(shown))
        r.amplitude_id = aid
        r.user_properties = msgspec.Raw(p.raw)
        r.user_creation_time = prof.created
        r.start_version = prof.start_version
        r.paying = prof.paying
        r.processed_time = processed_time
        if r.event_type == IDENTIFY or r.event_type == GROUP_IDENTIFY:
            r.amplitude_event_type = r.event_type
        out.append(_encode(r))
        if linked[i]:
            links.append(Link(project, r.user_id, _device_of(r), partition, aid,
                              parse_ms(r.event_time) if r.event_time else times[i], times[i], prof.created,
                              prof.start_version, prof.paying, p.raw))
    for aid, p in profiles.items():
        if p.dirty:
            p.profile.props = p.raw
            st.put(profile_key(project, aid), enc.encode(p.profile))
    for gk, g in group_state.items():
        if g.dirty:
            st.put(gk, g.raw)
    return Resolution(out, keep, rejected, links, dict(st.writes), st.before(), counter - counter0)


def fold(remap: Remap, dst: Profile | None, src: Profile | None) -> Profile:
    """The user's fields on a partition after a remap: the earliest creation time (and its start_version), paying
    if any was, properties: the user side's, overridden by this partition's for the user, then the device's."""
    firsts = [(x.created, x.start_version) for x in (remap, dst, src) if x is not None and x.created is not None]
    created, start = min(firsts, key=lambda c: c[0]) if firsts else (None, None)
    if start is None:
        start = next((x.start_version for x in (remap, dst, src) if x is not None and x.start_version), None)
    props = _json(remap.props)
    for x in (dst, src):
        if x is not None:
            props.update(_json(x.props))
    paying = any(x.paying for x in (remap, dst, src) if x is not None)
    return Profile(created, start, paying, _encode(props))


def apply_remaps(remaps: Sequence[Remap], get_many: GetMany) -> tuple[dict[bytes, bytes | None],
                                                                       dict[bytes, bytes | None], int]:
    """(writes, pre-images, remaps applied) of a remap message; a remap whose pair moved on already does nothing."""
    st = BatchState(get_many)
    keys: set[bytes] = set()
    for m in remaps:
        keys |= {pair_key(m.project, m.device, m.user), device_key(m.project, m.device),
                 profile_key(m.project, m.from_aid), profile_key(m.project, m.to_aid)}
    st.load(keys)
    applied = 0
    for m in remaps:
        pk = pair_key(m.project, m.device, m.user)
        if decode_int(st.current(pk), -1) != m.from_aid:
            continue
        applied += 1
        st.put(pk, encode_int(m.to_aid))
        dk = device_key(m.project, m.device)
        v = st.current(dk)
        if v is not None:
            d = dec_device(v)
            if d.user == m.user and d.aid == m.from_aid:
                st.put(dk, enc.encode(Device(m.to_aid, m.user)))
        to_k, from_k = profile_key(m.project, m.to_aid), profile_key(m.project, m.from_aid)
        dst, src = st.current(to_k), st.current(from_k)
        st.put(to_k, enc.encode(fold(m, dec_profile(dst) if dst else None, dec_profile(src) if src else None)))
    return dict(st.writes), st.before(), applied
