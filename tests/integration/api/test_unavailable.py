"""Without a broker the API answers 503 with Retry-After, never 200, and reports itself not ready; it connects
when the broker comes up. A dedicated broker is started and stopped here (by PID)."""

import asyncio

import orjson
import pytest
import yaml

from stream.devstack.services import free_port, start_broker
from stream.kafka import ensure_topics
from stream.settings import load_settings
from tests.integration.api.conftest import API_KEY, WRITE_KEY, api_config, basic, start_api, stop_api
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

EVENTS = {"api_key": API_KEY, "events": [{"event_type": "E", "device_id": "device-0001", "insert_id": "i-1"}]}


def test_no_broker_means_503_and_not_ready_until_it_comes(stack, tmp_path):
    broker_port = free_port()
    cfg = api_config({"kafka": {"bootstrap_servers": f"127.0.0.1:{broker_port}"},
                      "topics": {"prefix": "unavail.", "partitions": 2}}, free_port(), produce_timeout_s=1.5)
    path = tmp_path / "stream.yaml"
    path.write_text(yaml.safe_dump(cfg))
    api = start_api(path, tmp_path, wait_ready=False)
    broker = None
    try:
        # never connected
        assert api.get_json("/readyz") == (503, {"status": "not ready", "ready": [], "waiting": ["producer"],
                                                 "failed": {}})
        status, headers, body = api.post("/2/httpapi", EVENTS)
        assert (status, headers["Retry-After"], orjson.loads(body)) == (503, "5", {
            "code": 503, "error": "Service unavailable", "detail": "not connected to the brokers yet"})
        status, headers, body = api.post("/v1/track", {"userId": "u-77", "event": "E"}, basic(WRITE_KEY))
        assert (status, headers["Retry-After"], orjson.loads(body)) == (503, "5", {
            "success": False, "code": "unavailable", "message": "not connected to the brokers yet"})

        # the broker comes up: the API connects and stores
        broker = start_broker(tmp_path, port=broker_port)
        asyncio.run(ensure_topics(load_settings(path)))
        wait_until(lambda: api.get_json("/readyz")[0] == 200, 30, "the API to connect")
        status, _, body = api.post("/2/httpapi", EVENTS)
        assert (status, orjson.loads(body)["events_ingested"]) == (200, 1)

        # the broker goes away: 503 within produce_timeout_s, never 200, and not ready
        broker.stop()
        status, headers, body = api.post("/2/httpapi", EVENTS)
        assert (status, headers["Retry-After"], orjson.loads(body)) == (503, "5", {
            "code": 503, "error": "Service unavailable",
            "detail": "the brokers did not acknowledge the events within 1.5s (api.produce_timeout_s)"})
        status, body = api.get_json("/readyz")
        assert (status, body["waiting"]) == (503, ["producer"])
        assert api.get_json("/healthz") == (200, {"status": "ok", "failed": {}})
        m = api.metrics()
        assert m['stream_http_requests_total{route="/2/httpapi",status="503"}'] == 2
        assert m['stream_http_requests_total{route="/2/httpapi",status="200"}'] == 1
        assert api.proc.poll() is None
    finally:
        stop_api(api)
        if broker is not None:
            broker.stop()
