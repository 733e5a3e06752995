"""The cohort syncs' local copy of the profiles changelog on a real RocksDB: the latest value of each key, a tombstone
deleting it, the offsets read to saved with the records and found again when the copy is opened again, where a
catch-up reads on from, and a copy read again from the beginning when it is lost or names offsets the topic does not
have."""

import shutil

import pytest

from stream.cohorts.profiles_copy import COPY_DIR, TEMPORARY, ProfilesCopy, profile_reader, resume_at
from stream.imports.profiles import Profile, encode, key

TOPIC = "app-profiles-applied-changelog"
SEQ = (1_700_000_000_000, "s3://people/in/p.json", 1)


def value(props):
    return encode(Profile(props, SEQ, 1_700_000_000_000))


A, B, C = key(7, "user-a"), key(7, "user-b"), key(7, "user-c")


@pytest.fixture
def copy(tmp_path):
    c = ProfilesCopy.open(tmp_path, TOPIC)
    yield c
    c.close()


def everything(c):
    return {k: v for k, v in c.db.items()}


def test_a_copy_holds_the_latest_value_of_each_key_a_tombstone_deletes_it_and_the_offset_after_the_records(copy):
    copy.apply(0, [(A, value({"plan": "free"})), (B, value({"plan": "pro"})), (A, value({"plan": "team"})),
                   (C, value({"plan": "free"})), (B, None), (None, b"no key")], 6)
    copy.apply(1, [(key(8, "user-a"), value({"tier": "gold"}))], 1)
    assert everything(copy) == {A: value({"plan": "team"}), C: value({"plan": "free"}),
                                key(8, "user-a"): value({"tier": "gold"})}
    assert copy.saved() == {0: 6, 1: 1}
    copy.apply(0, [(C, value(None)), (A, value({"plan": "pro", "age": 3}))], 9)
    assert everything(copy) == {A: value({"plan": "pro", "age": 3}), C: value(None),
                                key(8, "user-a"): value({"tier": "gold"})}
    assert copy.saved() == {0: 9, 1: 1}
    copy.mark({0: 12, 2: 4})
    assert copy.saved() == {0: 12, 1: 1, 2: 4}


def test_a_sync_reads_the_profile_properties_of_its_projects_users_none_for_deleted_or_missing_ones(copy):
    copy.apply(0, [(A, value({"plan": "team"})), (C, value(None)), (key(8, "user-a"), value({"tier": "gold"}))], 3)
    profile_of = profile_reader(copy, frozenset({7}))
    assert [profile_of(7, "user-a"), profile_of(7, "user-b"), profile_of(7, "user-c"), profile_of(8, "user-a")] == [
        {"plan": "team"}, None, None, None]
    assert profile_reader(copy, frozenset({7, 8}))(8, "user-a") == {"tier": "gold"}


def test_a_copy_opened_again_holds_what_it_held_and_reads_on_from_the_offsets_it_saved(tmp_path):
    c = ProfilesCopy.open(tmp_path, TOPIC)
    c.apply(0, [(A, value({"plan": "free"})), (B, value({"plan": "pro"}))], 2)
    c.apply(1, [(C, value({"plan": "team"}))], 5)
    c.close()
    again = ProfilesCopy.open(tmp_path, TOPIC)
    try:
        assert (again.path, again.temporary) == (tmp_path / COPY_DIR / TOPIC, False)
        assert again.saved() == {0: 2, 1: 5}
        assert everything(again) == {A: value({"plan": "free"}), B: value({"plan": "pro"}),
                                     C: value({"plan": "team"})}
        assert resume_at(again.saved(), {0: 0, 1: 0, 2: 0}, {0: 4, 1: 5, 2: 3}) == {0: 2, 1: 5, 2: 0}
        again.apply(0, [(A, None), (B, value({"plan": "team"}))], 4)
        assert everything(again) == {B: value({"plan": "team"}), C: value({"plan": "team"})}
        assert again.saved() == {0: 4, 1: 5}
    finally:
        again.close()


def test_where_a_catch_up_reads_from_or_none_to_read_the_copy_again_from_the_beginning():
    assert resume_at({}, {0: 0, 1: 3}, {0: 10, 1: 7}) == {0: 0, 1: 3}
    assert resume_at({0: 10, 1: 5}, {0: 0, 1: 3}, {0: 10, 1: 7}) == {0: 10, 1: 5}
    assert resume_at({0: 11, 1: 5}, {0: 0, 1: 3}, {0: 10, 1: 7}) is None       # past the end: a new topic
    assert resume_at({0: 4, 1: 2}, {0: 0, 1: 3}, {0: 10, 1: 7}) is None        # below the first offset
    assert resume_at({0: 4, 2: 1}, {0: 0, 1: 0}, {0: 10, 1: 7}) is None        # a partition the topic has not
    assert resume_at({0: 4}, {}, {}) is None                                    # no topic any more
    assert resume_at({}, {}, {}) == {}


def test_a_lost_copy_is_a_new_empty_one_and_a_rebuilt_copy_holds_nothing(tmp_path):
    c = ProfilesCopy.open(tmp_path, TOPIC)
    c.apply(0, [(A, value({"plan": "free"}))], 1)
    c.close()
    shutil.rmtree(tmp_path / COPY_DIR / TOPIC)
    lost = ProfilesCopy.open(tmp_path, TOPIC)
    assert (lost.saved(), everything(lost)) == ({}, {})
    lost.apply(0, [(B, value({"plan": "pro"}))], 3)
    lost.rebuild()
    assert (lost.saved(), everything(lost)) == ({}, {})
    lost.apply(1, [(C, value({"plan": "team"}))], 2)
    assert (lost.saved(), everything(lost)) == ({1: 2}, {C: value({"plan": "team"})})
    lost.close()


def test_a_copy_that_cannot_be_read_is_made_again_empty(tmp_path):
    c = ProfilesCopy.open(tmp_path, TOPIC)
    c.apply(0, [(A, value({"plan": "free"}))], 1)
    c.close()
    path = tmp_path / COPY_DIR / TOPIC
    (path / "CURRENT").write_text("MANIFEST-999999\n")
    broken = ProfilesCopy.open(tmp_path, TOPIC)
    try:
        assert (broken.path, broken.temporary, broken.saved(), everything(broken)) == (path, False, {}, {})
    finally:
        broken.close()


def test_a_copy_open_in_another_reader_leaves_a_temporary_one_removed_when_it_closes(tmp_path, copy):
    copy.apply(0, [(A, value({"plan": "free"}))], 1)
    other = ProfilesCopy.open(tmp_path, TOPIC)
    assert other.temporary and other.path.parent == tmp_path / COPY_DIR / TEMPORARY
    assert (other.saved(), everything(other)) == ({}, {})
    other.apply(0, [(B, value({"plan": "pro"}))], 2)
    other.close()
    assert not other.path.exists()
    assert (copy.saved(), everything(copy)) == ({0: 1}, {A: value({"plan": "free"})})


def test_a_temporary_copy_left_by_a_process_killed_before_removing_it_is_removed_by_the_next_opening_one_in_use_kept(
        tmp_path):
    main = ProfilesCopy.open(tmp_path, TOPIC)
    left, used = ProfilesCopy.open(tmp_path, TOPIC), ProfilesCopy.open(tmp_path, TOPIC)
    left.apply(0, [(A, value({"plan": "free"}))], 1)
    left._release()             # its process killed: the database closed, the directory not removed
    main.close()
    assert sorted(p.name for p in (tmp_path / COPY_DIR / TEMPORARY).iterdir()) == sorted([left.path.name,
                                                                                         used.path.name])
    again = ProfilesCopy.open(tmp_path, TOPIC)
    try:
        assert [p.name for p in (tmp_path / COPY_DIR / TEMPORARY).iterdir()] == [used.path.name]
        assert (again.temporary, again.path) == (False, tmp_path / COPY_DIR / TOPIC)
    finally:
        again.close()
        used.close()
    assert list((tmp_path / COPY_DIR / TEMPORARY).iterdir()) == []
