"""Fixtures for `stream api`: the deployment's config with API keys and Segment sources, and the API itself
running as `python -m stream api` on a free loopback port, stopped by PID."""

import asyncio
import base64
import gzip
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3
import orjson
import pytest
import yaml

from stream.devstack.services import free_port
from stream.kafka import ensure_topics, read_all
from stream.settings import load_settings
from tests.integration.conftest import wait_until

API_KEY = "amp-key-424242"
WRITE_KEY = "seg-write-key-1"
SOURCE_ID = "src-1"


def api_config(cfg: dict, port: int, **api) -> dict:
    """The deployment's config with an API key and a Segment source for project 424242, one object per batch
    (max_object_bytes: 1, so events of the current hour land without waiting for the hour to close)."""
    cfg = {**cfg, "api": {"host": "127.0.0.1", "port": port, "produce_timeout_s": 3, **api}}
    cfg["projects"] = [{"id": 424242, "api_keys": [API_KEY],
                        "segment_sources": [{"write_key": WRITE_KEY, "source_id": SOURCE_ID}]}, {"id": 7}]
    cfg["destinations"] = [{**d, "max_object_bytes": 1} for d in cfg.get("destinations", [])]
    return cfg


class Api:
    """A running `stream api` and a small HTTP client for it."""

    def __init__(self, url: str, proc: subprocess.Popen, settings):
        self.url, self.proc, self.settings = url, proc, settings

    def post(self, path: str, body: bytes | dict, headers: dict | None = None, gz: bool = False):
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        h = {"Content-Type": "application/json", **(headers or {})}
        if gz:
            data, h["Content-Encoding"] = gzip.compress(data), "gzip"
        return self.request("POST", path, data, h)

    def request(self, method: str, path: str, data: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def get_json(self, path: str):
        status, _, body = self.request("GET", path)
        return status, orjson.loads(body)

    def metrics(self) -> dict[str, float]:
        _, _, text = self.request("GET", "/metrics")
        out = {}
        for line in text.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out


def basic(key: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def start_api(path, tmp_path, name="api", wait_ready=True) -> Api:
    settings = load_settings(path)
    log = open(tmp_path / f"{name}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "stream", "api", "-c", str(path)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    proc.log = log
    api = Api(f"http://127.0.0.1:{settings.api.port}", proc, settings)

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"stream api exited with {proc.returncode}: "
                                 f"{(tmp_path / f'{name}.log').read_text()[-2000:]}")
        try:
            status, _ = api.get_json("/readyz" if wait_ready else "/healthz")
            return status == 200
        except OSError:
            return False
    wait_until(up, 30, "stream api to answer")
    return api


def stop_api(api: Api) -> None:
    if api.proc.poll() is None:
        api.proc.terminate()
        try:
            api.proc.wait(15)
        except subprocess.TimeoutExpired:
            api.proc.kill()
            api.proc.wait()
    api.proc.log.close()


@pytest.fixture
def api_deployment(deployment):
    """The `deployment` with the API's keys, sources and port written into its config file; topics created."""
    _, path = deployment
    cfg = api_config(yaml.safe_load(path.read_text()), free_port(),
                     httpapi_device_eps=2, throttle_window_s=5,   # 10 events per device in the /2/httpapi window
                     request_timeout_s=2)
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    asyncio.run(ensure_topics(settings))
    return settings, path


@pytest.fixture
def api_with(deployment, tmp_path):
    """Starts `stream api` on the deployment with the given ``api:`` settings (topics created); stopped after."""
    started = []

    def start(**api) -> Api:
        _, path = deployment
        path.write_text(yaml.safe_dump(api_config(yaml.safe_load(path.read_text()), free_port(), **api)))
        asyncio.run(ensure_topics(load_settings(path)))
        started.append(start_api(path, tmp_path, name=f"api-{len(started)}"))
        return started[-1]
    yield start
    for a in started:
        stop_api(a)


@pytest.fixture
def api(api_deployment, tmp_path):
    a = start_api(api_deployment[1], tmp_path)
    yield a
    stop_api(a)


def bucket_rows(settings, prefix: str = "amp/") -> tuple[list[str], list[dict]]:
    """(keys, decoded rows) of the objects under ``prefix`` in the destination's bucket (markers left out)."""
    dest = settings.destinations[0]
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=dest.bucket, Prefix=prefix).get("Contents", [])
                  if not o["Key"].endswith("_complete"))
    rows = []
    for k in keys:
        rows += [orjson.loads(line) for line in
                 gzip.decompress(s3.get_object(Bucket=dest.bucket, Key=k)["Body"].read()).splitlines()]
    return keys, rows


def add_segment_destination(settings, path) -> object:
    """A second destination of project 424242 in the same bucket, in Segment's layout under ``seg/``."""
    cfg = yaml.safe_load(path.read_text())
    main = cfg["destinations"][0]
    cfg["destinations"].append({**main, "name": "seg", "layout": "segment", "prefix": "seg/"})
    path.write_text(yaml.safe_dump(cfg))
    return load_settings(path)


def topic(settings, name):
    return asyncio.run(read_all(settings, settings.topics.name(name)))


def worker_metric(settings, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{settings.worker.http_port}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for_worker(settings, read: int, exported: int, timeout: float = 60) -> None:
    """Until the worker's dedupe stage has read ``read`` events and each exporter written ``exported`` rows."""
    def done():
        try:
            return (worker_metric(settings, "stream_dedupe_events_total") >= read
                    and all(worker_metric(settings, f'stream_export_events_total{{destination="{d.name}"}}')
                            >= exported for d in settings.destinations))
        except OSError:
            return False
    wait_until(done, timeout, f"the worker to read {read} events and export {exported}")
    time.sleep(0.5)  # anything beyond the expected would show up now

