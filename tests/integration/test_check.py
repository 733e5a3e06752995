"""``stream check`` against the real broker and S3 endpoint: it names what is missing."""

import asyncio

import pytest
import yaml
from click.testing import CliRunner

from stream.cli import main
from stream.kafka import ensure_topics

pytestmark = pytest.mark.integration


def test_check_names_missing_topics_and_buckets_then_passes(deployment, tmp_path):
    settings, path = deployment
    p = settings.topics.prefix
    r = CliRunner().invoke(main, ["check", "-c", str(path)])
    assert r.exit_code == 1
    assert r.output.splitlines() == [
        "configuration: ok (2 project(s), 1 destination(s))",
        f"kafka: missing topics {p}events.ingest, {p}events.valid, {p}events.accepted, {p}events.dead-letter, "
        f"{p}exports.ledger, {p}events.ingest-clamps, {p}exports.control, {p}console.sessions, "
        f"{settings.worker.app_id}-dedupe-changelog, {p}identity.links, {p}identity.merges, "
        f"{settings.worker.app_id}-identity-changelog (the worker creates them at start if it may create topics; "
        "otherwise create them)",
        f"destination main: ok (s3://{settings.destinations[0].bucket}/amp/424242/424242_, encryption sse-s3)",
        "Error: 12 problem(s) found; see above",
    ]

    asyncio.run(ensure_topics(settings))
    cfg = yaml.safe_load(path.read_text())
    cfg["destinations"][0]["bucket"] = "no-such-bucket-here"
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(main, ["check", "-c", str(other)])
    assert r.exit_code == 1
    assert r.output.splitlines()[1:] == [
        f"kafka: ok ({settings.kafka.bootstrap_servers}, 12 topics present)",
        "destination main: bucket no-such-bucket-here does not exist (or these credentials cannot see it): check the "
        "bucket name",
        "Error: 1 problem(s) found; see above",
    ]

    r = CliRunner().invoke(main, ["check", "-c", str(path)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-1] == "all checks passed"


def test_s3_ls_and_cat_read_what_the_exporter_writes(deployment, monkeypatch):
    import gzip

    import boto3
    settings, _ = deployment
    bucket, ep = settings.destinations[0].bucket, settings.s3.endpoint_url
    body = gzip.compress(b'{"a":1}\n{"a":2}\n', mtime=0)
    boto3.client("s3", endpoint_url=ep).put_object(Bucket=bucket, Key="amp/424242/424242_2024-03-09_7#0.json.gz",
                                                   Body=body)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # as in a fresh terminal
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    r = CliRunner().invoke(main, ["s3", "ls", f"s3://{bucket}/amp/", "--endpoint-url", ep])
    assert r.exit_code == 0, r.output
    assert r.output == f"{len(body):>12}  s3://{bucket}/amp/424242/424242_2024-03-09_7#0.json.gz\n"
    r = CliRunner().invoke(main, ["s3", "cat", f"s3://{bucket}/amp/424242/424242_2024-03-09_7#0.json.gz",
                                  "--endpoint-url", ep])
    assert (r.exit_code, r.output) == (0, '{"a":1}\n{"a":2}\n')
    r = CliRunner().invoke(main, ["s3", "cat", f"s3://{bucket}/nope", "--endpoint-url", ep])
    assert r.exit_code == 1
    assert r.output == ("Error: An error occurred (NoSuchKey) when calling the GetObject operation: "
                        "The specified key does not exist.\n")


def test_check_probes_exactly_where_each_destination_writes_and_names_each_cure(deployment, tmp_path):
    """Against S3 with IAM enforced (moto): a Segment-layout destination whose policy grants only segment-logs/*
    passes, a merged-IDs path that is not granted is named, a role that cannot be assumed is named as such, and so
    are a missing bucket and invalid credentials."""
    import json
    import os

    import boto3

    from stream.devstack.services import start_moto

    def policy(*statements):
        return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})

    def put(resource):
        return {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": resource}
    moto = start_moto(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": "11"})
    try:
        url = f"http://127.0.0.1:{moto.port}"
        s3, iam = boto3.client("s3", endpoint_url=url), boto3.client("iam", endpoint_url=url)
        s3.create_bucket(Bucket="chk-seg")                                                            # 1
        s3.create_bucket(Bucket="chk-amp")                                                            # 2
        iam.create_user(UserName="exporter")                                                          # 3
        key = iam.create_access_key(UserName="exporter")["AccessKey"]                                 # 4
        iam.put_user_policy(UserName="exporter", PolicyName="p", PolicyDocument=policy(               # 5
            put("arn:aws:s3:::chk-seg/seg/segment-logs/*"),            # Segment's documented grant
            put("arn:aws:s3:::chk-amp/amp/424242/424242_*"),           # the events' files only
            put("arn:aws:s3:::chk-none/*"),                            # a bucket that does not exist
            {"Effect": "Allow", "Action": ["sts:AssumeRole"], "Resource": "*"}))
        role = iam.create_role(RoleName="writer", AssumeRolePolicyDocument=policy({                    # 6
            "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:user/exporter"},
            "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:ExternalId": "ext-right"}}}))["Role"]
        iam.put_role_policy(RoleName="writer", PolicyName="w", PolicyDocument=policy(                  # 7
            put("arn:aws:s3:::chk-amp/*")))
        iam.create_user(UserName="admin")                                                             # 8
        admin = iam.create_access_key(UserName="admin")["AccessKey"]                                  # 9
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=policy(                # 10
            {"Effect": "Allow", "Action": "*", "Resource": "*"}))
        s3.list_buckets()                                                                             # 11
        s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=admin["AccessKeyId"],
                          aws_secret_access_key=admin["SecretAccessKey"])

        settings, path = deployment
        asyncio.run(ensure_topics(settings))
        cfg = yaml.safe_load(path.read_text())
        base = {"project": 424242, "encryption": {"type": "sse-s3"}}
        cfg["destinations"] = [
            {**base, "name": "seg", "bucket": "chk-seg", "prefix": "seg/", "layout": "segment"},
            {**base, "name": "amp", "bucket": "chk-amp", "prefix": "amp/", "exports": "both", "org_id": 55},
            {**base, "name": "wrong-ext", "bucket": "chk-amp", "prefix": "other/", "role_arn": role["Arn"],
             "external_id": "ext-wrong"},
            {**base, "name": "right-ext", "bucket": "chk-amp", "prefix": "role/", "role_arn": role["Arn"],
             "external_id": "ext-right"},
            {**base, "name": "nobucket", "bucket": "chk-none", "prefix": "amp/"}]
        cfg["s3"]["endpoint_url"] = url
        path.write_text(yaml.safe_dump(cfg))
        creds = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                 "AWS_ENDPOINT_URL_STS": url}
        r = CliRunner().invoke(main, ["check", "-c", str(path)], env={**os.environ, **creds})
        assert r.exit_code == 1
        assert r.output.splitlines()[2:] == [
            "destination seg: ok (s3://chk-seg/seg/segment-logs/424242/, encryption sse-s3)",
            "destination amp: missing s3:PutObject on arn:aws:s3:::chk-amp/amp/424242/-55_* (or a bucket policy "
            "denies it, e.g. one that requires another server-side encryption than encryption.type)",
            f"destination wrong-ext: cannot assume role {role['Arn']} (AccessDenied): its trust policy must allow "
            "this worker's identity sts:AssumeRole with the configured external id, and this worker's own policy "
            "must allow sts:AssumeRole on it (stream policy prints the trust policy)",
            "destination right-ext: ok (s3://chk-amp/role/424242/424242_, encryption sse-s3)",
            "destination nobucket: bucket chk-none does not exist (or these credentials cannot see it): check the "
            "bucket name",
            "Error: 3 problem(s) found; see above"]
        assert s3.list_objects_v2(Bucket="chk-seg")["Contents"][0]["Key"] == \
            "seg/segment-logs/424242/.stream-access-check"

        bad = {**creds, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
        r = CliRunner().invoke(main, ["check", "-c", str(path)], env={**os.environ, **bad})
        assert "destination seg: the credentials are invalid or expired (SignatureDoesNotMatch): check the worker's " \
            "AWS credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or its role's session)" in r.output
    finally:
        moto.stop()


def test_check_names_a_topic_whose_retention_is_shorter_than_the_settings_need(deployment, tmp_path):
    settings, path = deployment
    cfg = yaml.safe_load(path.read_text())
    short = tmp_path / "short.yaml"
    short.write_text(yaml.safe_dump({**cfg, "topics": {**cfg["topics"], "retention_days": 1}}))
    from stream.settings import load_settings
    asyncio.run(ensure_topics(load_settings(short)))          # created keeping one day
    r = CliRunner().invoke(main, ["check", "-c", str(path)])   # the settings need seven
    p = settings.topics.prefix
    assert r.exit_code == 1
    assert [line for line in r.output.splitlines() if "keeps records" in line] == [
        f"kafka: topic {p}{t} keeps records 1 days, less than the 7 it needs: kafka-configs --alter --entity-type "
        f"topics --entity-name {p}{t} --add-config retention.ms=604800000"
        for t in ("events.ingest", "events.valid", "events.accepted", "identity.merges")]
