from stream.export.mirror import Op
from stream.imports.profiles import Profile, applied, decode, encode, key, snapshot_line, split_key

F1 = (1000, "s3://b/p1.json", 1)
F2 = (2000, "s3://b/p2.json", 1)
F2_ROW2 = (2000, "s3://b/p2.json", 2)


def test_insert_and_update_set_the_whole_properties_and_delete_leaves_a_tombstone():
    p = applied(None, Op.INSERT, {"plan": "free", "age": 3}, F1, 10)
    assert p == Profile({"plan": "free", "age": 3}, F1, 10)
    p = applied(p, Op.UPDATE, {"plan": "pro"}, F2, 20)
    assert p == Profile({"plan": "pro"}, F2, 20)
    p = applied(p, Op.DELETE, None, F2_ROW2, 30)
    assert p == Profile(None, F2_ROW2, 30) and p.deleted


def test_an_older_mutation_read_later_changes_nothing_and_a_deleted_user_stays_deleted():
    p = applied(None, Op.DELETE, None, F2, 5)
    assert p == Profile(None, F2, 5)
    assert applied(p, Op.INSERT, {"plan": "free"}, F1, 6) is None
    assert applied(Profile({"a": 1}, F2, 5), Op.UPDATE, {"a": 2}, F2, 6) is None   # the same mutation again


def test_setting_what_is_there_moves_the_sequence_but_not_the_change_time():
    p = Profile({"a": 1}, F1, 5)
    assert applied(p, Op.UPDATE, {"a": 1}, F2, 9) == Profile({"a": 1}, F2, 5)
    # so an older file read after it still changes nothing
    assert applied(applied(p, Op.UPDATE, {"a": 1}, F2, 9), Op.UPDATE, {"a": 7}, (1500, "s3://b/x", 1), 10) is None


def test_a_profile_reads_back_as_written_and_keys_split_back():
    p = Profile({"plan": "pro", "n": [1, 2]}, F2, 1709967600123)
    assert decode(encode(p)) == p
    assert decode(None) is None
    assert key(42, "user-1") == b"\x00\x00\x00*user-1" and split_key(key(42, "usér")) == (42, "usér")


def test_a_snapshot_line_names_the_user_its_properties_and_when_they_changed():
    assert snapshot_line(42, "user-1", Profile({"plan": "pro"}, F2, 1709967600123)) == (
        b'{"app":42,"user_id":"user-1","user_properties":{"plan":"pro"},"deleted":false,'
        b'"updated_time":"2024-03-09 07:00:00.123000"}')
    assert snapshot_line(42, "user-1", Profile(None, F2, 1709967600123)) == (
        b'{"app":42,"user_id":"user-1","user_properties":null,"deleted":true,'
        b'"updated_time":"2024-03-09 07:00:00.123000"}')
