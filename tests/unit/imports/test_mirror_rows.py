"""Rows of a mirror source -> records of events.mutations, refused rows -> dead letters; the settings a mirror
source needs; the engine producing them once per file."""

import asyncio

import pytest
from pydantic import ValidationError

from stream import metrics
from stream.clock import FakeClock
from stream.events import deadletter
from stream.events.normalize import Rules
from stream.export import mirror_index
from stream.export.mirror import Op
from stream.imports import mutations
from stream.imports.files import FileState, ImportFile, State
from stream.imports.importer import FileImporter
from stream.imports.reader import Row, RowError, RowErrorReason
from stream.imports.rows import FileContext, convert_mirror, row_ids
from stream.settings import Settings, SourceSettings
from tests.unit.imports.test_importer import Files, Memory

FUNC = {"event_type": "event", "user_id": "user", "device_id": "device", "insert_id": "id", "time": "ts",
        "event_properties": {"price": "price"}, "$mutation_type": "op"}
CONVERTER = {"converterConfig": {"convertToAmplitudeFunc": FUNC}}
FILE = ImportFile("fixes", "bkt", "in/m.json", 1_700_000_000_000, "sqs")
URL = "s3://bkt/in/m.json"
MODIFIED = 1_699_999_990_000
SERVER = 1_700_000_001_000
NOW = 1_700_000_002_000
ARCHIVE = {"name": "lake", "project": 7, "bucket": "lake-bkt", "archive": True}


def source(**kw):
    return SourceSettings(name="fixes", project=7, bucket="bkt", converter=CONVERTER, strategy="mirror", **kw)


def ctx():
    return FileContext(source(), FILE, 5, SERVER, Rules(), record="imports.files/1/5")


def row(n, **v):
    return Row(n, {"event": "Play", "user": "user-1", "device": "device-1", "ts": SERVER - 60_000, "price": n, **v})


def decoded(out):
    return [(key, *mutations.decode(value)) for key, value in out.mutations]


def test_each_row_becomes_the_mutation_its_type_names_keyed_by_the_mirror_index_key():
    out = convert_mirror(ctx(), [row(1, id="e-1"), row(2, id="e-2", op="delete"), row(3, id="e-3", op=" Insert "),
                                 row(4, op="INSERT")], NOW, MODIFIED)
    assert out.dead == [] and out.rows == 4 and out.events == []
    got = decoded(out)
    assert [(k, p, m.op, m.insert_id, m.seq, m.device_id) for k, p, m in got] == [
        (mirror_index.key(7, "e-1"), 7, Op.UPDATE, "e-1", (MODIFIED, URL, 1), "device-1"),
        (mirror_index.key(7, "e-2"), 7, Op.DELETE, "e-2", (MODIFIED, URL, 2), "device-1"),
        (mirror_index.key(7, "e-3"), 7, Op.INSERT, "e-3", (MODIFIED, URL, 3), "device-1"),
        (mirror_index.key(7, row_ids("fixes", "in/m.json", 4)), 7, Op.INSERT, row_ids("fixes", "in/m.json", 4),
         (MODIFIED, URL, 4), "device-1")]
    assert got[1][2].row is None                                   # a DELETE carries no event
    update = got[0][2].row
    assert (update["event_type"], update["user_id"], update["$insert_id"], update["event_properties"]) == (
        "Play", "user-1", "e-1", {"price": 1})
    assert dict(out.ops) == {"UPDATE": 1, "DELETE": 1, "INSERT": 2}


def test_mirror_rows_get_no_enrichment_flag_and_are_not_shaped():
    out = convert_mirror(ctx(), [row(1, id="e-1", event="$identify")], NOW, MODIFIED)
    (_, _, m), = decoded(out)
    assert m.row["event_type"] == "$identify" and "$skip_user_properties_sync" not in m.row


def test_refused_rows_are_dead_lettered_with_their_reason_file_and_row():
    bad_json = RowError(5, RowErrorReason.MALFORMED_JSON, "line 5 is not JSON")
    out = convert_mirror(ctx(), [row(1, id="e-1", op="UPSERT"), row(2, id="e-2", user=None),
                                 row(3, op="update"), row(4, op="DELETE"), bad_json, row(6, id="e-6")], NOW, MODIFIED)
    assert [m.insert_id for _, _, m in decoded(out)] == ["e-6"]
    dead = [deadletter.decode(v) for _, v in out.dead]
    assert [(d["reason"], d["field"], d["topic"], d["partition"], d["offset"]) for d in dead] == [
        ("invalid_mutation_type", "$mutation_type", URL, deadletter.FILE_ROW, 1),
        ("missing_user_id", "user_id", URL, deadletter.FILE_ROW, 2),
        ("missing_id", "insert_id", URL, deadletter.FILE_ROW, 3),
        ("missing_id", "insert_id", URL, deadletter.FILE_ROW, 4),
        ("malformed_json", None, URL, deadletter.FILE_ROW, 5)]
    assert {k for k, _ in out.dead} == {FILE.kafka_key}
    assert dict(out.reasons) == {"invalid_mutation_type": 1, "missing_user_id": 1, "missing_id": 2,
                                 "malformed_json": 1}


def test_a_row_read_again_gives_the_same_record():
    items = [row(1, id="e-1"), row(2, op="insert")]
    assert convert_mirror(ctx(), items, NOW, MODIFIED).mutations == convert_mirror(ctx(), [row(1, id="e-1"),
                                                                                           row(2, op="insert")],
                                                                                   NOW + 5, MODIFIED).mutations


def settings(destinations=(ARCHIVE,), **src):
    return Settings(projects=[{"id": 7}], destinations=list(destinations),
                    worker={"data_dir": "/tmp/stream-test-importer"},
                    sources=[{"name": "fixes", "project": 7, "bucket": "bkt", "converter": CONVERTER,
                              "strategy": "mirror", **src}])


def test_a_mirror_source_needs_an_archive_destination_of_its_project():
    assert settings().source("fixes").strategy == "mirror"
    with pytest.raises(ValidationError) as err:
        settings(destinations=[{**ARCHIVE, "archive": False}])
    assert ("sources[0] (fixes): a mirror source needs an archive destination of project 7: the applied mutations "
            "are kept in its bucket (mirror.log_prefix), and hours older than topics.retention_days are rebuilt "
            "from its objects; add `archive: true` to a destination of project 7 with the amplitude layout, or use "
            "strategy: append_only") in str(err.value)


@pytest.mark.parametrize("data_type", ["user_properties", "group_properties"])
def test_mirror_is_for_events_only(data_type):
    with pytest.raises(ValidationError) as err:
        source(data_type=data_type)
    assert (f"strategy: mirror applies to data_type event only, not {data_type} (user and group properties are "
            "appended, as Amplitude offers only Append Only for them; profiles, which Amplitude mirrors, are a data "
            "type of their own, not a strategy of these): use strategy: append_only") in str(err.value)


def test_the_engine_produces_a_mirror_files_mutations_once_and_nothing_to_events_valid():
    s = settings()
    mem, clock = Memory(), FakeClock(NOW)

    async def sleep(seconds):
        clock.advance(int(seconds * 1000))
    files = Files([[row(1, id="e-1", op="update"), row(2, id="e-2", op="delete"), row(3, id="e-3", op="nope"),
                    row(4, id="e-4", op="delete"), row(5, id="e-3", op="update")]])
    imp = FileImporter(s, clock, mem.senders(), mem, files, "imports.files", sleep=sleep,
                       monotonic=lambda: clock.now_ms() / 1000)
    counted = metrics.IMPORT_MUTATIONS.labels("fixes", "delete")._value.get()

    def handle(found_by="sqs", record_ms=SERVER):
        f = ImportFile("fixes", "bkt", "in/m.json", 1_700_000_000_000, found_by)
        return asyncio.run(imp.handle(f, f.kafka_key, 1, 5, record_ms))
    state = handle()
    assert state == FileState(State.DONE, 5, 4, 1, NOW, 1_700_000_000_000)
    assert mem.valid == []
    # a record per partition of events.mutations (4: e-1, e-3 and e-4 go to 0, e-2 to 2), keyed by its first
    # mutation's key, its mutations in row order
    at = 1_699_999_000_000          # Files: LastModified of GetObject
    assert [(k, [(m.insert_id, m.op.value, m.seq) for _, m in mutations.decode_all(v)]) for k, v in mem.mutations] == [
        (mirror_index.key(7, "e-1"), [("e-1", "UPDATE", (at, URL, 1)), ("e-4", "DELETE", (at, URL, 4)),
                                      ("e-3", "UPDATE", (at, URL, 5))]),
        (mirror_index.key(7, "e-2"), [("e-2", "DELETE", (at, URL, 2))])]
    assert [mutations.is_many(v) for _, v in mem.mutations] == [True, True]
    assert [deadletter.decode(v)["reason"] for _, v in mem.dead] == ["invalid_mutation_type"]
    assert metrics.IMPORT_MUTATIONS.labels("fixes", "delete")._value.get() == counted + 2
    assert handle(found_by="scan") is None and len(mem.mutations) == 2 and files.reads == 1


def test_the_preview_of_a_mirror_source_shows_each_rows_mutation_or_why_it_is_refused():
    from stream.imports.ops import preview_rows, show_preview
    s = settings()
    rows = [row(1, id="e-1", op="delete"), row(2, id="e-2"), row(3, op="upsert", id="e-3")]
    got = preview_rows(s, s.source("fixes"), FILE, rows, NOW)
    assert [(r["row"], r["mutation"], r["errors"]) for r in got] == [
        (1, {"op": "DELETE", "insert_id": "e-1", "device_id": "device-1"}, []),
        (2, {"op": "UPDATE", "insert_id": "e-2", "device_id": "device-1"},       # no op column: an UPDATE
         [{"reason": "field_left_out", "field": "$mutation_type", "detail": "no field 'op'"}]),
        (3, None, [{"reason": "invalid_mutation_type", "field": "$mutation_type", "detail":
                    '$mutation_type must be INSERT, UPDATE or DELETE (any case; missing means UPDATE), got "upsert"'}])]
    assert got[0]["event"] is None and got[2]["event"] is None
    assert (got[1]["event"]["$insert_id"], got[1]["event"]["event_properties"]) == ("e-2", {"price": 2})
    lines = show_preview({"url": URL, "rows": got})
    assert lines[1:4] == ["row 1:", '  source: {"event":"Play","user":"user-1","device":"device-1","ts":1699999941000'
                          ',"price":1,"id":"e-1","op":"delete"}', "  mutation: DELETE of insert_id e-1 of device device-1"]
    assert (lines[4], lines[6], lines[8]) == ("row 2:", "  mutation: UPDATE of insert_id e-2 of device device-1",
                                              "  error:  field_left_out $mutation_type: no field 'op'")
    assert lines[7].startswith('  event:  {"$insert_id":"e-2"')


def test_events_mutations_is_created_with_the_other_topics_when_a_source_is_a_mirror_source():
    from stream.events.timefmt import DAY_MS
    from stream.topics import TopicSpec, topic_specs
    kept = {"retention.ms": str(int(7 * DAY_MS))}
    assert TopicSpec("events.mutations", 4, kept) in topic_specs(settings())
    appending = Settings(projects=[{"id": 7}], sources=[{"name": "clicks", "project": 7, "bucket": "bkt",
                                                         "converter": CONVERTER}])
    assert "events.mutations" not in {t.name for t in topic_specs(appending)}
