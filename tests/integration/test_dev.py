"""`stream dev`, the README's first command: the past hours' objects land within a minute, the API answers, and
everything it started stops when it stops."""

import base64
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

import orjson
import pytest

from stream.devstack.dev import API_KEY, WRITE_KEY
from stream.events.timefmt import HOUR_MS, hour_label

pytestmark = pytest.mark.integration


def test_stream_dev_lands_every_kind_of_output_and_serves_the_api_then_stops_everything_twice(tmp_path):
    # a first run in the folder leaves its worker state behind; the second run must start on it as if new
    first = subprocess.run([sys.executable, "-m", "stream", "dev", "--exit-after", "15", "--backfill", "50",
                            "--rate", "5", "--dir", str(tmp_path / "dev")], capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "dev" / "data").exists()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "stream", "dev", "--exit-after", "45", "--backfill", "400",
                             "--rate", "20", "--dir", str(tmp_path / "dev")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, api_url, answers = [], [], []

    def read():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            m = re.search(r"HTTP API +(http://127\.0\.0\.1:\d+)", line)
            if m:
                api_url.append(m.group(1))
    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 60
    while not api_url and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert api_url, "\n".join(lines)
    for path, body, headers in [
            ("/2/httpapi", {"api_key": API_KEY, "events": [{"event_type": "Signed Up", "user_id": "user-00001"}]},
             {}),
            ("/v1/track", {"userId": "user-00001", "event": "Plan Upgraded"},
             {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()})]:
        req = urllib.request.Request(api_url[0] + path, data=orjson.dumps(body), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
        with urllib.request.urlopen(req, timeout=10) as r:
            answers.append((r.status, orjson.loads(r.read()).get("code", r.status)))
    # the console's "sync now" on the demo's worker, while the syncs the demo asked for run: queued, as theirs
    deadline = time.monotonic() + 75
    while not any("waiting for the syncs of " in line for line in lines) and time.monotonic() < deadline \
            and proc.poll() is None:
        time.sleep(0.2)
    text = "\n".join(lines)
    token = re.search(r"admin token +(\S+)", text)
    cohorts_url = re.search(r"(http://127\.0\.0\.1:\d+)/console/ +\(sign in with the admin token; its Cohorts page: "
                            r"Sync now\)", text)
    asked = re.search(r"waiting for the syncs of (\d{4}-\d\d-\d\dT\d\d:\d\d) UTC", text)
    assert token and cohorts_url and asked, text
    req = urllib.request.Request(cohorts_url.group(1) + "/admin/cohorts/buyers/syncs", data=b"{}", method="POST",
                                 headers={"Authorization": f"Bearer {token.group(1)}",
                                          "Content-Type": "application/json"})
    sent = int(time.time() * 1000)
    with urllib.request.urlopen(req, timeout=10) as r:
        sync_now = (r.status, [(s["destination"], s["cadence"], s["state"], time.strftime(
            "%Y-%m-%dT%H:%M", time.gmtime(s["scheduled_ms"] / 1000))) for s in orjson.loads(r.read())["syncs"]])
    answered = int(time.time() * 1000)
    assert proc.wait(150) == 0, "\n".join(lines)
    reader.join(10)
    out = "\n".join(lines)
    assert answers == [(200, 200), (200, 200)]
    # queued for a sync stamped at the request's minute rounded up (it counts every event accepted before it),
    # which is the minute the demo asked for or a later one
    assert [s[:3] for s in sync_now[1]] == [("local-cohorts", "once", "queued")] and sync_now[0] == 202, out
    assert sync_now[1][0][3] in {time.strftime("%Y-%m-%dT%H:%M", time.gmtime(-(-t // 60_000) * 60))
                                 for t in (sent, answered)}, out
    assert sync_now[1][0][3] >= asked.group(1), out
    now = int(time.time() * 1000)
    for h in (now - now % HOUR_MS - 2 * HOUR_MS, now - now % HOUR_MS - HOUR_MS):
        day, hour = hour_label(h)
        key = rf"s3://stream-dev/amp/424242/424242_{day}_{hour}#\d+\.json\.gz"
        landed = re.findall(rf"\[ *([\d.]+)s\] landed {key}", out)
        assert landed and float(landed[0]) < 60, out                       # within a minute of starting
        assert f"hour complete: s3://stream-dev/amp/424242/424242_{day}_{hour}_complete" in out, out
        assert re.search(rf"landed s3://stream-dev/segment/segment-logs/424242/\d+/{h}-\d+\.gz", out), out
    # users with two devices were merged: a merged-IDs file of a past hour, in the project's folder
    assert re.search(r"landed s3://stream-dev/amp/424242/-55_\d{4}-\d\d-\d\d_\d+(#\d+)?\.json\.gz .* "
                     r"\(local\.merged-ids, ", out), out
    # the first dead letter of each reason, with its source coordinates, and the count by reason at the end
    assert re.search(r"dead letter: \S+ \S+Z missing_id user_id from events\.ingest\[\d\]@\d+: the event needs a "
                     r"user_id or a device_id", out), out
    assert re.search(r"dead letters by reason: .*malformed_json \d+", out), out
    # files dropped on the import source's bucket: announced through SQS, imported, their bad rows dead-lettered
    for name, kind in (("export-0001.json.gz", "malformed_json"), ("export-0002.csv", "bad_csv_row")):
        key = rf"s3://stream-dev-import/clicks/\d{{4}}-\d\d-\d\d/{re.escape(name)}"
        assert re.search(rf"imported {key}: 21 rows, 20 to events\.valid, 1 dead-lettered", out), out
        assert re.search(rf"dead letter: \S+ \S+Z {kind} from {key}#4: ", out), out
    # a mirror file of corrections: an UPDATE and a DELETE of two events of the oldest hour, rewritten in place
    before = re.search(r"mirror: hour (\S+ \d+):00 is exported; before the corrections:\n +(\S+) +(.+?)  user (\S+) "
                       r" \(uuid (\S+)\)\n +(\S+) ", out)
    assert before, out
    hour, updated, event_type, user, uuid, deleted = before.groups()
    assert re.search(r"imported s3://stream-dev-import/corrections/\S+/fix-0001\.json: 2 rows, 2 to events\.mutations, "
                     r"0 dead-lettered", out), out
    assert re.search(rf"mirror: hour {hour}:00 rewritten; after:\n +{updated} +{re.escape(event_type)} \(corrected\)"
                     rf"  user {user}  \(uuid {uuid}, kept\)\n +{deleted}  deleted", out), out
    # the demo's two cohorts: a static one's uploaded list, then the worker asked for another sync of each ("sync
    # now": their once syncs completed as the worker started), and that sync of each, diffed against the
    # first one: three files with their key and first lines (the header, then members)
    assert ("uploaded 6 user ids to the static cohort vips: "
            "s3://stream-dev/_stream/cohorts/local-cohorts/static/424242_vips.json") in out, out
    for cohort in ("buyers", "vips"):
        assert re.search(rf"\] sync now: {cohort} -> local-cohorts \(once\): queued \(POST "
                         rf"http://127\.0\.0\.1:\d+/admin/cohorts/{cohort}/syncs\)\n", out), out
    for cohort in ("buyers", "vips"):
        summary = re.search(rf"cohort sync {cohort} -> local-cohorts: (\d+) members, (\d+) entering, (\d+) exiting "
                            rf"\((\d{{4}}-\d\d-\d\dT\d\d:\d\d) UTC, since the sync of \d{{4}}-\d\d-\d\dT\d\d:\d\d\)\n",
                            out + "\n")
        assert summary, out
        # diffed against the once sync as the worker started, which counts the events the stage had taken by then
        # (the samples' upload times are hours before: whichever the stage took are before its time); users merged
        # since exit, as their survivors count their events
        members, entering, exiting = int(summary.group(1)), int(summary.group(2)), int(summary.group(3))
        assert entering <= members, out
        assert members == 5 if cohort == "vips" else members > 0, out     # one listed user_id has no events
        for diff_type in ("entering", "exiting", "existing"):
            shown = re.search(rf"\n    s3://stream-dev/cohorts/424242_{cohort}_{summary.group(4)}_{diff_type}"
                              rf"\.csv\n      amplitudeID,userID,plan\n((?:      .*\n)*)", out + "\n")
            assert shown, out
            rows = shown.group(1).splitlines()
            assert len(rows) == {"entering": min(entering, 3), "exiting": min(exiting, 3),
                                 "existing": min(members, 3)}[diff_type], out
            assert all(re.fullmatch(r"      \d+,(user-[0-9a-f]{8})?,(free|starter|pro|enterprise)?", r) for r in rows), out
    assert "import setup: source clicks: set up" in out and "import setup: source corrections: set up" in out
    assert "removed the previous run's worker state" in out
    pids = {int(p) for p in re.findall(r"pid (\d+)", out)}
    assert len(pids) == 4                                  # broker, moto, worker, API
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert time.monotonic() - started < 155      # the demo's syncs may wait for the minute after the first
