"""The official SDKs against `stream api` and a worker: the exact events land in S3 once, retries included."""

import gzip
import threading
from datetime import UTC, datetime

import boto3
import orjson
import pytest
from amplitude import Amplitude, BaseEvent, Config
from segment.analytics.client import Client
from segment.analytics.version import VERSION as SEGMENT_VERSION

from stream.events.batch import EventBatch
from stream.events.segment import parse_time
from stream.events.timefmt import format_ms
from stream.export.layout import amplitude_key
from tests.integration.api.conftest import (
    API_KEY,
    SOURCE_ID,
    WRITE_KEY,
    add_segment_destination,
    bucket_rows,
    topic,
    wait_for_worker,
)
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

T = 1709968500000  # 2024-03-09 07:15:00 UTC: the events' own time


def keys_of_accepted(settings):
    """The object keys the exporter derives from events.accepted: one object per batch here."""
    out = []
    for m in topic(settings, "accepted"):
        b = EventBatch.decode(m.value)
        out.append(amplitude_key("amp/", 424242, b.hour, m.partition, m.offset))
    return sorted(out)


def check_valid_topic(settings, events: int):
    """Every batch the API wrote to events.valid is its own origin: no offsets, offset -1, its own partition."""
    msgs = topic(settings, "valid")
    total = 0
    for m in msgs:
        b = EventBatch.decode(m.value)
        assert (b.offsets, b.origin.topic, b.origin.partition, b.origin.offset) == (
            [], settings.topics.name("valid"), m.partition, -1)
        total += len(b)
    assert total == events
    return msgs


def amplitude_events(insert_ids, n0=0):
    return [BaseEvent(event_type="Order Completed", user_id=f"user-{n:04d}", device_id=f"device-{n % 2:04d}",
                      insert_id=i, time=T + n, event_properties={"sku": f"sku-{n}"}, price=9.5, quantity=2,
                      platform="Web", os_name="Chrome", app_version="4.2.0", ip="203.0.113.9",
                      user_properties={"plan": "pro"})
            for n, i in enumerate(insert_ids, n0)]


def send_with_sdk(url, events):
    results, done = [], threading.Event()

    def callback(event, code, message):
        results.append((event.insert_id, code, message))
        if len(results) == len(events):
            done.set()
    client = Amplitude(API_KEY, Config(server_url=url, flush_queue_size=100, flush_interval_millis=100,
                                       callback=callback))
    for e in events:
        client.track(e)
    client.flush()
    assert done.wait(30), results
    client.shutdown()
    return sorted(results)


def segment_objects(settings):
    """{key: (head, lines)} of the Segment-layout objects under seg/."""
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    bucket = settings.destinations[0].bucket
    out = {}
    for o in s3.list_objects_v2(Bucket=bucket, Prefix="seg/").get("Contents", []):
        obj = s3.get_object(Bucket=bucket, Key=o["Key"])
        out[o["Key"]] = ((obj["ContentType"], obj["ContentEncoding"]),
                         [orjson.loads(x) for x in gzip.decompress(obj["Body"].read()).splitlines()])
    return out


def received_day(ms):
    return ms - ms % 86_400_000


def test_amplitude_sdk_events_land_once_with_retries_dropped(api_deployment, api, worker):
    settings, path = api_deployment
    settings = add_segment_destination(settings, path)
    worker()
    t0 = datetime.now(UTC).timestamp() * 1000
    first = send_with_sdk(api.url + "/2/httpapi", amplitude_events(["ins-0", "ins-1", "ins-2"]))
    assert first == [(f"ins-{i}", 200, "Event sent successfully.") for i in range(3)]
    # the same three again (an SDK retry carries the same insert_ids) and a new one, through /batch
    again = send_with_sdk(api.url + "/batch", amplitude_events(["ins-0", "ins-1", "ins-2", "ins-3"]))
    assert again == [(f"ins-{i}", 200, "Event sent successfully.") for i in range(4)]
    t1 = datetime.now(UTC).timestamp() * 1000

    check_valid_topic(settings, 7)
    wait_for_worker(settings, read=7, exported=4)
    keys, rows = bucket_rows(settings)
    assert keys == keys_of_accepted(settings)
    assert len(keys) >= 1 and all(k.startswith("amp/424242/424242_") for k in keys)
    rows.sort(key=lambda r: r["$insert_id"])
    assert [r["$insert_id"] for r in rows] == ["ins-0", "ins-1", "ins-2", "ins-3"]
    for n, r in enumerate(rows):
        upload = r["server_upload_time"]
        assert format_ms(int(t0) - 1000) <= upload <= format_ms(int(t1) + 1000)
        assert {k: r[k] for k in ("app", "event_type", "user_id", "device_id", "client_event_time", "event_time",
                                  "event_properties", "user_properties", "platform", "os_name", "version_name",
                                  "ip_address", "library", "server_received_time", "session_id")} == {
            "app": 424242, "event_type": "Order Completed", "user_id": f"user-{n:04d}",
            "device_id": f"device-{n % 2:04d}", "client_event_time": format_ms(T + n), "event_time": format_ms(T + n),
            "event_properties": {"sku": f"sku-{n}", "$price": 9.5, "$quantity": 2},
            "user_properties": {"plan": "pro"}, "platform": "Web", "os_name": "Chrome", "version_name": "4.2.0",
            "ip_address": "203.0.113.9", "library": "amplitude-python/1.3.0", "server_received_time": upload,
            "session_id": -1}
        # the object's hour is the hour of server_upload_time
        day, hour = upload[:10], int(upload[11:13])
        assert any(k.startswith(f"amp/424242/424242_{day}_{hour}#") for k in keys)
    assert len({r["uuid"] for r in rows}) == 4
    m = api.metrics()
    assert m['stream_http_requests_total{route="/2/httpapi",status="200"}'] == 1
    assert m['stream_http_requests_total{route="/batch",status="200"}'] == 1
    assert m['stream_api_events_total{outcome="accepted"}'] == 7

    # the same events in Segment's layout: track messages made from the rows, under the project's folder
    seg = segment_objects(settings)
    assert {k.rsplit("/", 2)[0] for k in seg} == {"seg/segment-logs/424242"}
    assert {k.split("/")[3] for k in seg} <= {str(received_day(int(t0))), str(received_day(int(t1)))}
    assert {head for head, _ in seg.values()} == {("text/plain", "gzip")}
    messages = sorted((m for _, lines in seg.values() for m in lines), key=lambda m: m["messageId"])
    assert [(m["type"], m["event"], m["messageId"], m["userId"], m["anonymousId"], m["properties"],
             m["context"]["traits"], m["originalTimestamp"]) for m in messages] == [
        ("track", "Order Completed", f"ins-{n}", f"user-{n:04d}", f"device-{n % 2:04d}",
         {"sku": f"sku-{n}", "$price": 9.5, "$quantity": 2}, {"plan": "pro"},
         datetime.fromtimestamp((T + n) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")
        for n in range(4)]


def test_segment_sdk_calls_land_mapped_with_their_full_messages(api_deployment, api, worker):
    settings, path = api_deployment
    settings = add_segment_destination(settings, path)
    worker()
    sent = datetime(2024, 3, 9, 7, 15, tzinfo=UTC)
    client = Client(WRITE_KEY, host=api.url, sync_mode=True, gzip=True)
    client.track(user_id="u-77", anonymous_id="anon-0001", event="Plan Upgraded", properties={"plan": "pro"},
                 timestamp=sent, message_id="msg-1")
    client.identify(user_id="u-77", anonymous_id="anon-0001", traits={"email": "ann@example.com"}, timestamp=sent,
                    message_id="msg-2")
    client.page(user_id="u-77", name="Pricing", properties={"path": "/pricing"}, timestamp=sent, message_id="msg-3")
    client.screen(user_id="u-77", name="Home", timestamp=sent, message_id="msg-4")
    client.group(user_id="u-77", group_id="acme", traits={"group_type": "company", "size": 50}, timestamp=sent,
                 message_id="msg-5")
    client.alias(previous_id="anon-0001", user_id="u-77", timestamp=sent, message_id="msg-6")
    # a retry of the first call: same messageId, so it is stored once
    client.track(user_id="u-77", anonymous_id="anon-0001", event="Plan Upgraded", properties={"plan": "pro"},
                 timestamp=sent, message_id="msg-1")
    # a single call with the write key in the body
    status, _, body = api.post("/v1/track", {"writeKey": WRITE_KEY, "userId": "u-78", "event": "Signed Up",
                                             "messageId": "msg-8", "timestamp": "2024-03-09T07:16:00.000Z"})
    assert (status, orjson.loads(body)) == (200, {"success": True})

    check_valid_topic(settings, 8)
    wait_for_worker(settings, read=8, exported=7)
    keys, rows = bucket_rows(settings)
    assert keys == keys_of_accepted(settings)
    by_id = {r["$insert_id"]: r for r in rows}
    assert len(rows) == len(by_id) == 7
    got = {i: (r["event_type"], r["user_id"], r["device_id"], r["event_properties"], r["user_properties"],
               r["groups"], r["group_properties"], r["library"]) for i, r in by_id.items()}
    lib = f"analytics-python/{SEGMENT_VERSION}"
    assert got == {
        "msg-1": ("Plan Upgraded", "u-77", "anon-0001", {"plan": "pro"}, {}, {}, {}, lib),
        # the identity stage exports an identify's user properties after its operations, and group properties
        # as {type: {name: properties}} (stream/identity/device.py)
        "msg-2": ("$identify", "u-77", "anon-0001", {}, {"email": "ann@example.com"}, {}, {}, lib),
        "msg-3": ("Viewed Pricing Page", "u-77", None, {"path": "/pricing", "name": "Pricing"}, {}, {}, {}, lib),
        "msg-4": ("Viewed Home Screen", "u-77", None, {"name": "Home"}, {}, {}, {}, lib),
        "msg-5": ("$groupidentify", "u-77", None, {}, {}, {"company": "acme"}, {"company": {"acme": {"size": 50}}},
                  lib),
        "msg-6": ("[Segment] Alias", "u-77", None, {"previousId": "anon-0001"}, {}, {}, {}, lib),
        "msg-8": ("Signed Up", "u-78", None, {}, {}, {}, {}, None),
    }
    # the corrected time is the SDK's timestamp moved by the request's time in flight (a few ms here)
    for i, r in by_id.items():
        want = T + (60_000 if i == "msg-8" else 0)
        got_ms = parse_time(r["client_event_time"])
        assert want <= got_ms < want + 2_000, (i, r["client_event_time"])

    # each accepted event carries its full Segment message, without the write key
    full = {}
    for m in topic(settings, "accepted"):
        b = EventBatch.decode(m.value)
        assert b.segment_source == SOURCE_ID and len(b.segment) == len(b.lines)
        for s, line in zip(b.segment, b.lines):
            msg = orjson.loads(s)
            full[msg["messageId"]] = msg
            assert orjson.loads(line)["$insert_id"] == msg["messageId"]
    assert sorted(full) == sorted(by_id)
    one = full["msg-1"]
    assert (one["type"], one["event"], one["userId"], one["anonymousId"], one["originalTimestamp"],
            one["context"]["library"], "writeKey" in one) == (
        "track", "Plan Upgraded", "u-77", "anon-0001", "2024-03-09T07:15:00.000+00:00",
        {"name": "analytics-python", "version": SEGMENT_VERSION}, False)
    assert parse_time(one["receivedAt"]) - parse_time(one["sentAt"]) < 2_000
    assert parse_time(by_id["msg-1"]["server_upload_time"].replace(" ", "T")) == parse_time(one["receivedAt"])

    # in Segment's layout, the full messages themselves, under the source's folder and the day they arrived
    seg = segment_objects(settings)
    day = received_day(parse_time(one["receivedAt"]))
    assert all(k.startswith(f"seg/segment-logs/{SOURCE_ID}/{day}/") and k.endswith(".gz") for k in seg)
    stored = {m["messageId"]: m for _, lines in seg.values() for m in lines}
    assert stored == full
    wait_until(lambda: api.metrics().get('stream_api_events_total{outcome="accepted"}') == 8, 5, "metrics")
