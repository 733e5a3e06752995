"""Mirror mutations applied to an hour's rows: the transform of an hour rebuild under ``strategy: mirror`` (pure).

A mirror source's rows are mutations of events already exported: ``INSERT``, ``UPDATE`` or ``DELETE``, named by
the field the converter maps to ``$mutation_type`` (any case; missing means ``UPDATE``, as the vendor's default).
They name their event by ``$insert_id`` within the project. An hour rebuild reads the hour's rows as the live
export wrote them and passes each through :func:`rewrite` with the hour's mutations:

- ``UPDATE`` replaces the event by the mutation's row: every field of the new row, except the fields the system
  gave the event (:data:`KEPT`), which stay as they were, so the event keeps its uuid, amplitude_id and the hour it
  was exported in;
- ``DELETE`` drops the event;
- ``INSERT`` of an insert_id the hour already holds is an ``UPDATE`` when ``insert_is_update`` (a setting), and
  is otherwise ignored and counted as a conflict. ``INSERT`` of a new insert_id does not pass here: it is a new
  event, exported as an import's events are (hour of its import, no enrichment).

**Matching.** A mutation that carries a ``device_id`` applies to the events of that device with its insert_id;
one without applies to every event of the project with that insert_id (dedupe keeps one event per
(device_id, insert_id), so an insert_id can name events of several devices).

**Order.** The vendor applies the operations of one sync window in no promised order. Here they apply in a fixed
one, so that a replay or a second rebuild leaves the same bytes: by their sequence, (the import file's S3
LastModified in ms, its key, the row number): the file written later wins (the vendor asks for files uploaded in
the order of their events), then the greater key, and within a file the later row. After a ``DELETE``, a later
``UPDATE`` of the same event finds nothing and is counted unmatched; a later ``INSERT`` is a new event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

MUTATION_FIELD = "$mutation_type"
"""The field a mirror source's converter maps the mutation type to."""

KEPT = ("$insert_id", "uuid", "amplitude_id", "app", "server_received_time", "server_upload_time",
        "processed_time")
"""Fields an UPDATE never changes: the event's identity and the times that place it in its hour."""


class Op(StrEnum):
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


def parse_op(value: Any) -> Op | None:
    """The mutation type of a row's ``$mutation_type`` value: missing (None or blank) is UPDATE; None when the
    value is none of INSERT, UPDATE, DELETE in any case (the row is then a dead letter)."""
    if value is None:
        return Op.UPDATE
    if not isinstance(value, str):
        return None
    text = value.strip().upper()
    if not text:
        return Op.UPDATE
    try:
        return Op(text)
    except ValueError:
        return None


class RawRow(Mapping[str, Any]):
    """An event row kept as the JSON bytes it came in (a view of the record of events.mutations that carries it),
    parsed on its first read only. The mirror stage holds a take's rows this way: routing a mutation and keeping it
    in its hour's log need no field of its row (the log line embeds the bytes as they are, ``mirror_log.line``), so
    a take holds a few hundred bytes per mutation beside the records it took, whatever the event's size, instead of
    the parsed row (about 4 KB of heap for a 1 KB event)."""

    __slots__ = ("raw", "_row")

    def __init__(self, raw: bytes | memoryview):
        self.raw = raw
        self._row: dict[str, Any] | None = None

    def parsed(self) -> dict[str, Any]:
        if self._row is None:
            row = orjson.loads(self.raw)
            if not isinstance(row, dict):
                raise ValueError(f"a mutation's row must be a JSON object, got {bytes(self.raw[:60])!r}: the record "
                                 "was not written by stream.imports.mutations.encode; find what else produces to "
                                 "events.mutations")
            self._row = row
        return self._row

    def __getitem__(self, key: str) -> Any:
        return self.parsed()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.parsed())

    def __len__(self) -> int:
        return len(self.parsed())

    def __repr__(self) -> str:
        return f"RawRow({bytes(self.raw)!r})"


@dataclass(frozen=True, slots=True)
class Mutation:
    insert_id: str
    op: Op
    seq: tuple[int, str, int]
    """(the import file's LastModified in ms, its key, the row number): the order mutations apply in."""
    device_id: str | None = None
    row: Mapping[str, Any] | None = None
    """The new event (UPDATE, INSERT): its export row, as the import builds it; None for a DELETE."""

    def matches(self, event: Mapping[str, Any]) -> bool:
        return self.device_id is None or event.get("device_id") == self.device_id


class Outcome(StrEnum):
    UPDATED = "updated"
    DELETED = "deleted"
    INSERT_CONFLICT = "insert_conflict"
    """INSERT of an insert_id the hour holds, with ``insert_is_update`` off: ignored."""
    UNMATCHED = "unmatched"
    """UPDATE or DELETE that found no event among the rows it was applied to."""


def by_insert_id(mutations: Iterable[Mutation]) -> dict[str, list[Mutation]]:
    """The mutations of an hour grouped by insert_id, each group in the order it applies."""
    out: dict[str, list[Mutation]] = {}
    for m in mutations:
        out.setdefault(m.insert_id, []).append(m)
    for group in out.values():
        group.sort(key=lambda m: m.seq)
    return out


def updated(event: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` with the fields of :data:`KEPT` taken from ``event``; the key order is ``new``'s, then any kept
    field ``new`` lacks."""
    out = dict(new)
    for k in KEPT:
        if k in event:
            out[k] = event[k]
        else:
            out.pop(k, None)
    return out


def apply(event: dict[str, Any], mutations: Sequence[Mutation], insert_is_update: bool,
          outcomes: Counter[tuple[str, Outcome]]) -> tuple[dict[str, Any] | None, set[int]]:
    """The event after its mutations (None: deleted) and the indexes of the mutations that matched it; each
    matching mutation's outcome is counted in ``outcomes`` under (its op, outcome)."""
    matched: set[int] = set()
    current: dict[str, Any] | None = event
    for i, m in enumerate(mutations):
        if current is None or not m.matches(current):
            continue
        matched.add(i)
        if m.op is Op.DELETE:
            current = None
            outcomes[(m.op.value, Outcome.DELETED)] += 1
        elif m.op is Op.UPDATE or insert_is_update:
            assert m.row is not None, "an UPDATE or INSERT carries its row"
            current = updated(current, m.row)
            outcomes[(m.op.value, Outcome.UPDATED)] += 1
        else:
            outcomes[(m.op.value, Outcome.INSERT_CONFLICT)] += 1
    return current, matched


def rewrite(lines: Iterable[bytes], mutations: Mapping[str, Sequence[Mutation]], insert_is_update: bool,
            outcomes: Counter[tuple[str, Outcome]]) -> Iterator[bytes]:
    """The hour's export lines with its mutations applied, in their order; lines no mutation names pass as they
    are (the same bytes). Mutations that matched no line are counted as unmatched once the lines are done."""
    matched: dict[str, set[int]] = {}
    for line in lines:
        after = _one(line, mutations, insert_is_update, outcomes, matched)
        if after is not None:
            yield after
    count_unmatched(mutations, matched, outcomes)


def rewrite_batch(blob: bytes, source_offsets: Sequence[int], mutations: Mapping[str, Sequence[Mutation]],
                  insert_is_update: bool, outcomes: Counter[tuple[str, Outcome]],
                  matched: dict[str, set[int]], ids: AbstractSet[bytes] | None = None) -> tuple[bytes, list[int]]:
    """A batch's rows (joined by newlines, with their source offsets) with the mutations applied: the rows kept
    and their source offsets, so that a writer drops replays of the rewritten rows as of the original ones.
    A batch holds part of an hour: ``matched`` gathers what matched across the hour's batches, for
    :func:`count_unmatched` once the hour is done.

    With ``ids`` (:func:`insert_ids` of ``mutations``), only the rows that may name a mutation are parsed: the
    batch's ``"$insert_id":"..."`` fields are found in its bytes (:func:`named_rows`) and a row none of whose
    insert_ids is in ``ids`` passes as it is, the same bytes as without ``ids``; a batch whose bytes do not allow
    that (an insert_id written otherwise, with an escape, or not a string) has every row parsed."""
    if not mutations:
        return blob, list(source_offsets)
    if ids is not None:
        named = rows_by_first_field(blob, ids)
        if named is None:
            named = named_rows(blob, ids)
        if named is not None:
            return _rewrite_named(blob, source_offsets, named, mutations, insert_is_update, outcomes, matched)
    lines, offsets = [], []
    for ln, off in zip(blob.split(b"\n"), source_offsets):
        after = _one(ln, mutations, insert_is_update, outcomes, matched)
        if after is not None:
            lines.append(after)
            offsets.append(off)
    return b"\n".join(lines), offsets


class InsertIds(frozenset):
    """An hour's insert_ids (:func:`insert_ids`) with their one length, if they have one (``size``, else None):
    found once for the hour, not for each of its batches (:func:`named_rows`)."""

    size: int | None


def insert_ids(mutations: Iterable[str]) -> InsertIds:
    """The insert_ids of an hour's mutations (the keys of its mapping) as the bytes a row holds them in."""
    ids = InsertIds(i.encode() for i in mutations)
    sizes = set(map(len, ids))
    ids.size = sizes.pop() if len(sizes) == 1 else None
    return ids


def _one_size(ids: AbstractSet[bytes]) -> int | None:
    """The one length of ``ids`` (None: several, or none): an :class:`InsertIds`' own, else counted."""
    if type(ids) is InsertIds:
        return ids.size
    sizes = set(map(len, ids))
    return sizes.pop() if len(sizes) == 1 else None


_INSERT_ID_KEY = b'"$insert_id"'
_INSERT_ID_FIELD = _INSERT_ID_KEY + b':"'


_FIRST_FIELD = b'{' + _INSERT_ID_FIELD


def rows_by_first_field(blob: bytes, ids: InsertIds | AbstractSet[bytes]) -> list[tuple[int, int]] | None:
    """:func:`named_rows` for a batch whose every row starts with its ``$insert_id`` as a compact string field (as
    the export rows are written: it is their first column) and holds no backslash: (first byte, end byte) of each row
    whose first field's value starts with one of ``ids`` (all of one length), found with a newline search and a
    comparison a row (about half the CPU of looking at each ``$``). The rows it gives hold every row whose
    insert_id is in ``ids`` (a row whose value only starts with one is given too: the rewrite parses each row it is
    given and leaves one no mutation names as it is); None when a row starts otherwise, the batch has a backslash,
    or the ids have several lengths: :func:`named_rows` answers for it."""
    size = _one_size(ids)
    if size is None or b"\\" in blob:
        return None
    out: list[tuple[int, int]] = []
    find, startswith, n, end_of = blob.find, blob.startswith, len(_FIRST_FIELD), len(blob)
    pos = 0
    while pos < end_of:
        if not startswith(_FIRST_FIELD, pos):
            return None
        nl = find(b"\n", pos)
        end = end_of if nl < 0 else nl
        if blob[pos + n:pos + n + size] in ids:
            out.append((pos, end))
        pos = end + 1
    return out


def named_rows(blob: bytes, ids: AbstractSet[bytes]) -> list[tuple[int, int]] | None:
    """The rows of a batch (rows joined by newlines) that hold an insert_id field whose value is in ``ids``, at
    any depth, found in the bytes without parsing them: (first byte, end byte) of each, in order. None when the
    bytes cannot answer for every row: a ``"$insert_id"`` not written as a compact string field without escapes,
    or any ``\\u`` escape (a key could be written with one). Every other row's own insert_id, if it has one, is
    then written plainly and is not in ``ids``, so no mutation names it.

    The fields are found by their ``$`` (``bytes.find`` of one byte is a ``memchr``, about 20 times faster here
    than a search for the field's 12 bytes, which looks at most bytes of a row of JSON, and than a regular
    expression, which looks at every byte), and the rows' bounds by the newlines either side of a named field
    only; no byte is counted (``bytes.count`` looks at every byte). When every insert_id of ``ids`` has the same
    length (a UUID's 36 bytes, as exports write them) and no backslash is near a field, a field's value is compared
    by that many bytes after its opening quote, not searched for its closing quote: a field found inside another's
    value (``"$insert_id":"$insert_id"``) or a ``"$insert_id"`` not followed by a compact string hands the batch to
    :func:`_named_rows_each`, which looks at each field's whole value, as does any other batch."""
    if b"\\" in blob and not _escapes_clear(blob):
        return _named_rows_each(blob, ids)
    size = _one_size(ids)
    if size is None:
        return _named_rows_each(blob, ids)
    out: list[tuple[int, int]] = []
    find, startswith = blob.find, blob.startswith
    last = -1                               # the end byte of the last row found
    start = -1                              # the first byte of the last field's value
    dollar = find(b"$", 1)
    while dollar >= 0:
        if blob[dollar + 1:dollar + 2] != b"i":     # "$schema", "$price": passed over with one byte compared
            dollar = find(b"$", dollar + 1)
            continue
        if startswith(_INSERT_ID_FIELD, dollar - 1):
            if dollar == start:             # a field inside the last one's value: that value is "$insert_id"
                return _named_rows_each(blob, ids)
            start = dollar + 13
            if blob[start:start + size] in ids and dollar - 1 > last and find(b'"', start) == start + size:
                first = blob.rfind(b"\n", 0, dollar) + 1
                nl = find(b"\n", start + size)
                last = len(blob) if nl < 0 else nl
                out.append((first, last))
        elif startswith(_INSERT_ID_KEY, dollar - 1):
            return _named_rows_each(blob, ids)
        dollar = find(b"$", dollar + 1)
    if start >= 0 and find(b'"', start) < 0:
        return None                         # the last field's value is not closed
    return out


_ESCAPES_LOOKED_AT = 256


def _escapes_clear(blob: bytes) -> bool:
    """Whether no backslash of the batch touches an insert_id field (none a ``\\u``, none before a
    ``"$insert_id"``, none in a value after ``"$insert_id":"``), looked at one by one (a ``memchr`` each) for up to
    :data:`_ESCAPES_LOOKED_AT` of them; a batch of more is not clear."""
    find, rfind, startswith = blob.find, blob.rfind, blob.startswith
    at = find(b"\\")
    for _ in range(_ESCAPES_LOOKED_AT):
        if at < 0:
            return True
        if startswith(b"u", at + 1) or startswith(_INSERT_ID_KEY, at + 1):
            return False
        quote = rfind(b'"', 0, at)      # in a field's value: the value's opening quote
        if quote >= 13 and startswith(_INSERT_ID_FIELD, quote - 13):
            return False
        at = find(b"\\", at + 1)
    return at < 0


def _named_rows_each(blob: bytes, ids: AbstractSet[bytes]) -> list[tuple[int, int]] | None:
    """:func:`named_rows` by each field's whole value (its closing quote searched for), for any bytes."""
    escapes = b"\\" in blob
    if escapes and b"\\u" in blob:
        return None
    out: list[tuple[int, int]] = []
    find, startswith, n = blob.find, blob.startswith, len(_INSERT_ID_FIELD)
    last = -1                               # the end byte of the last row found
    dollar = find(b"$", 1)
    while dollar >= 0:
        pos = dollar - 1                    # where the field would start: '"$insert_id":"'
        if not startswith(_INSERT_ID_FIELD, pos):
            if startswith(_INSERT_ID_KEY, pos):
                return None                 # the key, not followed by a compact string
            dollar = find(b"$", dollar + 1)
            continue
        if escapes and blob[pos - 1:pos] == b"\\":
            return None
        start = pos + n
        end = find(b'"', start)
        if end < 0:
            return None
        value = blob[start:end]
        if escapes and b"\\" in value:
            return None
        if value in ids and pos > last:     # a second field of a row already found names it once
            first = blob.rfind(b"\n", 0, pos) + 1
            nl = find(b"\n", end)
            last = len(blob) if nl < 0 else nl
            out.append((first, last))
        dollar = find(b"$", end)
    return out


def _rewrite_named(blob: bytes, source_offsets: Sequence[int], named: list[tuple[int, int]],
                   mutations: Mapping[str, Sequence[Mutation]], insert_is_update: bool,
                   outcomes: Counter[tuple[str, Outcome]], matched: dict[str, set[int]]) -> tuple[bytes, list[int]]:
    """The batch with only the rows ``named`` parsed and rewritten; the bytes between them are copied as they
    are. The index of a row is counted (by its newlines) only when it is deleted, to drop its source offset."""
    if not named:
        return blob, list(source_offsets)
    parts: list[bytes] = []
    dropped: set[int] = set()
    changed = False
    at = 0                                  # the first byte of the next row not yet copied
    row, row_start = 0, 0                   # a row's index and its first byte, as far as counted
    for first, end in named:
        if first > at:
            parts.append(blob[at:first - 1])   # the rows before, without the newline before this one
        line = blob[first:end]
        after = _one(line, mutations, insert_is_update, outcomes, matched)
        if after is None:
            row, row_start = _row_at(blob, row, row_start, first), first
            dropped.add(row)
        else:
            changed = changed or after is not line
            parts.append(after)
        at = end + 1
    if not changed and not dropped:
        return blob, list(source_offsets)
    if at <= len(blob):
        parts.append(blob[at:])
    offsets = [o for i, o in enumerate(source_offsets) if i not in dropped] if dropped else list(source_offsets)
    return b"\n".join(parts), offsets


def _row_at(blob: bytes, row: int, start: int, first: int) -> int:
    """The index of the row that starts at byte ``first``, counted on from row ``row`` starting at ``start``."""
    find = blob.find
    nl = find(b"\n", start, first)
    while nl >= 0:
        row += 1
        nl = find(b"\n", nl + 1, first)
    return row


def _one(line: bytes, mutations: Mapping[str, Sequence[Mutation]], insert_is_update: bool,
         outcomes: Counter[tuple[str, Outcome]], matched: dict[str, set[int]]) -> bytes | None:
    """The line after its mutations (the same bytes when none names it); None when deleted."""
    if not mutations:
        return line
    event = orjson.loads(line)
    insert_id = event.get("$insert_id")
    group = mutations.get(insert_id) if isinstance(insert_id, str) else None
    if not group:
        return line
    after, hit = apply(event, group, insert_is_update, outcomes)
    matched.setdefault(insert_id, set()).update(hit)
    if after is None:
        return None
    return line if after is event else orjson.dumps(after)


def count_unmatched(mutations: Mapping[str, Sequence[Mutation]], matched: Mapping[str, set[int]],
                    outcomes: Counter[tuple[str, Outcome]]) -> None:
    """Count the UPDATEs and DELETEs that matched no row of the hour."""
    for insert_id, group in mutations.items():
        hit = matched.get(insert_id, set())
        for i, m in enumerate(group):
            if i not in hit and m.op is not Op.INSERT:
                outcomes[(m.op.value, Outcome.UNMATCHED)] += 1
