"""Import rows -> events and dead letters; the discovery record and the processed-files state; the rate limit."""

import json

import orjson
import pytest
from aiokafka.partitioner import murmur2

from stream.events import deadletter, partitioning
from stream.events.normalize import Rules, uuid5_str
from stream.imports.files import ROW_SLOTS, FileState, ImportFile, State, row_offset, split_file_key
from stream.imports.importer import RateLimit, should_import
from stream.imports.ops import summarize
from stream.imports.reader import Row, RowError, RowErrorReason
from stream.imports.rows import FileContext, convert, remember_targets, row_ids
from stream.settings import Settings, SourceSettings

CONVERTER = {"converterConfig": {"convertToAmplitudeFunc": {
    "event_type": "event", "user_id": "user", "device_id": "device", "time": "ts",
    "event_properties": {"price": "price"}, "user_properties": "props", "groups": "groups",
    "group_properties": "gprops"}}}
FILE = ImportFile("clicks", "bkt", "d/1.json.gz", 1_700_000_000_000, "sqs", size=10, etag="abc")
SERVER = 1_700_000_001_000
NOW = 1_700_000_002_000


def source(**kw):
    return SourceSettings(name="clicks", project=7, bucket="bkt", converter=CONVERTER, **kw)


def ctx(src=None, offset=5):
    return FileContext(src or source(), FILE, offset, SERVER, Rules(), record=f"imports.files/1/{offset}")


def row(n, **v):
    return Row(n, {"event": "Play", "user": "user-0001", "device": "dev-00001", "ts": 1_699_999_999_000, **v})


def test_an_event_row_becomes_an_export_row_with_ids_from_its_coordinates():
    out = convert(ctx(), [row(1, price=3)], NOW)
    assert out.rows == 1 and out.dead == [] and out.fields_left_out == 3   # no props, groups, gprops
    ((offset, ev),) = out.events
    assert offset == 5 * ROW_SLOTS + 1
    line = orjson.loads(ev.line)
    assert line["$insert_id"] == row_ids("clicks", "d/1.json.gz", 1)
    assert line["uuid"] == uuid5_str("imports.files/1/5#1")          # this discovery's occurrence of the row
    assert (line["event_type"], line["user_id"], line["device_id"], line["app"]) == ("Play", "user-0001",
                                                                                     "dev-00001", 7)
    assert line["event_properties"] == {"price": 3}
    assert line["client_event_time"] == "2023-11-14 22:13:19.000000"
    assert line["server_upload_time"] == "2023-11-14 22:13:21.000000"    # the discovery record's time
    assert line["data"] == {"$skip_user_properties_sync": True}
    assert ev.dedupe_key == b"7\x00dev-00001\x00" + line["$insert_id"].encode()


def test_the_same_row_read_again_gets_the_same_ids_and_offset():
    a = convert(ctx(), [row(4)], NOW)
    b = convert(ctx(), [row(4)], NOW + 60_000)                    # the same discovery record, replayed
    assert a.events[0][0] == b.events[0][0]
    assert orjson.loads(a.events[0][1].line)["uuid"] == orjson.loads(b.events[0][1].line)["uuid"]
    assert a.events[0][1].dedupe_key == b.events[0][1].dedupe_key
    c = convert(ctx(offset=9), [row(4)], NOW)                     # another discovery (a retry): a duplicate
    assert c.events[0][1].dedupe_key == a.events[0][1].dedupe_key
    assert orjson.loads(c.events[0][1].line)["uuid"] != orjson.loads(a.events[0][1].line)["uuid"]


def test_a_row_s_own_insert_id_and_sync_flag_win():
    src = SourceSettings(name="clicks", project=7, bucket="bkt", converter={"converterConfig": {
        "convertToAmplitudeFunc": {"event_type": "event", "user_id": "user", "insert_id": "id",
                                   "$skip_user_properties_sync": "skip"}}})
    out = convert(ctx(src), [Row(1, {"event": "Play", "user": "user-0001", "id": "given-1", "skip": False})], NOW)
    line = orjson.loads(out.events[0][1].line)
    assert line["$insert_id"] == "given-1"
    assert line["data"] == {"$skip_user_properties_sync": False}


def test_user_and_group_properties_sources_make_identifies():
    users = convert(ctx(source(data_type="user_properties")), [row(1, props={"plan": "pro"})], NOW)
    line = orjson.loads(users.events[0][1].line)
    assert (line["event_type"], line["user_properties"], line["data"]) == ("$identify", {"$set": {"plan": "pro"}}, {})
    ops = convert(ctx(source(data_type="user_properties")), [row(1, props={"$add": {"n": 1}})], NOW)
    assert orjson.loads(ops.events[0][1].line)["user_properties"] == {"$add": {"n": 1}}
    groups = convert(ctx(source(data_type="group_properties")),
                     [row(1, groups={"org": "acme"}, gprops={"size": 10})], NOW)
    line = orjson.loads(groups.events[0][1].line)
    assert (line["event_type"], line["groups"], line["group_properties"]) == (
        "$groupidentify", {"org": "acme"}, {"$set": {"size": 10}})


def test_failing_rows_are_dead_lettered_with_their_file_and_row():
    out = convert(ctx(), [RowError(2, RowErrorReason.BAD_CSV_ROW, "row 2 has 3 fields, the header 4"),
                          Row(3, {"user": "user-0001"}), row(4)], NOW)
    assert [o for o, _ in out.events] == [5 * ROW_SLOTS + 4]
    assert dict(out.reasons) == {"bad_csv_row": 1, "missing_event_type": 1}
    (k1, d1), (k2, d2) = out.dead
    assert k1 == k2 == b"clicks:d/1.json.gz"
    assert deadletter.describe(deadletter.decode(d1)) == (
        "2023-11-14 22:13:22Z bad_csv_row from s3://bkt/d/1.json.gz#2: row 2 has 3 fields, the header 4 | ")
    assert deadletter.describe(deadletter.decode(d2)) == (
        "2023-11-14 22:13:22Z missing_event_type event_type from s3://bkt/d/1.json.gz#3: event_type is missing or "
        "empty (fields the converter left out: event_type: no field 'event'; device_id: no field 'device'; time: no "
        "field 'ts'; event_properties.price: no field 'price'; user_properties: no field 'props'; groups: no field "
        "'groups'; group_properties: no field 'gprops') | {\"user\":\"user-0001\"}")


def test_discovery_records_and_states_round_trip():
    assert ImportFile.decode(FILE.encode()) == FILE
    assert FILE.kafka_key == b"clicks:d/1.json.gz"
    assert split_file_key(b"clicks:a:b/c") == ("clicks", "a:b/c")
    s = FileState(State.FAILED, 10, 4, 1, NOW, FILE.event_time_ms, "abc", 10, "truncated_gzip", "ends early")
    assert FileState.decode(s.encode()) == s
    assert row_offset(3, 1) == 3 * ROW_SLOTS + 1
    with pytest.raises(ValueError, match="beyond"):
        row_offset(3, ROW_SLOTS)


def test_a_file_is_imported_once_unless_a_retry_was_asked_after_its_state():
    done = FileState(State.DONE, 1, 1, 0, NOW, 0)
    assert should_import(None, FILE, NOW)
    assert not should_import(done, FILE, NOW + 1)                                   # a second notification
    retry = ImportFile("clicks", "bkt", FILE.key, NOW, "retry")
    assert should_import(done, retry, NOW + 1)                                      # asked after the import
    assert not should_import(done, retry, NOW - 1)                                  # the retry read again


def test_the_rate_limit_spreads_rows_over_seconds():
    t = [0.0]
    lim = RateLimit(1000, clock=lambda: t[0])
    assert lim.delay(1000) == 0.0
    assert lim.delay(500) == 0.5
    t[0] = 1.5                                       # the debt is paid, and 1000 more are allowed
    assert lim.delay(1000) == 0.0


def test_status_counts_each_source_s_files_and_rows():
    settings = Settings(projects=[{"id": 7}], sources=[{"name": "clicks", "project": 7, "bucket": "bkt",
                                                         "converter": CONVERTER}])
    other = ImportFile("clicks", "bkt", "d/2.json", NOW - 30_000, "scan")
    discovered = [(FILE.kafka_key, FILE), (FILE.kafka_key, FILE), (other.kafka_key, other)]
    states = {FILE.kafka_key: FileState(State.FAILED, 3, 2, 1, NOW, 0, reason="truncated_gzip",
                                        message="the gzip stream ends early")}
    (doc,) = summarize(settings, discovered, states, NOW)
    assert doc["files"] == {"discovered": 2, "waiting": 1, "done": 0, "failed": 1}
    assert doc["rows"] == {"read": 3, "imported": 2, "dead_lettered": 1}
    assert doc["failed_by_reason"] == {"truncated_gzip": 1}
    assert doc["failed"] == [{"key": "d/1.json.gz", "reason": "truncated_gzip", "message": "the gzip stream ends early",
                              "rows": 3, "at_ms": NOW}]
    assert doc["oldest_waiting_age_s"] == 30.0


def test_stream_policy_of_an_import_source_prints_its_read_role():
    from stream.admin.service import Admin
    settings = Settings(projects=[{"id": 7}], s3={"worker_principal_arn": "arn:aws:iam::111122223333:role/stream"},
                        sources=[{"name": "clicks", "project": 7, "bucket": "acme-clicks", "prefix": "in/",
                                  "queue_url": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
                                  "role_arn": "arn:aws:iam::123456789012:role/stream-import", "external_id": "x-1",
                                  "converter": CONVERTER}])
    doc = Admin(settings).policy("clicks")
    assert doc["source"] == "clicks" and doc["reader"] == "arn:aws:iam::123456789012:role/stream-import"
    assert [st["Sid"] for st in doc["role_policy"]["Statement"]] == ["StreamLists", "StreamReads", "StreamDecrypts",
                                                                    "StreamNotifications"]
    assert doc["role_policy"]["Statement"][0] == {
        "Sid": "StreamLists", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::acme-clicks",
        "Condition": {"StringLike": {"s3:prefix": ["in/*"]}}}
    assert doc["role_policy"]["Statement"][1]["Resource"] == "arn:aws:s3:::acme-clicks/in/*"
    assert doc["trust_policy"]["Statement"] == [{
        "Sid": "StreamAssumes", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:role/stream"},
        "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:ExternalId": "x-1"}}}]


def test_a_row_the_converter_fails_on_is_dead_lettered_and_its_neighbours_go_on():
    import dataclasses
    src = source()
    real = src.compiled.convert

    def convert_or_fail(value, now_ms):   # a converter with a bug on one row
        if value.get("ts") == "boom":
            raise ValueError("boom")
        return real(value, now_ms)
    src._compiled = dataclasses.replace(src.compiled, convert=convert_or_fail)
    out = convert(ctx(src), [row(1), row(2, ts="boom"), RowError(3, RowErrorReason.MALFORMED_JSON, "line 3 is bad"),
                             row(4)], NOW)
    assert out.rows == 4
    assert [offset - 5 * ROW_SLOTS for offset, _ in out.events] == [1, 4]
    assert dict(out.reasons) == {"processing_error": 1, "malformed_json": 1}
    dead = [deadletter.decode(v) for _, v in out.dead]
    assert [(d["offset"], d["reason"], d["detail"]) for d in dead] == [
        (2, "processing_error", "the converter failed: ValueError: boom"),
        (3, "malformed_json", "line 3 is bad")]


def test_a_refused_row_holding_an_integer_beyond_64_bits_is_dead_lettered_with_its_value():
    out = convert(ctx(), [row(1, event=""), row(2, event="", big=2**70, m={"k": -(2**64)}), row(3)], NOW)
    assert out.rows == 3 and [offset - 5 * ROW_SLOTS for offset, _ in out.events] == [3]
    dead = [deadletter.decode(v) for _, v in out.dead]
    assert [(d["offset"], d["reason"]) for d in dead] == [(1, "missing_event_type"), (2, "missing_event_type")]
    assert json.loads(dead[1]["value"]) == {"event": "", "user": "user-0001", "device": "dev-00001",
                                              "ts": 1_699_999_999_000, "big": 2**70, "m": {"k": -(2**64)}}
    assert dead[1]["value"] == (b'{"event":"","user":"user-0001","device":"dev-00001","ts":1699999999000,'
                                b'"big":1180591620717411303424,"m":{"k":-18446744073709551616}}')


def test_remember_targets_puts_the_partitions_of_a_chunk_s_devices_or_users_in_partition_for_s_memo(monkeypatch):
    monkeypatch.setattr(partitioning, "_MEMOS", {})
    rows = [row(n, device=f"dev-{n:05d}") for n in range(1, 21)] + [row(21, device=None), row(22, device="dev")]
    out = convert(ctx(), rows, NOW)
    remember_targets(out, 12)
    keys = [f"dev-{n:05d}" for n in range(1, 21)] + ["user-0001"]    # no device id (too short: none) -> the user's
    assert partitioning.partition_memo(12) == {k: (murmur2(k.encode()) & 0x7FFFFFFF) % 12 for k in keys}
