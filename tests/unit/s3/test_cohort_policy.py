"""`stream policy` for a cohort destination: put the files and the sync records, read them back (the diff reads the
previous existing file; the chain reads the records), list the records; KMS and the role's trust when set."""

import orjson
import yaml
from click.testing import CliRunner

from stream.cli import main

CONFIG = {
    "projects": [{"id": 424242}],
    "s3": {"worker_principal_arn": "arn:aws:iam::111122223333:role/stream-workers"},
    "cohorts": [{"id": "buyers", "project": 424242, "name": "Buyers",
                 "rule": {"performed": "purchase", "within_days": 7}}],
    "cohort_destinations": [
        {"name": "crm", "bucket": "acme-cohorts", "path_prefix": "cohorts/", "encryption": {"type": "sse-s3"},
         "syncs": [{"cohort": "buyers", "cadence": "daily"}]},
        {"name": "ads", "bucket": "acme-ads", "path_prefix": "", "records_prefix": "state/",
         "role_arn": "arn:aws:iam::444455556666:role/cohort-writer", "external_id": "ext-1",
         "encryption": {"type": "sse-kms", "kms_key_id": "arn:aws:kms:us-east-1:444455556666:key/k-1"},
         "syncs": [{"cohort": "buyers", "cadence": "hourly"}]}]}


def policy(tmp_path, *args):
    f = tmp_path / "stream.yaml"
    f.write_text(yaml.safe_dump(CONFIG))
    r = CliRunner().invoke(main, ["policy", "-c", str(f), *args])
    return r.exit_code, (orjson.loads(r.output) if r.exit_code == 0 else r.output)


def test_a_cohort_destinations_policies_are_exactly_these(tmp_path):
    code, doc = policy(tmp_path, "crm")
    files, records = "arn:aws:s3:::acme-cohorts/cohorts/*", "arn:aws:s3:::acme-cohorts/_stream/cohorts/crm/*"
    workers = {"AWS": "arn:aws:iam::111122223333:role/stream-workers"}
    writes = ["s3:PutObject", "s3:AbortMultipartUpload"]   # a large file is a multipart upload, aborted on failure
    list_records = {"Sid": "StreamListsRecords", "Effect": "Allow", "Action": "s3:ListBucket",
                    "Resource": "arn:aws:s3:::acme-cohorts",
                    "Condition": {"StringLike": {"s3:prefix": ["_stream/cohorts/crm/*"]}}}
    assert code == 0
    assert doc == {
        "cohort_destination": "crm", "writer": "arn:aws:iam::111122223333:role/stream-workers",
        "prefixes": ["cohorts/", "_stream/cohorts/crm/"],
        "bucket_policy": {"Version": "2012-10-17", "Statement": [
            {"Sid": "StreamWrites", "Effect": "Allow", "Principal": workers, "Action": writes,
             "Resource": [files, records]},
            {"Sid": "StreamReadsBack", "Effect": "Allow", "Principal": workers, "Action": "s3:GetObject",
             "Resource": [files, records]},
            {**list_records, "Principal": workers}]},
        "role_policy": {"Version": "2012-10-17", "Statement": [
            {"Sid": "StreamWrites", "Effect": "Allow", "Action": writes, "Resource": [files, records]},
            {"Sid": "StreamReadsBack", "Effect": "Allow", "Action": "s3:GetObject", "Resource": [files, records]},
            list_records]}}
    assert list(doc["bucket_policy"]["Statement"][2]) == ["Sid", "Effect", "Principal", "Action", "Resource",
                                                          "Condition"]


def test_with_a_role_kms_and_enforced_encryption(tmp_path):
    code, doc = policy(tmp_path, "ads", "--enforce-encryption")
    role = "arn:aws:iam::444455556666:role/cohort-writer"
    assert code == 0
    assert doc["writer"] == role and doc["prefixes"] == ["", "state/ads/"]
    assert [s["Sid"] for s in doc["bucket_policy"]["Statement"]] == [
        "StreamWrites", "StreamReadsBack", "StreamListsRecords", "DenyOtherEncryption", "DenyUnencrypted"]
    assert doc["bucket_policy"]["Statement"][0]["Resource"] == ["arn:aws:s3:::acme-ads/*",
                                                                "arn:aws:s3:::acme-ads/state/ads/*"]
    assert doc["bucket_policy"]["Statement"][3]["Condition"] == {
        "StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}
    assert doc["role_policy"]["Statement"][3] == {
        "Sid": "StreamEncrypts", "Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
        "Resource": "arn:aws:kms:us-east-1:444455556666:key/k-1"}
    assert doc["kms_key_policy_statement"] == {
        "Sid": "StreamEncrypts", "Effect": "Allow", "Principal": {"AWS": role},
        "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Resource": "*"}
    assert doc["trust_policy"] == {"Version": "2012-10-17", "Statement": [
        {"Sid": "StreamAssumes", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::111122223333:role/stream-workers"}, "Action": "sts:AssumeRole",
         "Condition": {"StringEquals": {"sts:ExternalId": "ext-1"}}}]}


def test_an_unknown_name_lists_the_destinations_cohort_destinations_and_sources(tmp_path):
    code, out = policy(tmp_path, "nope")
    assert code == 1 and ("Error: no destination, cohort destination or import source 'nope' in the settings "
                          "(destinations: none; cohort destinations: crm, ads; sources: none)") in out
