"""The generated policies: least privilege on exactly the prefixes a destination writes."""

from stream.s3.client import Target
from stream.s3.policy import bucket_policy, reader_role_policy, role_policy, statement_for, trust_policy
from stream.settings import EncryptionSettings

KEY = "arn:aws:kms:us-east-1:123456789012:key/k-1"
WORKERS = "arn:aws:iam::111111111111:role/stream-workers"
ROLE = "arn:aws:iam::222222222222:role/export-writer"


def test_the_bucket_policy_grants_puts_on_exactly_the_written_prefixes_to_the_writer():
    t = Target("seg", "acme", "us-east-1", encryption=EncryptionSettings(type="sse-s3"))
    assert bucket_policy(t, ["seg/segment-logs/src-1/", "seg/segment-logs/424242/"], WORKERS, True) == {
        "Version": "2012-10-17", "Statement": [
            {"Sid": "StreamWrites", "Effect": "Allow", "Principal": {"AWS": WORKERS},
             "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
             "Resource": ["arn:aws:s3:::acme/seg/segment-logs/src-1/*", "arn:aws:s3:::acme/seg/segment-logs/424242/*"]},
            {"Sid": "StreamRebuilds", "Effect": "Allow", "Principal": {"AWS": WORKERS}, "Action": "s3:DeleteObject",
             "Resource": ["arn:aws:s3:::acme/seg/segment-logs/src-1/*", "arn:aws:s3:::acme/seg/segment-logs/424242/*"]},
            {"Sid": "StreamLists", "Effect": "Allow", "Principal": {"AWS": WORKERS}, "Action": "s3:ListBucket",
             "Resource": "arn:aws:s3:::acme"},
            {"Sid": "DenyOtherEncryption", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": "arn:aws:s3:::acme/*",
             "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "AES256"}}},
            {"Sid": "DenyUnencrypted", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": "arn:aws:s3:::acme/*", "Condition": {"Null": {"s3:x-amz-server-side-encryption": "true"}}}]}


def test_a_destination_with_its_own_role_is_written_by_it_and_trusts_the_workers_with_its_external_id():
    t = Target("amp", "acme", "us-east-1", role_arn=ROLE, external_id="ext-9",
               encryption=EncryptionSettings(type="sse-kms", kms_key_id=KEY))
    assert bucket_policy(t, ["amp/424242/"], WORKERS)["Statement"][0]["Principal"] == {"AWS": ROLE}
    assert role_policy(t, ["amp/424242/"])["Statement"] == [
        {"Sid": "StreamWrites", "Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
         "Resource": ["arn:aws:s3:::acme/amp/424242/*"]},
        {"Sid": "StreamRebuilds", "Effect": "Allow", "Action": "s3:DeleteObject",
         "Resource": ["arn:aws:s3:::acme/amp/424242/*"]},
        {"Sid": "StreamLists", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::acme"},
        {"Sid": "StreamEncrypts", "Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
         "Resource": KEY}]
    assert trust_policy(t, WORKERS) == {"Version": "2012-10-17", "Statement": [
        {"Sid": "StreamAssumes", "Effect": "Allow", "Principal": {"AWS": WORKERS}, "Action": "sts:AssumeRole",
         "Condition": {"StringEquals": {"sts:ExternalId": "ext-9"}}}]}
    assert trust_policy(Target("x", "acme", "us-east-1"), WORKERS) is None
    where, st = statement_for("kms:Decrypt", KEY, t, WORKERS)
    assert (where, st["Action"], st["Principal"]) == (f"the key policy of {KEY}", ["kms:GenerateDataKey",
                                                                                    "kms:Decrypt"], {"AWS": ROLE})


def test_an_import_source_reads_only_under_its_prefix():
    doc = reader_role_policy(Target("src", "in", "us-east-1"), "exports/", notifications=True, kms=False)
    assert doc["Statement"][0] == {"Sid": "StreamLists", "Effect": "Allow", "Action": "s3:ListBucket",
                                   "Resource": "arn:aws:s3:::in",
                                   "Condition": {"StringLike": {"s3:prefix": ["exports/*"]}}}
    assert [s["Sid"] for s in doc["Statement"]] == ["StreamLists", "StreamReads", "StreamNotifications"]


def test_an_archive_destination_also_reads_back_its_objects_and_its_mirror_log():
    t = Target("amp", "acme", "us-east-1")
    prefixes = ["amp/424242/", "_stream/mirror/424242/"]
    objects = ["arn:aws:s3:::acme/amp/424242/*", "arn:aws:s3:::acme/_stream/mirror/424242/*"]
    assert role_policy(t, prefixes, reads=prefixes)["Statement"] == [
        {"Sid": "StreamWrites", "Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
         "Resource": objects},
        {"Sid": "StreamRebuilds", "Effect": "Allow", "Action": "s3:DeleteObject", "Resource": objects},
        {"Sid": "StreamLists", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::acme"},
        {"Sid": "StreamReadsBack", "Effect": "Allow", "Action": "s3:GetObject", "Resource": objects}]
    assert [s["Sid"] for s in bucket_policy(t, prefixes, WORKERS, reads=prefixes)["Statement"]] == [
        "StreamWrites", "StreamRebuilds", "StreamLists", "StreamReadsBack"]
