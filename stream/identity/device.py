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

**Holds: the first events of a new pair wait for the user side.** Only the
user side knows whether a user_id is known elsewhere (its id and properties
live on the user's identity.links partition, usually another worker's), so a
device's rows from its first event with a new user_id on are *held* in the
partition's state (``Held``, with the batch's keys, uuids and Segment messages)
until the user side answered every link the device sent: a remap (the user had
another id: the held rows of the pair's old id take the user's id and fields,
folded as below) or an answer that moves nothing (the user adopted the pair's
id). Then they go out, in order, as released rows (``Released``; the agent
sends them on their own source, ``stream.identity.stage.held_source``). A hold
lasts ``identity.hold_s`` at most: the first batch of the partition read that
long after the hold began, or of a later hour than the hold's, lets its rows go
as they are, before its own rows (counted: they carry the device's own id and
fields, as without holds). The hour rule keeps held rows in their hour's object:
the exporter closes an hour once the partition's rows are past it. Everything is decided from the
messages and the state (the bound by the events.valid messages' Kafka
timestamps), so a replay holds and releases the same rows under the same
source offsets. An upstream replay is another matter: dedupe lets the same
event through again (a file read again after a crash, an ingest replay), and
the exporter, which drops such repeats by their source offsets, cannot know an
event that went out on the held rows' source. So each device keeps, per source,
the offset of its last held row (``Device.held``; its hold's record keeps it
while the hold lasts, ``Held.offsets``, so that holding rows does not rewrite
the device's record too), and its rows from that source up to that offset are
dropped here (``Resolution.replayed``): they went out already.

**Races, and which id an event carries.** An event carries the id its device
(or its (device, user) pair) has in its partition's state when the event is
processed -- in events.valid order, where remap messages sit among the batches
-- or, when it was held, the id the user side's answer gave it. So a new device
of a known user exports the user's id from its first event on, unless the
answer took longer than ``identity.hold_s``: then the rows held so far export
the device's own, pre-merge id, and from the remap on, the user's. The
merged-IDs file records every merge, as Amplitude's does. Two devices of
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
event's user_properties are set (unless its ``$skip_user_properties_sync`` is
true, as imported events carry by default: then the row shows them over the
user's, and the user keeps none of them), an ``$identify``'s operations applied. A
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

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec

from stream.events.fields import IDENTITY_FIELDS, MAX_STRING
from stream.events.timefmt import parse_ms
from stream.identity import ids
from stream.identity.ops import (MAX_BRACKETS, OPERATIONS, IdentifyError, check_identify, check_set, identify,
                                 set_values)
from stream.identity.records import (
    COUNTER,
    HOLDS,
    RELEASED,
    Device,
    Held,
    HeldRow,
    Holds,
    Link,
    Profile,
    Remap,
    dec_device,
    dec_held,
    dec_held_rows,
    dec_holds,
    dec_profile,
    decode_int,
    device_key,
    enc,
    encode_int,
    encode_keys,
    group_key,
    held_chunk_key,
    held_key,
    held_rows_key,
    pair_key,
    profile_key,
    unused_key,
)

GetMany = Callable[[list[bytes]], list[bytes | None]]
_encode = msgspec.json.Encoder().encode
_json = msgspec.json.Decoder().decode
_EMPTY = b"{}"
_EMPTY_RAW = msgspec.Raw(_EMPTY)
_UNSET = msgspec.UNSET
_NULL = b"null"


class _Revenue(msgspec.Struct, gc=False):
    """Whether event_properties name a revenue: nothing else of them is decoded."""
    revenue: Any = msgspec.field(default=msgspec.UNSET, name="$revenue")
    price: Any = msgspec.field(default=msgspec.UNSET, name="$price")


class _Data(msgspec.Struct, gc=False):
    skip_sync: bool | None = msgspec.field(default=None, name="$skip_user_properties_sync")


class _In(msgspec.Struct, gc=False):
    """What this stage reads of an export row: a few typed columns, and as raw JSON the identity columns that can
    hold anything but null when the row comes from ``stream.events.normalize``.

    The fields are in the row's column order (EXPORT_FIELDS): msgspec looks a key up among the fields from the one
    after the field it found last, so that each column read is found at the first field it tries (a key that is no
    field is compared with every field whatever the order)."""
    app: Any = None                     # read for the cohorts stage (``Resolution.seen``), not here
    data: _Data = msgspec.field(default_factory=_Data)
    device_id: str | None = None
    event_properties: _Revenue = msgspec.field(default_factory=_Revenue)
    event_time: str | None = None
    event_type: str = ""
    groups: msgspec.Raw = msgspec.Raw(b"{}")
    user_id: str | None = None
    version_name: str | None = None
    group_properties: msgspec.Raw = msgspec.Raw(b"{}")
    processed_time: msgspec.Raw = msgspec.Raw(b"null")
    user_properties: msgspec.Raw = msgspec.Raw(b"{}")


_decode_in = msgspec.json.Decoder(_In).decode
_KEYS = tuple((b"," if i else b"") + b'"%s":' % f.encode() for i, f in enumerate(IDENTITY_FIELDS))
"""The identity columns at the end of a row: each key with the comma before it. A row's tail is these keys, each
followed by its value (raw JSON), and the row's closing brace, written with the row's head in one ``b"".join``
(a ``%`` format parses its text again at each use: the tail's check took 5,900 instructions a row that way, 4,700
this way)."""
_K_AET, _K_AID, _K_GP, _K_PAY, _K_PT, _K_SV, _K_UCT, _K_UP = _KEYS
_NEW_GP = _K_AET + b"null" + _K_AID + b"null" + _K_GP
_NEW_PT = _K_PAY + b"null" + _K_PT
_NEW_UP = _K_SV + b"null" + _K_UCT + b"null" + _K_UP
"""The tail of a row from ``stream.events.normalize`` is these, each followed by the row's group_properties,
processed_time and user_properties, then the closing brace: null but for those three. ``resolve_batch`` checks a
row's tail byte for byte against them and the values it decoded (EXPORT_FIELDS order): the row up to that tail, and
its comma, is kept as it is (its length is the row's ``cut``); any other row (another column order, identity columns
already filled) is re-encoded (``_reencoded``)."""
_join = b"".join


def _reencoded(line: bytes) -> tuple[bytes, bytes]:
    """A row whose tail is not the one ``_NEW_GP``, ``_NEW_PT`` and ``_NEW_UP`` make: the row without its identity
    columns, re-encoded, up to and including the comma before where they go, and its amplitude_event_type (raw
    JSON)."""
    row = _json(line)
    rest = {k: v for k, v in row.items() if k not in IDENTITY_FIELDS}
    return _encode(rest)[:-1] + b"," if rest else b"{", _encode(row.get("amplitude_event_type"))


IDENTIFY, GROUP_IDENTIFY = "$identify", "$groupidentify"


class Hold(NamedTuple):
    """What holding rows needs of their batch: when it was read (the Kafka timestamp of its events.valid message,
    epoch ms), the bound of a hold (ms), the batch's hour, and per row what the batch carries besides the row."""

    now_ms: int
    bound_ms: int
    hour: int
    source: str                        # where the batch's events entered Kafka, "topic[partition]"
    offsets: Sequence[int]             # per row, its offset there
    keys: Sequence[bytes]
    uuids: Sequence[bytes]
    segment: Sequence[bytes]           # per row its Segment message; empty when none has one
    segment_source: str
    at: int                            # the batch's events.valid offset: the key of the chunks it begins
    index: Sequence[int] | None = None
    """Per row, its index in the events.valid message at ``at``: a held row is then kept as a reference to it
    (``HeldRow.at``) instead of a copy of its bytes. None: held rows are copies."""


class Released(NamedTuple):
    """Held rows let go, in order: each with its row and its source offset (``RELEASED``), how many of them went
    without the user side's answer (the hold passed its bound), and how long each hold let go was held."""

    rows: list[tuple[HeldRow, bytes | None, int]]   # (held row, enriched row, source offset); a row held by
    # reference has no enriched row until ``fill`` gave it the bytes of the row it refers to
    unanswered: int = 0                        # let go without an answer: past the bound, or of an earlier hour
    waits_ms: list[int] = []
    past_bound: int = 0                        # of the unanswered, those held for the bound


class Seen(msgspec.Struct, gc=False):
    """What the device side read of a row it sends as it came (its columns up to the identity ones unchanged) and what
    it wrote there: the row's app, event_time, event_type and user_id, its amplitude_id (``out_amplitude_id``) and its
    user_properties' JSON (``out_user_properties``). The cohorts stage of the same worker reads a row's fields from it
    rather than parsing the row again (``stream.cohorts.stage.Rekeyer``). Not tracked by the garbage collector (a
    tuple a row, tracked, cost the device side 0.6 µs an event); a Struct of its own rather than two more fields of
    ``_In``, which every key of a row that is no field of it is compared with (2,000 instructions a row more for
    the decode, against 900 for this Struct)."""

    out_amplitude_id: int
    app: Any
    event_time: str | None
    event_type: str
    user_id: str | None
    out_user_properties: bytes


class Resolution(NamedTuple):
    lines: list[bytes]                           # the enriched rows of the events kept, in order
    keep: list[bool]                             # per input row: False when rejected or held
    rejected: list[tuple[int, IdentifyError]]    # (row index, why)
    links: list[Link]
    writes: dict[bytes, bytes | None]            # key -> new value (None: delete)
    before: dict[bytes, bytes | None]            # key -> its value before the batch
    allocated: int                               # ids allocated
    dropped: list[tuple[int, int]] = []          # (row index, size it would have grown to): updates not applied
    held: int = 0                                # rows held for the user side's answer
    released: Released = Released([])           # rows let go: holds past their bound
    replayed: int = 0                            # rows dropped: upstream replays of rows that went through a hold
    held_rows: list[int] = []                    # the row indices held by reference (``Hold.index``)
    seen: list[Seen | None] = []                 # per row of ``lines``: what was read of it (None: re-encoded)


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

    def put_new(self, key: bytes, value: bytes) -> None:
        """Write a key that no message before this one wrote (or one that a replay of this message rolled back):
        its pre-image is None, without reading it."""
        self.values.setdefault(key, None)
        self.writes[key] = value

    def current(self, key: bytes) -> bytes | None:
        return self.writes[key] if key in self.writes else self.get(key)

    def before(self) -> dict[bytes, bytes | None]:
        return {k: self.values[k] for k in self.writes}


class _Props:
    """A user's (or group's) fields while a batch runs: the record, its properties decoded when needed, and the
    JSON of its amplitude_id, paying, start_version and creation time (None until asked, and again when one of
    them changes)."""

    __slots__ = ("profile", "props", "raw", "dirty", "fields")

    def __init__(self, profile: Profile):
        self.profile, self.props, self.raw, self.dirty = profile, None, profile.props, False
        self.fields: tuple[bytes, bytes, bytes, bytes] | None = None

    def get(self) -> dict[str, Any]:
        if self.props is None:
            self.props = _json(self.raw)
        return self.props

    def replace(self, props: dict[str, Any]) -> None:
        if props != self.get():
            self.props, self.raw, self.dirty = props, _encode(props), True

    def set(self, values: dict[str, Any], raw: bytes) -> None:
        """Apply a checked plain update whose JSON is ``raw``. When it names every property the user has (an
        SDK that sends all of them with each event), the result is the update itself, and so is its JSON."""
        props = self.get()
        if props.keys() <= values.keys() and OPERATIONS.isdisjoint(values):
            self.props, self.raw, self.dirty = values, raw, True
        else:
            self.replace(set_values(props, values))


def _device_of(row: Any) -> str:
    return row.device_id if row.device_id is not None else "\x01" + row.user_id


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


def _json_or_null(v: str | None) -> bytes:
    return _NULL if v is None else _encode(v)


_UserJSON = tuple[bytes, bytes, bytes, bytes]
"""The JSON of a user's amplitude_id, paying, start_version and user_creation_time, as a row's tail shows them."""


def _user_json(aid: int, paying: bool, start_version: str | None, created: str | None) -> _UserJSON:
    return b"%d" % aid, b"true" if paying else b"false", _json_or_null(start_version), _json_or_null(created)


def held_line(h: HeldRow, memo: dict[tuple, _UserJSON] | None = None) -> bytes:
    """The enriched row of a held row, with the user's fields it has now. ``memo``: the user fields' JSON by their
    values, kept by the caller over many rows (a hold's rows mostly share one user's fields)."""
    if memo is None:
        f = _user_json(h.aid, h.paying, h.start_version, h.created)
    else:
        k = (h.aid, h.paying, h.start_version, h.created)
        f = memo.get(k)
        if f is None:
            f = memo[k] = _user_json(*k)
    # the tail as ``resolve_batch`` writes it for a row it sends at once (the columns in EXPORT_FIELDS order)
    return _join((h.head, _K_AET, h.event_type, _K_AID, f[0], _K_GP, h.group_properties, _K_PAY, f[1], _K_PT,
                  h.processed_time, _K_SV, f[2], _K_UCT, f[3], _K_UP, h.props, b"}"))


class Message(NamedTuple):
    """The rows of an events.valid batch message that held rows refer to (``HeldRow.at``): lines, keys, uuids and
    Segment messages ([] when none has one), as the message has them or as a selection of them (the rows dedupe
    kept), with ``pos`` mapping the message's row index to the selection's (None: the same)."""

    lines: Sequence[bytes]
    keys: Sequence[bytes]
    uuids: Sequence[bytes]
    segment: Sequence[bytes]
    pos: dict[int, int] | None = None


def referred(released: Released) -> dict[int, int]:
    """The events.valid offsets the rows let go that were held by reference refer to, and how many rows each."""
    out: dict[int, int] = {}
    for row, _, _ in released.rows:
        if row.at >= 0:
            out[row.at] = out.get(row.at, 0) + 1
    return out


def fill(released: Released, messages: Mapping[int, Message]) -> None:
    """Give every row of ``released`` held by reference the bytes it refers to (``messages`` by offset) and its
    enriched row, in place: the same rows, byte for byte, as when they were held as copies."""
    rows = released.rows
    memo: dict[tuple, _UserJSON] = {}
    for n, (row, line, offset) in enumerate(rows):
        if row.at >= 0:
            m = messages[row.at]
            j = row.index if m.pos is None else m.pos[row.index]
            row.head, row.key, row.uuid = m.lines[j][:row.cut], m.keys[j], m.uuids[j]
            if m.segment:
                row.segment = m.segment[j]
            row.at = -1
            rows[n] = (row, held_line(row, memo), offset)


class _HoldBook:
    """The partition's holds while the batch or remap message at ``offset`` runs: read from and written to its
    ``BatchState``.

    A hold's rows read from its chunks are only read when the hold is let go or remapped (``rows``); rows held
    meanwhile wait in ``Held.rows`` and go to a chunk of their own (``result``). The chunks a hold no longer uses
    are listed under ``unused_key(offset)``, not deleted (``Held``)."""

    def __init__(self, st: BatchState, offset: int):
        self.st, self.offset = st, offset
        self.held: dict[bytes, Held | None] = {}
        self.stored: dict[bytes, tuple[int, int]] = {}    # H key -> (first, chunks) in the state before
        self.absent: set[bytes] = set()     # H keys without a record before the message (not in the holds list)
        v = st.get(HOLDS)
        # the partition's holds, by H key, in the order they began: letting one go is a pop, not a pass over all
        held = [tuple(x) for x in dec_holds(v).holds] if v is not None else []
        self.index: dict[bytes, tuple[int, int, bytes]] = {x[2]: x for x in held}
        self._index0 = held
        self.released: list[tuple[HeldRow, bytes, int]] = []
        self.unanswered = 0
        self.past_bound = 0
        self.waits: list[int] = []
        self._memo: dict[tuple, _UserJSON] = {}     # held_line's, for the rows let go as copies

    @staticmethod
    def _unshare(rows: list[HeldRow]) -> list[HeldRow]:
        """Rows as stored: each row's properties left out when they are the row before's."""
        for i in range(1, len(rows)):
            if not rows[i].props:
                rows[i].props = rows[i - 1].props
        return rows

    @staticmethod
    def _shared(rows: list[HeldRow]) -> bytes:
        """Rows to store: each row's properties left out when they are the row before's (``_unshare`` puts them
        back). The rows are given ``b""`` for the encode and their properties again after it, rather than copied
        (``msgspec.structs.replace``, a new Struct of 18 fields a row)."""
        blanked: list[tuple[HeldRow, bytes]] = []
        prev = None
        for r in rows:
            p = r.props
            if p == prev:
                blanked.append((r, p))
                r.props = b""
            prev = p
        try:
            return enc.encode(rows)
        finally:
            for r, p in blanked:
                r.props = p

    def get(self, hk: bytes) -> Held | None:
        if hk not in self.held:
            if hk not in self.index:    # every hold is in the partition's holds list (``HOLDS``): none, unread
                self.stored[hk] = (-1, 0)
                self.absent.add(hk)
                self.held[hk] = None
                return None
            v = self.st.get(hk)
            h = self.held[hk] = dec_held(v) if v is not None else None
            self.stored[hk] = (h.first, h.chunks) if h is not None else (-1, 0)
            if h is not None:       # rows stored in the record itself (before chunks) are rows not in a chunk yet
                self._unshare(h.rows)
        return self.held[hk]

    @staticmethod
    def _chunks(hk: bytes, first: int, chunks: int) -> list[bytes]:
        """The keys of a hold's chunks, in order."""
        if first < 0:     # as a previous version numbered them
            return [held_rows_key(hk, n) for n in range(chunks)]
        return [held_chunk_key(hk, first, n) for n in range(chunks)]

    def rows(self, hk: bytes, h: Held) -> list[HeldRow]:
        """All the hold's rows, in the order they were held: its chunks' rows are read and become rows not in a
        chunk (``result`` lists the chunks as unused, and writes the rows as a chunk again if they stay held)."""
        if h.chunks:
            keys = self._chunks(hk, h.first, h.chunks)
            self.st.load(set(keys))
            rows: list[HeldRow] = []
            for k in keys:
                v = self.st.current(k)
                if v is None:
                    raise RuntimeError(f"identity: chunk {k!r} of hold {hk!r} is missing from the state: the "
                                       f"state is not one this version wrote; restore the identity changelog "
                                       f"from a backup or reset the identity state")
                rows += self._unshare(dec_held_rows(v))
            h.rows[:0] = rows
            h.chunks, h.first = 0, -1
        return h.rows

    def start(self, hk: bytes, since: int, hour: int) -> Held:
        h = self.held[hk] = Held(since, [], [])
        self.index[hk] = (since, hour, hk)
        return h

    def release(self, hk: bytes, now_ms: int, answered: bool, past_bound: bool = False) -> None:
        h = self.get(hk)
        if h is None:
            return
        nxt = decode_int(self.st.current(RELEASED), 0)
        rows = self.rows(hk, h)
        memo = self._memo
        for row in rows:
            self.released.append((row, held_line(row, memo) if row.at < 0 else None, nxt))
            nxt += 1
        self.st.put(RELEASED, encode_int(nxt))
        if not answered:
            self.unanswered += len(rows)
        if past_bound:
            self.past_bound += len(rows)
        self.waits.append(max(0, now_ms - h.since))
        if h.offsets:       # the device's record keeps the highest offset of each source's rows held (``Held``)
            dk = b"D" + hk[1:]
            v = self.st.current(dk)
            if v is not None:
                d = dec_device(v)
                if any(o > d.held.get(src, -1) for src, o in h.offsets.items()):
                    for src, o in h.offsets.items():
                        d.held[src] = max(o, d.held.get(src, -1))
                    self.st.put(dk, enc.encode(d))
        self.held[hk] = None
        self.index.pop(hk, None)

    def expire(self, now_ms: int, bound_ms: int, hour: int) -> None:
        """Let go, as they are, the holds held for ``bound_ms`` or longer, and those begun in a batch of an hour
        before ``hour``: in events.accepted their rows then come before any row of a later hour of the partition,
        so the exporter, which closes an hour once its partition's rows are past it, takes them into the hour's
        object instead of a straggler's."""
        for since, h_hour, hk in list(self.index.values()):
            if now_ms - since >= bound_ms or h_hour < hour:
                self.release(hk, now_ms, answered=False, past_bound=now_ms - since >= bound_ms)

    def result(self) -> Released:
        """Write the holds: each one's rows not in a chunk yet as its next chunk, its record when it changed, and
        the list of the chunks that are no longer any hold's."""
        unused: list[bytes] = []
        for hk, h in self.held.items():
            if h is not None:
                if h.rows:
                    if h.first < 0:      # a new hold, rows read from their chunks, or the layout before
                        self.rows(hk, h)
                        h.first = self.offset
                    # a chunk's key is written by one message only (``Held``)
                    self.st.put_new(held_chunk_key(hk, h.first, h.chunks), self._shared(h.rows))
                    h.chunks += 1
                v = enc.encode(Held(h.since, h.waiting, [], h.chunks, h.first, h.offsets))
                if hk in self.absent:
                    self.st.put_new(hk, v)
                elif v != self.st.get(hk):
                    self.st.put(hk, v)
            elif hk not in self.absent and self.st.get(hk) is not None:
                self.st.put(hk, None)
            first, chunks = self.stored[hk]
            if chunks and (h is None or h.first != first):     # let go, or its rows read and written anew
                unused += self._chunks(hk, first, chunks)
        if unused:
            self.st.put_new(unused_key(self.offset), encode_keys(unused))
        index = list(self.index.values())
        if index != self._index0:
            self.st.put(HOLDS, enc.encode(Holds(index)) if index else None)
        return Released(self.released, self.unanswered, self.waits, self.past_bound)


MAX_PROPERTIES_BYTES = 256 * 1024
"""Default bound of one user's (or group's) properties, as JSON: the identity.max_properties_bytes setting."""


def resolve_batch(lines: Sequence[bytes], times: Sequence[int], project: int, partition: int,
                  processed_time: str, get_many: GetMany,
                  max_props_bytes: int = MAX_PROPERTIES_BYTES, hold: Hold | None = None) -> Resolution:
    """Ids, user and group fields for the rows of one batch (see the module docstring).

    With ``hold``, the rows of a device from its first event with a new user_id on are held (``Resolution.keep``
    is False for them, they are in the state) until the user side answered that link, and holds past their bound
    and those of an earlier hour are let go first (``Resolution.released``); a bound of 0 holds nothing new and
    lets go what was held. Without it, every row goes out at once.

    A user's (or group's) properties never grow past ``max_props_bytes`` of JSON: an update that would take them
    past it is not applied (the event is exported with the properties as they were, and the update is listed in
    ``dropped``), as Amplitude still ingests events whose property updates it drops. Every exported row then
    stays within the event's own size plus this bound, and so does the state of each user.
    """
    st = BatchState(get_many)
    n = len(lines)
    rows: list[Any] = [None] * n
    devkeys: list[bytes] = [b""] * n
    heldkeys: list[bytes] = [b""] * n
    named: dict[str, tuple[bytes, bytes]] = {}       # device -> its D and H keys, built once a batch
    updates: list[tuple[str, Any, bytes] | None] = [None] * n   # ("identify" | "set", checked value, its JSON)
    group_ops: list[dict[str, Any] | None] = [None] * n
    groups: list[Sequence[tuple[str, str]]] = [()] * n          # (type, name) per row; replaced, never appended to
    keep = [True] * n
    rejected: list[tuple[int, IdentifyError]] = []
    keys = {COUNTER, HOLDS} if hold is not None else {COUNTER}
    for i, line in enumerate(lines):
        try:
            r = _decode_in(line)
            up = r.user_properties
            if r.event_type == IDENTIFY:
                raw = bytes(up)
                updates[i] = ("identify", check_identify(_json(raw)), raw)
            elif up != _EMPTY_RAW:
                raw = bytes(up)
                # $skip_user_properties_sync: the event shows its properties over the user's, which keeps them not
                v = _json(raw)      # check_set's call only for what its first test does not take
                updates[i] = ("show" if r.data.skip_sync else "set",
                              # within_limits(raw) written out (ops.py), without its call
                              v if type(v) is dict and len(raw) <= MAX_STRING and raw.count(b"{") + raw.count(b"[")
                              <= MAX_BRACKETS else check_set(v, "user_properties", raw), raw)
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
        device = r.device_id
        if device is None:      # _device_of, without its call
            device = "\x01" + r.user_id
        dh = named.get(device)
        if dh is None:
            dh = named[device] = (device_key(project, device), held_key(project, device) if hold is not None else b"")
            keys.add(dh[0])     # (device, user) pairs are read when needed: a device with another user, a new user
        devkeys[i], heldkeys[i] = dh
        if groups[i]:
            for t, name in groups[i]:
                keys.add(group_key(project, t, name))
    st.load(keys)
    # the holds of the batch's devices: only those the partition's holds list, read once a batch (``_HoldBook``)
    book = _HoldBook(st, hold.at) if hold is not None else None
    if book is not None and book.index:
        st.load({hk for _, hk in named.values() if hk in book.index})

    # ids, in order
    counter = decode_int(st.get(COUNTER), 0)
    counter0 = counter
    aids = [0] * n
    linked = [False] * n
    devices: dict[bytes, Device | None] = {}
    replayed = 0
    for i, r in enumerate(rows):
        if r is None:
            continue
        dk = devkeys[i]
        if dk in devices:
            d = devices[dk]
        else:
            v = st.get(dk)
            d = devices[dk] = dec_device(v) if v is not None else None
        if book is not None and d is not None and (d.held or heldkeys[i] in book.index):
            seen = d.held.get(hold.source, -1)
            hh = book.get(heldkeys[i]) if heldkeys[i] in book.index else None     # a hold of the device, now
            if hh is not None and hh.offsets:
                seen = max(seen, hh.offsets.get(hold.source, -1))
            if hold.offsets[i] <= seen:
                rows[i], keep[i] = None, False      # a row that went through a hold, again: it went out already
                replayed += 1
                continue
        uid = r.user_id or ""
        if d is not None and (not uid or uid == d.user):
            aids[i] = d.aid
            continue
        # here the device is new, or the event names a user_id the device does not have
        pk = pair_key(project, _device_of(r), uid) if uid else None
        if d is None:
            aid, counter = ids.allocate(counter, partition)
        elif d.user == "":
            aid = d.aid
        else:   # another user_id on this device: its own pair, known or new
            known = st.current(pk)
            if known is not None:
                aid = decode_int(known, 0)
            else:
                aid, counter = ids.allocate(counter, partition)
        if pk is not None and st.current(pk) is None:
            st.put(pk, encode_int(aid))
            linked[i] = True
        d = devices[dk] = Device(aid, uid, d.held if d is not None else {})
        st.put(dk, enc.encode(d))
        aids[i] = aid
    if counter != counter0:
        st.put(COUNTER, encode_int(counter))
    if book is not None:
        book.expire(hold.now_ms, hold.bound_ms, hold.hour)     # before this batch's rows, which then go out after
    held = 0
    held_rows: list[int] = []

    # user and group fields, in order; each row keeps its bytes up to the identity columns, which are written anew
    pkeys = {a: profile_key(project, a) for a in {a for a, r in zip(aids, rows) if r is not None}}   # built once
    st.load(set(pkeys.values()))
    profiles: dict[int, _Props] = {}
    group_state: dict[bytes, _Props] = {}
    out: list[bytes] = []
    read_rows: list[Seen | None] = []            # Resolution.seen
    links: list[Link] = []
    dropped: list[tuple[int, int]] = []
    processed = _encode(processed_time)
    for i, r in enumerate(rows):
        if r is None:
            continue
        aid = aids[i]
        p = profiles.get(aid)
        if p is None:
            v = st.get(pkeys[aid])
            p = profiles[aid] = _Props(dec_profile(v) if v is not None else Profile(None, None, False))
        prof = p.profile
        if prof.created is None and r.event_time is not None:
            prof.created, p.dirty, p.fields = r.event_time, True, None
        if prof.start_version is None and r.version_name is not None:
            prof.start_version, p.dirty, p.fields = r.version_name, True, None
        line = lines[i]
        if not prof.paying:     # a revenue event: ``$revenue`` or ``$price`` among its event_properties
            ep = r.event_properties
            if ep.revenue is not _UNSET or ep.price is not _UNSET:
                prof.paying, p.dirty, p.fields = True, True, None
        u = updates[i]
        shown_props = None
        if u is not None:
            kind, values, raw = u
            props = p.props
            if kind != "identify" and (props if props is not None else p.get()).keys() <= values.keys() \
                    and OPERATIONS.isdisjoint(values):
                # an update naming every property the user has: the properties are the update, its JSON ``raw``
                # (``_Props.set``'s first case, without its call and without keeping what they were)
                if len(raw) > max_props_bytes:
                    dropped.append((i, len(raw)))
                elif kind == "show":
                    shown_props = raw
                else:
                    p.props, p.raw, p.dirty = values, raw, True
            else:
                was = (p.props, p.raw, p.dirty)
                if kind == "identify":
                    p.replace(identify(p.get(), values))
                else:
                    p.set(values, raw)
                if len(p.raw) > max_props_bytes:
                    dropped.append((i, len(p.raw)))
                    p.props, p.raw, p.dirty = was
                elif kind == "show":
                    shown_props = p.raw
                    p.props, p.raw, p.dirty = was
        gp = r.group_properties
        if groups[i]:
            shown: dict[str, dict[str, Any]] = {}
            for t, name in groups[i]:
                gk = group_key(project, t, name)
                g = group_state.get(gk)
                if g is None:
                    v = st.get(gk)
                    g = group_state[gk] = _Props(Profile(None, None, False, v if v is not None else _EMPTY))
                if group_ops[i] is not None:
                    was = (g.props, g.raw, g.dirty)
                    g.replace(identify(g.get(), group_ops[i]))
                    if len(g.raw) > max_props_bytes:
                        dropped.append((i, len(g.raw)))
                        g.props, g.raw, g.dirty = was
                shown.setdefault(t, {})[name] = g.get()
            gp = _encode(shown)
        f = p.fields
        if f is None:
            f = p.fields = _user_json(aid, prof.paying, prof.start_version, prof.created)
        # where the row's identity columns begin (``_NEW_UP``): a row held by reference needs no copy of its head
        tail = _join((_NEW_GP, r.group_properties, _NEW_PT, r.processed_time, _NEW_UP, r.user_properties, b"}"))
        cut = len(line) - len(tail)
        if cut > 0 and line.endswith(tail) and line[cut - 1] == 44:
            head, event_type = b"", _NULL
        else:
            cut = -1
            head, event_type = _reencoded(line)
        et = r.event_type
        if et == IDENTIFY or et == GROUP_IDENTIFY:
            event_type = b'"%s"' % et.encode()
        h = None
        if hold is not None:
            hk = heldkeys[i]
            held_ = book.held
            h = held_[hk] if hk in held_ else book.get(hk)
            if linked[i] and (h is not None or hold.bound_ms > 0):
                if h is None:
                    h = book.start(hk, hold.now_ms, hold.hour)
                h.waiting.append(r.user_id)
        if h is not None:
            assert hold is not None
            if hold.offsets[i] > h.offsets.get(hold.source, -1):     # the device's record takes it when let go
                h.offsets[hold.source] = hold.offsets[i]
            if hold.index is not None and cut >= 0:    # by reference: its bytes stay in the topic
                h.rows.append(HeldRow(project, b"", event_type, bytes(gp), processed, aid, prof.created,
                                      prof.start_version, prof.paying,
                                      p.raw if shown_props is None else shown_props, times[i], b"", b"", b"",
                                      hold.segment_source, hold.at, hold.index[i], cut))
                held_rows.append(i)
            else:
                h.rows.append(HeldRow(project, line[:cut] if cut >= 0 else head, event_type, bytes(gp), processed,
                                      aid, prof.created, prof.start_version, prof.paying,
                                      p.raw if shown_props is None else shown_props, times[i], hold.keys[i],
                                      hold.uuids[i], hold.segment[i] if hold.segment else b"", hold.segment_source))
            keep[i] = False
            held += 1
        else:
            props = p.raw if shown_props is None else shown_props
            out.append(_join((line[:cut] if cut >= 0 else head, _K_AET, event_type, _K_AID, f[0], _K_GP, gp, _K_PAY,
                              f[1], _K_PT, processed, _K_SV, f[2], _K_UCT, f[3], _K_UP, props, b"}")))
            if cut >= 0:
                read_rows.append(Seen(aid, r.app, r.event_time, r.event_type, r.user_id, props))
            else:
                read_rows.append(None)
        if linked[i]:
            links.append(Link(project, r.user_id, _device_of(r), partition, aid,
                              parse_ms(r.event_time) if r.event_time else times[i], times[i], prof.created,
                              prof.start_version, prof.paying, p.raw))
    for aid, p in profiles.items():
        if p.dirty:
            p.profile.props = p.raw
            st.put(pkeys[aid], enc.encode(p.profile))
    for gk, g in group_state.items():
        if g.dirty:
            st.put(gk, g.raw)
    released = book.result() if hold is not None else Released([])
    return Resolution(out, keep, rejected, links, dict(st.writes), st.before(), counter - counter0, dropped, held,
                      released, replayed, held_rows, read_rows)


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


class Remapped(NamedTuple):
    writes: dict[bytes, bytes | None]
    before: dict[bytes, bytes | None]
    applied: int                         # remaps that moved a pair (answers move nothing)
    released: Released                   # held rows let go: answered, or past their bound


def apply_remaps(remaps: Sequence[Remap], get_many: GetMany, now_ms: int, offset: int) -> Remapped:
    """The writes, pre-images, remaps applied and rows released of the remap message at events.valid ``offset``,
    read at ``now_ms``; a remap whose pair moved on already moves nothing.

    The rows held for the device wait for this answer no longer; those of the pair's old id get the user's id and
    fields (the user side's, overridden by this partition's for the user, then by what the row showed). A device
    whose every link is answered lets its rows go (``now_ms`` only measures how long they were held)."""
    st = BatchState(get_many)
    keys: set[bytes] = {HOLDS}
    for m in remaps:
        keys |= {pair_key(m.project, m.device, m.user), device_key(m.project, m.device),
                 profile_key(m.project, m.from_aid), profile_key(m.project, m.to_aid), held_key(m.project, m.device)}
    st.load(keys)
    book = _HoldBook(st, offset)
    applied = 0
    for m in remaps:
        hk = held_key(m.project, m.device)
        h = book.get(hk)
        if h is not None and m.user in h.waiting:
            if m.from_aid != m.to_aid:
                v = st.current(profile_key(m.project, m.to_aid))
                dst = dec_profile(v) if v is not None else None
                rows = book.rows(hk, h)
                for i, row in enumerate(rows):
                    if row.aid == m.from_aid:
                        f = fold(m, dst, Profile(row.created, row.start_version, row.paying, row.props))
                        rows[i] = msgspec.structs.replace(row, aid=m.to_aid, created=f.created,
                                                            start_version=f.start_version, paying=f.paying,
                                                            props=f.props)
            h.waiting.remove(m.user)
            if not h.waiting:
                book.release(hk, now_ms, answered=True)
        pk = pair_key(m.project, m.device, m.user)
        if m.from_aid == m.to_aid or decode_int(st.current(pk), -1) != m.from_aid:
            continue
        applied += 1
        st.put(pk, encode_int(m.to_aid))
        dk = device_key(m.project, m.device)
        v = st.current(dk)
        if v is not None:
            d = dec_device(v)
            if d.user == m.user and d.aid == m.from_aid:
                st.put(dk, enc.encode(Device(m.to_aid, m.user, d.held)))
        to_k, from_k = profile_key(m.project, m.to_aid), profile_key(m.project, m.from_aid)
        dst, src = st.current(to_k), st.current(from_k)
        st.put(to_k, enc.encode(fold(m, dec_profile(dst) if dst else None, dec_profile(src) if src else None)))
    released = book.result()
    return Remapped(dict(st.writes), st.before(), applied, released)
