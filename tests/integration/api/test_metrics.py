"""/metrics of a running worker and a running API: every metric under its declared name and label set."""

import asyncio
import urllib.request

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from stream import metrics
from tests.integration.api.conftest import API_KEY, wait_for_worker
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

WORKER = {   # name: label names; every one of these is exported by a worker that ingested, deduped and exported
    "stream_ingest_events": (), "stream_ingest_valid_events": (), "stream_dead_letter_events": ("stage", "reason"),
    "stream_dedupe_events": (), "stream_dedupe_duplicates": (), "stream_dedupe_accepted_events": (),
    "stream_consumer_lag_messages": ("consumer", "topic"),
    "stream_export_events": ("destination",), "stream_export_objects": ("destination", "reason"),
    "stream_export_bytes": ("destination",), "stream_export_markers": ("destination",),
    "stream_export_destination_failing": ("destination",), "stream_export_destination_retrying": ("destination",),
    "stream_export_oldest_unexported_event_age_seconds": ("destination",),
    "stream_export_last_sealed_hour_timestamp_seconds": ("destination",),
}
API = {"stream_http_requests": ("route", "status"), "stream_http_request_duration_seconds": ("route",),
       "stream_api_events": ("outcome",), "stream_api_produce_duration_seconds": (),
       "stream_dead_letter_events": ("stage", "reason")}


def families(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    out = {}
    for f in text_string_to_metric_families(text):
        labels = {tuple(sorted(s.labels)) for s in f.samples if not s.name.endswith("_created")}
        out[f.name] = labels
    return out


def declared():
    """name -> label names of every metric in stream.metrics."""
    out = {}
    for v in vars(metrics).values():
        if hasattr(v, "_labelnames") and hasattr(v, "_name"):
            out[v._name] = tuple(v._labelnames)
    return out


def test_the_worker_and_the_api_export_every_metric_with_its_labels(api_deployment, api, worker):
    settings, _ = api_deployment
    worker()
    status, _, _ = api.post("/2/httpapi", {"api_key": API_KEY, "events": [
        {"event_type": "Signed Up", "user_id": "user-00001", "insert_id": "m-1"},
        {"event_type": "Signed Up", "user_id": "user-00001", "insert_id": "m-1"},
        {"event_type": "", "user_id": "user-00002"}]})
    assert status == 400                                             # one event invalid: the request is refused

    async def ingest():
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        await p.start()
        try:
            await p.send_and_wait(settings.topics.name("ingest"), orjson.dumps(
                {"event_type": "Signed Up", "user_id": "user-00003", "insert_id": "m-2"}), timestamp_ms=1709967600000)
            await p.send_and_wait(settings.topics.name("ingest"), b"{not json", timestamp_ms=1709967600000)
        finally:
            await p.stop()
    asyncio.run(ingest())
    api.post("/2/httpapi", {"api_key": API_KEY, "events": [
        {"event_type": "Signed Up", "user_id": "user-00001", "insert_id": "m-3"}]})
    wait_for_worker(settings, read=2, exported=2)
    wait_until(lambda: families(settings.worker.http_port).get("stream_export_markers"), 30,
               "an hour sealed on every partition and marked complete")

    known = declared()
    worker_families = families(settings.worker.http_port)
    api_families = families(settings.api.port)
    for name, labels in WORKER.items():
        assert worker_families.get(name) and all(ls == tuple(sorted(labels)) for ls in worker_families[name]), name
    for name, labels in API.items():
        assert api_families.get(name) and all(
            ls == tuple(sorted(labels)) or (name.endswith("_seconds") and ls == tuple(sorted(labels + ("le",))))
            for ls in api_families[name]), name
    # every family either process exports is declared once in stream.metrics, with those labels
    for name, label_sets in [*worker_families.items(), *api_families.items()]:
        if name.startswith("stream_") and not name.endswith("_created"):   # (_created: a counter's start time)
            want = tuple(sorted(known[name]))
            assert all(ls in (want, tuple(sorted(want + ("le",)))) for ls in label_sets), (name, label_sets)
    assert ("reason", "stage") in worker_families["stream_dead_letter_events"]
    assert ("reason", "stage") in api_families["stream_dead_letter_events"]
