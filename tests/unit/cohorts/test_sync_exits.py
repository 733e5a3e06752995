"""A user who exits a cohort is written in the exiting file with the userID the previous sync's existing file listed
for it: a user merged into another since has no state of its own, and still exits under the id the destination
knows it by."""

import asyncio
import io

import orjson

from stream.cohorts import csvfiles
from stream.cohorts.stage import LocalStage
from stream.cohorts.sync import jobs_of, run_syncs
from stream.events.batch import EventBatch, Origin
from stream.events.batch import Source as BatchSource
from stream.s3.storage import MemoryStorage
from tests.unit.cohorts.test_sync import HEAD, T1, T2, Source, ms, objects, row, run, settings

KEY = "cohorts/424242_pro-buyers_2024-03-11T00:00_{}.csv"


def test_a_member_merged_into_another_exits_with_the_user_id_the_previous_file_listed():
    rows = [
        # 60 bought on the 9th (a member at the sync of the 10th), then was merged into 70 on the 10th
        row(60, "purchase", "2024-03-09 12:00", "u,60 \"sr\"", plan="pro"),
        row(70, "view", "2024-03-10 08:00", "u-70", plan="free"),
        # 80 bought on the 9th: exits at the sync of the 11th, its own state there, with its later user_id
        row(80, "purchase", "2024-03-09 12:30", "u-80", plan="pro"),
        row(80, "view", "2024-03-10 08:30", "u-80-new", plan="pro"),
    ]
    merges = [{"amplitude_id": 70, "merged_amplitude_id": 60, "merge_time": T1 + 9 * 3_600_000,
               "merge_server_time": T1 + 9 * 3_600_000, "scope": 424242}]
    s, storage = settings(), MemoryStorage()
    run(s, T1, storage, Source(rows, []))
    assert objects(storage)["cohorts/424242_pro-buyers_2024-03-10T00:00_existing.csv"] == (
        HEAD + b'60,"u,60 ""sr""",pro,\r\n80,u-80,pro,\r\n')
    (r,) = run(s, T2, storage, Source(rows, merges))
    assert (r.members, r.entering, r.exiting) == (0, 0, 2)
    files = objects(storage)
    assert files[KEY.format("exiting")] == HEAD + b'60,"u,60 ""sr""",,\r\n80,u-80,pro,\r\n'
    assert files[KEY.format("entering")] == HEAD
    assert files[KEY.format("existing")] == HEAD


def test_an_exit_the_previous_file_listed_without_a_user_id_takes_the_states():
    rows = [row(90, "purchase", "2024-03-09 12:00", None, plan="pro"),
            row(90, "view", "2024-03-10 08:00", "u-90", plan="free")]
    s, storage = settings(), MemoryStorage()
    run(s, T1, storage, Source(rows[:1], []))
    assert objects(storage)["cohorts/424242_pro-buyers_2024-03-10T00:00_existing.csv"] == HEAD + b"90,,pro,\r\n"
    run(s, T2, storage, Source(rows, []))
    assert objects(storage)[KEY.format("exiting")] == HEAD + b"90,u-90,free,\r\n"


def test_read_ids_undoes_the_quoting_of_the_user_id_and_skips_the_header():
    body = HEAD + csvfiles.row(3, 'a,b "c"\r\nd', ["pro", 2.5]) + csvfiles.row(5, None, ['x,"y"', None]) + \
        csvfiles.row(2**63 + 1, "Zoë", [None, None])
    assert list(csvfiles.read_ids(io.BytesIO(body))) == [(3, 'a,b "c"\r\nd'), (5, ""), (2**63 + 1, "Zoë")]
    assert list(csvfiles.read_ids(io.BytesIO(HEAD))) == []
    assert list(csvfiles.read_ids(io.BytesIO(b""))) == []


def test_diff_with_gives_each_exit_what_the_previous_sync_listed():
    assert list(csvfiles.diff_with([(1, "u-1"), (3, "u-3"), (5, "")], [2, 3], existing=True)) == [
        (1, "exiting", "u-1"), (2, "entering", None), (2, "existing", None), (3, "existing", None),
        (5, "exiting", "")]


def test_through_the_cohorts_stage_a_member_merged_away_exits_with_its_listed_user_id():
    s, storage = settings(), MemoryStorage()
    st = LocalStage(s.cohort_set, 1, s.cohort_state.state_days)
    for offset, (r, uploaded) in enumerate([row(60, "purchase", "2024-03-09 12:00", "u-60", plan="pro"),
                                            row(70, "view", "2024-03-10 08:00", "u-70", plan="free")], 1):
        st.accepted(0, EventBatch(424242, uploaded - uploaded % 3_600_000, Origin("events.accepted", 0, offset),
                                  [offset], [b"d"], [uploaded], [b"u" * 16], [orjson.dumps(r)],
                                  BatchSource("events.ingest", 0)))
    st.advance(T1 + 60_000)
    asyncio.run(run_syncs(s, jobs_of(s, "pro-buyers"), T1 + 60_000, lambda d: storage, st))
    assert objects(storage)["cohorts/424242_pro-buyers_2024-03-10T00:00_existing.csv"] == HEAD + b"60,u-60,pro,\r\n"
    st.merge({"amplitude_id": 70, "merged_amplitude_id": 60, "merge_time": ms("2024-03-10 09:00"),
              "merge_server_time": ms("2024-03-10 09:00"), "scope": 424242})
    st.advance(T2 + 60_000)
    (r,) = asyncio.run(run_syncs(s, jobs_of(s, "pro-buyers"), T2 + 60_000, lambda d: storage, st))
    assert (r.scheduled_ms, r.members, r.entering, r.exiting, r.error) == (T2, 0, 0, 1, None)
    assert objects(storage)[KEY.format("exiting")] == HEAD + b"60,u-60,,\r\n"
