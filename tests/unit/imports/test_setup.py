"""The pure parts of ``stream import setup``/``check``: the notification plan, the queue policy, the wording."""

import pytest
import yaml
from botocore.exceptions import ClientError
from click.testing import CliRunner

from stream.imports.setup import (
    CheckLine,
    NotificationConflict,
    exit_code,
    import_group,
    notification_plan,
    problem_of,
    queue_policy,
    same_notifications,
    sending_statement,
)
from stream.s3.client import Target

Q = "arn:aws:sqs:us-east-1:123456789012:imports"
OTHER_Q = "arn:aws:sqs:us-east-1:123456789012:audit"
TOPIC = "arn:aws:sns:us-east-1:123456789012:deletes"
OURS = {"Id": "stream-clicks", "QueueArn": Q, "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "events/"}]}}}
AUDIT = {"Id": "audit", "QueueArn": OTHER_Q, "Events": ["s3:ObjectCreated:Put"],
         "Filter": {"Key": {"FilterRules": [{"Name": "Prefix", "Value": "logs/"}]}}}
DELETES = {"Id": "deletes", "TopicArn": TOPIC, "Events": ["s3:ObjectRemoved:*"]}


def plan(existing, prefix="events/", merge=False):
    return notification_plan(existing, Q, prefix, source="clicks", bucket="acme-in", merge=merge)


def test_an_empty_bucket_gets_one_queue_configuration_for_new_objects_under_the_prefix():
    assert plan({}) == {"QueueConfigurations": [OURS]}
    assert plan({}, prefix="") == {"QueueConfigurations": [
        {"Id": "stream-clicks", "QueueArn": Q, "Events": ["s3:ObjectCreated:*"]}]}
    # a GetBucketNotificationConfiguration answer: its ResponseMetadata is not part of the configuration
    assert plan({"ResponseMetadata": {"HTTPStatusCode": 200}}) == {"QueueConfigurations": [OURS]}


def test_a_bucket_with_any_configuration_is_refused_without_merge_naming_each_entry():
    existing = {"QueueConfigurations": [AUDIT], "TopicConfigurations": [DELETES], "EventBridgeConfiguration": {}}
    with pytest.raises(NotificationConflict) as e:
        plan(existing)
    assert str(e.value) == (
        "bucket acme-in already has a notification configuration (queue configuration audit: s3:ObjectCreated:Put "
        f"under logs/ -> {OTHER_Q}; topic configuration deletes: s3:ObjectRemoved:* of every key -> {TOPIC}; "
        "EventBridge delivery (every event to the account's default event bus)), which putting stream's would "
        "replace: rerun with --merge to keep them and add stream-clicks")
    lam = {"LambdaFunctionConfigurations": [{"Id": "thumbs", "LambdaFunctionArn": "arn:aws:lambda:us-east-1:1:fn",
                                             "Events": ["s3:ObjectCreated:*"],
                                             "Filter": {"Key": {"FilterRules": [{"Name": "suffix",
                                                                                 "Value": ".jpg"}]}}}]}
    with pytest.raises(NotificationConflict, match=r"\(Lambda configuration thumbs: s3:ObjectCreated:\* ending "
                       r"\.jpg -> arn:aws:lambda:us-east-1:1:fn\), which putting stream's would replace: rerun with "
                       r"--merge to keep it and add stream-clicks$"):
        plan(lam)


def test_merge_keeps_every_other_entry_and_adds_ours():
    existing = {"QueueConfigurations": [AUDIT], "TopicConfigurations": [DELETES], "EventBridgeConfiguration": {}}
    assert plan(existing, merge=True) == {"QueueConfigurations": [AUDIT, OURS], "TopicConfigurations": [DELETES],
                                          "EventBridgeConfiguration": {}}


def test_ours_is_replaced_in_place_by_its_id_when_the_prefix_or_queue_changed():
    old = {**OURS, "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "old/"}]}}}
    # ours alone: no --merge needed to replace it
    assert plan({"QueueConfigurations": [old]}) == {"QueueConfigurations": [OURS]}
    assert plan({"QueueConfigurations": [old, AUDIT]}, merge=True) == {"QueueConfigurations": [OURS, AUDIT]}
    with pytest.raises(NotificationConflict, match="queue configuration audit"):
        plan({"QueueConfigurations": [old, AUDIT]})


def test_running_again_changes_nothing_even_as_s3_words_it_back():
    # S3 may answer "Prefix" and order the events its way; the configuration is the same
    answered = {"QueueConfigurations": [AUDIT, {**OURS, "Filter": {"Key": {"FilterRules": [
        {"Name": "Prefix", "Value": "events/"}]}}}], "TopicConfigurations": [DELETES]}
    assert plan(answered) == answered                       # no --merge needed: nothing is replaced
    assert plan(answered, merge=True) == answered
    assert same_notifications(plan(answered), answered)
    assert same_notifications({"QueueConfigurations": [OURS]}, {"QueueConfigurations": [OURS]})
    assert not same_notifications(plan({}), {})


def test_a_merge_s3_would_refuse_for_overlapping_keys_is_refused_naming_the_other_entry():
    everything = {"Id": "audit", "QueueArn": OTHER_Q, "Events": ["s3:ObjectCreated:Put"]}
    deeper = {**AUDIT, "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "events/2024/"}]}}}
    for other in (everything, deeper):
        with pytest.raises(NotificationConflict) as e:
            plan({"QueueConfigurations": [other]}, merge=True)
        assert str(e.value).startswith("bucket acme-in: queue configuration audit: s3:ObjectCreated:Put ")
    with pytest.raises(NotificationConflict) as e:
        plan({"QueueConfigurations": [everything]}, merge=True)
    assert str(e.value) == (
        f"bucket acme-in: queue configuration audit: s3:ObjectCreated:Put of every key -> {OTHER_Q} takes "
        "s3:ObjectCreated events of keys that stream-clicks would take too (under events/), and S3 sends an event "
        "of a key to one destination only: narrow its filter or remove it, then rerun")
    # other events, or other keys, do not overlap
    assert plan({"TopicConfigurations": [DELETES], "QueueConfigurations": [AUDIT]}, merge=True)[
        "QueueConfigurations"] == [AUDIT, OURS]


STATEMENT = {"Sid": "stream-s3-acme-in", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
             "Action": "sqs:SendMessage", "Resource": Q,
             "Condition": {"ArnEquals": {"aws:SourceArn": "arn:aws:s3:::acme-in"},
                           "StringEquals": {"aws:SourceAccount": "123456789012"}}}


def test_the_queue_policy_lets_s3_send_from_the_bucket_of_the_account():
    assert queue_policy(Q, "acme-in", "123456789012") == {"Version": "2012-10-17", "Statement": [STATEMENT]}
    without = queue_policy(Q, "acme-in", None)["Statement"][0]
    assert without["Condition"] == {"ArnEquals": {"aws:SourceArn": "arn:aws:s3:::acme-in"}}
    cn = "arn:aws-cn:sqs:cn-north-1:123456789012:imports"
    assert queue_policy(cn, "acme-in", None)["Statement"][0]["Condition"] == {
        "ArnEquals": {"aws:SourceArn": "arn:aws-cn:s3:::acme-in"}}


def test_the_queue_policy_merges_by_sid_and_never_drops_other_statements():
    theirs = {"Sid": "consumers", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/r"},
              "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"], "Resource": Q}
    other_bucket = {**STATEMENT, "Sid": "stream-s3-acme-other",
                    "Condition": {"ArnEquals": {"aws:SourceArn": "arn:aws:s3:::acme-other"}}}
    stale = {**STATEMENT, "Condition": {"ArnEquals": {"aws:SourceArn": "arn:aws:s3:::acme-in"}}}
    existing = {"Version": "2012-10-17", "Id": "queue-policy", "Statement": [theirs, stale, other_bucket]}
    assert queue_policy(Q, "acme-in", "123456789012", existing) == {
        "Version": "2012-10-17", "Id": "queue-policy", "Statement": [theirs, STATEMENT, other_bucket]}
    # a single statement written as an object, not a list
    assert queue_policy(Q, "acme-in", "123456789012", {"Version": "2008-10-17", "Statement": theirs}) == {
        "Version": "2008-10-17", "Statement": [theirs, STATEMENT]}


def test_a_statement_letting_s3_send_from_the_bucket_is_recognised_however_it_is_written():
    bucket = "arn:aws:s3:::acme-in"
    assert sending_statement(queue_policy(Q, "acme-in", None), bucket)["Sid"] == "stream-s3-acme-in"
    console = {"Statement": [{"Sid": "example-statement-ID", "Effect": "Allow",
                              "Principal": {"Service": ["s3.amazonaws.com"]}, "Action": ["SQS:SendMessage"],
                              "Resource": Q, "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:s3:*:*:acme-*"}}}]}
    assert sending_statement(console, bucket)["Sid"] == "example-statement-ID"
    assert sending_statement(queue_policy(Q, "acme-other", None), bucket) is None
    deny = {"Statement": [{**STATEMENT, "Effect": "Deny"}]}
    assert sending_statement(deny, bucket) is None
    assert sending_statement(None, bucket) is None


def test_check_lines_render_as_stream_check_does_and_any_failure_exits_1():
    ok = CheckLine("list s3://acme-in/events/", True, "first key events/a.json")
    skipped = CheckLine("read s3://acme-in/events/", True, "no object under the prefix yet", probed=False)
    bad = CheckLine("queue policy", False, "it does not let s3.amazonaws.com send", "run `stream import setup x`")
    assert ok.render() == "list s3://acme-in/events/: ok (first key events/a.json)"
    assert skipped.render() == "read s3://acme-in/events/: not probed (no object under the prefix yet)"
    assert bad.render() == "queue policy: it does not let s3.amazonaws.com send: run `stream import setup x`"
    assert CheckLine("queue", False, "it failed").render() == "queue: it failed"
    assert exit_code([ok, skipped]) == 0
    assert exit_code([ok, bad, skipped]) == 1


def _error(code, message, op, status=400):
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       op)


def test_sqs_and_read_failures_name_the_missing_permission_and_the_cure():
    t = Target("clicks", "acme-in", "us-east-1")
    role = Target("clicks", "acme-in", "us-east-1", role_arn="arn:aws:iam::123456789012:role/reader")
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/imports"
    assert problem_of(_error("AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist.",
                             "GetQueueAttributes"), t, "sqs:GetQueueAttributes", Q, url).message == (
        f"queue {url} does not exist (or these credentials cannot see it): check queue_url and queue_region")
    for code in ("AccessDenied", "AccessDeniedException", "403"):
        p = problem_of(_error(code, "not authorized", "SetQueueAttributes", 403), role, "sqs:SetQueueAttributes", Q)
        assert (p.reason, p.missing, p.resource) == ("access_denied", "sqs:SetQueueAttributes", Q)
        assert p.message == (f"missing sqs:SetQueueAttributes on {Q} (as role arn:aws:iam::123456789012:role/reader): "
                             "grant it to role arn:aws:iam::123456789012:role/reader (and check that the queue "
                             "policy does not deny it)")
    p = problem_of(_error("AccessDenied", "Access Denied", "ListObjectsV2", 403), t, "s3:ListBucket",
                   "arn:aws:s3:::acme-in")
    assert p.message == ("missing s3:ListBucket on arn:aws:s3:::acme-in: grant it to this worker's identity (and "
                         "check that the bucket policy does not deny it)")
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    p = problem_of(_error("AccessDenied", f"User: x is not authorized to perform: kms:Decrypt on resource: {key}",
                          "GetObject", 403), t, "s3:GetObject", "arn:aws:s3:::acme-in/events/*")
    assert (p.reason, p.missing, p.resource) == ("kms_denied", "kms:Decrypt", key)
    assert p.message == (f"missing kms:Decrypt on {key}: allow it to this worker's identity in the key's policy "
                         "(and in the identity's policy)")
    # everything else is worded by the S3 error table
    p = problem_of(_error("NoSuchBucket", "The specified bucket does not exist", "ListObjectsV2", 404), t,
                   "s3:ListBucket", "arn:aws:s3:::acme-in")
    assert p.message == "bucket acme-in does not exist (or these credentials cannot see it): check the bucket name"


def test_an_unknown_source_is_named_with_the_known_ones(tmp_path):
    converter = {"converterConfig": {"convertToAmplitudeFunc": {"event_type": "event", "user_id": "user"}}}
    cfg = tmp_path / "stream.yaml"
    cfg.write_text(yaml.safe_dump({"projects": [{"id": 1}], "sources": [
        {"name": n, "project": 1, "bucket": "acme-in", "converter": converter} for n in ("clicks", "orders")]}))
    for command in ("setup", "check"):
        r = CliRunner().invoke(import_group, [command, "views", "-c", str(cfg)])
        assert (r.exit_code, r.output) == (1, f"Error: no source named 'views' in {cfg}; sources: clicks, orders\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("projects: [{id: 1}]\n")
    r = CliRunner().invoke(import_group, ["check", "views", "-c", str(empty)])
    assert r.output == f"Error: no source named 'views' in {empty}; sources: (none)\n"
