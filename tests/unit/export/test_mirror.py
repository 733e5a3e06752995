from collections import Counter

import orjson
import pytest

from stream.export.mirror import KEPT, Mutation, Op, Outcome, by_insert_id, parse_op, rewrite, rewrite_batch


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
