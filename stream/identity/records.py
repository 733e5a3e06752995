"""The identity state's records and keys, and the messages of identity.links and the remaps on events.valid.

State (one faust table, ``<app_id>-identity-changelog``; partition p holds the
device side of events.valid[p] and the user side of identity.links[p]):

=============================================  ================================================
key                                            value (msgpack arrays, ``Struct`` below)
=============================================  ================================================
``c``                                          the partition's id counter (``ids.allocate``)
``a``                                          the highest events.valid offset applied
``j`` + offset (8 bytes, big-endian)           journal: pre-images of what that batch wrote
``D<project>\\0<device>``                      ``Device``: current amplitude_id and user_id
``P<project>\\0<device>\\0<user_id>``          amplitude_id of that (device, user) pair
``A<project>\\0<amplitude_id>``                ``Profile``: the user's fields on this partition
``G<project>\\0<group type>\\0<name>``         the group's properties (JSON)
``U<project>\\0<user_id>``                     ``User``: the user's id and fields (user side)
``W<events.valid partition>``                  highest events.valid offset applied from it
``H<project>\\0<device>``                      ``Held``: the device's hold (since, waiting, chunks, offsets)
``Q<project>\\0<device>`` + first + n (8+4)    the hold's n-th chunk of rows (``HeldRow`` list, references to
                                               their events.valid messages), one per batch
``R<project>\\0<device>`` + n (4 bytes)        the same, as a previous version numbered them (read, not written)
``x`` + offset (8 bytes)                       chunks let go by the message at offset, deleted once it is committed
``h``                                          the partition's holds: ``Holds``, (since, hour, H key) each
``r``                                          the next source offset of released rows
=============================================  ================================================

``<device>`` is the event's device_id, or ``\\x01`` + user_id for an event that
has none (it is partitioned by its user_id).

Messages (msgpack, arrays in field order; documented here, the contract of both
ends): an identity.links message is a ``Links``: the links of one events.valid
batch for one identity.links partition, keyed by nothing (its partition is
``partition_for(user_id)``). A remap message on events.valid is
``REMAP_MAGIC`` + ``Remaps``; ``REMAP_MAGIC`` starts with a zero byte, which no
EventBatch starts with (its first field is a project id > 0, zig-zag encoded).
A remap whose ``from_aid`` is its ``to_aid`` is an *answer*: the user side took
the link without a merge (the user adopted the pair's id); it moves nothing and
releases the rows the device side held for it.
"""

from __future__ import annotations

import struct

import msgspec

REMAP_MAGIC = b"\x00stream-remap\x00"

COUNTER = b"c"
APPLIED = b"a"
HOLDS = b"h"
RELEASED = b"r"
JOURNAL = b"j"
UNUSED = b"x"
_OFFSET = struct.Struct(">q")
_CHUNK = struct.Struct(">I")


class Device(msgspec.Struct, array_like=True, gc=False):
    aid: int
    user: str            # "" while no user_id was seen on the device
    # per source ("topic[partition]"), the highest source offset of the device's rows that were held: an upstream
    # replay of one (the same event again, which dedupe lets through) is known by it and dropped, as it went out
    # through the hold, under another source than its own (written when a hold is let go; ``Held.offsets`` meanwhile)
    held: dict[str, int] = msgspec.field(default_factory=dict)


class Profile(msgspec.Struct, array_like=True, gc=False):
    created: str | None           # user_creation_time
    start_version: str | None
    paying: bool
    props: bytes = b"{}"          # user properties, JSON


class User(msgspec.Struct, array_like=True, gc=False):
    aid: int
    created: str | None
    start_version: str | None
    paying: bool
    props: bytes = b"{}"


class Link(msgspec.Struct, array_like=True, gc=False):
    """A (device, user) pair seen for the first time, with the device's id and what its partition knows."""

    project: int
    user: str
    device: str
    partition: int        # the events.valid partition of the device
    aid: int
    time_ms: int          # event_time of the event that linked them, epoch ms
    server_ms: int        # its server_upload_time, epoch ms
    created: str | None
    start_version: str | None
    paying: bool
    props: bytes


class Links(msgspec.Struct, array_like=True, gc=False):
    origin_partition: int   # events.valid partition of the batch
    origin_offset: int      # its offset: a replay of it is dropped by the W watermark
    links: list[Link]


class Remap(msgspec.Struct, array_like=True, gc=False):
    """Device ``device``'s pair with ``user`` moves from id ``from_aid`` to the user's ``to_aid``."""

    project: int
    device: str
    user: str
    from_aid: int
    to_aid: int
    created: str | None
    start_version: str | None
    paying: bool
    props: bytes


class Remaps(msgspec.Struct, array_like=True, gc=False):
    remaps: list[Remap]


class HeldRow(msgspec.Struct, array_like=True, gc=False):
    """An enriched row held back: the row up to its identity columns, the columns that do not depend on the user,
    the user's fields as the device's partition had them for it, and what its batch carried of it.

    The device side holds a row by reference (``at`` >= 0): the row's bytes, key, uuid and Segment message stay in
    its events.valid message, which the worker keeps in memory until the row is let go and reads back from the
    topic otherwise (after a restart), so that a held row costs its state, journal and changelog about its user's
    fields only, not its ~1 KB of bytes. A row carrying its bytes (``at`` -1) is one a previous version held, or
    one whose identity columns were not at its end."""

    project: int
    head: bytes            # the row up to and including the comma before its identity columns
    event_type: bytes      # amplitude_event_type, raw JSON
    group_properties: bytes
    processed_time: bytes
    aid: int
    created: str | None
    start_version: str | None
    paying: bool
    props: bytes           # user_properties as the row shows them, JSON
    time: int              # server_upload_time, epoch ms
    key: bytes
    uuid: bytes
    segment: bytes         # its Segment message, b"" when none
    segment_source: str
    # a row held by reference (``at`` >= 0): head, key, uuid and segment are empty here and are those of row
    # ``index`` of the events.valid batch message at offset ``at`` of the hold's partition, head its first
    # ``cut`` bytes (``stream.identity.device.fill``); -1: the row carries them itself
    at: int = -1
    index: int = 0
    cut: int = 0


class Held(msgspec.Struct, array_like=True, gc=False):
    """A device's rows held until the user side answered every link it sent for the device (``waiting``: the
    user_ids of those links), from ``since`` (the Kafka timestamp of the events.valid message that held the
    first one, epoch ms).

    The rows are stored in ``chunks`` keys of their own, each written once by the batch (or remap message) that
    held its rows, so that holding a batch's rows writes those rows and this small record, not every row held
    before: ``held_chunk_key(H key, first, n)`` for n from 0 to ``chunks`` - 1, in order, where ``first`` is the
    events.valid offset of the message that wrote chunk 0 (so a key is never written twice, not even by a later
    hold of the device). A chunk is not deleted by the message that lets its rows go (or rewrites them): that
    message lists it under ``unused_key`` and it is deleted once the message's offset is committed
    (``IdentityTable.apply``), so that letting rows go journals no pre-image of them.

    ``offsets``: per source, the highest source offset of the rows this hold holds. The device's record
    (``Device.held``) takes them when the hold is let go, so that holding a batch's rows writes this record alone,
    not the device's too; until then an upstream replay of a held row is known by either.

    A value written by a previous version has ``first`` -1: its rows are here (``rows``, before chunks existed)
    or in chunks ``held_rows_key(H key, n)``; read as such, they move to chunks of the current layout when the
    hold is next written. In memory, ``rows`` are the rows not in a chunk yet. A hold written before ``offsets``
    has none: its rows' offsets are in the device's record already."""

    since: int
    waiting: list[str]
    rows: list[HeldRow]
    chunks: int = 0
    first: int = -1
    offsets: dict[str, int] = msgspec.field(default_factory=dict)


class Holds(msgspec.Struct, array_like=True, gc=False):
    """The partition's held devices: (since, hour of the batch that began the hold, H key) each, so that a batch
    finds those past the bound or of an earlier hour."""

    holds: list[tuple[int, int, bytes]]


enc = msgspec.msgpack.Encoder()
dec_device = msgspec.msgpack.Decoder(Device).decode
dec_profile = msgspec.msgpack.Decoder(Profile).decode
dec_user = msgspec.msgpack.Decoder(User).decode
dec_links = msgspec.msgpack.Decoder(Links).decode
dec_held = msgspec.msgpack.Decoder(Held).decode
dec_held_rows = msgspec.msgpack.Decoder(list[HeldRow]).decode
dec_holds = msgspec.msgpack.Decoder(Holds).decode
_dec_remaps = msgspec.msgpack.Decoder(Remaps).decode


def encode_remaps(remaps: list[Remap]) -> bytes:
    return REMAP_MAGIC + enc.encode(Remaps(remaps))


def decode_remaps(value: bytes) -> list[Remap] | None:
    """The remaps of an events.valid message, None when it is not a remap message (an EventBatch)."""
    if not value.startswith(REMAP_MAGIC):
        return None
    return _dec_remaps(value[len(REMAP_MAGIC):]).remaps


def encode_int(n: int) -> bytes:
    return _OFFSET.pack(n)


def decode_int(b: bytes | None, default: int) -> int:
    return default if b is None else _OFFSET.unpack(b)[0]


def device_key(project: int, device: str) -> bytes:
    return b"D%d\x00%s" % (project, device.encode())


def pair_key(project: int, device: str, user: str) -> bytes:
    return b"P%d\x00%s\x00%s" % (project, device.encode(), user.encode())


def profile_key(project: int, aid: int) -> bytes:
    return b"A%d\x00%d" % (project, aid)


def group_key(project: int, group_type: str, name: str) -> bytes:
    return b"G%d\x00%s\x00%s" % (project, group_type.encode(), name.encode())


def held_key(project: int, device: str) -> bytes:
    return b"H%d\x00%s" % (project, device.encode())


def held_rows_key(hk: bytes, n: int) -> bytes:
    """The key of the n-th chunk of rows of the hold whose key is ``hk`` (``held_key``)."""
    return b"R" + hk[1:] + _CHUNK.pack(n)


def held_chunk_key(hk: bytes, first: int, n: int) -> bytes:
    """The key of the n-th chunk of rows of the hold whose key is ``hk`` and whose chunk 0 was written by the
    message at events.valid offset ``first`` (``Held``)."""
    return b"Q" + hk[1:] + _OFFSET.pack(first) + _CHUNK.pack(n)


def unused_key(offset: int) -> bytes:
    """The key of the list of chunks the message at ``offset`` stopped using (``Held``)."""
    return UNUSED + _OFFSET.pack(offset)


def unused_offset(key: bytes) -> int:
    return _OFFSET.unpack(key[1:])[0]


def encode_keys(keys: list[bytes]) -> bytes:
    return enc.encode(keys)


dec_keys = msgspec.msgpack.Decoder(list[bytes]).decode


def user_key(project: int, user: str) -> bytes:
    return b"U%d\x00%s" % (project, user.encode())


def watermark_key(valid_partition: int) -> bytes:
    return b"W%d" % valid_partition


def journal_key(offset: int) -> bytes:
    return JOURNAL + _OFFSET.pack(offset)


def journal_offset(key: bytes) -> int:
    return _OFFSET.unpack(key[1:])[0]


def encode_ops(ops: dict[bytes, bytes | None]) -> bytes:
    """Puts (a value) and deletes (None) as one record: the changelog value, and a journal entry's pre-images."""
    return enc.encode(list(ops.items()))


def decode_ops(data: bytes) -> list[tuple[bytes, bytes | None]]:
    return [(k, v) for k, v in msgspec.msgpack.decode(data)]
