"""Session fixtures: a Tansu broker and moto_server on free loopback ports, stopped by PID."""

import os
import subprocess
import sys
import time
import urllib.request
import uuid

import boto3
import pytest
import yaml

from stream.devstack.services import free_port, local_aws_env, start_broker, start_moto
from stream.settings import load_settings

ADMIN_TOKEN = "it-admin-token-of-the-integration-tests"


def admin_get(url: str, token: str = ADMIN_TOKEN, timeout: float = 10) -> bytes:
    """GET an admin endpoint of a worker with the deployment's admin token."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    os.environ.update(local_aws_env())
    logs = tmp_path_factory.mktemp("stack-logs")
    broker = start_broker(logs)
    try:
        moto = start_moto(logs)
    except BaseException:
        broker.stop()
        raise
    yield {"bootstrap": f"127.0.0.1:{broker.port}", "s3": f"http://127.0.0.1:{moto.port}", "logs": logs}
    moto.stop()
    broker.stop()


@pytest.fixture
def deployment(stack, tmp_path):
    """A fresh deployment on the shared stack: its own topic prefix, app id, bucket and data dir."""
    run = uuid.uuid4().hex[:8]
    bucket = f"it-{run}"
    boto3.client("s3", endpoint_url=stack["s3"]).create_bucket(Bucket=bucket)
    cfg = {
        "kafka": {"bootstrap_servers": stack["bootstrap"], "session_timeout_s": 2, "heartbeat_interval_s": 0.5},
        "topics": {"prefix": f"{run}.", "partitions": 2, "ingest_partitions": 1},
        "ingest": {"default_project": 424242},
        "s3": {"endpoint_url": stack["s3"]},
        "worker": {"app_id": f"it-{run}", "data_dir": str(tmp_path / "data"), "log_level": "info",
                   "http_port": free_port()},
        "admin": {"token": ADMIN_TOKEN},
        "projects": [{"id": 424242}, {"id": 7}],
        "destinations": [{"name": "main", "project": 424242, "bucket": bucket, "prefix": "amp/",
                          "close_grace_s": 1, "idle_close_s": 1}],
    }
    path = tmp_path / "stream.yaml"
    path.write_text(yaml.safe_dump(cfg))
    yield load_settings(path), path


@pytest.fixture
def worker(deployment, tmp_path):
    """Start ``stream worker`` for the deployment; stop it (SIGTERM, by PID) afterwards."""
    procs = []

    def start(*args, http_port=None, env=None):
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")
        env = {**os.environ, **({"STREAM_WORKER__HTTP_PORT": str(http_port)} if http_port else {}),
               **(env or {})}
        p = subprocess.Popen([sys.executable, "-m", "stream", "worker", "-c", str(deployment[1]), *args], stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        procs.append((p, log))
        return p

    def stop():
        """Stop every worker started (a test whose own services stop first calls it before them)."""
        for p, log in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            log.close()

    start.stop = stop
    yield start
    stop()


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
