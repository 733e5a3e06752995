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
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson

from stream.events import avro
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
    """The zigzag varint at ``i`` (an Avro int or long) and the position after it."""
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        if c < 0x80:
            return (n >> 1) ^ -(n & 1), i
        shift += 7
        if shift > 63:
            raise NotAMutation("a varint of more than 10 bytes")


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
        project, i = _long(value, 0)
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
            if n < 0 or i + n > len(value):
                raise NotAMutation(f"an event of {n} bytes at byte {i} of {len(value)}")
            event = memoryview(value)[i:i + n]      # not copied: the take holds the record anyway
    except (IndexError, UnicodeDecodeError, NotAMutation) as exc:
        why = "it ends inside a field" if isinstance(exc, IndexError) else str(exc)
        raise NotAMutation(f"a record of {len(value)} bytes is not a mutation as schemas/mutation.avsc writes it "
                           f"({why}): only stream's mirror import writes events.mutations; find what else produces "
                           "to it") from exc
    return project, Mutation(insert_id.decode(), _OPS[op], (modified_ms, _file(file), row_no), device_id,
                             None if event is None else RawRow(event))
