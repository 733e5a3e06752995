from stream.export.mirror import Mutation, Op, by_insert_id
from stream.export.mirror_kept import CACHE_BYTES, KeptMutations

H7, H8 = 1709967600000, 1709971200000


def test_an_hours_kept_mutations_read_back_by_insert_id_each_once_in_the_order_they_apply(tmp_path):
    kept = KeptMutations(tmp_path / "spill")
    a2 = Mutation("a", Op.UPDATE, (9, "s3://b/2.json", 1), None, {"event_type": "second"})
    a1 = Mutation("a", Op.UPDATE, (5, "s3://b/1.json", 4), "d1", {"event_type": "first"})
    b = Mutation("b", Op.DELETE, (5, "s3://b/1.json", 5))
    kept.add(H7, [a2, b])
    kept.add(H7, [a1, a2])             # a2 kept twice (a replayed batch): read once
    kept.add(H8, [Mutation("c", Op.DELETE, (1, "k", 1))])
    h7 = kept.hour(H7)
    assert len(h7) == 2 and sorted(h7) == ["a", "b"]
    assert list(h7["a"]) == [a1, a2] and list(h7.get("b")) == [b] and h7.get("c") is None
    assert {k: list(v) for k, v in h7.items()} == {k: list(v) for k, v in by_insert_id([a1, a2, b]).items()}
    assert sorted(kept.hour(H8)) == ["c"] and len(kept.hour(H8 + 3_600_000)) == 0
    kept.close()
    assert not (tmp_path / "spill").exists()


def test_a_crashed_passs_file_is_started_afresh(tmp_path):
    kept = KeptMutations(tmp_path / "spill")
    kept.add(H7, [Mutation("a", Op.DELETE, (1, "k", 1))])
    kept.db.close()                    # a crash: the file stays
    again = KeptMutations(tmp_path / "spill")
    assert len(again.hour(H7)) == 0 and list(again.hour(H7)) == []
    again.close()


def test_reading_every_kept_mutation_holds_the_block_cache_to_its_fixed_size(tmp_path):
    kept = KeptMutations(tmp_path / "spill")
    ids = [f"event-{n:05d}" for n in range(3000)]
    kept.add(H7, [Mutation(i, Op.UPDATE, (1, "k", n), None, {"event_type": "x" * 2000}) for n, i in enumerate(ids)])
    kept.db.flush()                    # about 6 MB of mutations in the file, none in the memtable
    h7 = kept.hour(H7)
    assert all(len(h7[i]) == 1 for i in ids)
    assert kept.db.property_int_value("rocksdb.block-cache-capacity") == CACHE_BYTES == 1 << 20
    assert kept.db.property_int_value("rocksdb.block-cache-usage") <= CACHE_BYTES
    kept.close()


def test_log_lines_kept_a_batch_at_a_time_read_back_as_the_mutations_kept_one_at_a_time(tmp_path):
    from stream.export import mirror_log
    muts = [Mutation(f"e{n % 7}", Op.UPDATE if n % 3 else Op.DELETE, (n // 10, f"s3://b/{n % 2}.json", n),
                     None if n % 4 else f"d{n}", None if n % 3 == 0 else {"event_type": f"v{n}"}) for n in range(40)]
    one, lines = KeptMutations(tmp_path / "one"), KeptMutations(tmp_path / "lines")
    one.add(H7, muts[:25])
    one.add(H7, muts[25:])
    lines.add_lines(H7, [mirror_log.line(m) for m in muts[:25]])     # e0..e6 each several times in one object
    lines.add_lines(H7, [mirror_log.line(m) for m in muts[25:]])     # and again in a second: appended to theirs
    lines.add_lines(H7, [])
    for kept in (one, lines):
        assert len(kept.hour(H7)) == 7 and sorted(kept.hour(H7)) == [f"e{n}" for n in range(7)]
    assert {k: list(v) for k, v in lines.hour(H7).items()} == {k: list(v) for k, v in one.hour(H7).items()} \
        == {k: list(v) for k, v in by_insert_id(muts).items()}
    assert [lines.db[k] for k in lines.db.keys()] == [one.db[k] for k in one.db.keys()]
    one.close()
    lines.close()
