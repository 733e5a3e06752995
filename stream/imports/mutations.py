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

from typing import Any

import orjson

from stream.events import avro
from stream.events.normalize import Normalized, Reason, Rejected, Rules, normalize
from stream.export import mirror_index
from stream.export.mirror import MUTATION_FIELD, Mutation, Op, parse_op


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
