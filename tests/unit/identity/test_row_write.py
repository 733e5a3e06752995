"""How the device side reads a row and writes its identity columns: the decoder's fields, where a row's identity
columns begin, the tail written, and a user's properties after each plain update, checked against plain
references on generated rows."""

import random

import msgspec
import orjson

from stream.events.fields import EXPORT_FIELDS, IDENTITY_FIELDS
from stream.events.normalize import Rules, normalize_message
from stream.identity import device
from stream.identity.device import Hold, held_line, resolve_batch
from stream.identity.ops import OPERATIONS, identify
from stream.identity.records import HeldRow, dec_held_rows, dec_profile, profile_key
from tests.unit.identity.test_resolution import PROJECT, T, Partition, ev

NOW = 1_800_000_000_000
_REF_TAIL = b",".join(b'"%s":%%b' % f.encode() for f in IDENTITY_FIELDS) + b"}"
"""The identity columns at the end of a row, as a ``%`` format of their values (raw JSON): the reference."""
_REF_NEW_TAIL = _REF_TAIL % tuple(b"%b" if f in ("group_properties", "processed_time", "user_properties") else b"null"
                                  for f in IDENTITY_FIELDS)


def _reference_cut(line: bytes) -> int:
    """Where a row's identity columns begin when its tail is the one ``stream.events.normalize`` writes (null but for
    group_properties, processed_time and user_properties, checked against the values the row decodes to), else -1."""
    r = msgspec.json.decode(line, type=device._In)
    tail = _REF_NEW_TAIL % (r.group_properties, r.processed_time, r.user_properties)
    cut = len(line) - len(tail)
    return cut if cut > 0 and line.endswith(tail) and line[cut - 1:cut] == b"," else -1


def _row(e: dict, i: int = 0) -> bytes:
    return normalize_message(orjson.dumps(e), None, PROJECT, T + i, f"in/0/{i}", Rules()).line


def _mangled(rnd: random.Random, line: bytes) -> bytes:
    """The row, or one of the rows whose tail is not the one normalize writes, or one that only looks like it."""
    row = orjson.loads(line)
    return rnd.choice([
        line,
        line,
        orjson.dumps(dict(reversed(list(row.items())))),                           # another column order
        orjson.dumps({**row, "amplitude_id": 5, "paying": True}),                  # enriched already
        line[:-1] + b',"user_properties":{"z":1}}',                                 # its last column twice
        line[:-1] + b',"processed_time":null}',
        line.replace(b'"amplitude_event_type":null', b'"amplitude_event_type": null'),
        line.replace(b',"amplitude_event_type":null', b',"amplitude_event_type":null,"x":1'),
    ])


def test_the_row_decoders_fields_follow_the_rows_column_order():
    """msgspec looks a key up from the field after the one it found last: in column order, each is found first."""
    names = [f.encode_name for f in msgspec.structs.fields(device._In)]
    assert names == [c for c in EXPORT_FIELDS if c in names]


def test_a_rows_identity_columns_are_found_where_a_format_of_its_whole_tail_finds_them():
    """Generated rows, as normalize writes them and changed: a row whose tail the reference finds keeps its head byte
    for byte (and what was read of it is handed on), a held row by reference keeps the reference's cut; any other
    row is re-encoded."""
    rnd = random.Random(7)
    found = reencoded = by_reference = 0
    for batch in range(60):
        events = [ev(f"dev-{rnd.randrange(5)}", rnd.choice([None, f"user-{rnd.randrange(3)}"]),
                     event_type=rnd.choice(["view", "$identify", "buy"]),
                     user_properties=rnd.choice([{}, {"a": rnd.randrange(3)}, {"$set": {"a": 1}},
                                                 {"amplitude_id": None, "user_properties": {"b": "}"}}]),
                     **rnd.choice([{}, {"groups": {"org": "o1"}}, {"group_properties": {"$set": {"g": 1}}}]))
                  for _ in range(rnd.randrange(1, 8))]
        lines = [_mangled(rnd, _row(e, i)) for i, e in enumerate(events)]
        cuts = [_reference_cut(x) for x in lines]
        res = resolve_batch(lines, [T] * len(lines), PROJECT, 0, "2024-03-09 07:30:00.000000",
                            Partition(0).get_many)
        kept = [i for i, k in enumerate(res.keep) if k]
        assert len(kept) == len(res.lines) == len(res.seen)
        for i, out, seen in zip(kept, res.lines, res.seen):
            assert (seen is not None) == (cuts[i] >= 0), (batch, lines[i])
            if cuts[i] >= 0:
                assert out[:cuts[i]] == lines[i][:cuts[i]]
                row = orjson.loads(out)
                assert (seen.out_amplitude_id, seen.app, seen.event_time, seen.event_type, seen.user_id) == (
                    row["amplitude_id"], row["app"], row["event_time"], row["event_type"], row["user_id"])
                assert out.endswith(b'"user_properties":' + seen.out_user_properties + b"}")
                found += 1
            else:
                reencoded += 1
        p = Partition(0)
        n = len(lines)
        hold = Hold(NOW, 30_000, T - T % 3_600_000, "events.ingest[0]", list(range(n)), [b"k"] * n, [b"u" * 16] * n,
                    [], "", 0, list(range(n)))
        res = resolve_batch(lines, [T] * n, PROJECT, 0, "2024-03-09 07:30:00.000000", p.get_many, hold=hold)
        held = [r for k, v in res.writes.items() if k[:1] == b"Q" and v for r in dec_held_rows(v)]
        assert {r.index: r.cut for r in held if r.at >= 0} == {i: cuts[i] for i in res.held_rows}
        assert all(cuts[i] >= 0 for i in res.held_rows)
        by_reference += len(res.held_rows)
    assert found > 50 and reencoded > 20 and by_reference > 20


def test_a_held_rows_enriched_row_is_its_head_and_the_tail_the_format_writes():
    rnd = random.Random(3)
    for _ in range(200):
        h = HeldRow(PROJECT, rnd.choice([b"{", b'{"a":1,', b'{"x":"\\"}",']), rnd.choice([b"null", b'"$identify"']),
                    rnd.choice([b"{}", b'{"org":{"o1":{"g":1}}}']), b'"2024-03-09 07:30:00.000000"',
                    rnd.randrange(1 << 40), rnd.choice([None, "2024-03-09 07:00:00.000000"]),
                    rnd.choice([None, "1.0", "\u00e9\"x"]), rnd.random() < 0.5, rnd.choice([b"{}", b'{"p":[1]}']),
                    T, b"k", b"u" * 16, b"", "")
        assert held_line(h) == h.head + _REF_TAIL % (
            h.event_type, b"%d" % h.aid, h.group_properties, b"true" if h.paying else b"false", h.processed_time,
            orjson.dumps(h.start_version), orjson.dumps(h.created), h.props)


def _fold(props: dict, kind: str, values: dict) -> dict:
    """A user's properties after a checked update: an identify's operations, or a plain update's keys that are not
    operations set (``ops``' module docstring)."""
    if kind == "identify":
        return identify(props, values)
    return {**props, **{k: v for k, v in values.items() if k not in OPERATIONS}}


def test_a_users_properties_after_each_plain_update_are_the_plain_fold_of_the_updates():
    """Generated updates for a few users (updates naming every property the user has, some of them, operations' keys
    in a plain update, updates shown and not kept, updates past the bound): each row shows and each user keeps what
    a plain fold of the updates gives, the updates past the bound are not applied, and a row whose update named
    every property of its user and no operation shows the update's own JSON."""
    rnd = random.Random(11)
    counted = {"own": 0, "dropped": 0, "shown": 0}
    for case in range(40):
        p = Partition(0)
        bound = rnd.choice([256 * 1024, 40, 70])
        kept: dict[str, dict] = {}
        for batch in range(4):
            events, expect, dropped, own = [], [], [], []
            for i in range(rnd.randrange(1, 9)):
                user = f"user-{rnd.randrange(3)}"
                keys = rnd.choice([["a", "b", "c"], ["a", "b", "c"], ["a"], ["a", "b", "c", "d"], ["a", "$set"]])
                values = {k: rnd.choice([1, "x" * rnd.randrange(30), [1, 2], None, {"n": 1}]) for k in keys}
                kind = rnd.choice(["set", "set", "show", "identify"])
                if kind == "identify":
                    values = {"$set": values}
                e = ev(f"dev-{user}", user, user_properties=values,
                       event_type="$identify" if kind == "identify" else "view",
                       **({"$skip_user_properties_sync": True} if kind == "show" else {}))
                events.append(e)
                props = kept.get(user, {})
                after = _fold(props, kind, values)
                whole = kind != "identify" and props.keys() <= values.keys() and OPERATIONS.isdisjoint(values)
                size = len(orjson.dumps(values) if whole else msgspec.json.encode(after))
                if size > bound:
                    dropped.append(i)
                    expect.append(props)
                else:
                    expect.append(after)
                    if kind != "show":
                        kept[user] = after
                own.append(whole and size <= bound)
            lines = [_row(e, i) for i, e in enumerate(events)]
            res = resolve_batch(lines, [T + i for i in range(len(lines))], PROJECT, 0, "2024-03-09 07:30:00.000000",
                                p.get_many, max_props_bytes=bound)
            p.commit(res.writes)
            assert res.keep == [True] * len(lines) and res.rejected == []
            assert [i for i, _ in res.dropped] == dropped, (case, batch)
            shown = [orjson.loads(x)["user_properties"] for x in res.lines]
            assert shown == expect, (case, batch)
            counted["dropped"] += len(dropped)
            counted["shown"] += sum(e.get("$skip_user_properties_sync", False) for e in events)
            for i, (line, out) in enumerate(zip(lines, res.lines)):
                if own[i]:
                    counted["own"] += 1
                    given = orjson.loads(line)["user_properties"]
                    assert out.endswith(b'"user_properties":' + orjson.dumps(given) + b"}"), (case, batch, i)
            for user, props in kept.items():
                aid = orjson.loads(next(x for x, e in zip(res.lines, events) if e["user_id"] == user)
                                   )["amplitude_id"] if any(e["user_id"] == user for e in events) else None
                if aid is not None:
                    assert orjson.loads(dec_profile(p.db[profile_key(PROJECT, aid)]).props) == props
    assert min(counted.values()) > 20, counted
