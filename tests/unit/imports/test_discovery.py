"""Discovery's pure parts: which keys a source imports, SQS messages to records, and the scan planner."""

import json
from datetime import UTC, datetime

import pytest

from stream.imports import discovery
from stream.imports.discovery import (
    MessagePlan,
    ScanState,
    from_notification,
    plan_message,
    sources_on_queue,
    wanted,
)
from stream.imports.files import ImportFile
from stream.imports.notifications import S3Object
from stream.settings import Settings, SourceSettings

CONVERT = {"convertToAmplitudeFunc": {"event_type": "event", "user_id": "user"}}


def source(name="src", bucket="bkt", prefix="in/", pattern=None, filter_pattern=None, queue_url=None, **extra):
    converter = {"converterConfig": CONVERT}
    if pattern is not None:
        converter["keyValidatorConfig"] = {"filterPattern": pattern}
    return SourceSettings(name=name, project=7, bucket=bucket, prefix=prefix, converter=converter,
                          filter_pattern=filter_pattern, queue_url=queue_url, **extra)


def created(key, bucket="bkt", event="ObjectCreated:Put", size=12, etag="0123abcd", sequencer="00AB"):
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": "2024-03-09T07:15:02.123Z",
            "eventName": event,
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": size, "eTag": etag,
                                                           "sequencer": sequencer}}}


def body(*records):
    return json.dumps({"Records": list(records)})


def listed(key, etag='"e1"', size=10, modified=datetime(2024, 3, 9, 7, 15, 2, 123000, tzinfo=UTC)):
    return {"Key": key, "ETag": etag, "Size": size, "LastModified": modified, "StorageClass": "STANDARD"}


def scanned(key, etag="e1", size=10, ms=1709968502123, name="src", bucket="bkt"):
    return ImportFile(source=name, bucket=bucket, key=key, event_time_ms=ms, found_by="scan", size=size, etag=etag)


# --- wanted -------------------------------------------------------------------------------------------------------

def test_without_a_pattern_every_key_under_the_prefix_is_wanted_but_folders():
    src = source()
    assert [wanted(src, k) for k in ("in/a.json", "in/deep/b.csv", "in/", "in/deep/", "out/a.json", "ina.json")] == [
        True, True, False, False, False, False]


def test_an_empty_prefix_takes_every_key_of_the_bucket():
    src = source(prefix="")
    assert [wanted(src, k) for k in ("a.json", "x/y.json", "x/")] == [True, True, False]


def test_the_converters_filter_pattern_must_match_the_whole_key_prefix_included():
    src = source(pattern=r"in/\d{4}/.*\.json\.gz")
    assert [wanted(src, k) for k in ("in/2024/a.json.gz", "in/2024/a.json.gz.tmp", "x/in/2024/a.json.gz",
                                     "in/24/a.json.gz", "in/2024/a.json")] == [True, False, False, False, False]


def test_the_sources_own_filter_pattern_is_a_java_regex_matched_in_full():
    src = source(filter_pattern=r"in/\w+_\d{4}-\d{2}-\d{2}\.json\.gz")
    assert [wanted(src, k) for k in ("in/events_2024-03-09.json.gz", "in/events_2024-03-09.json.gz.1",
                                     "in/ev-ents_2024-03-09.json.gz")] == [True, False, False]


def test_a_pattern_may_match_the_key_after_the_prefix_as_amplitudes_own_example_does():
    # FORMATS.md 4.3: Amplitude's example pattern names the file alone, no folder
    src = source(prefix="clicks/", pattern=r"\w+\_\d{4}-\d{2}-\d{2}.json.gz")
    assert [wanted(src, k) for k in ("clicks/events_2024-03-09.json.gz", "clicks/deep/events_2024-03-09.json.gz",
                                     "clicks/events_2024-03-09.json.gz.tmp", "events_2024-03-09.json.gz",
                                     "other/events_2024-03-09.json.gz")] == [True, False, False, False, False]
    # and the one that names the folders still matches the whole key
    src = source(prefix="folder1/", pattern=r"folder1/folder2/ds=202011[1-2][0-9]/.*\.parquet")
    assert [wanted(src, k) for k in ("folder1/folder2/ds=20201115/a.parquet", "folder1/folder2/ds=20201135/a.parquet",
                                     "folder2/ds=20201115/a.parquet")] == [True, False, False]


def test_why_a_key_is_not_a_file_of_the_source_names_the_prefix_and_the_pattern():
    from stream.imports.discovery import outside
    src = source(prefix="in/", pattern=r".*\.json\.gz")
    assert outside(src, "in/a.json.gz") is None
    assert outside(src, "secrets/db.json.gz") == (
        "s3://bkt/secrets/db.json.gz is not a file of source src: its files are the keys under 'in/', matching the "
        "filter pattern '.*\\\\.json\\\\.gz' in full (the whole key or the key after the prefix), and this key is not "
        "one of them; name a key of the source")
    assert outside(source(prefix=""), "x/") == (
        "s3://bkt/x/ is not a file of source src: its files are the keys in the bucket, and this key is a folder, "
        "not a file; name a key of the source")


def test_a_pattern_does_not_widen_the_prefix():
    src = source(prefix="in/", pattern=".*")
    assert [wanted(src, k) for k in ("in/a", "out/a")] == [True, False]


# --- from_notification --------------------------------------------------------------------------------------------

def test_a_created_object_of_the_source_becomes_an_sqs_discovery():
    obj = S3Object(bucket="bkt", key="in/a b#1.json.gz", size=12, etag="0123abcd", sequencer="00AB",
                   version_id=None, event_name="ObjectCreated:Put", event_time_ms=1709968502123)
    assert from_notification(source(), obj) == ImportFile(
        source="src", bucket="bkt", key="in/a b#1.json.gz", event_time_ms=1709968502123, found_by="sqs", size=12,
        etag="0123abcd", sequencer="00AB")


@pytest.mark.parametrize("bucket,key", [("other", "in/a.json"), ("bkt", "out/a.json"), ("bkt", "in/dir/"),
                                        ("bkt", "in/a.csv")])
def test_objects_of_other_buckets_and_unwanted_keys_are_no_discovery(bucket, key):
    obj = S3Object(bucket=bucket, key=key, size=1, etag=None, sequencer=None, version_id=None,
                   event_name="ObjectCreated:Put", event_time_ms=0)
    assert from_notification(source(pattern=r".*\.json"), obj) is None


# --- one SQS message ----------------------------------------------------------------------------------------------

def test_a_test_event_is_deleted_at_once():
    plan = plan_message([source()], json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}), "m1")
    assert (plan, plan.delete_now) == (MessagePlan("test_event"), True)


def test_records_are_form_decoded_and_filtered_and_the_rest_skipped():
    plan = plan_message([source(pattern=r".*\.json\.gz")], body(
        created("in/a+b%2Fx%231.json.gz"),
        created("in/notes.txt"),
        created("out/c.json.gz"),
        created("in/d.json.gz", event="ObjectRemoved:Delete"),
    ), "m1")
    assert plan.outcome == "records" and not plan.delete_now and not plan.problems
    assert plan.records == (ImportFile(source="src", bucket="bkt", key="in/a b/x#1.json.gz",
                                       event_time_ms=1709968502123, found_by="sqs", size=12, etag="0123abcd",
                                       sequencer="00AB"),)
    assert len(plan.skipped) == 3


def test_a_message_announcing_nothing_wanted_is_ignored_and_deleted_at_once():
    plan = plan_message([source()], body(created("out/a.json"), created("in/b.json", bucket="other"),
                                         created("in/c.json", event="ObjectRemoved:Delete")), "m1")
    assert (plan.outcome, plan.records, plan.delete_now) == ("ignored", (), True)


def test_an_unreadable_body_stays_on_the_queue():
    plan = plan_message([source()], "hello", "m1")
    assert (plan.outcome, plan.delete_now, plan.records) == ("unreadable", False, ())
    assert plan.problems == (("SQS message m1: the body is not JSON (it starts with 'hello'); only S3 event "
                              "notifications should be sent to this queue"),)


def test_a_bad_record_keeps_the_message_but_its_good_records_are_sent():
    bad = created("in/b.json")
    del bad["eventTime"]
    plan = plan_message([source()], body(created("in/a.json"), bad), "m1")
    assert (plan.outcome, plan.delete_now, [r.key for r in plan.records]) == ("unreadable", False, ["in/a.json"])
    assert plan.problems == ("SQS message m1: Records[1].eventTime is missing or not a non-empty string",)


def test_every_source_on_a_shared_queue_gets_its_records():
    a, b = source(name="a", prefix="a/"), source(name="b", prefix="")
    plan = plan_message([a, b], body(created("a/1.json"), created("b/2.json")), "m1")
    assert [(r.source, r.key) for r in plan.records] == [("a", "a/1.json"), ("b", "a/1.json"), ("b", "b/2.json")]


def test_the_sources_on_a_queue_are_the_enabled_ones_with_the_same_url():
    q, other = "https://sqs.us-east-1.amazonaws.com/123456789012/q", "https://sqs.us-east-1.amazonaws.com/1/o"
    settings = Settings(projects=[{"id": 7}], sources=[
        source(name="a", queue_url=q), source(name="b", queue_url=q), source(name="c", queue_url=other),
        source(name="d", queue_url=q, enabled=False), source(name="e")])
    assert [s.name for s in sources_on_queue(settings, settings.source("b"))] == ["b", "a"]


# --- the scan planner ---------------------------------------------------------------------------------------------

def test_the_first_listing_is_a_full_pass_then_incremental_until_full_pass_s():
    state = ScanState(full_pass_s=60)
    assert state.next_listing(1_000) == ("full", None)
    assert state.next_listing(1_000) == ("full", None)     # nothing completed yet
    state.remember([scanned("in/b"), scanned("in/a")])
    state.completed("full", 1_000)
    assert state.next_listing(2_000) == ("incremental", "in/b")
    state.completed("incremental", 2_000)
    assert state.next_listing(60_999) == ("incremental", "in/b")
    assert state.next_listing(61_000) == ("full", None)
    assert state.next_listing(61_000, full_pass_s=120) == ("incremental", "in/b")


def test_an_incremental_listing_with_nothing_found_yet_starts_at_the_prefix():
    state = ScanState()
    state.completed("full", 0)
    assert (state.next_listing(1), state.last_full_ms) == (("incremental", None), 0)


def test_observe_returns_wanted_objects_as_scan_discoveries():
    src = source(pattern=r".*\.json")
    found = ScanState().observe(src, [
        listed("in/a.json", etag='"9b2cf535f27731c974343645a3985328"', size=3),
        listed("in/dir/"),
        listed("in/b.csv"),
        listed("in/c.json", etag='"abc-2"', modified=datetime(2024, 3, 9, 7, 15, 2)),   # naive: UTC
    ])
    assert found == [scanned("in/a.json", etag="9b2cf535f27731c974343645a3985328", size=3),
                     scanned("in/c.json", etag="abc-2", ms=1709968502000)]


def test_only_remembered_discoveries_are_left_out_of_later_listings():
    src, state = source(), ScanState()
    first = state.observe(src, [listed("in/a"), listed("in/b")])
    assert state.observe(src, [listed("in/a"), listed("in/b")]) == first     # not acknowledged: sent again
    state.remember(first)
    assert state.observe(src, [listed("in/a"), listed("in/b"), listed("in/c")]) == [scanned("in/c")]
    assert state.start_after == "in/b"


def test_an_object_written_again_with_another_etag_is_discovered_again():
    src, state = source(), ScanState()
    state.remember(state.observe(src, [listed("in/a", etag='"e1"')]))
    assert state.observe(src, [listed("in/a", etag='"e2"')]) == [scanned("in/a", etag="e2")]


def test_the_memory_forgets_the_least_recently_listed_keys_beyond_its_cap():
    src, state = source(), ScanState(memory=2)
    state.remember(state.observe(src, [listed("in/a"), listed("in/b")]))
    assert state.observe(src, [listed("in/a")]) == []          # a is now the most recently listed
    state.remember(state.observe(src, [listed("in/c")]))        # b is forgotten
    assert len(state) == 2
    assert state.observe(src, [listed("in/a"), listed("in/b"), listed("in/c")]) == [scanned("in/b")]
    assert state.start_after == "in/c"


def test_start_after_is_the_greatest_key_remembered_whatever_the_order():
    state = ScanState()
    state.remember([scanned("in/m"), scanned("in/z"), scanned("in/a")])
    state.remember([scanned("in/b")])
    assert state.start_after == "in/z"


def test_a_memory_below_one_key_is_refused():
    with pytest.raises(ValueError, match="at least one key"):
        ScanState(memory=0)


def test_the_default_memory_is_documented():
    assert discovery.SCAN_MEMORY == 100_000 and ScanState().memory == 100_000 and ScanState().full_pass_s == 3600
