"""Access errors against an S3 that enforces IAM (moto with authentication on): the destination without the
permission is named failing with the missing permission, the others export meanwhile, and it catches up once
the permission is granted; a destination that writes through an assumed role."""

import asyncio
import gzip
import json
import os
import subprocess
import sys
import time
import urllib.request

import boto3
import orjson
import pytest
import yaml

from stream.devstack.services import start_moto
from stream.kafka import ensure_topics
from stream.s3.probe import PROBE_NAME
from stream.settings import load_settings
from tests.integration.conftest import admin_get, wait_until
from tests.integration.test_crash import EVENTS, produce

pytestmark = pytest.mark.integration

READ = {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "sts:AssumeRole"],
        "Resource": "*"}


def put(bucket):
    return {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": f"arn:aws:s3:::{bucket}/*"}


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def rows(s3, bucket):
    """The insert_ids of the export objects in ``bucket``: not the hours' markers, nor the access check's probe,
    which the export cycle's verification puts and deletes again (it can go between the list and the read)."""
    out = []
    for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        if not o["Key"].endswith(("_complete", PROBE_NAME)):
            body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            out += [orjson.loads(x)["$insert_id"] for x in gzip.decompress(body).splitlines()]
    return sorted(out)


def test_a_denied_destination_is_named_and_retried_while_the_others_export(deployment, worker, tmp_path):
    setup_actions = 12   # every call below until the exporter's credentials exist goes unauthenticated
    moto = start_moto(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": str(setup_actions)})
    try:
        url = f"http://127.0.0.1:{moto.port}"
        s3 = boto3.client("s3", endpoint_url=url)
        iam = boto3.client("iam", endpoint_url=url)
        for b in ("acc-ok", "acc-denied", "acc-role"):
            s3.create_bucket(Bucket=b)                                                           # 3
        iam.create_user(UserName="admin")                                                         # 4
        admin = iam.create_access_key(UserName="admin")["AccessKey"]                              # 5
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=policy(
            {"Effect": "Allow", "Action": "*", "Resource": "*"}))                                 # 6
        iam.create_user(UserName="exporter")                                                      # 7
        key = iam.create_access_key(UserName="exporter")["AccessKey"]                             # 8
        iam.put_user_policy(UserName="exporter", PolicyName="p", PolicyDocument=policy(READ, put("acc-ok")))  # 9
        role = iam.create_role(RoleName="writer", AssumeRolePolicyDocument=policy({
            "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:user/exporter"},
            "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:ExternalId": "ext-4242"}}}))["Role"]  # 10
        iam.put_role_policy(RoleName="writer", PolicyName="w", PolicyDocument=policy(READ, put("acc-role")))  # 11
        s3.put_object(Bucket="acc-ok", Key="setup-done", Body=b"")                                # 12
        as_admin = {"aws_access_key_id": admin["AccessKeyId"], "aws_secret_access_key": admin["SecretAccessKey"]}
        s3 = boto3.client("s3", endpoint_url=url, **as_admin)
        s3.delete_object(Bucket="acc-ok", Key="setup-done")
        with pytest.raises(Exception, match="AccessDenied"):      # authentication is on from here
            boto3.client("s3", endpoint_url=url, aws_access_key_id=key["AccessKeyId"],
                         aws_secret_access_key=key["SecretAccessKey"]).put_object(Bucket="acc-denied", Key="x",
                                                                                  Body=b"")

        settings, path = deployment
        cfg = yaml.safe_load(path.read_text())
        base = {k: cfg["destinations"][0][k] for k in ("project", "prefix", "close_grace_s", "idle_close_s")}
        cfg["destinations"] = [{**base, "name": "ok", "bucket": "acc-ok"},
                               {**base, "name": "denied", "bucket": "acc-denied"},
                               {**base, "name": "via-role", "bucket": "acc-role", "role_arn": role["Arn"],
                                "external_id": "ext-4242"}]
        cfg["s3"].update(endpoint_url=url, permanent_retry_s=2)
        path.write_text(yaml.safe_dump(cfg))
        settings = load_settings(path)
        asyncio.run(ensure_topics(settings))
        creds = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                 "AWS_ENDPOINT_URL_STS": url}

        # stream check names the missing permission before anything runs
        check = subprocess.run([sys.executable, "-m", "stream", "check", "-c", str(path)], capture_output=True,
                               text=True, timeout=120, env={**os.environ, **creds})
        assert check.returncode == 1
        assert "destination denied: missing s3:PutObject on arn:aws:s3:::acc-denied/amp/424242/424242_* (or a " \
            "bucket policy denies it" in check.stdout
        assert "destination ok: ok" in check.stdout and "destination via-role: ok" in check.stdout

        worker(env=creds)
        asyncio.run(produce(settings))
        expected = sorted(ev["insert_id"] for ev, _ in EVENTS)
        wait_until(lambda: rows(s3, "acc-ok") == expected and rows(s3, "acc-role") == expected, 90,
                   "the permitted destinations to export everything")
        port = settings.worker.http_port

        def denied():
            doc = orjson.loads(admin_get(f"http://127.0.0.1:{port}/exports/status"))
            return next(d for d in doc["destinations"] if d["destination"] == "denied")
        status = wait_until(lambda: (d := denied())["state"] == "failing" and d, 30, "the denied destination failing")
        # its access verification fails: nothing is read for it, and its status names the missing permission
        assert (status["last_error"]["reason"], status["last_error"]["detail"]) == (
            "access_denied", "missing s3:PutObject on arn:aws:s3:::acc-denied/amp/424242/424242_* (or a bucket policy "
            "denies it, e.g. one that requires another server-side encryption than encryption.type)")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert 'stream_export_destination_failing{destination="denied"} 1.0' in metrics
        assert 'stream_export_destination_failing{destination="ok"} 0.0' in metrics
        log = (tmp_path / "worker-0.log").read_text()
        assert "export denied: access verification failed at put s3://acc-denied/amp/424242/424242_.stream-access-" \
            "check: missing s3:PutObject on arn:aws:s3:::acc-denied/amp/424242/424242_* (or a bucket policy denies " \
            "it, e.g. one that requires another server-side encryption than encryption.type); nothing is exported " \
            "until it passes (retried every 2s; destinations[].verify: false skips it)" in log
        assert rows(s3, "acc-denied") == []

        # the permission is granted: the next retry succeeds and the destination catches up, exactly once
        boto3.client("iam", endpoint_url=url, **as_admin).put_user_policy(
            UserName="exporter", PolicyName="p", PolicyDocument=policy(READ, put("acc-ok"), put("acc-denied")))
        wait_until(lambda: rows(s3, "acc-denied") == expected, 60, "the denied destination to catch up")
        wait_until(lambda: denied()["state"] == "ok", 30, "the destination to be ok again")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert 'stream_export_destination_failing{destination="denied"} 0.0' in metrics
        assert rows(s3, "acc-ok") == rows(s3, "acc-role") == expected
    finally:
        worker.stop()      # before the S3 it exports to
        moto.stop()


def test_a_destination_that_cannot_write_is_notified_once_verified_and_fixed_with_its_generated_policy(
        deployment, worker, tmp_path):
    """Against S3 with IAM enforced: the destination's access verification fails (it exports nothing), one
    notification per incident reaches the webhook and the mailbox with the missing permission and the statement;
    `stream exports verify` names it; the role policy `stream policy` prints, attached as it is and alone, lets the
    destination export -- and still denies a put outside its prefix -- and one resolved message follows."""
    import http.server
    import threading

    from aiosmtpd.controller import Controller

    from stream.devstack.services import free_port

    hooks, mails = [], []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            hooks.append(orjson.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()

    class Mailbox:
        async def handle_DATA(self, server, session, envelope):
            mails.append((envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"
    smtp = Controller(Mailbox(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    moto = start_moto(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": "8"})
    try:
        url = f"http://127.0.0.1:{moto.port}"
        s3, iam = boto3.client("s3", endpoint_url=url), boto3.client("iam", endpoint_url=url)
        s3.create_bucket(Bucket="ntf-bkt")                                                     # 1
        iam.create_user(UserName="admin")                                                     # 2
        admin = iam.create_access_key(UserName="admin")["AccessKey"]                          # 3
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=policy(         # 4
            {"Effect": "Allow", "Action": "*", "Resource": "*"}))
        iam.create_user(UserName="exporter")                                                  # 5
        key = iam.create_access_key(UserName="exporter")["AccessKey"]                         # 6
        iam.put_user_policy(UserName="exporter", PolicyName="p", PolicyDocument=policy(READ))  # 7: no put
        s3.list_buckets()                                                                     # 8
        as_admin = {"aws_access_key_id": admin["AccessKeyId"], "aws_secret_access_key": admin["SecretAccessKey"]}

        settings, path = deployment
        cfg = yaml.safe_load(path.read_text())
        cfg["destinations"] = [{**cfg["destinations"][0], "name": "denied", "bucket": "ntf-bkt",
                                "notify": {"after_failures": 2, "emails": ["ops@example.com"], "webhooks": ["ops"]}}]
        cfg["notifications"] = {"webhooks": [{"name": "ops", "url": f"http://127.0.0.1:{receiver.server_port}/h"}],
                                "smtp": {"host": "127.0.0.1", "port": smtp.port, "sender": "stream@example.com",
                                         "starttls": False}}
        cfg["s3"].update(endpoint_url=url, permanent_retry_s=1)
        path.write_text(yaml.safe_dump(cfg))
        settings = load_settings(path)
        asyncio.run(ensure_topics(settings))
        creds = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        env = {**os.environ, **creds}

        verify = subprocess.run([sys.executable, "-m", "stream", "exports", "verify", "denied", "-c", str(path)],
                                capture_output=True, text=True, timeout=120, env=env)
        assert verify.returncode == 1
        lines = verify.stdout.splitlines()
        assert lines[:3] == ["ok   bucket         s3://ntf-bkt",
                             "FAIL put            s3://ntf-bkt/amp/424242/424242_.stream-access-check",
                             "     missing s3:PutObject on arn:aws:s3:::ntf-bkt/amp/424242/424242_* (or a bucket "
                             "policy denies it, e.g. one that requires another server-side encryption than "
                             "encryption.type)"]
        assert '"Action": "s3:PutObject"' in verify.stdout

        worker(env=creds)
        asyncio.run(produce(settings))
        wait_until(lambda: len(hooks) >= 1 and len(mails) >= 1, 60, "the failure notification")
        time.sleep(4)                                         # further failures of the same incident: no more
        assert len(hooks) == 1 and len(mails) == 1
        note = hooks[0]
        assert (note["event"], note["destination"], note["reason"], note["missing_permission"]) == (
            "export_failing", "denied", "access_denied", "s3:PutObject")
        assert note["statement"]["Action"] == "s3:PutObject" and note["failures"] >= 2
        assert mails[0][0] == ["ops@example.com"]
        assert "Subject: [stream] exports to denied are failing: access_denied" in mails[0][1]
        assert key["SecretAccessKey"] not in str(hooks) + str(mails)

        # the generated role policy, attached to the exporter's identity as it is printed
        printed = orjson.loads(subprocess.run([sys.executable, "-m", "stream", "policy", "denied", "-c", str(path)],
                                              capture_output=True, text=True, timeout=60, check=True).stdout)
        boto3.client("iam", endpoint_url=url, **as_admin).put_user_policy(
            UserName="exporter", PolicyName="p", PolicyDocument=policy(*printed["role_policy"]["Statement"]))
        expected = sorted(ev["insert_id"] for ev, _ in EVENTS)
        s3 = boto3.client("s3", endpoint_url=url, **as_admin)
        wait_until(lambda: rows(s3, "ntf-bkt") == expected, 90, "the destination to export everything")
        wait_until(lambda: len(hooks) == 2 and len(mails) == 2, 60, "the resolved notification")
        assert hooks[1]["event"] == "export_resolved"
        assert "Subject: [stream] exports to denied succeed again" in mails[1][1]
        # a backfill of the hours under the same identity and policy lists them, rewrites them and deletes the
        # object it replaces: here a stray copy under another number, which would export its rows twice
        first9 = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="ntf-bkt")["Contents"] if "_2024-03-09_9#" in o["Key"])[0]
        s3.copy_object(Bucket="ntf-bkt", Key=first9.split("#")[0] + "#1000.json.gz",
                       CopySource={"Bucket": "ntf-bkt", "Key": first9})
        assert rows(s3, "ntf-bkt") != expected
        backfill = subprocess.run([sys.executable, "-m", "stream", "exports", "backfill", "denied", "--from",
                                   "2024-03-09T07", "--to", "2024-03-09T10", "--json", "-c", str(path)],
                                  capture_output=True, text=True, timeout=240, env=env)
        assert backfill.returncode == 0, backfill.stdout + backfill.stderr
        assert orjson.loads(backfill.stdout)["state"] == "done"
        assert rows(s3, "ntf-bkt") == expected
        outside = boto3.client("s3", endpoint_url=url, aws_access_key_id=key["AccessKeyId"],
                               aws_secret_access_key=key["SecretAccessKey"])
        with pytest.raises(Exception, match="AccessDenied"):
            outside.put_object(Bucket="ntf-bkt", Key="elsewhere/x.json.gz", Body=b"")
    finally:
        worker.stop()      # before the S3 it exports to
        moto.stop()
        smtp.stop()
        receiver.shutdown()
