import orjson

from stream.events.normalize import Reason, Rejected, Rules
from stream.export import mirror_index
from stream.export.mirror import Mutation, Op
from stream.imports.mutations import decode, encode, mutation_of

SEQ = (1709967600123, "s3://src/mirror/2024-03-09.json", 4)
RULES = Rules()
NOW = 1709970000000


def convert(ev, default="derived-id"):
    return mutation_of(dict(ev), 42, SEQ, default, NOW - 5, "s3://src/mirror/2024-03-09.json#4", RULES, NOW)


def test_an_update_carries_the_event_row_built_as_every_event_and_the_mutation_field_is_not_in_it():
    m = convert({"$mutation_type": "update", "user_id": "user-1", "device_id": "device-1", "insert_id": "ins-1",
                 "event_type": "purchase", "event_properties": {"sku": "a"}, "time": 1709967600000})
    assert isinstance(m, Mutation)
    assert (m.insert_id, m.op, m.seq, m.device_id) == ("ins-1", Op.UPDATE, SEQ, "device-1")
    assert m.row["$insert_id"] == "ins-1" and m.row["event_type"] == "purchase"
    assert m.row["event_properties"] == {"sku": "a"} and m.row["user_id"] == "user-1"
    assert "$mutation_type" not in m.row and "$mutation_type" not in m.row.get("event_properties", {})


def test_a_missing_mutation_type_is_an_update_and_a_delete_needs_only_its_ids():
    assert convert({"user_id": "user-1", "insert_id": "ins-1", "event_type": "x"}).op is Op.UPDATE
    assert convert({"$mutation_type": "DELETE", "user_id": "user-1", "insert_id": "ins-1"}) == Mutation(
        "ins-1", Op.DELETE, SEQ, None, None)


def test_rows_the_mirror_cannot_apply_are_refused_with_a_reason_naming_the_field():
    assert convert({"$mutation_type": "upsert", "user_id": "user-1", "insert_id": "i"}) == Rejected(
        Reason.INVALID_MUTATION_TYPE, "$mutation_type",
        '$mutation_type must be INSERT, UPDATE or DELETE (any case; missing means UPDATE), got "upsert"')
    missing_user = convert({"$mutation_type": "DELETE", "insert_id": "i", "device_id": "device-1"})
    assert (missing_user.reason, missing_user.field) == (Reason.MISSING_USER_ID, "user_id")
    no_id = convert({"$mutation_type": "delete", "user_id": "user-1"})
    assert (no_id.reason, no_id.field) == (Reason.MISSING_ID, "insert_id")
    assert no_id.detail == ("a DELETE names the event it changes by insert_id: map the column that holds the "
                            "exported events' $insert_id to insert_id in the converter")
    bad_event = convert({"$mutation_type": "insert", "user_id": "user-1", "insert_id": "i"})
    assert isinstance(bad_event, Rejected) and bad_event.reason is Reason.MISSING_EVENT_TYPE


def test_an_insert_without_an_insert_id_gets_the_one_derived_from_its_file_and_row():
    m = convert({"$mutation_type": "INSERT", "user_id": "user-1", "event_type": "x"}, default="from-file-row")
    assert m.insert_id == "from-file-row" and m.row["$insert_id"] == "from-file-row"


def test_a_record_is_keyed_by_the_index_key_and_reads_back_as_written():
    m = Mutation("ins-1", Op.UPDATE, SEQ, "device-1", {"$insert_id": "ins-1", "event_type": "x"})
    key, value = encode(42, m)
    assert key == mirror_index.key(42, "ins-1")
    assert decode(value) == (42, m)
    assert list(decode(value)[1].row) == ["$insert_id", "event_type"]
    d = Mutation("ins-2", Op.DELETE, SEQ)
    assert decode(encode(7, d)[1]) == (7, d)
    assert orjson.loads(orjson.dumps(m.row)) == m.row
