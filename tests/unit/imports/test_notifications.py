"""SQS message bodies: S3 event notifications, the test event, SNS envelopes, and every unreadable shape."""

import copy
import json

import pytest

from stream.imports.notifications import (
    IgnoredRecord,
    MessageKind,
    Parsed,
    S3Object,
    UnreadableReason,
    event_time_ms,
    parse_message,
    sequencer_after,
)

MESSAGE_ID = "5fea7756-0ea4-451a-a703-a558b933e274"

# FORMATS.md §5.1, as written there
RECORD = {
    "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-west-2",
    "eventTime": "2024-03-09T07:15:02.123Z", "eventName": "ObjectCreated:Put",
    "userIdentity": {"principalId": "AIDAEXAMPLE"},
    "requestParameters": {"sourceIPAddress": "10.0.0.1"},
    "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "..."},
    "s3": {"s3SchemaVersion": "1.0", "configurationId": "amp-import",
           "bucket": {"name": "my-bucket", "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                      "arn": "arn:aws:s3:::my-bucket"},
           "object": {"key": "exports/2024-03-09/part+1%23a.json.gz", "size": 1048577,
                      "eTag": "d41d8cd98f00b204e9800998ecf8427e", "versionId": "...",
                      "sequencer": "0055AED6DCD90281E5"}},
}
TEST_EVENT = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2014-10-13T15:57:02.089Z",
              "Bucket": "bucketname", "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5..."}
EXPECTED = S3Object(bucket="my-bucket", key="exports/2024-03-09/part 1#a.json.gz", size=1048577,
                    etag="d41d8cd98f00b204e9800998ecf8427e", sequencer="0055AED6DCD90281E5", version_id="...",
                    event_name="ObjectCreated:Put", event_time_ms=1709968502123)


def record(**changes) -> dict:
    """The reference record with changes: a double underscore reaches inside (s3__object__key), None removes."""
    out = copy.deepcopy(RECORD)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = out
        for name in parents:
            target = target[name]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return out


def body(*records) -> str:
    return json.dumps({"Records": list(records)})


def sns(message: dict, kind: str = "Notification") -> str:
    return json.dumps({"Type": kind, "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
                       "TopicArn": "arn:aws:sns:us-west-2:123456789012:imports", "Subject": "Amazon S3 Notification",
                       "Message": json.dumps(message), "Timestamp": "2024-03-09T07:15:02.200Z"})


def test_the_reference_record_becomes_an_s3_object_with_its_key_decoded():
    assert parse_message(body(RECORD), MESSAGE_ID) == Parsed(MessageKind.RECORDS, objects=(EXPECTED,))


@pytest.mark.parametrize("raw, key", [
    ("red+flower.jpg", "red flower.jpg"),
    ("a%2Bb.json", "a+b.json"),
    ("caf%C3%A9/%E2%82%AC+1.csv", "café/€ 1.csv"),
    ("plain/key.parquet", "plain/key.parquet"),
])
def test_keys_are_form_decoded(raw, key):
    parsed = parse_message(body(record(s3__object__key=raw)), MESSAGE_ID)
    assert [o.key for o in parsed.objects] == [key]


def test_the_test_event_is_acknowledged_and_ignored():
    assert parse_message(json.dumps(TEST_EVENT), MESSAGE_ID) == Parsed(MessageKind.TEST_EVENT)


def test_sns_envelopes_are_unwrapped():
    assert parse_message(sns({"Records": [RECORD]}), MESSAGE_ID).objects == (EXPECTED,)
    assert parse_message(sns(TEST_EVENT), MESSAGE_ID).kind is MessageKind.TEST_EVENT


def test_sns_messages_other_than_notifications_are_unreadable():
    parsed = parse_message(sns({}, kind="SubscriptionConfirmation"), MESSAGE_ID)
    assert parsed.kind is MessageKind.UNREADABLE
    (problem,) = parsed.unreadable
    assert problem.reason is UnreadableReason.NOT_S3_EVENT
    assert MESSAGE_ID in problem.message and "SubscriptionConfirmation" in problem.message


def test_an_sns_notification_without_json_inside_is_unreadable():
    envelope = json.dumps({"Type": "Notification", "Message": "hello"})
    (problem,) = parse_message(envelope, MESSAGE_ID).unreadable
    assert problem.reason is UnreadableReason.NOT_JSON


def test_events_other_than_creations_are_ignored_with_their_name():
    removed = record(eventName="ObjectRemoved:Delete", s3__object__size=None, s3__object__eTag=None)
    parsed = parse_message(body(removed, RECORD, record(eventName="ObjectTagging:Put")), MESSAGE_ID)
    assert parsed.objects == (EXPECTED,)
    assert parsed.ignored == (
        IgnoredRecord("ObjectRemoved:Delete", "my-bucket", "exports/2024-03-09/part 1#a.json.gz"),
        IgnoredRecord("ObjectTagging:Put", "my-bucket", "exports/2024-03-09/part 1#a.json.gz"),
    )


@pytest.mark.parametrize("name", ["ObjectCreated:CompleteMultipartUpload", "ObjectCreated:Copy",
                                  "ObjectCreated:Post"])
def test_every_kind_of_creation_counts(name):
    assert [o.event_name for o in parse_message(body(record(eventName=name)), MESSAGE_ID).objects] == [name]


def test_an_s3_prefix_on_the_event_name_is_dropped():
    parsed = parse_message(body(record(eventName="s3:ObjectCreated:Put", eventSource="minio:s3")), MESSAGE_ID)
    assert parsed.objects == (EXPECTED,)


@pytest.mark.parametrize("version", ["2.0", "2.1", "2.2", "2.3", "2.10", "2"])
def test_any_minor_version_of_major_version_2_is_read(version):
    assert parse_message(body(record(eventVersion=version)), MESSAGE_ID).objects == (EXPECTED,)


def test_unknown_fields_are_ignored():
    extra = record(glacierEventData={"restoreEventData": {}}, s3__object__newField=1, newTopLevel=[1])
    assert parse_message(body(extra), MESSAGE_ID).objects == (EXPECTED,)


@pytest.mark.parametrize("version", ["3.0", "1.0", "x"])
def test_a_record_of_another_major_version_is_unreadable_and_the_others_are_read(version):
    parsed = parse_message(body(record(eventVersion=version), RECORD), MESSAGE_ID)
    assert parsed.kind is MessageKind.RECORDS
    assert parsed.objects == (EXPECTED,)
    (problem,) = parsed.unreadable
    assert problem.reason is UnreadableReason.UNSUPPORTED_VERSION
    assert problem.message.startswith(f"SQS message {MESSAGE_ID}: Records[0].eventVersion is {version!r}")


@pytest.mark.parametrize("changes, path", [
    ({"eventVersion": None}, "Records[0].eventVersion"),
    ({"eventName": None}, "Records[0].eventName"),
    ({"s3": None}, "Records[0].s3 "),
    ({"s3__bucket__name": None}, "Records[0].s3.bucket.name"),
    ({"s3__object__key": ""}, "Records[0].s3.object.key"),
    ({"s3__object__key": "%FF.json"}, "Records[0].s3.object.key"),
    ({"s3__object__size": "12"}, "Records[0].s3.object.size"),
    ({"s3__object__size": True}, "Records[0].s3.object.size"),
    ({"s3__object__sequencer": 12}, "Records[0].s3.object.sequencer"),
    ({"eventTime": "2024-03-09 07:15:02"}, "Records[0].eventTime"),
    ({"eventTime": "2024-13-09T07:15:02Z"}, "Records[0].eventTime"),
])
def test_a_bad_record_is_unreadable_and_named_by_its_path(changes, path):
    (problem,) = parse_message(body(record(**changes)), MESSAGE_ID).unreadable
    assert problem.reason is UnreadableReason.BAD_RECORD
    assert problem.message.startswith(f"SQS message {MESSAGE_ID}: {path}")


def test_a_record_that_is_not_an_object_is_unreadable():
    (problem,) = parse_message(body("nope", RECORD), MESSAGE_ID).unreadable
    assert (problem.reason, problem.message) == (
        UnreadableReason.BAD_RECORD, f"SQS message {MESSAGE_ID}: Records[0] is not an object")


@pytest.mark.parametrize("text, reason", [
    ("not json at all", UnreadableReason.NOT_JSON),
    ("", UnreadableReason.NOT_JSON),
    ("[1, 2]", UnreadableReason.NOT_S3_EVENT),
    ('{"Records": {}}', UnreadableReason.NOT_S3_EVENT),
    # an EventBridge event: a different shape altogether
    ('{"version": "0", "detail-type": "Object Created", "source": "aws.s3", "detail": {}}',
     UnreadableReason.NOT_S3_EVENT),
])
def test_a_body_that_is_no_s3_notification_is_unreadable(text, reason):
    parsed = parse_message(text, MESSAGE_ID)
    assert parsed.kind is MessageKind.UNREADABLE
    (problem,) = parsed.unreadable
    assert problem.reason is reason
    assert problem.message.startswith(f"SQS message {MESSAGE_ID}: ")


def test_an_empty_record_list_holds_nothing():
    assert parse_message('{"Records": []}', MESSAGE_ID) == Parsed(MessageKind.RECORDS)


def test_optional_object_fields_may_be_absent_or_null_and_quotes_leave_the_etag():
    parsed = parse_message(body(record(s3__object__versionId=None, s3__object__sequencer=None, s3__object__size=None,
                                       s3__object__eTag='"abc"')), MESSAGE_ID)
    (obj,) = parsed.objects
    assert (obj.size, obj.etag, obj.sequencer, obj.version_id) == (None, "abc", None, None)


@pytest.mark.parametrize("a, b, after", [
    ("0055AED6DCD90281E5", "0055AED6DCD90281E4", True),
    ("0055AED6DCD90281E4", "0055AED6DCD90281E5", False),
    ("0055AED6DCD90281E5", "0055AED6DCD90281E5", False),
    ("0055AED6DCD90281E5", "0055AED6DCD90281E500", False),  # equal once padded
    ("0055AED6DCD90281E501", "0055AED6DCD90281E5", True),
    ("0056", "0055AED6DCD90281E5", True),  # the shorter one is padded, not compared as shorter
    ("0055", "0055AED6DCD90281E5", False),
    ("0055aed6dcd90281e5", "0055AED6DCD90281E4", True),
])
def test_sequencers_of_one_key_are_ordered_after_right_padding_with_zeros(a, b, after):
    assert sequencer_after(a, b) is after


@pytest.mark.parametrize("text, ms", [
    ("2024-03-09T07:15:02.123Z", 1709968502123),
    ("2024-03-09T07:15:02Z", 1709968502000),
    ("2024-03-09T07:15:02.5Z", 1709968502500),
    ("2024-03-09T07:15:02.123999999Z", 1709968502123),
    ("2024-03-09T09:15:02.123+02:00", 1709968502123),
    ("2024-03-09T02:15:02.123-05:00", 1709968502123),
    ("1969-12-31T23:59:59.500Z", -500),
])
def test_event_times_become_epoch_milliseconds(text, ms):
    assert event_time_ms(text) == ms


@pytest.mark.parametrize("text", ["2024-03-09", "2024-03-09T07:15:02", "2024-02-30T07:15:02Z", " 2024-03-09T07:15:02Z"])
def test_other_event_times_are_refused(text):
    with pytest.raises(ValueError, match="2024-0"):
        event_time_ms(text)
