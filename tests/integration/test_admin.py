"""The admin API of a running worker: runtime enable/disable, backfills with progress and cancellation, history,
policies and the OpenAPI description, all behind the admin token."""

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3
import orjson
import pytest
import yaml

from stream.kafka import ensure_topics
from stream.settings import load_settings
from tests.integration.conftest import ADMIN_TOKEN, wait_until
from tests.integration.test_backfill import ledger, marked, objects, rows
from tests.integration.test_crash import EVENTS, produce

pytestmark = pytest.mark.integration


def call(settings, method, path, body=None, token=ADMIN_TOKEN):
    req = urllib.request.Request(f"http://127.0.0.1:{settings.worker.http_port}{path}", method=method,
                                 data=orjson.dumps(body) if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def exported(settings, name):
    return sum(r.events for r in ledger(settings) if r.kind == "object" and r.destination == name)


def test_a_destination_turned_off_at_runtime_stops_alone_and_resumes_from_its_own_offsets(deployment, worker):
    settings, path = deployment
    cfg = yaml.safe_load(path.read_text())
    cfg["destinations"].append({**cfg["destinations"][0], "name": "other", "prefix": "other/"})
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    asyncio.run(ensure_topics(settings))
    worker()
    first, rest = EVENTS[:20], EVENTS[20:]
    asyncio.run(produce(settings, first))
    wait_until(lambda: exported(settings, "main") == 20 and exported(settings, "other") == 20, 90,
               "the first hour in both destinations")
    assert call(settings, "POST", "/admin/destinations/main/disable", {}) == (
        200, {"destination": "main", "exporters": ["main"], "enabled": False})
    wait_until(lambda: next(d for d in call(settings, "GET", "/admin/status")[1]["destinations"]
                            if d["destination"] == "main")["state"] == "disabled", 30, "main disabled")
    asyncio.run(produce(settings, rest))
    wait_until(lambda: exported(settings, "other") == 60, 90, "the other destination to go on")
    time.sleep(3)
    assert exported(settings, "main") == 20                       # main stopped
    status, doc = call(settings, "POST", "/admin/destinations/main/enable", {"exports": "events"})
    assert (status, doc["enabled"], doc.get("data_lost")) == (200, True, None)
    wait_until(lambda: exported(settings, "main") == 60, 90, "main to catch up")
    bucket = settings.destinations[0].bucket
    assert sorted(r["$insert_id"] for r in rows(objects(settings, bucket, "amp/"))) == \
        sorted(ev["insert_id"] for ev, _ in EVENTS)
    assert call(settings, "POST", "/admin/destinations/nope/disable", {}) == (
        404, {"error": "no destination 'nope' in the settings (destinations: main, other)"})


def exported_with_hourly_backfills(deployment, worker):
    """A worker that exported and marked the sample hours, its backfills claiming an hour at a time and reporting
    progress often; the deployment's settings."""
    settings, path = deployment
    cfg = yaml.safe_load(path.read_text())
    cfg["backfill"] = {"chunk_hours": 1, "progress_interval_s": 0.2}
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    asyncio.run(ensure_topics(settings))
    worker()
    asyncio.run(produce(settings))
    wait_until(lambda: marked(settings), 120, "every hour exported and marked")
    return settings


def test_backfills_through_the_api_report_progress_and_can_be_cancelled(deployment, worker):
    settings = exported_with_hourly_backfills(deployment, worker)
    bucket = settings.destinations[0].bucket
    live = objects(settings, bucket, "amp/424242/424242_2024")
    status, started = call(settings, "POST", "/admin/backfills",
                           {"destination": "main", "from": "2024-03-09T07", "to": "2024-03-09T10"})
    assert (status, started["state"], started["hours_total"]) == (202, "running", 3)
    job = started["job"]
    done = wait_until(lambda: (d := call(settings, "GET", f"/admin/backfills/{job}")[1])["state"] == "done" and d,
                      120, "the backfill to finish")
    assert (done["hours_done"], done["events"], done["objects"]) == (3, 60, len([k for k in live if "#" in k]))
    assert objects(settings, bucket, "amp/424242/424242_2024") == live
    assert [b["job"] for b in call(settings, "GET", "/admin/backfills?destination=main")[1]["backfills"]] == [job]

    # a long backfill, cancelled: it stops after the hour it is rebuilding
    status, started = call(settings, "POST", "/admin/backfills",
                           {"destination": "main", "from": "2024-03-09T00", "to": "2024-03-10T00"})
    assert status == 202
    status, cancelled = call(settings, "DELETE", f"/admin/backfills/{started['job']}")
    assert (status, cancelled["cancel"]) == (200, "requested: the backfill stops after the hours it is rebuilding")
    end = wait_until(lambda: (d := call(settings, "GET", f"/admin/backfills/{started['job']}")[1])["state"] != "running"
                     and d, 120, "the backfill to stop")
    assert end["state"] == "cancelled" and end["hours_done"] < 24
    after = objects(settings, bucket, "amp/424242/424242_2024")
    # each hour it rebuilt is whole: the empty ones got their marker, the others are as they were
    assert {k: v for k, v in after.items() if k in live} == live
    assert sorted(set(after) - set(live)) == [f"amp/424242/424242_2024-03-09_{h}_complete"
                                             for h in sorted(range(end["hours_done"]), key=str)]

    assert call(settings, "POST", "/admin/backfills", {"destination": "main", "from": "x", "to": "y"}) == (
        400, {"error": "'x' is not an hour: write it as 2024-03-01T07 (UTC)"})
    assert call(settings, "POST", "/admin/backfills", {"destination": "main"}) == (
        400, {"error": "the body needs from, to (strings, hours such as 2024-03-01T00)"})
    status, hist = call(settings, "GET", "/admin/destinations/main/history?hours=1000")
    hour8 = next(h for h in hist["exporters"][0]["hours"] if h["hour"] == "2024-03-09T08:00:00Z")
    assert [(j["job"], j["status"]) for j in hour8["jobs"]] == [("live", "complete"), (job, "done")]


def test_the_admin_api_describes_itself_prints_policies_and_refuses_without_the_token(deployment, worker):
    settings, path = deployment
    asyncio.run(ensure_topics(settings))
    worker()
    def up():
        try:
            return call(settings, "GET", "/admin/destinations")[0] == 200
        except OSError:
            return False
    wait_until(up, 60, "the admin API")
    status, spec = call(settings, "GET", "/admin/openapi.json")
    from openapi_spec_validator import validate
    validate(spec)
    assert status == 200 and "/admin/backfills/{job}" in spec["paths"]
    status, pol = call(settings, "GET", "/admin/destinations/main/policy?enforce_encryption=true")
    bucket = settings.destinations[0].bucket
    assert pol["role_policy"] == {"Version": "2012-10-17", "Statement": [
        {"Sid": "StreamWrites", "Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
         "Resource": [f"arn:aws:s3:::{bucket}/amp/424242/424242_*"]},
        {"Sid": "StreamRebuilds", "Effect": "Allow", "Action": "s3:DeleteObject",
         "Resource": [f"arn:aws:s3:::{bucket}/amp/424242/424242_*"]},
        {"Sid": "StreamLists", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"}]}
    assert [s["Sid"] for s in pol["bucket_policy"]["Statement"]] == ["StreamWrites", "StreamRebuilds",
                                                                      "StreamLists", "DenyOtherEncryption",
                                                                      "DenyUnencrypted"]
    assert call(settings, "GET", "/admin/status", token="wrong")[0] == 401
    status, dests = call(settings, "GET", "/admin/destinations")
    assert [(d["name"], d["bucket"], d["encryption"]) for d in dests["destinations"]] == [
        ("main", bucket, "sse-s3")]
    assert boto3.client("s3", endpoint_url=settings.s3.endpoint_url).list_objects_v2(
        Bucket=bucket, Prefix="amp/424242/.stream").get("KeyCount") == 0     # the verification's probe, deleted


ROUTES = [("GET", "/admin/status"), ("GET", "/admin/destinations"), ("GET", "/admin/destinations/{}/history"),
          ("POST", "/admin/destinations/{}/enable"), ("POST", "/admin/destinations/{}/disable"),
          ("GET", "/admin/destinations/{}/policy"), ("GET", "/admin/backfills"), ("POST", "/admin/backfills"),
          ("GET", "/admin/backfills/{}"), ("DELETE", "/admin/backfills/{}"), ("GET", "/admin/deadletters"),
          ("GET", "/admin/imports"), ("GET", "/admin/imports/{}/preview"), ("POST", "/admin/imports/{}/retry"),
          ("GET", "/admin/imports/{}/history"),
          ("GET", "/admin/health"), ("GET", "/exports/status"), ("GET", "/admin/openapi.json"),
          ("POST", "/admin/cohorts/{}/syncs"), ("GET", "/admin/profiles/{}/{}"), ("GET", "/admin/cohorts"),
          ("GET", "/admin/cohorts/{}"), ("GET", "/admin/cohorts/{}/file"), ("PUT", "/admin/cohorts/{}/members"),
          ("GET", "/admin/memberships")]
PARAMS = ["hours", "samples", "rows", "key", "destination", "enforce_encryption", "source", "user_id",
          "amplitude_id", "project", "limit", "before", "x"]


def _json_bytes(value: object) -> bytes:
    """JSON of any value hypothesis draws, integers past 64 bits included (orjson refuses to write them; the
    server must still read them)."""
    return json.dumps(value).encode()


def hostile_requests():
    """(method, path with query, body) of every admin route, with names, parameters and bodies hypothesis makes
    up: numbers out of range, not numbers at all, long and odd texts, bad percent-escapes, JSON of any shape."""
    from hypothesis import strategies as st
    texts = st.sampled_from(["", "0", "-1", "1e3", "20", "501", "8785", "true", "on", "nope", "main", "k" * 1100,
                             "٣", "%", "%zz", "\x00", "2024-03-01T00"]) | st.text(max_size=20)
    names = st.sampled_from(["main", "nope", "bf-none", "..", "%2F"]) | st.text(min_size=1, max_size=20)
    scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | texts
    documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["destination", "from", "to", "exports", "source", "keys", "x"]), inner, max_size=5),
        max_leaves=12)
    body = st.none() | st.binary(max_size=40) | documents.map(_json_bytes) | st.fixed_dictionaries(
        {"destination": st.sampled_from(["nope", "other"]) | st.text(max_size=8), "from": texts, "to": texts},
        optional={"exports": texts, "source": texts}).map(orjson.dumps)

    @st.composite
    def request(draw):
        method, template = draw(st.sampled_from(ROUTES))
        method = draw(st.sampled_from([method, method, "GET", "POST", "DELETE", "PUT"]))
        path = template.replace("{}", urllib.parse.quote(draw(names), safe=""))
        pairs = draw(st.lists(st.tuples(st.sampled_from(PARAMS) | st.text(max_size=5), texts), max_size=4))
        query = urllib.parse.urlencode(pairs)
        if draw(st.booleans()):
            query += "&" + draw(st.text(alphabet="%=&+;abz09", max_size=12))
        auth = draw(st.sampled_from([f"Bearer {ADMIN_TOKEN}"] * 4 + [None, "Bearer wrong", "Basic eDp5", ""]))
        return method, f"{path}?{query}" if query else path, draw(body), auth
    return request()


def test_hostile_requests_to_the_admin_api_with_the_token_get_an_answer_never_a_500(deployment, worker):
    """Whatever path, query and body a holder of the token sends, the admin API answers it: 2xx, or 4xx with a
    JSON error naming what is wrong; never a 500. Without the token, or with another, every path is a 401."""
    import http.client

    from hypothesis import HealthCheck, example, given
    from hypothesis import settings as hypothesis_settings
    settings, path = deployment
    cfg = yaml.safe_load(path.read_text())
    cfg["admin"]["max_failed_auth"] = 1000
    path.write_text(yaml.safe_dump(cfg))
    asyncio.run(ensure_topics(settings))
    worker()
    wait_until(lambda: _up(settings), 60, "the admin API")
    seen = {}

    @hypothesis_settings(max_examples=80, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(hostile_requests())
    @example(("GET", "/admin/deadletters?samples=x", None, f"Bearer {ADMIN_TOKEN}"))
    @example(("GET", "/admin/deadletters?samples=99999999999999999999", None, f"Bearer {ADMIN_TOKEN}"))
    @example(("POST", "/admin/backfills", _json_bytes({"destination": "main", "from": 2**70, "to": -2**70}),
              f"Bearer {ADMIN_TOKEN}"))
    @example(("POST", "/admin/backfills", b'{"destination":"main","from":"2024-03-01T00","to":"2024-03-01T01",'
                                          b'"exports":["all"]}', f"Bearer {ADMIN_TOKEN}"))
    def answered(req):
        method, target, body, auth = req
        conn = http.client.HTTPConnection("127.0.0.1", settings.worker.http_port, timeout=120)
        try:
            conn.request(method, target, body=body, headers={"Authorization": auth} if auth is not None else {})
            r = conn.getresponse()
            status, raw = r.status, r.read()
        finally:
            conn.close()
        seen[status // 100] = seen.get(status // 100, 0) + 1
        assert status < 500, (method, target, body, status, raw[:500])
        if auth != f"Bearer {ADMIN_TOKEN}":
            assert status == 401, (method, target, status, raw[:500])
        if status >= 400 and status not in (404, 405):     # the router's own 404 and 405 are plain text
            assert isinstance(orjson.loads(raw)["error"], str), (method, target, raw[:500])
    answered()
    assert seen.get(2, 0) > 0 and seen.get(4, 0) > 0, seen


def _up(settings):
    try:
        return call(settings, "GET", "/admin/destinations")[0] == 200
    except OSError:
        return False
