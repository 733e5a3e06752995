"""Rows of an import file -> events for events.valid, and dead letters for the rows that fail (pure).

Each row read from a file (``stream.imports.reader``) goes through the source's converter (FORMATS.md 4.3), is
shaped by the source's data type, and then through the same validation and export-row building as every
ingested event (``stream.events.normalize``), so imported rows get the same dedupe, identity and exports.

* **data_type event**: the converter's output is the event; an ``event_type`` of ``$identify`` or
  ``$groupidentify`` makes it an identify or a group identify.
* **user_properties**: the output's ``user_properties`` become an ``$identify``; properties without an operation
  (no key starting with ``$``) are ``$set``.
* **group_properties**: the output's ``groups`` and ``group_properties`` become a ``$groupidentify``, the
  properties ``$set`` likewise.
* A row without ``insert_id`` gets one derived from (source, key, row number): a file read again, whatever made it
  read again, gives every row the same insert_id, so dedupe drops what was accepted before (within its window).
  A row without ``uuid`` gets one derived from the discovery record and the row number: the same when a crash
  replays that record (dedupe then keeps the row as a replay of itself, and the exporter drops it by its source
  offset), a new one for a new discovery such as a retry (dedupe drops the row as a duplicate). The server times
  default to the discovery record's timestamp, which is the same on every replay of that record.
* Events keep their ``user_properties`` in the export but do not update the user's stored properties when the
  source says ``skip_user_properties_sync`` (Amplitude's default for imports), unless the row sets
  ``$skip_user_properties_sync`` itself.
* A field the converter cannot evaluate is left out (FieldError); if the event is then rejected, the dead letter's
  detail names those fields. A row the reader cannot read (bad JSON, a CSV row with the wrong number of columns) is
  dead-lettered with the reader's reason. Dead letters carry ``s3://bucket/key`` and the row number.
* **strategy mirror** (``convert_mirror``): the converter's output is a mutation of an exported event
  (``stream.imports.mutations.mutation_of``: the type from ``$mutation_type``, the event named by insert_id), with
  the sequence (the file's LastModified in ms, ``s3://bucket/key``, the row number); it is not shaped (no
  enrichment). A refused row is dead-lettered as above, with its reason (``invalid_mutation_type``,
  ``missing_user_id``, ``missing_id``, or any reason of the event's validation).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from stream.events import deadletter
from stream.events.normalize import (FastEvent, Normalized, Reason, Rejected, Rules, fast_event_builder,
                                     fast_row_maker, fast_row_maker_code, fast_row_writer, normalize,
                                     normalize_fast_event, uuid5_str, uuid5_two)
from stream.events.partitioning import remember_partitions
from stream.export.mirror import Mutation
from stream.imports.converter.converter import MISSING, Converter
from stream.imports.files import ROW_SLOTS, ImportFile, row_offset
from stream.imports.mutations import encode as encode_mutation
from stream.imports.mutations import mutation_of
from stream.imports import profiles
from stream.imports.reader import Row, RowError, RowErrorReason
from stream.settings import SourceSettings

_READER_REASONS = {
    RowErrorReason.MALFORMED_JSON: Reason.MALFORMED_JSON,
    RowErrorReason.NOT_AN_OBJECT: Reason.NOT_AN_OBJECT,
    RowErrorReason.BAD_CSV_ROW: Reason.BAD_CSV_ROW,
    RowErrorReason.INVALID_UTF8: Reason.INVALID_UTF8,
    RowErrorReason.TOO_LARGE: Reason.TOO_LARGE,
}
IDENTIFY, GROUP_IDENTIFY = "$identify", "$groupidentify"
SKIP_SYNC = "$skip_user_properties_sync"


@dataclass
class Converted:
    """One chunk of a file's rows: the good events with their source offsets (or, for a mirror source, the
    mutation records), and the dead letters."""

    events: list[tuple[int, Normalized]] = field(default_factory=list)
    dead: list[tuple[bytes, bytes]] = field(default_factory=list)   # (key, dead-letter record)
    mutations: list[tuple[bytes, bytes]] = field(default_factory=list)   # a mirror source's (key, mutation record)
    ops: Counter[str] = field(default_factory=Counter)                  # the mutations by op
    reasons: Counter[str] = field(default_factory=Counter)
    fields_left_out: int = 0
    rows: int = 0


@dataclass(frozen=True)
class FileContext:
    """What converting the rows of one discovered file needs to know."""

    source: SourceSettings
    file: ImportFile
    record_offset: int        # the offset of the discovery record on imports.files
    server_ms: int            # the discovery record's timestamp: the rows' server times when they give none
    rules: Rules
    max_dead_value_bytes: int = 1 << 20
    record: str = ""          # the discovery record as topic/partition/offset: the uuids of its rows derive from it

    @property
    def url(self) -> str:
        return self.file.url


def shape(out: dict[str, Any], source: SourceSettings) -> dict[str, Any]:
    """The converter's output as an event of the source's data type (see the module docstring)."""
    if source.data_type == "user_properties":
        out["event_type"] = IDENTIFY
        out["user_properties"] = _as_operations(out.get("user_properties"))
    elif source.data_type == "group_properties":
        out["event_type"] = GROUP_IDENTIFY
        out["group_properties"] = _as_operations(out.get("group_properties"))
    elif source.skip_user_properties_sync and out.get("event_type") not in (IDENTIFY, GROUP_IDENTIFY):
        out.setdefault(SKIP_SYNC, True)
    return out


def _as_operations(props: Any) -> Any:
    if isinstance(props, dict) and props and not any(k.startswith("$") for k in props):
        return {"$set": props}
    return props


def row_ids(source: str, key: str, row: int) -> str:
    """The insert_id of a row that gives none: a uuid5 of its coordinates."""
    return uuid5_str(f"s3-import/{source}/{key}#{row}")


@dataclass(frozen=True)
class _Straight:
    """An event source's converter output straight into normalize's Struct (``fast_event_builder``): the builder
    of the converter's fields, where ``$skip_user_properties_sync`` is among them, and the fields ``shape`` adds."""

    build: Callable[[tuple[Any, ...]], FastEvent | None]
    write: Callable[..., bytes] | None   # the export row's writer for the builder's events (fast_row_writer)
    make: Callable[..., Normalized | None] | None   # all of it in one function (fast_row_maker), where there is one
    skip_at: int | None          # the index of $skip_user_properties_sync among the converter's fields, if there
    adds_skip: bool              # shape adds $skip_user_properties_sync: true to a row without it (not an identify)
    run: Callable[..., int] | None = None   # a chunk's rows through the converter and make in one loop (_runner)


_STRAIGHT: dict[tuple[int, str, bool], tuple[Any, _Straight | None]] = {}


def _straight(src: SourceSettings) -> _Straight | None:
    """The straight route of an event source's rows, None when its rows go the dict's way only (another data type,
    a converter field that is not an event field, a converter that is not a ``Converter``); made once per
    converter."""
    converter = src.compiled.convert
    memo = (id(converter), src.data_type, bool(src.skip_user_properties_sync))
    got = _STRAIGHT.get(memo)
    if got is not None and got[0] is converter:
        return got[1]
    straight = None
    keys = converter.fields if isinstance(converter, Converter) else ()
    build = fast_event_builder(keys, MISSING) if src.data_type == "event" else None
    if build is not None:
        assert isinstance(converter, Converter)
        make = fast_row_maker(keys, MISSING, (IDENTIFY, GROUP_IDENTIFY))
        straight = _Straight(build, fast_row_writer(keys), make, keys.index(SKIP_SYNC) if SKIP_SYNC in keys else None,
                             bool(src.skip_user_properties_sync), _runner(converter) if make is not None else None)
    if len(_STRAIGHT) >= 256:
        _STRAIGHT.clear()
    _STRAIGHT[memo] = (converter, straight)
    return straight


def _runner(converter: Converter) -> Callable[..., int] | None:
    """For a converter whose every leaf is a column (``Converter.columns_read``) and whose fields ``fast_row_maker``
    takes: ``run(items, insert_ids, uuid_texts, uuids, project, timestamp_ms, rules, now_ms, sync, base, max_bytes,
    events, slow)``, one loop over a chunk's items that reads a dict row's columns and makes its event as
    ``Converter.values`` then ``make`` do (``fast_row_maker_code``, written into the loop), appending
    ``(base + number, event)`` to ``events`` for each event it makes, and calling ``slow(at, item)`` for any other
    item (not a dict row, a column missing, an event ``make`` declines or whose row is over ``max_bytes``); the count
    of the events it made. The same events as ``values`` and ``make`` row by row, without their calls, tuples and
    lists a row (about 1 µs a row less for the benchmark's ten columns)."""
    read = converter.columns_read()
    code = fast_row_maker_code(converter.fields, MISSING, (IDENTIFY, GROUP_IDENTIFY), converter.objects())
    if read is None or code is None:
        return None
    setup, body, env = code
    lines = ["def run(items, insert_ids, uuid_texts, uuids, project, timestamp_ms, rules, now_ms, sync, base, "
             "max_bytes, events, slow):",
             *setup,
             "    made = 0",
             "    at = -1",
             "    for item in items:",
             "        at += 1",
             "        if type(item) is not _Row:",
             "            slow(at, item)",
             "            continue",
             "        row = item.value",
             "        if type(row) is not dict:",
             "            slow(at, item)",
             "            continue",
             "        try:",
             f"            values = {read}",
             "        except KeyError:",
             "            slow(at, item)",
             "            continue",
             "        insert_id_b, uid_s_b, uuid = insert_ids[at], uuid_texts[at], uuids[at]"]
    for line in body[:-1]:
        if line.strip() == "return None":   # make declines the event: the item goes its own way
            indent = "    " + line[:len(line) - len(line.lstrip())]
            lines.extend((f"{indent}slow(at, item)", f"{indent}continue"))
        elif re.search(r"\breturn\b", line):
            raise RuntimeError(f"the row maker's code returns other than by 'return None' and its last line: {line!r}")
        else:
            lines.append("    " + line)
    last = body[-1]
    if not last.startswith("    return _new("):
        raise RuntimeError(f"the row maker's code ends other than by returning its Normalized: {last!r}")
    lines.extend(["        if len(line) > max_bytes:",
                  "            slow(at, item)",
                  "            continue",
                  f"        events.append((base + item.number, {last[len('    return '):]}))",
                  "        made += 1",
                  "    return made"])
    env = {**env, "_Row": Row}
    exec(compile("\n".join(lines), "<import rows>", "exec"), env)   # noqa: S102 -- fast_row_maker_code's and columns
    return env["run"]


def convert(ctx: FileContext, items: Iterable[Row | RowError], now_ms: int, *, straight: bool = True) -> Converted:
    """Convert a run of a file's items, in row order (``now_ms`` feeds the converter's *_now operators).

    An event source's row whose converted fields ``normalize``'s fast path takes goes there straight from the
    converter's values (``Converter.values``, ``fast_event_builder``: no output dict, no ``msgspec.convert``), with
    its ids as below, in one function generated for the converter's fields (``fast_row_maker``) where they hold no
    insert_id, uuid or ``$skip_user_properties_sync``; any other row (a value the fast path refuses, a
    converter that fails on it, a row over the size limit) goes the dict's way below, from its start, to the same
    answer. The rows' ids are made for the whole chunk at once (``uuid5_two``); where the converter reads columns only,
    the chunk goes through one generated loop that reads the columns and makes the events as ``values`` and
    ``make`` do (``_runner``), each item it declines going its own way. ``straight=False``: every row the dict's way
    (the reference the tests compare the straight route with)."""
    out = Converted()
    src, f = ctx.source, ctx.file
    converter = src.compiled.convert
    project = src.project
    # the names the row ids and the origin derive from, up to the row number: the same strings as row_ids and
    # f"{ctx.record}#{n}", f"{f.url}#{n}", built once a chunk
    ids_name, uuid_name, origin_name = f"s3-import/{src.name}/{f.key}#", f"{ctx.record}#", f"{f.url}#"
    straight_to = _straight(src) if straight else None
    run = None
    if straight_to is not None:
        values, build, write, make, skip_at, adds_skip = (converter.values, straight_to.build, straight_to.write,
                                                          straight_to.make, straight_to.skip_at, straight_to.adds_skip)
        server_ms, rules, max_bytes, record_offset = ctx.server_ms, ctx.rules, ctx.rules.max_event_bytes, \
            ctx.record_offset
        events = out.events
        if make is not None:   # the chunk's ids at once (uuid5_two): the text of uuid5_str(ids_name + number), and
            # of uuid5_str(uuid_name + number) with its bytes, for every item (a few rows may go the dict's way)
            items = items if type(items) is list else list(items)
            numbers = [item.number for item in items]
            insert_ids, uuid_texts, uuids = uuid5_two(ids_name, uuid_name, numbers)
            if straight_to.run is not None and numbers and 0 < min(numbers) and max(numbers) < ROW_SLOTS:
                run = straight_to.run   # every row's source offset is record_offset * ROW_SLOTS + its number

    def one(at: int, item: Row | RowError) -> None:   # an item's way, in the order described above
        if straight_to is not None and type(item) is Row and type(item.value) is dict:
            try:
                vals, errors = values(item.value, now_ms)
            except Exception:   # the dict's way dead-letters it, with the converter's error
                e = None
            else:
                if make is not None:   # the ids and the sync flag of the lines below, given to one function
                    res = make(vals, project, server_ms, rules, now_ms, insert_ids[at], uuid_texts[at], uuids[at],
                               adds_skip)
                    if res is not None and len(res.line) <= max_bytes:
                        out.rows += 1
                        out.fields_left_out += len(errors)
                        events.append((row_offset(record_offset, item.number), res))
                        return
                    e = None
                else:
                    e = build(vals)
            if e is not None:
                if adds_skip and (skip_at is None or vals[skip_at] is MISSING) and \
                        e.event_type not in (IDENTIFY, GROUP_IDENTIFY):
                    e.skip_user_properties_sync = True
                number = str(item.number)
                if not e.insert_id:
                    e.insert_id = uuid5_str(ids_name + number)
                res = normalize_fast_event(e, project, server_ms, rules, now_ms,
                                           uuid5_str(uuid_name + number) if e.uuid is None else "", write)
                if res is not None and len(res.line) <= max_bytes:
                    out.rows += 1
                    out.fields_left_out += len(errors)
                    events.append((row_offset(record_offset, item.number), res))
                    return
        converted = _converted(ctx, converter, item, out, now_ms)
        if converted is None:
            return
        ev, errors = converted
        ev = shape(ev, src)
        number = str(item.number)
        if ev.get("insert_id") in (None, ""):
            ev["insert_id"] = uuid5_str(ids_name + number)
        if ev.get("uuid") is None:
            ev["uuid"] = uuid5_str(uuid_name + number)
        res = normalize(ev, project, ctx.server_ms, origin_name + number, ctx.rules, now_ms)
        if type(res) is Normalized and len(res.line) > ctx.rules.max_event_bytes:
            res = Rejected(Reason.TOO_LARGE, None, f"the converted event is {len(res.line)} bytes, over "
                           f"ingest.max_event_bytes ({ctx.rules.max_event_bytes})")
        if type(res) is Normalized:
            out.events.append((row_offset(ctx.record_offset, item.number), res))
            return
        _refused(ctx, out, item, res, errors, now_ms)
    if run is not None:   # the chunk's rows in one function, each that it declines by one() (see _Straight.run)
        made = run(items, insert_ids, uuid_texts, uuids, project, server_ms, rules, now_ms, adds_skip,
                   record_offset * ROW_SLOTS, max_bytes, events, one)
        out.rows += made   # after the call: one() counts the rows it takes itself
    else:
        for at, item in enumerate(items):
            one(at, item)
    return out


def remember_targets(out: Converted, partitions: int) -> None:
    """Puts the target partitions of a chunk's events (of their device ids, user ids for those without) that
    ``partition_for``'s memo lacks into it, hashed many at once (``remember_partitions``), for ``batch.group`` to
    find there: most of an import's devices are new to the worker."""
    remember_partitions([e.device_id if e.device_id is not None else e.user_id for _, e in out.events], partitions)


def convert_mirror(ctx: FileContext, items: Iterable[Row | RowError], now_ms: int, modified_ms: int) -> Converted:
    """Convert a run of a mirror source's items, in row order, to one-mutation records (``stream.imports.mutations``
    ``encode``), which the importer groups by partition into the records of events.mutations (``grouped``);
    ``modified_ms``: the file's LastModified, the first part of each mutation's sequence. No enrichment: the rows are not shaped (nothing becomes an identify, no sync flag is added)."""
    out = Converted()
    src, f = ctx.source, ctx.file
    converter = src.compiled.convert
    for item in items:
        converted = _converted(ctx, converter, item, out, now_ms)
        if converted is None:
            continue
        ev, errors = converted
        res = mutation_of(ev, src.project, (modified_ms, f.url, item.number), row_ids(src.name, f.key, item.number),
                          ctx.server_ms, f"{f.url}#{item.number}", ctx.rules, now_ms)
        if isinstance(res, Mutation):
            out.mutations.append(encode_mutation(src.project, res))
            out.ops[res.op.value] += 1
            continue
        _refused(ctx, out, item, res, errors, now_ms)
    return out


def convert_profiles(ctx: FileContext, items: Iterable[Row | RowError], now_ms: int,
                     modified_ms: int) -> Converted:
    """Convert a run of a source of profiles' items, in row order, to records of profiles.mutations
    (``stream.imports.profiles``), each with the sequence (``modified_ms``: the file's LastModified, its URL, the
    row number); refused rows are dead-lettered as every import row."""
    out = Converted()
    src, f = ctx.source, ctx.file
    converter = src.compiled.convert
    for item in items:
        converted = _converted(ctx, converter, item, out, now_ms)
        if converted is None:
            continue
        ev, errors = converted
        res = profiles.mutation_of(ev, (modified_ms, f.url, item.number), ctx.rules.max_event_bytes)
        if isinstance(res, profiles.ProfileMutation):
            out.mutations.append(profiles.encode_mutation(src.project, res))
            out.ops[res.op.value] += 1
            continue
        _refused(ctx, out, item, res, errors, now_ms)
    return out


def _converted(ctx: FileContext, converter: Any, item: Row | RowError, out: Converted,
               now_ms: int) -> tuple[dict[str, Any], list[Any]] | None:
    """The converter's output of one item and the fields it left out; None when the item is dead-lettered (a row
    the reader could not read, or one the converter failed on)."""
    out.rows += 1
    if isinstance(item, RowError):
        why = Rejected(_READER_REASONS[item.reason], None, item.message)
        out.reasons[why.reason.value] += 1
        out.dead.append(_dead(ctx, item.number, why, None, now_ms))
        return None
    try:
        ev, errors = converter(item.value, now_ms)
    except Exception as exc:   # never stop a file on one row: keep it, loudly
        why = Rejected(Reason.PROCESSING_ERROR, None, f"the converter failed: {type(exc).__name__}: {exc}")
        out.reasons[why.reason.value] += 1
        out.dead.append(_dead(ctx, item.number, why, item.value, now_ms))
        return None
    out.fields_left_out += len(errors)
    return ev, errors


def _refused(ctx: FileContext, out: Converted, item: Row, res: Rejected, errors: list[Any], now_ms: int) -> None:
    """Dead-letter a converted row that was refused, naming the fields the converter left out."""
    if errors:
        left = "; ".join(f"{e.field}: {e.message}" for e in errors)
        res = Rejected(res.reason, res.field, f"{res.detail} (fields the converter left out: {left})")
    out.reasons[res.reason.value] += 1
    out.dead.append(_dead(ctx, item.number, res, item.value, now_ms))


def _dead(ctx: FileContext, row: int, why: Rejected, value: Any, now_ms: int) -> tuple[bytes, bytes]:
    raw = None if value is None else _row_json(value)
    key = ctx.file.kafka_key
    return key, deadletter.encode(why, ctx.url, deadletter.FILE_ROW, row, ctx.server_ms, key, raw, now_ms,
                                  ctx.max_dead_value_bytes)


def _row_json(value: Any) -> bytes:
    """A refused row's value as JSON for its dead letter; an integer beyond 64 bits, which the reader keeps exact
    and orjson cannot write, is written by msgspec, with its digits."""
    try:
        return orjson.dumps(value, default=str)
    except TypeError:
        return msgspec.json.encode(value, enc_hook=str)


def file_failed(ctx: FileContext, reason: str, message: str, now_ms: int) -> tuple[bytes, bytes]:
    """The dead letter of a file that cannot be read at all (row 0 stands for the whole file)."""
    why = Rejected(Reason.UNREADABLE_FILE, None, f"{reason}: {message}")
    return _dead(ctx, 0, why, None, now_ms)
