import json
from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.export.mirror import (KEPT, Mutation, Op, Outcome, _row_at, by_insert_id, insert_ids, named_rows, parse_op,
                                  rewrite, rewrite_batch, rows_by_first_field)


def line(insert_id, device="d1", **fields):
    row = {"$insert_id": insert_id, "uuid": f"u-{insert_id}-{device}", "amplitude_id": 7, "app": 1,
           "device_id": device, "event_type": "view", "event_properties": {"n": 1},
           "server_received_time": "2024-03-09 07:00:00.000000", "server_upload_time": "2024-03-09 07:00:00.000000",
           "processed_time": "2024-03-09 07:00:00.000000"}
    row.update(fields)
    return orjson.dumps(row)


def new_row(insert_id, device="d1", **fields):
    row = {"$insert_id": insert_id, "uuid": "new-uuid", "amplitude_id": None, "app": 1, "device_id": device,
           "event_type": "purchase", "event_properties": {"n": 2},
           "server_received_time": "2026-01-01 00:00:00.000000",
           "server_upload_time": "2026-01-01 00:00:00.000000", "processed_time": "2026-01-01 00:00:00.000000"}
    row.update(fields)
    return row


@pytest.mark.parametrize("value,op", [(None, Op.UPDATE), ("", Op.UPDATE), ("  ", Op.UPDATE), ("insert", Op.INSERT),
                                      ("Update", Op.UPDATE), (" DELETE ", Op.DELETE), ("upsert", None), (1, None),
                                      (True, None)])
def test_the_mutation_type_is_read_in_any_case_and_missing_means_update(value, op):
    assert parse_op(value) is op


def run(lines, mutations, insert_is_update=False):
    outcomes = Counter()
    out = list(rewrite(lines, by_insert_id(mutations), insert_is_update, outcomes))
    return out, outcomes


def test_an_update_replaces_the_event_but_keeps_its_identity_and_hour_and_a_delete_drops_it():
    lines = [line("a"), line("b"), line("c")]
    out, outcomes = run(lines, [Mutation("a", Op.UPDATE, (5, "k", 1), row=new_row("a")),
                                Mutation("b", Op.DELETE, (5, "k", 2))])
    assert out[1] is lines[2]
    assert len(out) == 2
    assert orjson.loads(out[0]) == {
        "$insert_id": "a", "uuid": "u-a-d1", "amplitude_id": 7, "app": 1, "device_id": "d1", "event_type": "purchase",
        "event_properties": {"n": 2}, "server_received_time": "2024-03-09 07:00:00.000000",
        "server_upload_time": "2024-03-09 07:00:00.000000", "processed_time": "2024-03-09 07:00:00.000000"}
    assert list(orjson.loads(out[0])) == list(new_row("a"))
    assert outcomes == {("UPDATE", Outcome.UPDATED): 1, ("DELETE", Outcome.DELETED): 1}


def test_untouched_lines_pass_as_the_same_bytes_and_no_mutation_means_no_parse():
    lines = [b"not json at all", line("x")]
    out, outcomes = run(lines, [])
    assert out == lines and not outcomes


def test_mutations_apply_in_sequence_order_whatever_order_they_arrive_in():
    m1 = Mutation("a", Op.UPDATE, (3, "k", 9), row=new_row("a", event_type="first"))
    m2 = Mutation("a", Op.UPDATE, (4, "k", 1), row=new_row("a", event_type="second"))
    for order in ([m1, m2], [m2, m1]):
        out, outcomes = run([line("a")], order)
        assert orjson.loads(out[0])["event_type"] == "second"
        assert outcomes == {("UPDATE", Outcome.UPDATED): 2}


def test_an_update_after_a_delete_finds_nothing_and_is_counted_unmatched():
    out, outcomes = run([line("a")], [Mutation("a", Op.DELETE, (1, "k", 1)),
                                      Mutation("a", Op.UPDATE, (1, "k", 2), row=new_row("a"))])
    assert out == []
    assert outcomes == {("DELETE", Outcome.DELETED): 1, ("UPDATE", Outcome.UNMATCHED): 1}


def test_a_mutation_naming_a_device_touches_only_that_devices_event_and_one_without_touches_all():
    lines = [line("a", "d1"), line("a", "d2")]
    out, outcomes = run(lines, [Mutation("a", Op.DELETE, (1, "k", 1), device_id="d2")])
    assert out == [lines[0]]
    out, outcomes = run(lines, [Mutation("a", Op.UPDATE, (1, "k", 1), row=new_row("a", "d9"))])
    assert [orjson.loads(x)["uuid"] for x in out] == ["u-a-d1", "u-a-d2"]
    assert outcomes == {("UPDATE", Outcome.UPDATED): 2}


def test_an_insert_of_a_held_insert_id_is_an_update_only_when_the_settings_say_so():
    m = Mutation("a", Op.INSERT, (1, "k", 1), row=new_row("a"))
    out, outcomes = run([line("a")], [m])
    assert out == [line("a")]
    assert outcomes == {("INSERT", Outcome.INSERT_CONFLICT): 1}
    out, outcomes = run([line("a")], [m], insert_is_update=True)
    assert orjson.loads(out[0])["event_type"] == "purchase"
    assert outcomes == {("INSERT", Outcome.UPDATED): 1}


def test_applying_the_same_mutations_to_their_own_result_changes_no_byte():
    lines = [line(i) for i in "abcdef"]
    muts = [Mutation("b", Op.UPDATE, (1, "k", 1), row=new_row("b")), Mutation("e", Op.UPDATE, (1, "k", 2), row=new_row("e"))]
    once, _ = run(lines, muts)
    twice, _ = run(once, muts)
    assert twice == once


def test_a_kept_field_the_event_lacks_is_not_taken_from_the_mutation():
    event = {k: v for k, v in orjson.loads(line("a")).items() if k != "processed_time"}
    out, _ = run([orjson.dumps(event)], [Mutation("a", Op.UPDATE, (1, "k", 1), row=new_row("a"))])
    assert "processed_time" not in orjson.loads(out[0])
    assert set(KEPT) - {"processed_time"} <= set(orjson.loads(out[0]))


def test_files_written_in_the_same_millisecond_apply_in_the_order_of_their_keys():
    early = Mutation("a", Op.UPDATE, (100, "mutations/2024-03-09-a.json", 7), row=new_row("a", event_type="from-a"))
    late = Mutation("a", Op.UPDATE, (100, "mutations/2024-03-09-b.json", 1), row=new_row("a", event_type="from-b"))
    for order in ([early, late], [late, early]):
        out, _ = run([line("a")], order)
        assert orjson.loads(out[0])["event_type"] == "from-b"


def test_a_batch_keeps_the_source_offsets_of_the_rows_it_keeps():
    blob = b"\n".join([line("a"), line("b"), line("c")])
    outcomes = Counter()
    muts = by_insert_id([Mutation("b", Op.DELETE, (1, "k", 1)), Mutation("c", Op.UPDATE, (1, "k", 2), row=new_row("c"))])
    matched = {}
    out, offsets = rewrite_batch(blob, [10, 11, 12], muts, False, outcomes, matched)
    assert matched == {"b": {0}, "c": {0}}
    assert offsets == [10, 12]
    assert out.split(b"\n")[0] == line("a")
    assert orjson.loads(out.split(b"\n")[1])["event_type"] == "purchase"
    assert outcomes == {("DELETE", Outcome.DELETED): 1, ("UPDATE", Outcome.UPDATED): 1}
    assert rewrite_batch(blob, [1, 2, 3], {}, False, outcomes, {}) == (blob, [1, 2, 3])


# --- the batch's rows found by their insert_id bytes, against the reference that parses every row ---------------
IDS = ["a", "b", "c", 'q"x', "back\\slash", "é", "\u2028", "$insert_id"]
_id = st.sampled_from(IDS)
_scalar = st.one_of(st.none(), st.integers(-3, 3), _id, st.sampled_from(['"$insert_id":"a"', "\\u0061", "x\ny"]))
_nested = st.dictionaries(st.sampled_from(["$insert_id", "k", "$insert_id "]), _scalar, max_size=3)
_event = st.fixed_dictionaries(
    {"uuid": st.sampled_from(["u1", "u2"]), "device_id": st.sampled_from(["d1", "d2"])},
    optional={"$insert_id": st.one_of(_id, st.integers(0, 2), st.none()), "event_properties": _nested,
              "user_properties": st.lists(_nested, max_size=2), "note": _scalar})


def _dumps(event, style):
    """A row as orjson writes it, or written otherwise (spaces, \\u escapes) as another writer could."""
    if style == "orjson":
        return orjson.dumps(event)
    if style == "spaced":
        return json.dumps(event, ensure_ascii=False).encode()
    if style == "escaped":
        return orjson.dumps(event).replace(b'"$insert_id"', b'"\\u0024insert_id"')
    return json.dumps(event, ensure_ascii=True, separators=(",", ":")).encode()


_mutation = st.builds(
    lambda insert_id, op, n, device, kind: Mutation(
        insert_id, op, (n % 3, "k", n), device,
        None if op is Op.DELETE else new_row(insert_id, device or "d1", event_type=kind)),
    _id, st.sampled_from(list(Op)), st.integers(0, 50), st.sampled_from([None, "d1", "d2"]),
    st.sampled_from(["x", "y"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(st.tuples(_event, st.sampled_from(["orjson", "orjson", "orjson", "spaced", "ascii", "escaped"])),
                       min_size=1, max_size=8),
       mutations=st.lists(_mutation, max_size=6), insert_is_update=st.booleans())
def test_a_batch_rewritten_finding_rows_by_their_insert_id_bytes_is_the_batch_rewritten_parsing_every_row(
        events, mutations, insert_is_update):
    blob = b"\n".join(_dumps(e, style) for e, style in events)
    offsets = list(range(100, 100 + len(events)))
    muts = by_insert_id(mutations)
    want_outcomes, want_matched = Counter(), {}
    want = rewrite_batch(blob, offsets, muts, insert_is_update, want_outcomes, want_matched)
    got_outcomes, got_matched = Counter(), {}
    got = rewrite_batch(blob, offsets, muts, insert_is_update, got_outcomes, got_matched, insert_ids(muts))
    assert got == want
    assert got_outcomes == want_outcomes and got_matched == want_matched


def test_rows_are_found_by_the_bytes_of_their_insert_id_and_bytes_that_cannot_say_are_left_to_the_parse():
    rows = [line("a"), line("b"), orjson.dumps({"k": {"$insert_id": "c"}}), line("d")]
    blob = b"\n".join(rows)
    starts = [sum(len(r) + 1 for r in rows[:i]) for i in range(4)]
    assert named_rows(blob, {b"b", b"c"}) == [(starts[1], starts[1] + len(rows[1])),
                                               (starts[2], starts[2] + len(rows[2]))]
    assert named_rows(blob, {b"zz"}) == []
    assert named_rows(b'{"$insert_id": "a"}', {b"a"}) is None          # not compact
    assert named_rows(b'{"$insert_id":7}', {b"a"}) is None               # not a string
    assert named_rows(b'{"$insert_id":"a\\"b"}', {b"a"}) is None         # an escape in the value
    assert named_rows(b'{"\\u0024insert_id":"a"}', {b"a"}) is None       # a key that could be written escaped
    assert named_rows(b'{"\\"$insert_id":"a"}', {b"a"}) is None         # a key "$insert_id with a quote
    assert named_rows(b'{"k":"x\\"$insert_id\\":\\"a"}', {b"a"}) == []  # inside a string: no field


def test_a_batch_whose_rows_no_mutation_names_is_the_same_bytes_unparsed():
    blob = b"\n".join([line("a"), line("b")])
    muts = by_insert_id([Mutation("z", Op.DELETE, (1, "k", 1))])
    out = rewrite_batch(blob, [1, 2], muts, False, Counter(), {}, insert_ids(muts))
    assert out == (blob, [1, 2]) and out[0] is blob


def reference_named_rows(blob, ids):
    """The rows named, found by a search for the field's whole key and a count of the newlines before each (the
    version before the search by ``$``): (row index, first byte, end byte)."""
    escapes = b"\\" in blob
    if escapes and b"\\u" in blob:
        return None
    out, row, at, key = [], 0, 0, b'"$insert_id"'
    pos = blob.find(key)
    while pos >= 0:
        start = pos + len(key) + 2
        if blob[pos + len(key):start] != b':"' or (escapes and blob[pos - 1:pos] == b"\\"):
            return None
        end = blob.find(b'"', start)
        if end < 0:
            return None
        value = blob[start:end]
        if escapes and b"\\" in value:
            return None
        if value in ids:
            row += blob.count(b"\n", at, pos)
            at = pos
            if not out or out[-1][0] != row:
                last = blob.find(b"\n", end)
                out.append((row, blob.rfind(b"\n", 0, pos) + 1, len(blob) if last < 0 else last))
        pos = blob.find(key, end)
    return out


_piece = st.sampled_from([b"$", b"$$", b'"$insert_id"', b'"$insert_id":"', b'"$insert_id": "', b'"', b"\n", b"\\",
                          b"\\u", b"a", b"b", b'a"', b":", b"{", b"}", b",", b'"$insert_idx":"a"', b"x$y",
                          b'\\"$insert_id":"a"', b'"$insert_id":"a"', b'"$insert_id":"b"', b'"$insert_id":7'])


@settings(max_examples=2000, deadline=None)
@given(pieces=st.lists(st.one_of(_piece, st.binary(max_size=4)), max_size=30),
       ids=st.sets(st.sampled_from([b"a", b"b", b"", b"a$", b"zz"]), max_size=3))
def test_rows_found_by_the_fields_dollar_are_the_rows_found_by_the_fields_whole_key(pieces, ids):
    """Any bytes, JSON or not: the same rows or the same refusal as the search for the field's key, and a deleted
    row's index is the one its newlines give."""
    blob = b"".join(pieces)
    want = reference_named_rows(blob, ids)
    got = named_rows(blob, ids)
    assert got == (None if want is None else [(first, end) for _, first, end in want])
    assert named_rows(blob, insert_ids(i.decode("latin-1") for i in ids)) == got     # with the hour's own length
    for row, first, _ in want or []:
        assert _row_at(blob, 0, 0, first) == row


def test_rows_are_found_in_rows_of_many_dollars_and_a_deleted_rows_index_is_counted():
    rows = [line("a", event_properties={"$price": 1, "$quantity": 2}), b'{"k":"$$$"}', line("b"),
            line("c", note="x$insert_id"), line("d")]
    blob = b"\n".join(rows)
    starts = [sum(len(r) + 1 for r in rows[:i]) for i in range(len(rows))]
    assert named_rows(blob, {b"b", b"d"}) == [(starts[2], starts[2] + len(rows[2])),
                                               (starts[4], starts[4] + len(rows[4]))]
    muts = by_insert_id([Mutation("b", Op.DELETE, (1, "k", 1)), Mutation("d", Op.DELETE, (1, "k", 2))])
    outcomes = Counter()
    out, offsets = rewrite_batch(blob, [10, 11, 12, 13, 14], muts, False, outcomes, {}, insert_ids(muts))
    assert out == b"\n".join([rows[0], rows[1], rows[3]])
    assert offsets == [10, 11, 13]
    assert outcomes == {("DELETE", Outcome.DELETED): 2}


def reference_named_rows_by_dollar(blob, ids):
    """The rows named, found by each ``$`` and each field's closing quote (the version before the comparison of a
    value by the length of the ids): (first byte, end byte)."""
    escapes = b"\\" in blob
    if escapes and b"\\u" in blob:
        return None
    out, field, key = [], b'"$insert_id":"', b'"$insert_id"'
    find, startswith, n = blob.find, blob.startswith, len(field)
    last = -1
    dollar = find(b"$", 1)
    while dollar >= 0:
        pos = dollar - 1
        if not startswith(field, pos):
            if startswith(key, pos):
                return None
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
        if value in ids and pos > last:
            first = blob.rfind(b"\n", 0, pos) + 1
            nl = find(b"\n", end)
            last = len(blob) if nl < 0 else nl
            out.append((first, last))
        dollar = find(b"$", end)
    return out


_same_size_ids = ["abcd", "ab d", "é-12", "zzzz", "$ins", "a\nbc"]    # 4 characters; "é-12" is 5 bytes
_value = st.one_of(st.sampled_from(_same_size_ids), st.sampled_from(["abcde", "abc", "", "a\"b", "a\\b", "é", "$insert_id"]),
                   st.text(max_size=6))
_field = st.one_of(
    st.builds(lambda v: {"$insert_id": v}, _value),
    st.builds(lambda v: {"$insert_id": v}, st.sampled_from([5, None, True, 1.5, [], {}])),
    st.builds(lambda v: {"$insert_idx": v}, _value),
    st.builds(lambda v: {"k": v}, _value),
    st.builds(lambda v: {"$price": v, "note": "x$y"}, _value))
_row_object = st.builds(lambda parts, nested: {**{k: v for p in parts for k, v in p.items()},
                                               **({"props": nested} if nested else {})},
                        st.lists(_field, max_size=3), st.one_of(st.none(), _field))
_row_style = st.sampled_from(["orjson", "orjson", "orjson", "spaced", "ascii", "escaped", "quoted"])


def _row_bytes(row, style):
    """A row written by orjson or otherwise; ``quoted``: two insert_id fields in one row, the second inside a key's
    escaped quote or written by hand after the first."""
    if style == "quoted":
        return orjson.dumps(row)[:-1] + b',"\\"$insert_id":"abcd","$insert_id":"zzzz"}' if row else b"{}"
    return _dumps(row, style)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(_row_object, _row_style), max_size=8), trailing=st.booleans(),
       ids=st.one_of(st.sets(st.sampled_from(_same_size_ids)), st.just(frozenset(_same_size_ids)),
                     st.sets(st.sampled_from(_same_size_ids + ["abcde", "", "é"]), max_size=3)))
def test_rows_found_comparing_values_by_the_ids_length_are_the_rows_found_by_each_fields_closing_quote(
        rows, trailing, ids):
    """Rows of 0, 1 or 2 insert_id fields, nested or not, a string or not, keys like it, escapes, values of other
    lengths, spaces or unicode; ids of one length or of several, none or all: the same rows or the same None."""
    blob = b"\n".join(_row_bytes(r, style) for r, style in rows) + (b"\n" if trailing and rows else b"")
    ids = {i.encode() for i in ids}
    assert named_rows(blob, ids) == reference_named_rows_by_dollar(blob, ids)


_raw_piece = st.sampled_from([b"$", b'"$insert_id"', b'$insert_id":"abcd"', b'"$insert_id":"$insert_id":"abcd"',
                              b'"$insert_id":"', b'"$insert_id":"$insert_id"', b'"', b"\n",
                              b"\\", b"\\u", b"\\\\u", b"ab", b"abcd", b'abcd"', b'zzzz"', b":", b"{", b"}", b",", b'"$insert_id":7',
                              b'"$insert_idx":"abcd"', b'"$insert_id": "abcd"', b'"$insert_id":"abcd"',
                              b'"$insert_id":"zzzz"', b'"$insert_id":"abcde"', b'"$insert_id":"abc"'])


@settings(max_examples=3000, deadline=None)
@given(pieces=st.lists(st.one_of(_raw_piece, st.binary(max_size=4)), max_size=30),
       ids=st.sets(st.sampled_from([b"abcd", b"zzzz", b"$ins", b'ab"d', b"ab\nd", b"abc", b""]), max_size=3))
def test_any_bytes_give_the_rows_or_the_none_of_the_search_of_each_fields_closing_quote(pieces, ids):
    blob = b"".join(pieces)
    assert named_rows(blob, ids) == reference_named_rows_by_dollar(blob, ids)


def test_a_value_is_compared_whole_when_the_ids_have_one_length():
    rows = [line("abcd"), line("abcde"), line("abc"), line("$insert_id"), line("zzzz")]
    blob = b"\n".join(rows)
    starts = [sum(len(r) + 1 for r in rows[:i]) for i in range(len(rows))]
    assert named_rows(blob, {b"abcd", b"zzzz"}) == [(starts[0], starts[0] + len(rows[0])),
                                                    (starts[4], starts[4] + len(rows[4]))]
    assert named_rows(b'{"$insert_id":"abcd', {b"abcd"}) is None                # not closed
    assert named_rows(b'{"$insert_id":"ab"}\n{"$insert_id":"abcd', {b"abcd"}) is None
    assert named_rows(b'{"$insert_id":"$insert_id":"abcd"}', {b"abcd"}) == []  # the value is "$insert_id"
    assert named_rows(b'{"$insert_id":"$insert_id"}', {b"$insert_id"}) == [(0, 27)]
    assert named_rows(b'{"$insert_id":"ab"$insert_id":"abcd"}', {b"abcd"}) == [(0, 37)]  # a value's closing quote
    #                                                                          opens the next field
    assert named_rows(b'{"$insert_id":"ab"}', {b'ab"}'}) == []
    assert named_rows(b'{"k":"a\\\\","$insert_id":"abcd"}', {b"abcd"}) == [(0, 31)]  # a backslash away from it
    assert named_rows(b'{"k":"a\\\\u","$insert_id":"abcd"}', {b"abcd"}) is None   # "\\u": a backslash before u
    assert named_rows(b'{"k":"a\\\\"$insert_id":"abcd"}', {b"abcd"}) is None     # before the field
    assert named_rows(b'{"$insert_id":"ab\\\\"}', {b"abcd"}) is None               # in its value


def test_an_hours_insert_ids_carry_their_one_length_found_once():
    assert insert_ids(["6f1d2c3a-9b1e-5c7d-8e2f-3a4b5c6d7e01", "6f1d2c3a-9b1e-5c7d-8e2f-3a4b5c6d7e02"]).size == 36
    assert insert_ids(["a", "bb"]).size is None and insert_ids([]).size is None
    assert insert_ids(["é"]) == frozenset({"é".encode()}) and insert_ids(["é"]).size == 2


_ID4 = st.sampled_from(["ab12", "cd34", "ef56", "ab1", "ab123", "a$b4", "é9z1"])     # the hour's ids: 4 bytes
_first = st.fixed_dictionaries(
    {"$insert_id": st.one_of(_ID4, st.none(), st.integers(0, 2)), "uuid": st.sampled_from(["u1", "u2"]),
     "device_id": st.sampled_from(["d1", "d2"])},
    optional={"event_properties": st.dictionaries(st.sampled_from(["$insert_id", "k"]), st.one_of(_ID4, st.none()),
                                                  max_size=2), "note": st.sampled_from(["x", 'q"r', "a\\b"])})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(st.builds(lambda e, at_start: {"$insert_id": e.pop("$insert_id"), **e} if at_start
                                  else {**e, "$insert_id": e.pop("$insert_id")},
                                  _first, st.sampled_from([True, True, True, False])), min_size=1, max_size=8),
       mutations=st.lists(st.builds(
           lambda insert_id, op, n: Mutation(insert_id, op, (n % 3, "k", n), None,
                                             None if op is Op.DELETE else new_row(insert_id, "d1", event_type="x")),
           st.sampled_from(["ab12", "cd34", "ef56", "a$b4"]), st.sampled_from(list(Op)), st.integers(0, 50)),
           max_size=6), insert_is_update=st.booleans())
def test_a_batch_of_rows_starting_with_their_insert_id_rewritten_by_it_is_the_batch_rewritten_parsing_every_row(
        events, mutations, insert_is_update):
    """Rows as the export writes them (``$insert_id`` first; null, a number, nested ones, escapes elsewhere in the
    batch): the rows found by their first field, or by each ``$`` where that cannot say, rewrite the batch as
    parsing every row does."""
    blob = b"\n".join(orjson.dumps(e) for e in events)      # a batch's rows, as rewrite_batch is given them
    offsets = list(range(100, 100 + len(events)))
    muts = by_insert_id(mutations)
    ids = insert_ids(muts)
    want_outcomes, want_matched = Counter(), {}
    want = rewrite_batch(blob, offsets, muts, insert_is_update, want_outcomes, want_matched)
    got_outcomes, got_matched = Counter(), {}
    got = rewrite_batch(blob, offsets, muts, insert_is_update, got_outcomes, got_matched, ids)
    assert got == want
    assert got_outcomes == want_outcomes and got_matched == want_matched
    first = rows_by_first_field(blob, ids)
    plain = (all(next(iter(e)) == "$insert_id" and isinstance(e["$insert_id"], str) for e in events)
             and b"\\" not in blob and len(ids) > 0)
    assert (first is not None) == plain
    if first is not None:       # every row its insert_id names is given
        starts = [0]
        for e in events[:-1]:
            starts.append(starts[-1] + len(orjson.dumps(e)) + 1)
        assert {s for s, _ in first} >= {s for s, e in zip(starts, events) if e["$insert_id"].encode() in ids}


def test_rows_by_first_field_gives_the_rows_whose_first_field_names_an_id_and_none_where_it_cannot_say():
    rows = [line("ab12"), line("zz99"), line("cd34")]
    blob = b"\n".join(rows)
    ids = insert_ids(["ab12", "cd34"])
    assert rows_by_first_field(blob, ids) == [(0, len(rows[0])), (len(rows[0]) + len(rows[1]) + 2, len(blob))]
    assert rows_by_first_field(blob + b"\n", ids) == rows_by_first_field(blob, ids)
    assert rows_by_first_field(b"", ids) == []
    assert rows_by_first_field(blob, insert_ids(["ab12", "c"])) is None                  # ids of two lengths
    assert rows_by_first_field(blob + b'\n{"k":1}', ids) is None                         # a row starting otherwise
    assert rows_by_first_field(blob + b"\n\n" + rows[0], ids) is None                    # an empty row
    assert rows_by_first_field(blob.replace(b'"view"', b'"v\\"w"'), ids) is None         # a backslash
