"""What a mirror file's mutations became, per file: the records a take writes and their sum in the import status."""

import asyncio

import pytest

from stream.export.mirror import Mutation, Op
from stream.export.mirror_apply import Targeted
from stream.imports import mirror_files as mf
from stream.imports.mirror_files import FileTake
from tests.unit.export.test_mirror_apply import H7, H8, applier, row

F1 = "s3://src/in/a.json"
F2 = "s3://src/in/b.json"
AT = 1_800_000_000_000


def take(first, last, at, partition=0, url=F1, ops=None, outcomes=None, hours=((1, H7),), rows=None):
    """A record of the mutations at offsets first..last, of rows first+1..last+1 unless ``rows`` says."""
    lo, hi = rows or (first + 1, last + 1)
    return FileTake(url, 1, 1_700_000_000_000, partition, first, last, lo, hi, ops or {"UPDATE": last - first + 1},
                    outcomes or {"applied": last - first + 1}, tuple(hours), at)


def test_a_batch_tallies_each_files_mutations_by_type_outcome_and_hours():
    a, _, _ = applier({(1, "a"): [(H7, "d1")], (1, "b"): [(H8, "d1"), (H7, "d2")], (1, "c"): [(H8, "d1")]})
    batch = [Targeted(1, Mutation("a", Op.UPDATE, (5, F1, 1), None, row("a")), 40),
             Targeted(1, Mutation("b", Op.DELETE, (5, F1, 2)), 41),
             Targeted(1, Mutation("zz", Op.DELETE, (5, F1, 3)), 42),
             Targeted(1, Mutation("n", Op.INSERT, (6, F2, 1), None, row("n")), 43),
             Targeted(1, Mutation("n", Op.UPDATE, (6, F2, 2), None, row("n")), 44),
             Targeted(1, Mutation("c", Op.INSERT, (6, F2, 3), None, row("c")), 45)]
    applied = asyncio.run(a.log(3, 40, batch))
    assert mf.takes_of(applied, 3, AT) == [
        FileTake(F1, 1, 5, 3, 40, 42, 1, 3, {"DELETE": 2, "UPDATE": 1}, {"applied": 2, "unknown_insert_id": 1},
                 ((1, H7), (1, H8)), AT),
        FileTake(F2, 1, 6, 3, 43, 45, 1, 3, {"INSERT": 2, "UPDATE": 1}, {"applied": 1, "insert_conflict": 1, "new": 1},
                 (), AT)]


def test_a_batch_holding_the_end_of_one_read_of_a_file_and_the_start_of_the_next_records_them_apart():
    a, _, _ = applier({(1, "a"): [(H7, "d1")], (1, "b"): [(H8, "d1")]})
    up, dl = Mutation("a", Op.UPDATE, (5, F1, 4), None, row("a")), Mutation("b", Op.DELETE, (5, F1, 7))
    again = [Mutation("a", Op.UPDATE, (5, F1, 4), None, row("a")), Mutation("b", Op.DELETE, (5, F1, 7))]
    batch = [Targeted(1, m, o) for o, m in zip(range(20, 24), [up, dl] + again)]
    assert mf.takes_of(asyncio.run(a.log(0, 20, batch)), 0, AT) == [
        FileTake(F1, 1, 5, 0, 20, 21, 4, 7, {"DELETE": 1, "UPDATE": 1}, {"applied": 2}, ((1, H7), (1, H8)), AT),
        FileTake(F1, 1, 5, 0, 22, 23, 4, 7, {"DELETE": 1, "UPDATE": 1}, {"applied": 2}, ((1, H7), (1, H8)), AT)]


def test_records_of_many_mutations_of_two_reads_of_a_file_are_recorded_apart_by_their_records_offsets():
    # a record of events.mutations carries many mutations, which share its offset: each read's rows in order
    a, _, _ = applier({(1, "a"): [(H7, "d1")], (1, "b"): [(H8, "d1")], (1, "c"): [(H8, "d1")]})
    read = [Mutation("a", Op.UPDATE, (5, F1, 4), None, row("a")), Mutation("b", Op.DELETE, (5, F1, 7)),
            Mutation("c", Op.DELETE, (5, F1, 9))]
    batch = ([Targeted(1, m, 20, i) for i, m in enumerate(read[:2])] + [Targeted(1, read[2], 21)] +
             [Targeted(1, m, 30, i) for i, m in enumerate(read)])
    assert mf.takes_of(asyncio.run(a.log(0, 20, batch)), 0, AT) == [
        FileTake(F1, 1, 5, 0, 20, 21, 4, 9, {"DELETE": 2, "UPDATE": 1}, {"applied": 3}, ((1, H7), (1, H8)), AT),
        FileTake(F1, 1, 5, 0, 30, 30, 4, 9, {"DELETE": 2, "UPDATE": 1}, {"applied": 3}, ((1, H7), (1, H8)), AT)]


def test_a_record_reads_back_as_written_and_its_key_names_file_partition_and_first_offset():
    t = take(7, 9, AT, partition=2, hours=((1, H7), (1, H8)), rows=(3, 40))
    assert FileTake.decode(t.encode()) == t
    assert t.key == b'["s3://src/in/a.json",2,7]'


def test_takes_add_up_per_file_and_each_hour_keeps_its_latest_rewrite():
    s = mf.summaries([take(0, 9, AT), take(10, 14, AT + 5, hours=((1, H7), (1, H8))),
                      take(0, 2, AT + 1, partition=1, ops={"DELETE": 3}, outcomes={"unknown_insert_id": 3}, hours=()),
                      take(3, 3, AT, url=F2)])
    assert sorted(s) == [F1, F2]
    f = s[F1]
    assert (f.ops, f.outcomes, f.hours, f.last_ms) == (
        {"UPDATE": 15, "DELETE": 3}, {"applied": 15, "unknown_insert_id": 3}, {(1, H7): AT + 5, (1, H8): AT + 5},
        AT + 5)


def test_a_take_applied_again_cut_otherwise_replaces_the_records_it_overlaps():
    first = [take(0, 99, AT), take(100, 199, AT + 1), take(200, 299, AT + 2)]
    # the replay from offset 0 takes 150 mutations at first: 150-199 counted by nobody until its next take
    assert mf.summaries(first + [take(0, 149, AT + 10)])[F1].ops == {"UPDATE": 150 + 100}
    again = first + [take(0, 149, AT + 10), take(150, 299, AT + 11)]
    assert mf.summaries(again)[F1].ops == {"UPDATE": 300}
    # the same cut again: the same key, the compacted topic keeps one; counted once either way
    assert mf.summaries(first + first)[F1].ops == {"UPDATE": 300}


def test_a_file_read_again_by_the_import_counts_its_latest_read_only():
    # read 1 stopped at row 120 (a crash), read 2 produced every row again at later offsets, a partition at a time
    read1 = [take(0, 59, AT, rows=(1, 119)), take(0, 59, AT, partition=1, rows=(2, 120))]
    read2 = [take(60, 159, AT + 1, rows=(1, 199)), take(60, 159, AT + 1, partition=1, rows=(2, 200)),
             take(160, 209, AT + 2, rows=(201, 299), ops={"DELETE": 50}, outcomes={"unknown_insert_id": 50})]
    s = mf.summaries(read1 + read2)[F1]
    assert (s.ops, s.outcomes) == ({"UPDATE": 200, "DELETE": 50}, {"applied": 200, "unknown_insert_id": 50})
    # while read 2 is under way, what it applied so far
    assert mf.summaries(read1 + read2[:1])[F1].ops == {"UPDATE": 100 + 60}
    # and a third read (stream import retry) replaces both
    assert mf.summaries(read1 + read2 + [take(300, 309, AT + 3, rows=(1, 10))])[F1].ops == {"UPDATE": 10 + 100}


def under_in(key):
    return key.startswith("in/")


def test_a_sources_status_lists_its_files_latest_first_with_exact_counts_and_hours():
    s = mf.summaries([take(0, 1, AT, ops={"UPDATE": 1, "DELETE": 1}, outcomes={"applied": 1, "unknown_insert_id": 1}),
                      take(0, 0, AT + 60_000, url=F2, ops={"INSERT": 1}, outcomes={"new": 1}, hours=()),
                      take(0, 0, AT, url="s3://other/in/c.json")])
    doc = mf.status_of("src", under_in, 1, s, {"in/a.json": 2}, shown=20)
    assert doc == [
        {"key": "in/b.json", "modified_ms": 1_700_000_000_000, "mutations": {"INSERT": 1, "UPDATE": 0, "DELETE": 0},
         "outcomes": {"applied": 0, "new": 1, "unknown_insert_id": 0, "insert_conflict": 0, "dead_lettered": 0},
         "hours": [], "last_applied_ms": AT + 60_000},
        {"key": "in/a.json", "modified_ms": 1_700_000_000_000, "mutations": {"INSERT": 0, "UPDATE": 1, "DELETE": 1},
         "outcomes": {"applied": 1, "new": 0, "unknown_insert_id": 1, "insert_conflict": 0, "dead_lettered": 3},
         "hours": [{"project": 1, "hour": "2024-03-09T07", "rewritten_ms": AT}], "last_applied_ms": AT}]
    assert mf.status_of("src", under_in, 1, s, {}, shown=1) == doc[:1]
    assert mf.status_of("src", under_in, 2, s, {}) == []
    assert mf.show(doc) == [
        "  mirror file in/b.json: 1 INSERT, 0 UPDATE, 0 DELETE; 0 applied, 1 new, 0 unknown insert_id, "
        "0 insert conflicts, 0 dead-lettered",
        "    no hour rewritten",
        "  mirror file in/a.json: 0 INSERT, 1 UPDATE, 1 DELETE; 1 applied, 0 new, 1 unknown insert_id, "
        "0 insert conflicts, 3 dead-lettered",
        "    hour 1 2024-03-09T07 rewritten at 2027-01-15T08:00:00.000Z"]


def test_the_import_status_of_a_mirror_source_lists_its_files_and_an_appending_source_does_not():
    from stream.imports.files import FileState, ImportFile, State
    from stream.imports.ops import show_status, summarize
    from stream.settings import Settings
    conv = {"converterConfig": {"convertToAmplitudeFunc": {"event_type": "e", "user_id": "u", "insert_id": "i"}}}
    settings = Settings(projects=[{"id": 1}], destinations=[{"name": "d", "project": 1, "bucket": "arch",
                                                             "archive": True}],
                        sources=[{"name": "fixes", "project": 1, "bucket": "src", "prefix": "in/", "strategy": "mirror",
                                  "filter_pattern": r".*\.json", "converter": conv},
                                 {"name": "clicks", "project": 1, "bucket": "src", "prefix": "in/", "converter": conv}])
    f = ImportFile("fixes", "src", "in/a.json", AT - 5000, "sqs")
    states = {f.kafka_key: FileState(State.DONE, 4, 2, 2, AT - 1000, AT - 5000)}
    mirror = mf.summaries([take(0, 1, AT, ops={"UPDATE": 1, "DELETE": 1}, outcomes={"applied": 2},
                                hours=((1, H7), (1, H8))),
                           take(0, 0, AT + 1, url="s3://src/in/a.csv")])     # not a file of the source: its filter
    fixes, clicks = summarize(settings, [(f.kafka_key, f)], states, AT, mirror=mirror)
    assert "mirror_files" not in clicks
    assert fixes["mirror_files"] == [
        {"key": "in/a.json", "modified_ms": 1_700_000_000_000, "mutations": {"INSERT": 0, "UPDATE": 1, "DELETE": 1},
         "outcomes": {"applied": 2, "new": 0, "unknown_insert_id": 0, "insert_conflict": 0, "dead_lettered": 2},
         "hours": [{"project": 1, "hour": "2024-03-09T07", "rewritten_ms": AT},
                   {"project": 1, "hour": "2024-03-09T08", "rewritten_ms": AT}], "last_applied_ms": AT}]
    assert show_status([fixes]) == [
        "fixes: s3://src/in/: 1 discovered, 0 waiting, 1 done, 0 failed; rows: 4 read, 2 imported, 2 dead-lettered",
        "  mirror file in/a.json: 0 INSERT, 1 UPDATE, 1 DELETE; 2 applied, 0 new, 0 unknown insert_id, "
        "0 insert conflicts, 2 dead-lettered",
        "    hour 1 2024-03-09T07 rewritten at 2027-01-15T08:00:00.000Z",
        "    hour 1 2024-03-09T08 rewritten at 2027-01-15T08:00:00.000Z"]


def history_files(n):
    """n files of the source, in/f00.json applied first; in/f00 and in/f01 applied at the same time."""
    ts = [take(0, 0, AT + max(i, 1) * 1000, url=f"s3://src/in/f{i:02d}.json") for i in range(n)]
    return mf.summaries(ts + [take(0, 0, AT, url="s3://other/in/x.json")])


def test_a_sources_history_pages_through_every_file_latest_applied_first():
    s = history_files(25)
    first = mf.history_of("src", under_in, 1, s, {"in/f24.json": 1}, limit=20)
    assert (first["total"], len(first["files"]), first["next"]) == (25, 20, f"{AT + 5000}:in/f05.json")
    assert [f["key"] for f in first["files"]] == [f"in/f{i:02d}.json" for i in range(24, 4, -1)]
    assert first["files"][0] == {
        "key": "in/f24.json", "modified_ms": 1_700_000_000_000, "mutations": {"INSERT": 0, "UPDATE": 1, "DELETE": 0},
        "outcomes": {"applied": 1, "new": 0, "unknown_insert_id": 0, "insert_conflict": 0, "dead_lettered": 1},
        "hours": [{"project": 1, "hour": "2024-03-09T07", "rewritten_ms": AT + 24_000}],
        "last_applied_ms": AT + 24_000}
    # the first 20 are the import status's
    assert first["files"] == mf.status_of("src", under_in, 1, s, {"in/f24.json": 1})
    rest = mf.history_of("src", under_in, 1, s, {}, limit=20, before=first["next"])
    assert [f["key"] for f in rest["files"]] == ["in/f04.json", "in/f03.json", "in/f02.json", "in/f00.json",
                                                 "in/f01.json"]     # f00 and f01: the same time, by key
    assert (rest["total"], rest["next"]) == (25, None)
    # pages of 2 over the tie: each file once, the cursor between f00 and f01
    keys, before = [], f"{AT + 3000}:in/f03.json"
    while True:
        page = mf.history_of("src", under_in, 1, s, {}, limit=2, before=before)
        keys += [f["key"] for f in page["files"]]
        if page["next"] is None:
            break
        before = page["next"]
    assert keys == ["in/f02.json", "in/f00.json", "in/f01.json"]
    assert mf.history_of("src", under_in, 1, s, {}, limit=25)["next"] is None
    assert mf.history_of("src", under_in, 2, s, {}, limit=5) == {"total": 0, "files": [], "next": None}


def test_a_history_cursor_that_is_not_one_is_refused_saying_what_to_pass():
    for bad in ("", "12", "x:in/a.json", "12:", "-1:in/a.json"):
        with pytest.raises(mf.BadCursor) as e:
            mf.history_of("src", under_in, 1, {}, {}, limit=5, before=bad)
        assert str(e.value) == (f"before must be the next cursor of a previous page (<last_applied_ms>:<key>, such "
                                f"as 1733450761412:mirror/fixes.json), not {bad!r}: leave it out for the latest files")
    assert mf.parse_cursor("1:in/a:b.json") == (1, "in/a:b.json")


def test_a_history_page_as_lines_names_the_command_for_the_next_one():
    s = history_files(3)
    page = mf.history_of("src", under_in, 1, s, {}, limit=1)
    assert mf.show_history("fixes", page) == [
        "fixes: 1 of 3 mirror files shown, latest applied first",
        "  mirror file in/f02.json: 0 INSERT, 1 UPDATE, 0 DELETE; 1 applied, 0 new, 0 unknown insert_id, "
        "0 insert conflicts, 0 dead-lettered",
        "    last applied at 2027-01-15T08:00:02.000Z",
        "    hour 1 2024-03-09T07 rewritten at 2027-01-15T08:00:02.000Z",
        f"more: stream import history fixes --before {AT + 2000}:in/f02.json"]
    last = mf.history_of("src", under_in, 1, s, {}, limit=5, before=page["next"])
    assert mf.show_history("fixes", last)[0] == "fixes: 2 of 3 mirror files shown, latest applied first"
    assert not any(line.startswith("more:") for line in mf.show_history("fixes", last))


def test_the_history_of_a_source_without_mirror_files_is_refused():
    from stream.imports.ops import Refused, history_page
    from stream.settings import Settings
    conv = {"converterConfig": {"convertToAmplitudeFunc": {"event_type": "e", "user_id": "u", "insert_id": "i"}}}
    settings = Settings(projects=[{"id": 1}], destinations=[{"name": "d", "project": 1, "bucket": "arch",
                                                             "archive": True}],
                        sources=[{"name": "fixes", "project": 1, "bucket": "src", "prefix": "in/", "strategy": "mirror",
                                  "converter": conv},
                                 {"name": "clicks", "project": 1, "bucket": "src", "prefix": "in/", "converter": conv}])
    with pytest.raises(Refused) as e:
        history_page(settings.source("clicks"), {}, {}, 5, None)
    assert str(e.value) == ("source 'clicks' is not a mirror source of events (strategy: mirror, data_type: event), "
                            "so it has no mirror files; see stream import status for its files")
    assert history_page(settings.source("fixes"), {}, history_files(2), 1, None) == {
        "source": "fixes", "total": 2, "files": mf.history_of("src", under_in, 1, history_files(2), {}, 1)["files"],
        "next": f"{AT + 1000}:in/f00.json"}


def test_a_record_holding_a_new_insert_and_its_later_update_is_one_take_of_its_file():
    """The mutations a new INSERT folds in are tallied right after it; within one record of events.mutations (one
    offset) they are put back in row order, so the record is one take of its file, not two of the same key."""
    record = [Mutation("n", Op.INSERT, (5, F1, 1), None, row("n")),      # a new event
              Mutation("a", Op.UPDATE, (5, F1, 2), None, row("a")),      # an exported event's hour
              Mutation("n", Op.UPDATE, (5, F1, 3), None, row("n"))]      # folded into the new event
    a, _, _ = applier({(1, "a"): [(H7, "d1")]})
    takes = mf.takes_of(asyncio.run(a.log(0, 20, [Targeted(1, m, 20, i) for i, m in enumerate(record)])), 0, AT)
    assert [(t.key, t.row_lo, t.row_hi, t.ops, t.outcomes) for t in takes] == [
        (b'["s3://src/in/a.json",0,20]', 1, 3, {"INSERT": 1, "UPDATE": 2}, {"applied": 2, "new": 1})]
    s = mf.summaries(takes)[F1]
    assert (dict(s.ops), dict(s.outcomes)) == ({"INSERT": 1, "UPDATE": 2}, {"applied": 2, "new": 1})
