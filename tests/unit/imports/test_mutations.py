import io
import random

import fastavro
import orjson
import pytest

from stream.events import avro
from stream.events.batch import SOURCE_SLOTS
from stream.events.normalize import Reason, Rejected, Rules
from stream.events.partitioning import partition_of
from stream.export import mirror_index
from stream.export.mirror import Mutation, Op, RawRow
from stream.imports.mutations import (MANY_MAGIC, NotAMutation, count_of, decode, decode_all, decode_raw, decode_record,
                                      encode, encode_many, grouped, mutation_of)

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


# --- records of many mutations -----------------------------------------------------------------------------------


def generated(n, seed):
    """(project, mutation): every op, rows with and without events, device ids None or unicode, unicode ids, URLs
    and values."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        op = r.choice([Op.INSERT, Op.UPDATE, Op.DELETE])
        device = r.choice([None, f"dev-{i}", "dév-ü-\u2603", "\U0001F600"])
        row = None if op is Op.DELETE else {
            "$insert_id": f"i-{i}", "event_type": r.choice(["Play", "é\u2603", ""]), "time": r.randrange(1 << 41),
            "event_properties": {f"p{k}": r.choice([None, True, 1.5, -(1 << 60), "ü\n\"q\"", [1, {"a": []}]])
                                 for k in range(r.randrange(0, 6))}}
        seq = (r.randrange(0, 1 << 62), r.choice(["s3://src/m.json", "s3://b/ü key\u2603.json"]), r.randrange(1 << 40))
        insert_id = r.choice([f"ins-{i}", f"ïns-\u2603-{i}", f"{i}" * r.randrange(1, 40)])
        out.append((r.randrange(0, 1 << 31), Mutation(insert_id, op, seq, device, row)))
    return out


def test_a_record_of_many_mutations_reads_back_exactly_as_each_was_written():
    for seed in range(5):
        muts = generated(200, seed)
        values = [encode(p, m)[1] for p, m in muts]
        many = encode_many(values)
        assert many[:2] == MANY_MAGIC == b"\xff\x02"
        assert count_of(many) == 200 and [count_of(v) for v in values[:3]] == [1, 1, 1]
        assert decode_all(many) == muts
        fast = decode_record(many)
        assert fast == muts
        for (_, m), (_, f) in zip(muts, fast):
            if m.row is None:
                assert f.row is None
            else:
                assert isinstance(f.row, RawRow) and bytes(f.row.raw) == orjson.dumps(m.row)
        # after the magic it is schemas/mutations.avsc as fastavro reads it, each item a record of one mutation
        assert fastavro.schemaless_reader(io.BytesIO(many[2:]), avro.schema("mutations")) == {"mutations": values}
        # a record of one, as an earlier version wrote it, reads as before
        assert [decode_record(v) for v in values] == [[pm] for pm in muts]
        assert [decode_all(v) for v in values] == [[pm] for pm in muts]


def test_a_record_of_one_never_starts_with_the_magic_of_a_record_of_many():
    for project in (0, 1, 63, 64, 127, 128, 8191, 8192, (1 << 31) - 1, (1 << 32) - 1):
        value = encode(project, Mutation("i", Op.DELETE, (1, "s3://b/k", 1)))[1]
        assert value[0] % 2 == 0 and value[:2] != MANY_MAGIC
        assert decode_record(value) == [(project, Mutation("i", Op.DELETE, (1, "s3://b/k", 1)))]


def test_a_record_of_many_written_by_fastavro_with_blocks_of_their_byte_size_reads_back_too():
    muts = generated(30, 9)
    values = [encode(p, m)[1] for p, m in muts]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, avro.schema("mutations"), {"mutations": values})
    assert decode_record(MANY_MAGIC + buf.getvalue()) == muts
    # a block given with its byte size (a negative count): the Avro spec's other way to write an array
    items = b"".join(avro.long_of(len(v)) + v for v in values[:3])
    assert decode_record(MANY_MAGIC + avro.long_of(-3) + avro.long_of(len(items)) + items + b"\0") == muts[:3]




def test_a_record_of_many_that_is_cut_or_has_bytes_after_its_end_is_refused_saying_what_to_do():
    values = [encode(p, m)[1] for p, m in generated(3, 1)]
    many = encode_many(values)
    with pytest.raises(NotAMutation) as cut:
        decode_record(many[:-5])
    assert str(cut.value) == (
        f"a record of {len(many) - 5} bytes is not a record of mutations as schemas/mutations.avsc writes it "
        f"(a mutation of {len(values[2])} bytes at byte {len(many) - 1 - len(values[2])} of {len(many) - 5}): only "
        "stream's mirror import writes events.mutations; find what else produces to it")
    with pytest.raises(NotAMutation, match=r"\(2 bytes after the array's end\): only stream's"):
        decode_record(many + b"\0\0")
    with pytest.raises(NotAMutation, match=r"\(it ends inside a field\)"):
        decode_record(MANY_MAGIC + b"\x02")
    inner = MANY_MAGIC + b"\x02" + avro.long_of(len(values[0]) - 4) + values[0][:-4] + b"\0"
    with pytest.raises(NotAMutation, match=r"^a record of \d+ bytes is not a record of mutations"):
        decode_record(inner)
    with pytest.raises(ValueError, match="holds one mutation at least"):
        encode_many([])
    over = encode_many([values[0]] * (SOURCE_SLOTS + 1))
    with pytest.raises(NotAMutation, match=r"\(more than 65536 mutations in one record \(the new INSERTs' source "
                                           r"offsets would reach the next record's\)\): only stream's"):
        decode_record(over)
    assert len(decode_record(encode_many([values[0]] * SOURCE_SLOTS))) == SOURCE_SLOTS


def test_grouped_puts_every_mutation_in_the_partition_its_own_key_goes_to_in_order_and_bounded():
    muts = generated(2000, 4)
    recs = [encode(p, m) for p, m in muts]
    for partitions in (1, 4, 12):
        for max_bytes, max_count in ((512 * 1024, 4096), (3000, 4096), (1, 4096), (512 * 1024, 7)):
            out = grouped(recs, partitions, max_bytes, max_count)
            back = []
            for partition, key, value in out:
                inner = decode_all(value)
                keys = [mirror_index.key(p, m.insert_id) for p, m in inner]
                assert key == keys[0] and partition_of(key, partitions) == partition
                assert {partition_of(k, partitions) for k in keys} == {partition}
                assert len(inner) <= max_count
                sizes = [len(encode(p, m)[1]) for p, m in inner]
                assert len(inner) == 1 or sum(sizes) <= max_bytes
                back.append((partition, inner))
            # every mutation once, each partition's in the order they were read
            assert sorted(m.seq for _, inner in back for _, m in inner) == sorted(m.seq for _, m in muts)
            for p in range(partitions):
                mine = [pm for q, inner in back if q == p for pm in inner]
                assert mine == [pm for pm, (k, _) in zip(muts, recs) if partition_of(k, partitions) == p]
            # ordered by each record's first mutation
            firsts = [muts.index(inner[0]) for _, inner in back]
            assert firsts == sorted(firsts)
            if max_bytes == 1:
                assert len(out) == len(muts)
    assert grouped([], 4) == []
    # the same chunk, the same records: a file read again sends them again byte for byte
    assert grouped(recs, 4) == grouped(list(recs), 4)


@pytest.mark.parametrize("varint, why", [
    (bytes([0xFF] * 10 + [0x01]), "a varint of more than 10 bytes"),
    (bytes([0xFF] * 9 + [0x02]), "a varint past a long's 64 bits"),
])
def test_a_record_whose_project_is_no_avro_long_is_not_a_mutation(varint, why):
    value = varint + b"\x02"
    with pytest.raises(NotAMutation) as e:
        decode_raw(value)
    assert str(e.value) == (f"a record of {len(value)} bytes is not a mutation as schemas/mutation.avsc writes it "
                            f"({why}): only stream's mirror import writes events.mutations; find what else produces "
                            "to it")
