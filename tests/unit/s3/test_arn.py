"""ARNs in the partition of their region, and what SQS failures mean: made in one place (``stream.s3.arn``,
``stream.s3.sqs``)."""

import pytest
from botocore.exceptions import ClientError

from stream.s3 import sqs
from stream.s3.arn import account_of, partition_of, partition_of_region, queue_arn, s3_arn


@pytest.mark.parametrize("region,partition", [
    ("us-east-1", "aws"), ("eu-west-1", "aws"), (None, "aws"), ("", "aws"),
    ("cn-north-1", "aws-cn"), ("cn-northwest-1", "aws-cn"),
    ("us-gov-west-1", "aws-us-gov"), ("us-gov-east-1", "aws-us-gov"),
])
def test_the_partition_follows_the_region(region, partition):
    assert partition_of_region(region) == partition


def test_bucket_and_object_arns_are_in_the_partition_of_their_region():
    assert s3_arn("bkt", region="eu-west-1") == "arn:aws:s3:::bkt"
    assert s3_arn("bkt", "in/a.json", region="cn-north-1") == "arn:aws-cn:s3:::bkt/in/a.json"
    assert s3_arn("bkt", "in/*", region="us-gov-west-1") == "arn:aws-us-gov:s3:::bkt/in/*"
    assert s3_arn("bkt", region="us-east-1", partition="aws-cn") == "arn:aws-cn:s3:::bkt"


def test_queue_arns_are_in_the_partition_of_their_region():
    assert queue_arn("https://sqs.eu-west-1.amazonaws.com/123456789012/imports", "eu-west-1") == \
        "arn:aws:sqs:eu-west-1:123456789012:imports"
    assert queue_arn("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", "cn-north-1") == \
        "arn:aws-cn:sqs:cn-north-1:123456789012:q"
    assert queue_arn("https://sqs.us-gov-west-1.amazonaws.com/123456789012/q", "us-gov-west-1") == \
        "arn:aws-us-gov:sqs:us-gov-west-1:123456789012:q"
    assert queue_arn("http://127.0.0.1:5000/123456789012/imports", "us-east-1") == \
        "arn:aws:sqs:us-east-1:123456789012:imports"
    assert queue_arn("http://127.0.0.1:5000/queue/imports", "us-east-1") == "http://127.0.0.1:5000/queue/imports"
    assert queue_arn("http://elsewhere/q", "us-east-1") == "http://elsewhere/q"


def test_an_arn_names_its_partition_and_account():
    assert partition_of("arn:aws-us-gov:sqs:us-gov-west-1:123456789012:q") == "aws-us-gov"
    assert partition_of("not an arn") == "aws"
    assert account_of("arn:aws-cn:sqs:cn-north-1:123456789012:q") == "123456789012"
    assert account_of("arn:aws:s3:::bkt") is None


@pytest.mark.parametrize("code,kind,reason", [
    ("AWS.SimpleQueueService.NonExistentQueue", "permanent", "no_such_queue"),
    ("QueueDoesNotExist", "permanent", "no_such_queue"),
    ("RequestThrottled", "transient", "throttled"),
    ("OverLimit", "transient", "throttled"),
    ("AccessDenied", "permanent", "access_denied"),
    ("InternalError", "transient", "server_error"),
])
def test_sqs_failures_are_classified(code, kind, reason):
    failure = sqs.classify(ClientError({"Error": {"Code": code, "Message": "x"}}, "ReceiveMessage"))
    assert (failure.kind, failure.reason) == (kind, reason)


def test_the_policies_stream_prints_name_the_bucket_in_its_partition():
    from stream.s3.client import Target
    from stream.s3.policy import bucket_policy, reader_role_policy
    reads = reader_role_policy(Target("clicks", "bkt", "cn-north-1"), "in/", notifications=False, kms=False)
    assert [s["Resource"] for s in reads["Statement"]] == ["arn:aws-cn:s3:::bkt", "arn:aws-cn:s3:::bkt/in/*"]
    writes = bucket_policy(Target("lake", "bkt", "us-gov-west-1"), ["events/"], "arn:aws-us-gov:iam::123456789012:root")
    assert writes["Statement"][0]["Resource"] == ["arn:aws-us-gov:s3:::bkt/events/*"]
