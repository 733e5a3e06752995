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
        f"{p}exports.ledger, {settings.worker.app_id}-dedupe-changelog, {p}identity.links, {p}identity.merges, "
        f"{settings.worker.app_id}-identity-changelog (the worker creates them at start if it may create topics; "
        "otherwise create them)",
        f"destination main: ok (s3://{settings.destinations[0].bucket}/amp/424242/, encryption sse-s3)",
        "Error: 9 problem(s) found; see above",
    ]

    asyncio.run(ensure_topics(settings))
    cfg = yaml.safe_load(path.read_text())
    cfg["destinations"][0]["bucket"] = "no-such-bucket-here"
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(main, ["check", "-c", str(other)])
    assert r.exit_code == 1
    assert r.output.splitlines()[1:] == [
        f"kafka: ok ({settings.kafka.bootstrap_servers}, 9 topics present)",
        "destination main: bucket no-such-bucket-here does not exist",
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
