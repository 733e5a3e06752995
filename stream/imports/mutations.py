"""Rows of a mirror source -> mutations for events.mutations, or why a row is refused (pure).

A mirror source (``strategy: mirror``) maps each row, through its converter, to an event plus the mutation type
in ``$mutation_type`` (``stream.export.mirror``: INSERT, UPDATE or DELETE in any case; missing is UPDATE). What
the vendor documents for Mirror Sync holds here too:

- a row without ``user_id`` is refused (``missing_user_id``), counted and dead-lettered, as the vendor drops it;
- a row with another mutation type is refused (``invalid_mutation_type``);
- an UPDATE or DELETE names its event by ``insert_id`` and is refused without one (``missing_id``); an INSERT
  without one gets the id derived from its file and row, as appended rows do;
- no enrichment: the event's row is built by the same validation as every event (``normalize``), but it passes
  no identity stage: its user and group properties update no stored properties, and it causes no merge.

A DELETE needs no more than its insert_id (and a user_id), so it is not validated as an event.

On events.mutations a record carries many mutations (:func:`grouped`): a chunk's mutations, each encoded by
:func:`encode` as before (``schemas/mutation.avsc``), are grouped by the partition their own key would go to (the
mirror index key, ``stream.events.partitioning.partition_of``: where the index keeps the insert_id's entries) and
sent as one record per partition and ``MANY_BYTES`` (``MANY_MAX`` mutations at most): ``MANY_MAGIC``, then
``schemas/mutations.avsc`` (an array of the mutations' records), keyed by its first mutation's key, so that the
default partitioner places it where each of its mutations' keys would have. A worker reads both kinds
(:func:`decode_record`): the records of one mutation that an earlier version wrote (and that may still be on the
topic) start with the project's zigzag varint, an even byte (a project is 0 or more), and the records of many with
``MANY_MAGIC``, whose first byte is odd. A leading magic rather than a record header: the value alone says what it
is, so every reader (the mirror stage, the take's count, tests and tools reading the topic) needs no header, and
the senders of the importer stay (key, value).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import orjson

from stream.events import avro
from stream.events.batch import SOURCE_SLOTS
from stream.events.partitioning import partition_of
from stream.events.normalize import Normalized, Reason, Rejected, Rules, normalize
from stream.export import mirror_index
from stream.export.mirror import MUTATION_FIELD, Mutation, Op, RawRow, parse_op


def pop_op(ev: dict[str, Any]) -> Op | Rejected:
    """The mutation type of a converted mirror row (taken out of it), or why it is refused."""
    raw = ev.pop(MUTATION_FIELD, None)
    op = parse_op(raw)
    if op is None:
        return Rejected(Reason.INVALID_MUTATION_TYPE, MUTATION_FIELD,
                        f"{MUTATION_FIELD} must be INSERT, UPDATE or DELETE (any case; missing means UPDATE), got "
                        f"{orjson.dumps(raw, default=str).decode()[:100]}")
    return op


def mutation_of(ev: dict[str, Any], project: int, seq: tuple[int, str, int], default_insert_id: str,
                server_ms: int, origin: str, rules: Rules, now_ms: int) -> Mutation | Rejected:
    """The converter's output of one mirror row as a mutation (``seq``: the file's LastModified, its URL and the
    row number), or why it is refused."""
    op = pop_op(ev)
    if isinstance(op, Rejected):
        return op
    user_id = ev.get("user_id")
    if not isinstance(user_id, str) or not user_id.strip():
        return Rejected(Reason.MISSING_USER_ID, "user_id",
                        "a mirror row needs a user_id: map one in the source's converter (rows without one are "
                        "dropped, as Amplitude's Mirror Sync drops them)")
    insert_id = ev.get("insert_id")
    if not isinstance(insert_id, str) or not insert_id:
        if op is not Op.INSERT:
            return Rejected(Reason.MISSING_ID, "insert_id",
                            f"{'a' if op is Op.DELETE else 'an'} {op.value} names the event it changes by "
                            "insert_id: map the column that holds the exported events' $insert_id to insert_id in "
                            "the converter")
        insert_id = ev["insert_id"] = default_insert_id
    device = ev.get("device_id")
    device_id = device if isinstance(device, str) and device else None
    if op is Op.DELETE:
        return Mutation(insert_id, op, seq, device_id, None)
    res = normalize(ev, project, server_ms, origin, rules, now_ms)
    if type(res) is not Normalized:
        return res
    if len(res.line) > rules.max_event_bytes:
        return Rejected(Reason.TOO_LARGE, None, f"the converted event is {len(res.line)} bytes, over "
                        f"ingest.max_event_bytes ({rules.max_event_bytes})")
    return Mutation(insert_id, op, seq, device_id, orjson.loads(res.line))


def encode(project: int, m: Mutation) -> tuple[bytes, bytes]:
    """(key, value) of the mutation's record on events.mutations (schemas/mutation.avsc)."""
    modified_ms, file, row = m.seq
    value = avro.encode("mutation", {
        "project": project, "op": m.op.value, "insert_id": m.insert_id, "device_id": m.device_id,
        "file_modified_ms": modified_ms, "file": file, "row": row,
        "event": None if m.row is None else orjson.dumps(m.row)})
    return mirror_index.key(project, m.insert_id), value


def decode(value: bytes) -> tuple[int, Mutation]:
    """(project, mutation) of a record written by :func:`encode`."""
    r = avro.decode("mutation", value)
    row = None if r["event"] is None else orjson.loads(r["event"])
    return r["project"], Mutation(r["insert_id"], Op(r["op"]), (r["file_modified_ms"], r["file"], r["row"]),
                                  r["device_id"], row)


_OPS = (Op.INSERT, Op.UPDATE, Op.DELETE)
"""The symbols of the schema's ``Op`` enum, in its order."""


class NotAMutation(ValueError):
    pass


def _long(b: bytes, i: int) -> tuple[int, int]:
    """The zigzag varint at ``i`` (an Avro int or long) and the position after it (``avro.long_at``)."""
    try:
        return avro.long_at(b, i)
    except avro.NotALong as exc:
        raise NotAMutation(str(exc)) from None


def _bytes(b: bytes, i: int) -> tuple[bytes, int]:
    n, i = _long(b, i)
    if n < 0 or i + n > len(b):
        raise NotAMutation(f"a length of {n} at byte {i} of {len(b)}")
    return b[i:i + n], i + n


def _union(b: bytes, i: int) -> tuple[bool, int]:
    """Whether the ``["null", X]`` union at ``i`` holds an X, and the position after its branch index."""
    branch, i = _long(b, i)
    if branch not in (0, 1):
        raise NotAMutation(f"union branch {branch}")
    return branch == 1, i


@lru_cache(maxsize=256)
def _file(raw: bytes) -> str:
    """A file's URL, one string for all its mutations (a take holds thousands of one file's)."""
    return raw.decode()


def decode_raw(value: bytes) -> tuple[int, Mutation]:
    """:func:`decode` as the mirror stage reads a take: the record read by hand for this schema (a few µs, against
    fastavro's reader and the row's parse), and the row kept as its JSON bytes (``RawRow``, parsed on first read).
    Equal to :func:`decode`'s for every record :func:`encode` writes; a record it cannot read raises
    ``NotAMutation`` (a ValueError) naming the topic's schema."""
    try:
        return _read(value, 0, len(value))
    except (IndexError, UnicodeDecodeError, NotAMutation) as exc:
        why = "it ends inside a field" if isinstance(exc, IndexError) else str(exc)
        raise NotAMutation(f"a record of {len(value)} bytes is not a mutation as schemas/mutation.avsc writes it "
                           f"({why}): only stream's mirror import writes events.mutations; find what else produces "
                           "to it") from exc


def _read(value: bytes, i: int, end: int) -> tuple[int, Mutation]:
    """The mutation of ``schemas/mutation.avsc`` in ``value[i:end]`` (its row a view of ``value``, not copied)."""
    project, i = _long(value, i)
    op, i = _long(value, i)
    if not 0 <= op < len(_OPS):
        raise NotAMutation(f"op symbol {op}")
    insert_id, i = _bytes(value, i)
    has_device, i = _union(value, i)
    device_id = None
    if has_device:
        raw_device, i = _bytes(value, i)
        device_id = raw_device.decode()
    modified_ms, i = _long(value, i)
    file, i = _bytes(value, i)
    row_no, i = _long(value, i)
    has_event, i = _union(value, i)
    event = None
    if has_event:
        n, i = _long(value, i)
        if n < 0 or i + n > end:
            raise NotAMutation(f"an event of {n} bytes at byte {i} of {end}")
        event = memoryview(value)[i:i + n]      # not copied: the take holds the record anyway
        i += n
    if i > end:
        raise IndexError(i)
    return project, Mutation(insert_id.decode(), _OPS[op], (modified_ms, _file(file), row_no), device_id,
                             None if event is None else RawRow(event))


MANY_MAGIC = b"\xff\x02"
"""The first bytes of a record of many mutations (``schemas/mutations.avsc`` follows). Its first byte is odd: the
first byte of a record of one mutation (``schemas/mutation.avsc``) is the zigzag varint of its project, which is
never negative (``mirror_index.key`` packs it unsigned), so it is even."""
MANY_BYTES = 512 * 1024
"""The bytes of a record of many mutations at most (unless one mutation alone is larger): well under the producer's
largest request (``kafka.max_request_bytes``, 8 MiB by default; half of it at most, the bound of events.valid's
batches) and a sixteenth of the take's byte bound's default (``mirror.take_max_bytes``), so that a take of records
holds about what it would of single mutations."""
MANY_MAX = 4096
"""Mutations in a record at most: under ``stream.events.batch.SOURCE_SLOTS`` (a new INSERT's source offset is its
record's offset times that, plus its index in the record) and bounding the take's count (``TAKE_MAX`` mutations,
overshot by one record's at most)."""


def encode_many(values: Sequence[bytes]) -> bytes:
    """A record of many mutations: ``MANY_MAGIC``, then ``schemas/mutations.avsc`` (one block of the array: its
    count, each mutation's record as Avro bytes, the end of the array) of the records :func:`encode` wrote."""
    if not values:
        raise ValueError("a record of many mutations holds one mutation at least")
    long_of = avro.long_of
    parts = [MANY_MAGIC, long_of(len(values))]
    for v in values:
        parts.append(long_of(len(v)))
        parts.append(v)
    parts.append(b"\0")
    return b"".join(parts)


def grouped(records: Iterable[tuple[bytes, bytes]], partitions: int, max_bytes: int = MANY_BYTES,
            max_count: int = MANY_MAX) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of the records of many mutations that carry ``records`` ((key, value) of
    :func:`encode`, in the order they were read): per partition of events.mutations that a record's key goes to
    (``partition_of``, as the default partitioner places it), its records in their order, cut at ``max_bytes`` of
    values (a mutation larger than that goes alone) and ``max_count`` mutations; each keyed by its first mutation's
    key. Ordered by each record's first mutation."""
    open_: dict[int, tuple[bytes, list[bytes], list[int]]] = {}   # partition -> (key, values, [bytes])
    done: list[tuple[int, tuple[int, bytes, bytes]]] = []          # (position of the first mutation, record)
    first: dict[int, int] = {}
    for pos, (key, value) in enumerate(records):
        p = partition_of(key, partitions)
        held = open_.get(p)
        if held is not None and (held[2][0] + len(value) > max_bytes or len(held[1]) >= max_count):
            done.append((first[p], (p, held[0], encode_many(held[1]))))
            held = None
        if held is None:
            held = open_[p] = (key, [], [0])
            first[p] = pos
        held[1].append(value)
        held[2][0] += len(value)
    for p, (key, values, _) in open_.items():
        done.append((first[p], (p, key, encode_many(values))))
    return [r for _, r in sorted(done, key=lambda d: d[0])]


def _spans(value: bytes) -> list[tuple[int, int]]:
    """Where the records of one mutation are in a record of many (after ``MANY_MAGIC``): (start, end) each."""
    out: list[tuple[int, int]] = []
    i = len(MANY_MAGIC)
    while True:
        n, i = _long(value, i)
        if n == 0:
            break
        if n < 0:       # a block with its byte size (the Avro spec allows it)
            n = -n
            _, i = _long(value, i)
        for _ in range(n):
            size, i = _long(value, i)
            if size < 0 or i + size > len(value):
                raise NotAMutation(f"a mutation of {size} bytes at byte {i} of {len(value)}")
            out.append((i, i + size))
            i += size
        if len(out) > SOURCE_SLOTS:
            raise NotAMutation(f"more than {SOURCE_SLOTS} mutations in one record (the new INSERTs' source offsets "
                               "would reach the next record's)")
    if i != len(value):
        raise NotAMutation(f"{len(value) - i} bytes after the array's end")
    return out


def is_many(value: bytes) -> bool:
    return value[:len(MANY_MAGIC)] == MANY_MAGIC


def count_of(value: bytes) -> int:
    """Mutations in a record of events.mutations (1 for a record of one; of many, its first block's count): what a
    take counts against ``TAKE_MAX``, read from the record's first bytes."""
    if not is_many(value):
        return 1
    try:
        n, _ = _long(value, len(MANY_MAGIC))
    except (IndexError, NotAMutation):
        return 1        # decode_record says what is wrong with it
    return max(1, abs(n))


def decode_record(value: bytes) -> list[tuple[int, Mutation]]:
    """The (project, mutation) pairs of a record of events.mutations, of either kind (see the module), read as
    :func:`decode_raw` reads one; a record it cannot read raises ``NotAMutation``."""
    if not is_many(value):
        return [decode_raw(value)]
    try:
        return [_read(value, start, end) for start, end in _spans(value)]
    except (IndexError, UnicodeDecodeError, NotAMutation) as exc:
        why = "it ends inside a field" if isinstance(exc, IndexError) else str(exc)
        raise NotAMutation(f"a record of {len(value)} bytes is not a record of mutations as schemas/mutations.avsc "
                           f"writes it ({why}): only stream's mirror import writes events.mutations; find what else "
                           "produces to it") from exc


def decode_all(value: bytes) -> list[tuple[int, Mutation]]:
    """:func:`decode` of each mutation of a record of either kind (the rows parsed): for tools and tests."""
    if not is_many(value):
        return [decode(value)]
    return [decode(value[start:end]) for start, end in _spans(value)]
