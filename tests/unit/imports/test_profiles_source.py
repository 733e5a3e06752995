"""Sources of profiles (data_type: profiles): their settings, rows, records and the profiles stage's pure parts."""

import pytest
from pydantic import ValidationError

from stream.settings import Settings, SourceSettings

FUNC = {"user_id": "user", "user_properties": {"plan": "plan", "age": "age"}, "$mutation_type": "op"}
CONVERTER = {"converterConfig": {"convertToAmplitudeFunc": FUNC}}


def source(**kw):
    return SourceSettings(name="people", project=7, bucket="bkt", converter=CONVERTER, **kw)


def settings(**src):
    return Settings(projects=[{"id": 7}], worker={"data_dir": "/tmp/stream-test-profiles"},
                    sources=[{"name": "people", "project": 7, "bucket": "bkt", "converter": CONVERTER,
                              "data_type": "profiles", "strategy": "mirror", **src}])


def test_a_source_of_profiles_is_a_mirror_source_and_needs_no_archive_destination():
    s = settings()
    assert (s.source("people").data_type, s.source("people").strategy) == ("profiles", "mirror")
    assert s.profiles_projects() == frozenset({7})
    assert s.mirror_projects() == frozenset()       # no exported hours to rewrite: no mirror stage
    assert s.destinations == []


def test_profiles_refuse_append_only():
    with pytest.raises(ValidationError) as err:
        source(data_type="profiles")
    assert ("data_type: profiles are each user's current properties, which a row sets, replaces or deletes "
            "(Amplitude's Mirror strategy; append_only does not apply to them): set strategy: mirror") in str(err.value)


def test_without_a_source_of_profiles_no_project_has_profiles():
    s = Settings(projects=[{"id": 7}], sources=[{"name": "clicks", "project": 7, "bucket": "bkt",
                                                 "converter": CONVERTER}])
    assert s.profiles_projects() == frozenset()


# --- rows -> profile mutations --------------------------------------------------------------------------------------
import asyncio  # noqa: E402

from stream import metrics  # noqa: E402
from stream.clock import FakeClock  # noqa: E402
from stream.events import deadletter  # noqa: E402
from stream.events.normalize import Reason, Rejected, Rules  # noqa: E402
from stream.export.mirror import Op  # noqa: E402
from stream.imports import profiles  # noqa: E402
from stream.imports.files import FileState, ImportFile, State  # noqa: E402
from stream.imports.importer import FileImporter, Senders  # noqa: E402
from stream.imports.reader import Row, RowError, RowErrorReason  # noqa: E402
from stream.imports.rows import FileContext, convert_profiles  # noqa: E402
from tests.unit.imports.test_importer import Files, Memory, acked  # noqa: E402

FILE = ImportFile("people", "bkt", "in/p.json", 1_700_000_000_000, "sqs")
URL = "s3://bkt/in/p.json"
MODIFIED = 1_699_999_990_000
SERVER, NOW = 1_700_000_001_000, 1_700_000_002_000


def row(n, **v):
    return Row(n, {"user": f"user-{n}", "plan": "pro", "age": n, **v})


def test_each_row_becomes_the_profile_mutation_its_type_names_keyed_by_project_and_user_id():
    ctx = FileContext(settings().source("people"), FILE, 5, SERVER, Rules(), record="imports.files/1/5")
    out = convert_profiles(ctx, [row(1, op="insert"), row(2), row(3, op="DELETE"), row(4, op="upsert"),
                                 row(5, user=None), RowError(6, RowErrorReason.MALFORMED_JSON, "not JSON")],
                           NOW, MODIFIED)
    assert [(k, *profiles.decode_mutation(v)) for k, v in out.mutations] == [
        (b"\x00\x00\x00\x07user-1", 7, profiles.ProfileMutation("user-1", Op.INSERT, {"plan": "pro", "age": 1},
                                                                (MODIFIED, URL, 1))),
        (b"\x00\x00\x00\x07user-2", 7, profiles.ProfileMutation("user-2", Op.UPDATE, {"plan": "pro", "age": 2},
                                                                (MODIFIED, URL, 2))),
        (b"\x00\x00\x00\x07user-3", 7, profiles.ProfileMutation("user-3", Op.DELETE, None, (MODIFIED, URL, 3)))]
    assert dict(out.ops) == {"INSERT": 1, "UPDATE": 1, "DELETE": 1}
    dead = [deadletter.decode(v) for _, v in out.dead]
    assert [(d["reason"], deadletter.source_of(d)) for d in dead] == [
        ("invalid_mutation_type", URL + "#4"), ("missing_user_id", URL + "#5"), ("malformed_json", URL + "#6")]
    assert [k for k, _ in out.dead] == [FILE.kafka_key] * 3
    assert out.rows == 6


def test_a_profiles_row_is_refused_without_user_id_with_another_type_or_properties_not_an_object():
    seq = (1, "s3://b/k", 1)
    assert profiles.mutation_of({"user_properties": {"a": 1}}, seq, 100) == Rejected(
        Reason.MISSING_USER_ID, "user_id", "a profiles row names its user by user_id: map the column that holds it "
        "to user_id in the source's converter (rows without one are dropped, as Amplitude drops them)")
    assert profiles.mutation_of({"user_id": "u", "$mutation_type": 3}, seq, 100) == Rejected(
        Reason.INVALID_MUTATION_TYPE, "$mutation_type",
        "$mutation_type must be INSERT, UPDATE or DELETE (any case; missing means UPDATE), got 3")
    assert profiles.mutation_of({"user_id": "u", "user_properties": "x"}, seq, 100) == Rejected(
        Reason.INVALID_TYPE, "user_properties", "a profile's user_properties must be an object of the user's "
        "properties, got str: map an object to user_properties in the source's converter")
    assert profiles.mutation_of({"user_id": "u", "user_properties": {"a": "x" * 100}}, seq, 100) == Rejected(
        Reason.TOO_LARGE, "user_properties", "the profile's user_properties are 108 bytes, over "
        "ingest.max_event_bytes (100): leave the largest properties out in the converter")
    # a DELETE needs only its user; an UPDATE without properties sets none
    assert profiles.mutation_of({"user_id": "u", "user_properties": "x", "$mutation_type": "delete"}, seq, 100) == \
        profiles.ProfileMutation("u", Op.DELETE, None, seq)
    assert profiles.mutation_of({"user_id": "u"}, seq, 100) == profiles.ProfileMutation("u", Op.UPDATE, {}, seq)


def test_a_profile_whose_properties_hold_a_key_that_is_not_text_is_refused_naming_the_field():
    """The readers give text keys; a dict of other keys is refused with its field instead of raising."""
    seq = (1, "s3://b/k", 1)
    for props in ({1: "a"}, {"a": {None: 1}}, {"a": [{2.5: 1}]}):
        assert profiles.mutation_of({"user_id": "u", "user_properties": props}, seq, 100) == Rejected(
            Reason.INVALID_VALUE, "user_properties", "user_properties holds an object whose key is not text: give "
            "its keys as text")


def test_a_record_that_is_not_a_profile_mutation_is_a_value_error():
    for bad in (b"nope", b"{}", b'{"project":7,"user_id":"u","op":"UPSERT","properties":null,"seq":[1,"f",1]}',
                b'{"project":7,"user_id":"u","op":"UPDATE","properties":[1],"seq":[1,"f",1]}'):
        with pytest.raises(ValueError, match="^not a profile mutation record: "):
            profiles.decode_mutation(bad)


def test_the_engine_produces_a_profiles_files_mutations_once_on_their_keys_partition():
    s = settings()
    mem, clock = Memory(), FakeClock(NOW)
    sent = []

    async def send_profile(key, value):
        sent.append((key, value))
        return acked()

    async def sleep(seconds):
        clock.advance(int(seconds * 1000))
    files = Files([[row(1, op="insert"), row(2, op="delete"), row(3, op="nope")]])
    imp = FileImporter(s, clock, Senders(mem.send_valid, mem.send_dead, None, send_profile), mem, files,
                       "imports.files", sleep=sleep, monotonic=lambda: clock.now_ms() / 1000)
    counted = metrics.IMPORT_MUTATIONS.labels("people", "delete")._value.get()

    def handle(found_by="sqs"):
        f = ImportFile("people", "bkt", "in/p.json", 1_700_000_000_000, found_by)
        return asyncio.run(imp.handle(f, f.kafka_key, 1, 5, SERVER))
    assert handle() == FileState(State.DONE, 3, 2, 1, NOW, 1_700_000_000_000)
    assert mem.valid == [] and mem.mutations == []
    assert [(k, m.op.value, m.seq) for k, (_, m) in ((k, profiles.decode_mutation(v)) for k, v in sent)] == [
        (profiles.key(7, "user-1"), "INSERT", (1_699_999_000_000, "s3://bkt/in/p.json", 1)),
        (profiles.key(7, "user-2"), "DELETE", (1_699_999_000_000, "s3://bkt/in/p.json", 2))]
    assert [deadletter.decode(v)["reason"] for _, v in mem.dead] == ["invalid_mutation_type"]
    assert metrics.IMPORT_MUTATIONS.labels("people", "delete")._value.get() == counted + 1
    assert handle(found_by="scan") is None and len(sent) == 2 and files.reads == 1


def test_profiles_mutations_and_the_tables_compacted_changelog_are_created_with_a_source_of_profiles():
    from stream.events.timefmt import DAY_MS
    from stream.topics import TopicSpec, topic_specs
    specs = topic_specs(settings())
    assert TopicSpec("profiles.mutations", 4, {"retention.ms": str(int(7 * DAY_MS))}) in specs
    assert TopicSpec("stream-profiles-applied-changelog", 4, {"cleanup.policy": "compact"}) in specs
    assert "events.mutations" not in {t.name for t in specs}
    appending = Settings(projects=[{"id": 7}], sources=[{"name": "clicks", "project": 7, "bucket": "bkt",
                                                         "converter": CONVERTER}])
    assert not {"profiles.mutations", "stream-profiles-applied-changelog"} & {t.name for t in topic_specs(appending)}


def test_the_partition_of_a_key_is_kafkas_default_partitioners():
    from aiokafka.partitioner import DefaultPartitioner
    for user in ("user-1", "user-2", "usér-3", "x" * 40):
        k = profiles.key(7, user)
        assert profiles.partition(k, 4) == DefaultPartitioner()(k, [0, 1, 2, 3], [0, 1, 2, 3])


def test_the_preview_of_a_source_of_profiles_shows_each_rows_mutation_and_profile_or_why_it_is_refused():
    from stream.imports.ops import preview_rows, show_preview
    s = settings()
    rows = [row(1, op="insert"), row(2, op="delete"), row(3, user=None, op="update")]
    got = preview_rows(s, s.source("people"), FILE, rows, NOW)
    assert [(r["row"], r["mutation"], r.get("profile"), r["event"], r["errors"]) for r in got] == [
        (1, {"op": "INSERT", "user_id": "user-1"}, {"plan": "pro", "age": 1}, None, []),
        (2, {"op": "DELETE", "user_id": "user-2"}, None, None, []),
        (3, None, None, None, [{"reason": "missing_user_id", "field": "user_id", "detail": "a profiles row names its "
                                "user by user_id: map the column that holds it to user_id in the source's converter "
                                "(rows without one are dropped, as Amplitude drops them)"}])]
    lines = show_preview({"url": URL, "rows": got})
    assert lines[2:5] == ['  source: {"user":"user-1","plan":"pro","age":1,"op":"insert"}',
                          "  mutation: INSERT of the profile of user user-1", '  profile: {"plan":"pro","age":1}']
    assert lines[7] == "  mutation: DELETE of the profile of user user-2"


# --- the profiles stage's step ----------------------------------------------------------------------------------------
F1, F2 = (1000, "s3://b/p1.json", 1), (2000, "s3://b/p2.json", 1)


def test_each_mutation_writes_the_new_profile_or_nothing_and_names_its_outcome():
    ins = profiles.ProfileMutation("u", Op.INSERT, {"a": 1}, F1)
    first, outcome = profiles.step(None, ins, 10)
    assert (profiles.decode(first), outcome) == (profiles.Profile({"a": 1}, F1, 10), "applied")
    assert profiles.step(first, ins, 20) == (first, "replayed")      # the same mutation again: written again
    same = profiles.ProfileMutation("u", Op.UPDATE, {"a": 1}, F2)
    w, outcome = profiles.step(first, same, 30)
    assert (profiles.decode(w), outcome) == (profiles.Profile({"a": 1}, F2, 10), "unchanged")
    gone = profiles.ProfileMutation("u", Op.DELETE, None, (F2[0], F2[1], 2))
    w2, outcome = profiles.step(w, gone, 40)
    assert (profiles.decode(w2), outcome) == (profiles.Profile(None, (F2[0], F2[1], 2), 40), "applied")
    assert profiles.step(w2, ins, 50) == (None, "stale")             # an older file read after: nothing


def test_the_latest_record_of_a_key_in_its_partition_is_its_profile():
    k, other = profiles.key(7, "u"), profiles.key(7, "v")
    a, b = profiles.encode(profiles.Profile({"a": 1}, F1, 1)), profiles.encode(profiles.Profile(None, F2, 2))
    assert profiles.latest([(k, a), (other, b), (None, b)], k) == profiles.Profile({"a": 1}, F1, 1)
    assert profiles.latest([(k, a), (other, a), (k, b)], k) == profiles.Profile(None, F2, 2)
    assert profiles.latest([(k, a), (k, None)], k) is None
    assert profiles.latest([(other, a)], k) is None
