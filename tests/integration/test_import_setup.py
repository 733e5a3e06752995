"""``stream import setup`` and ``stream import check`` against moto_server's S3 and SQS: the notification S3 really
delivers after set-up, the refusal of a bucket that already notifies someone else, and the probes' exact lines."""

import json
import os
import uuid

import boto3
import pytest
import yaml
from click.testing import CliRunner

from stream.imports.notifications import MessageKind, parse_message
from stream.imports.setup import import_group

pytestmark = pytest.mark.integration

ACCOUNT = "123456789012"   # moto's
CONVERTER = {"converterConfig": {"convertToAmplitudeFunc": {"event_type": "event", "user_id": "user"}}}


def _aws(endpoint):
    return boto3.client("s3", endpoint_url=endpoint), boto3.client("sqs", endpoint_url=endpoint)


def _config(tmp_path, stack, sources, endpoint=None, name="stream.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": stack["bootstrap"]}, "s3": {"endpoint_url": endpoint or stack["s3"]},
        "projects": [{"id": 1}],
        "sources": [{"project": 1, "converter": CONVERTER, **s} for s in sources]}))
    return str(path)


def _bucket_and_queue(s3, sqs, run):
    bucket = f"imp-{run}"
    s3.create_bucket(Bucket=bucket)
    url = sqs.create_queue(QueueName=f"imp-{run}")["QueueUrl"]
    return bucket, url, f"arn:aws:sqs:us-east-1:{ACCOUNT}:imp-{run}"


def _invoke(*args, env=None):
    return CliRunner().invoke(import_group, list(args), env=env)


def _receive(sqs, url):
    """Every message now in the queue, deleted as the importer would once it is done with them."""
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not got:
            return bodies
        for m in got:
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def _policy(sqs, url):
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"]).get("Attributes", {})
    return json.loads(attrs["Policy"]) if "Policy" in attrs else None


def test_setup_makes_the_bucket_notify_the_queue_of_new_objects_and_running_it_again_changes_nothing(stack, tmp_path):
    s3, sqs = _aws(stack["s3"])
    run = uuid.uuid4().hex[:8]
    bucket, url, arn = _bucket_and_queue(s3, sqs, run)
    cfg = _config(tmp_path, stack, [{"name": "clicks", "bucket": bucket, "prefix": "events/", "queue_url": url}])

    r = _invoke("setup", "clicks", "-c", cfg)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        f"queue {url}: {arn}",
        (f"queue policy: added statement stream-s3-{bucket} (s3.amazonaws.com may send messages from "
         f"arn:aws:s3:::{bucket} of account {ACCOUNT})"),
        f"notification s3://{bucket}: added stream-clicks: s3:ObjectCreated:* under events/ -> {arn}",
        (f"notification s3://{bucket}: S3 sent the queue an s3:TestEvent message, which the importer acknowledges "
         "and ignores"),
        "source clicks: set up"]
    got = s3.get_bucket_notification_configuration(Bucket=bucket)
    got.pop("ResponseMetadata")
    assert got == {"QueueConfigurations": [{
        "Id": "stream-clicks", "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "events/"}]}}}]}
    assert _policy(sqs, url) == {"Version": "2012-10-17", "Statement": [{
        "Sid": f"stream-s3-{bucket}", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"},
                      "StringEquals": {"aws:SourceAccount": ACCOUNT}}}]}

    # delivery works: the test message, then the new object under the prefix (and nothing for other keys)
    assert [parse_message(b, "m").kind for b in _receive(sqs, url)] == [MessageKind.TEST_EVENT]
    s3.put_object(Bucket=bucket, Key="events/2024-03-09/part 1.json", Body=b'{"event": "a", "user": "u"}\n')
    s3.put_object(Bucket=bucket, Key="elsewhere/x.json", Body=b"{}\n")
    parsed = [parse_message(b, "m") for b in _receive(sqs, url)]
    assert [(o.bucket, o.key, o.size, o.event_name) for p in parsed for o in p.objects] == [
        (bucket, "events/2024-03-09/part 1.json", 28, "ObjectCreated:Put")]

    r = _invoke("setup", "clicks", "-c", cfg)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        f"queue {url}: {arn}",
        (f"queue policy: statement stream-s3-{bucket} already in place (s3.amazonaws.com may send messages from "
         f"arn:aws:s3:::{bucket} of account {ACCOUNT})"),
        f"notification s3://{bucket}: stream-clicks: s3:ObjectCreated:* under events/ -> {arn} already in place",
        "source clicks: nothing changed"]
    assert _receive(sqs, url) == []   # no configuration was put: no new test message


def test_a_bucket_that_already_notifies_someone_else_is_refused_unless_merged(stack, tmp_path):
    s3, sqs = _aws(stack["s3"])
    run = uuid.uuid4().hex[:8]
    bucket, url, arn = _bucket_and_queue(s3, sqs, run)
    audit_url = sqs.create_queue(QueueName=f"audit-{run}")["QueueUrl"]
    audit = {"Id": "audit", "QueueArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:audit-{run}",
             "Events": ["s3:ObjectRemoved:*"]}
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [audit]})
    _receive(sqs, audit_url)
    cfg = _config(tmp_path, stack, [{"name": "orders", "bucket": bucket, "prefix": "in/", "queue_url": url}])

    r = _invoke("setup", "orders", "-c", cfg)
    assert r.exit_code == 1
    assert r.output.splitlines() == [
        f"queue {url}: {arn}",
        (f"Error: bucket {bucket} already has a notification configuration (queue configuration audit: "
         f"s3:ObjectRemoved:* of every key -> {audit['QueueArn']}), which putting stream's would replace: rerun with "
         "--merge to keep it and add stream-orders")]
    assert _policy(sqs, url) is None   # refused before anything changed

    ours = {"Id": "stream-orders", "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "in/"}]}}}
    r = _invoke("setup", "orders", "--merge", "--dry-run", "-c", cfg)
    assert r.exit_code == 0, r.output
    statement = {"Sid": f"stream-s3-{bucket}", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
                 "Action": "sqs:SendMessage", "Resource": arn,
                 "Condition": {"ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"},
                               "StringEquals": {"aws:SourceAccount": ACCOUNT}}}
    compact = {"separators": (",", ":")}
    assert r.output.splitlines() == [
        f"queue {url}: {arn}",
        (f"queue policy: would add statement stream-s3-{bucket} (s3.amazonaws.com may send messages from "
         f"arn:aws:s3:::{bucket} of account {ACCOUNT}); the policy to set: "
         f"{json.dumps({'Version': '2012-10-17', 'Statement': [statement]}, **compact)}"),
        (f"notification s3://{bucket}: would add stream-orders: s3:ObjectCreated:* under in/ -> {arn}; the "
         f"configuration to put: {json.dumps({'QueueConfigurations': [audit, ours]}, **compact)}"),
        "source orders: dry run; nothing changed"]
    assert _policy(sqs, url) is None

    r = _invoke("setup", "orders", "--merge", "-c", cfg)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[2] == (
        f"notification s3://{bucket}: added stream-orders: s3:ObjectCreated:* under in/ -> {arn}; kept queue "
        f"configuration audit: s3:ObjectRemoved:* of every key -> {audit['QueueArn']}")
    got = s3.get_bucket_notification_configuration(Bucket=bucket)
    got.pop("ResponseMetadata")
    assert got == {"QueueConfigurations": [audit, ours]}
    assert _policy(sqs, url) == {"Version": "2012-10-17", "Statement": [statement]}

    # set up, it may run again without --merge: nothing of the audit entry would be replaced
    r = _invoke("setup", "orders", "-c", cfg)
    assert (r.exit_code, r.output.splitlines()[-1]) == (0, "source orders: nothing changed")


def test_check_passes_on_a_set_up_source_and_names_a_missing_bucket_or_queue_with_the_cure(stack, tmp_path):
    s3, sqs = _aws(stack["s3"])
    run = uuid.uuid4().hex[:8]
    bucket, url, arn = _bucket_and_queue(s3, sqs, run)
    good = {"name": "clicks", "bucket": bucket, "prefix": "events/", "queue_url": url}
    cfg = _config(tmp_path, stack, [good, {**good, "name": "no-bucket", "bucket": f"gone-{run}"},
                                    {**good, "name": "no-queue", "queue_url": url + "-gone"},
                                    {**good, "name": "scan-only", "queue_url": None}])

    r = _invoke("check", "clicks", "-c", cfg)
    assert r.exit_code == 1
    setup = "run `stream import setup clicks` (with --merge if the bucket sends other notifications)"
    assert r.output.splitlines() == [
        f"list s3://{bucket}/events/: ok (no object yet)",
        (f"read s3://{bucket}/events/: not probed (no object under the prefix yet; s3:GetObject, and kms:Decrypt for "
         "SSE-KMS objects, are probed once there is one)"),
        f"queue {url}: ok ({arn}; 0 message(s) waiting, 0 in flight)",
        (f"queue policy: it does not let s3.amazonaws.com send messages from arn:aws:s3:::{bucket}, so S3 cannot "
         f"deliver the notifications: {setup}"),
        f"notification s3://{bucket}: no notification of the bucket sends to {arn}: {setup}",
        "Error: 2 problem(s) found; see above"]

    assert _invoke("setup", "clicks", "-c", cfg).exit_code == 0
    s3.put_object(Bucket=bucket, Key="events/a.json", Body=b'{"event": "a", "user": "u"}\n')
    r = _invoke("check", "clicks", "-c", cfg)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        f"list s3://{bucket}/events/: ok (first key events/a.json)",
        f"read s3://{bucket}/events/a.json: ok (first byte read)",
        f"queue {url}: ok ({arn}; 2 message(s) waiting, 0 in flight)",   # the test event and events/a.json
        (f"queue policy: ok (statement stream-s3-{bucket} lets s3.amazonaws.com send messages from "
         f"arn:aws:s3:::{bucket})"),
        f"notification s3://{bucket}: ok (stream-clicks: s3:ObjectCreated:* under events/ -> {arn})",
        "all checks passed"]

    r = _invoke("check", "no-bucket", "-c", cfg)
    assert r.exit_code == 1
    assert r.output.splitlines() == [
        (f"list s3://gone-{run}/events/: bucket gone-{run} does not exist (or these credentials cannot see it): "
         "check the bucket name"),
        f"queue {url}: ok ({arn}; 2 message(s) waiting, 0 in flight)",
        (f"queue policy: it does not let s3.amazonaws.com send messages from arn:aws:s3:::gone-{run}, so S3 cannot "
         "deliver the notifications: run `stream import setup no-bucket` (with --merge if the bucket sends other "
         "notifications)"),
        "Error: 2 problem(s) found; see above"]

    r = _invoke("check", "no-queue", "-c", cfg)
    assert r.exit_code == 1
    assert r.output.splitlines() == [
        f"list s3://{bucket}/events/: ok (first key events/a.json)",
        f"read s3://{bucket}/events/a.json: ok (first byte read)",
        (f"queue {url}-gone: queue {url}-gone does not exist (or these credentials cannot see it): check queue_url "
         "and queue_region"),
        "Error: 1 problem(s) found; see above"]
    r = _invoke("setup", "no-queue", "-c", cfg)
    assert r.exit_code == 1
    assert r.output == (f"Error: queue {url}-gone does not exist (or these credentials cannot see it): check "
                        "queue_url and queue_region\n")

    r = _invoke("check", "scan-only", "-c", cfg)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[2:] == [
        ("queue: not probed (none configured: the list scan alone finds files (set sources[3].queue_url and run "
         "`stream import setup scan-only` to be notified of new files))"),
        "all checks passed"]
    r = _invoke("setup", "scan-only", "-c", cfg)
    assert r.exit_code == 1
    assert r.output == ("Error: source scan-only has no queue: create a standard SQS queue in us-east-1 and set "
                        "sources[3].queue_url to its URL\n")


def test_setup_and_check_name_each_missing_permission_when_iam_is_enforced(stack, tmp_path):
    """moto_server enforcing IAM: a reader allowed to list, read the queue and read the bucket's notifications, but
    not to read objects, change the queue policy or put a notification, is told exactly which grant is missing."""
    from stream.devstack.services import start_moto

    def policy(*statements):
        return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})

    moto = start_moto(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": "9"})
    try:
        endpoint = f"http://127.0.0.1:{moto.port}"
        s3, sqs = _aws(endpoint)
        iam = boto3.client("iam", endpoint_url=endpoint)
        bucket, url, arn = _bucket_and_queue(s3, sqs, "iam")                                     # 1, 2
        s3.put_object(Bucket=bucket, Key="events/a.json", Body=b"{}\n")                         # 3
        iam.create_user(UserName="reader")                                                       # 4
        key = iam.create_access_key(UserName="reader")["AccessKey"]                              # 5
        iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=policy(         # 6
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketNotification"],
             "Resource": f"arn:aws:s3:::{bucket}"},
            {"Effect": "Allow", "Action": "sqs:GetQueueAttributes", "Resource": arn}))
        iam.create_user(UserName="admin")                                                        # 7
        admin = iam.create_access_key(UserName="admin")["AccessKey"]                             # 8
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=policy(           # 9
            {"Effect": "Allow", "Action": "*", "Resource": "*"}))
        iam = boto3.client("iam", endpoint_url=endpoint, aws_access_key_id=admin["AccessKeyId"],
                           aws_secret_access_key=admin["SecretAccessKey"])
        cfg = _config(tmp_path, stack, [{"name": "clicks", "bucket": bucket, "prefix": "events/", "queue_url": url}],
                      endpoint=endpoint)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

        r = _invoke("check", "clicks", "-c", cfg, env=env)
        assert r.exit_code == 1
        setup = "run `stream import setup clicks` (with --merge if the bucket sends other notifications)"
        assert r.output.splitlines() == [
            f"list s3://{bucket}/events/: ok (first key events/a.json)",
            (f"read s3://{bucket}/events/a.json: missing s3:GetObject on arn:aws:s3:::{bucket}/events/*: grant it to "
             "this worker's identity (and check that the bucket policy does not deny it)"),
            f"queue {url}: ok ({arn}; 0 message(s) waiting, 0 in flight)",
            (f"queue policy: it does not let s3.amazonaws.com send messages from arn:aws:s3:::{bucket}, so S3 cannot "
             f"deliver the notifications: {setup}"),
            f"notification s3://{bucket}: no notification of the bucket sends to {arn}: {setup}",
            "Error: 3 problem(s) found; see above"]

        r = _invoke("setup", "clicks", "-c", cfg, env=env)
        assert r.exit_code == 1
        assert r.output.splitlines() == [
            f"queue {url}: {arn}",
            (f"Error: missing sqs:SetQueueAttributes on {arn}: grant it to this worker's identity (and check that the "
             "queue policy does not deny it)")]

        iam.put_user_policy(UserName="reader", PolicyName="queue", PolicyDocument=policy(
            {"Effect": "Allow", "Action": "sqs:SetQueueAttributes", "Resource": arn}))
        r = _invoke("setup", "clicks", "-c", cfg, env=env)
        assert r.exit_code == 1
        assert r.output.splitlines()[1:] == [
            (f"queue policy: added statement stream-s3-{bucket} (s3.amazonaws.com may send messages from "
             f"arn:aws:s3:::{bucket} of account {ACCOUNT})"),
            (f"Error: missing s3:PutBucketNotification on arn:aws:s3:::{bucket}: grant it to this worker's identity "
             "(and check that the bucket policy does not deny it)")]
    finally:
        moto.stop()
