"""Mirror sync through S3 imports, end to end on the real broker and S3: 1,000 events imported from an append
source and exported in four hours, then a mirror file of 100 UPDATEs, 50 DELETEs and 20 INSERTs across three of
them read by a mirror source: the three hours hold exactly the model's rows (an event imported while the rebuild
holds its hour once among them), their markers are written again, and the fourth hour keeps its bytes."""

import asyncio
import gzip

import boto3
import orjson
import pytest
import yaml

from stream.export.ledger import Claim, facts
from stream.export.mirror import Op, updated
from stream.imports import mutations as records
from stream.imports import ops
from stream.imports.files import ImportFile
from stream.kafka import ensure_topics, read_all
from stream.settings import load_settings
from tests.integration.conftest import wait_until
from tests.integration.test_import import T0, discover
from tests.integration.test_mirror import (H7, HOUR, MANY, TOUCHED, hour_objects, ledger_of, mirror_import, objects,
                                           rows_by_hour)

pytestmark = pytest.mark.integration

HOURS = [*TOUCHED, "2024-03-09_10"]
EVENTS = {"event_type": "event_type", "user_id": "user_id", "device_id": "device_id", "insert_id": "insert_id",
          "time": "sut", "server_received_time": "sut", "server_upload_time": "sut"}
"""The append source's converter: the rows carry their time, which is also their server times (the upload time
places each in its hour)."""
FIXES = {**EVENTS, "event_properties": {"price": "price"}, "$mutation_type": "op"}
"""The mirror source's converter: the same, the changed property and the row's mutation type."""


def two_sources(deployment):
    """The deployment with a mirror source ("corrections", mirror/) and an append source ("events", events/) on one
    source bucket, and the archive destination the mirror source needs."""
    settings, src_bucket = mirror_import(deployment)
    path = deployment[1]
    cfg = yaml.safe_load(path.read_text())
    (fixes,) = cfg["sources"]
    fixes["converter"] = {"converterConfig": {"convertToAmplitudeFunc": FIXES}}
    cfg["sources"].append({"name": "events", "project": 424242, "bucket": src_bucket, "prefix": "events/",
                           "converter": {"converterConfig": {"convertToAmplitudeFunc": EVENTS}},
                           "scan": {"enabled": False}})
    path.write_text(yaml.safe_dump(cfg))
    return load_settings(path), src_bucket


def jsonl(rows):
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


def event_files():
    """MANY as two import files: the first 500 rows as JSON lines, the rest gzipped."""
    rows = [{**ev, "sut": ts} for ev, ts in MANY]
    return {"events/a.json": jsonl(rows[:500]), "events/b.json.gz": gzip.compress(jsonl(rows[500:]))}


def mirror_rows():
    """100 UPDATEs (a new event_type and price), 50 DELETEs and 20 INSERTs of new events across hours 7, 8 and 9
    (hour 10 untouched), their types spelled as a file may spell them; and the insert_ids updated, deleted and
    inserted (by hour)."""
    events = {ev["insert_id"]: (ev, ts) for ev, ts in MANY}
    rows, ups, dels, new = [], [], [], {h: [] for h in TOUCHED}
    for k, (u, d, i) in enumerate([(34, 17, 7), (33, 17, 7), (33, 16, 6)]):
        ups += [f"ev-{k * 250 + j:04d}" for j in range(u)]
        dels += [f"ev-{k * 250 + 100 + j:04d}" for j in range(d)]
        for j in range(i):
            new[TOUCHED[k]].append(f"new-{k}-{j}")
            rows.append({"op": "Insert", "event_type": "Imported", "user_id": "user-0009", "device_id": "device-0099",
                         "insert_id": f"new-{k}-{j}", "price": -j, "sut": H7 + k * HOUR + 3_000_000 + j * 1000})
    for x in ups:
        ev, ts = events[x]
        rows.append({"op": "update", "event_type": "Purchase", "user_id": ev["user_id"], "device_id": ev["device_id"],
                     "insert_id": x, "price": len(rows) + 1, "sut": ts})
    for x in dels:
        rows.append({"op": "DELETE", "user_id": events[x][0]["user_id"], "insert_id": x})
    assert (len(ups), len(dels), sum(map(len, new.values())), len(rows)) == (100, 50, 20, 170)
    return rows, set(ups), set(dels), new


def status(settings):
    (doc,) = [d for d in asyncio.run(ops.status(settings)) if d["source"] == "corrections"] or [None]
    return doc


def test_a_mirror_file_imported_from_s3_rewrites_three_of_four_imported_hours_to_the_model_and_keeps_the_fourth(
        deployment, worker, tmp_path):
    """The rebuild pauses once it has claimed its first hours (``STREAM_PAUSE_AT``): a third import file brings an
    event of one of them then, which the live export writes while the rebuild holds the hour; it is there once
    after the rebuild goes on."""
    settings, src_bucket = two_sources(deployment)
    asyncio.run(ensure_topics(settings))
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    for key, body in event_files().items():
        s3.put_object(Bucket=src_bucket, Key=key, Body=body)
    asyncio.run(discover(settings, [ImportFile("events", src_bucket, k, T0, "sqs") for k in event_files()]))
    go = tmp_path / "go"
    worker(env={"STREAM_PAUSE_AT": "backfill.claimed", "STREAM_PAUSE_UNTIL": str(go)})
    wait_until(lambda: {f"amp/424242/424242_{h}_complete" for h in HOURS} <= {
        r.key for r in ledger_of(settings) if r.kind == "marker"}, 150, "the four imported hours exported and marked")
    before = objects(settings)
    old = rows_by_hour(before)
    assert {h: len(rs) for h, rs in old.items()} == {h: 250 for h in HOURS}
    assert sorted(r["$insert_id"] for rs in old.values() for r in rs) == sorted(ev["insert_id"] for ev, _ in MANY)
    markers_before = {h: s3.head_object(Bucket=settings.destinations[0].bucket,
                                        Key=f"amp/424242/424242_{h}_complete")["LastModified"] for h in HOURS}

    rows, ups, dels, new = mirror_rows()
    key = "mirror/fixes.json"
    s3.put_object(Bucket=src_bucket, Key=key, Body=jsonl(rows))
    asyncio.run(discover(settings, [ImportFile("corrections", src_bucket, key, T0, "sqs")]))

    # the file's rows as the importer produced them: one mutation each, of the type its row spells, in records of
    # many (a record per partition)
    def produced():
        recs = asyncio.run(read_all(settings, settings.topics.name("mutations")))
        assert all(records.is_many(r.value) for r in recs)
        got = [m for r in recs for _, m in records.decode_all(r.value)]
        return got if len(got) >= 170 else None
    muts = wait_until(produced, 90, "the mirror file's 170 mutations produced")
    assert len(muts) == 170
    assert sorted((m.op, m.insert_id) for m in muts) == sorted(
        [(Op.INSERT, i) for ids in new.values() for i in ids] + [(Op.UPDATE, i) for i in ups]
        + [(Op.DELETE, i) for i in dels])
    by_id = {m.insert_id: m for m in muts}

    # the rebuild has claimed hours and waits there: an event of the first of them is imported meanwhile
    claim = wait_until(lambda: [r for r in ledger_of(settings) if r.kind == "claim"], 120, "the rebuild's claim")[0]
    job, held = Claim.of(claim).job, min(Claim.of(claim).hours)
    assert held in (H7, H7 + HOUR, H7 + 2 * HOUR)
    live_hour = TOUCHED[(held - H7) // HOUR]
    live = {"event_type": "Live", "device_id": "device-0003", "user_id": "user-0003", "insert_id": "live-1",
            "sut": held + 2_600_000}
    s3.put_object(Bucket=src_bucket, Key="events/live.json", Body=jsonl([live]))
    asyncio.run(discover(settings, [ImportFile("events", src_bucket, "events/live.json", T0, "sqs")]))
    wait_until(lambda: any(r["$insert_id"] == "live-1" for r in rows_by_hour(objects(settings)).get(live_hour, [])),
               60, "the live event exported during the rebuild")
    assert [r.kind for r in ledger_of(settings) if facts(r).get("job") == job and r.kind in (
        "object", "deleted", "marker")] == []       # nothing of the rebuild written yet
    go.touch()
    new[live_hour] = sorted(new[live_hour] + ["live-1"])

    # the model: the old rows updated (identity and hour kept) or deleted, the new events added
    expected = {h: sorted([updated(r, by_id[r["$insert_id"]].row) if r["$insert_id"] in ups else r
                           for r in old[h] if r["$insert_id"] not in dels], key=lambda r: r["$insert_id"])
                for h in TOUCHED}
    want_ids = {h: sorted([r["$insert_id"] for r in expected[h]] + new[h]) for h in TOUCHED}

    def applied():
        recs = ledger_of(settings)
        jobs = {Claim.of(r).job for r in recs if r.kind == "claim"}
        marked = {r.hour for r in recs if r.kind == "marker" and facts(r).get("job") in jobs}
        now = rows_by_hour(objects(settings))
        ids = {h: sorted(r["$insert_id"] for r in now.get(h, [])) for h in TOUCHED}
        doc = status(settings)
        return (marked >= {H7, H7 + HOUR, H7 + 2 * HOUR} and ids == want_ids and doc and doc["mirror_files"]
                and sum(doc["mirror_files"][0]["mutations"].values()) == 170 and (now, recs, jobs, doc))
    now, recs, jobs, doc = wait_until(applied, 150, "the three hours rewritten to the model")
    after = objects(settings)

    # the import's record of both sources: every row read once and imported
    assert {d["source"]: (d["files"]["done"], d["rows"]) for d in asyncio.run(ops.status(settings))} == {
        "events": (3, {"read": 1001, "imported": 1001, "dead_lettered": 0}),
        "corrections": (1, {"read": 170, "imported": 170, "dead_lettered": 0})}
    (f,) = doc["mirror_files"]
    assert (f["key"], f["mutations"], f["outcomes"], sorted({h["hour"] for h in f["hours"]})) == (
        key, {"INSERT": 20, "UPDATE": 100, "DELETE": 50},
        {"applied": 150, "new": 20, "unknown_insert_id": 0, "insert_conflict": 0, "dead_lettered": 0},
        ["2024-03-09T07", "2024-03-09T08", "2024-03-09T09"])

    # every touched hour, row by row: the old rows as the model says, the changed properties exactly
    for k, h in enumerate(TOUCHED):
        assert [r for r in now[h] if r["$insert_id"] not in new[h]] == expected[h]
        originals = {r["$insert_id"]: r for r in old[h]}
        for r in now[h]:
            i = r["$insert_id"]
            assert i not in dels
            if i in ups:
                o = originals[i]
                assert (r["event_type"], r["event_properties"], r["user_id"], r["device_id"]) == (
                    "Purchase", {"price": by_id[i].row["event_properties"]["price"]}, o["user_id"], o["device_id"])
                kept = ("uuid", "amplitude_id", "server_upload_time", "server_received_time", "event_time")
                assert [r[f] for f in kept] == [o[f] for f in kept]     # the row gave the event's own time again
            elif i in originals:
                assert r == originals[i]
        fresh = [r for r in now[h] if r["$insert_id"] in new[h]]
        assert [(r["$insert_id"], r["event_type"], r["user_id"], r["device_id"], r["event_properties"],
                 r["server_upload_time"], r["data"].get("$skip_user_properties_sync")) for r in fresh] == [
            (i, "Live", "user-0003", "device-0003", {}, f"2024-03-09 {7 + k:02d}:43:20.000000", True)
            if i == "live-1" else         # an imported event: the source does not sync its user properties
            (i, "Imported", "user-0009", "device-0099", {"price": -int(i.rsplit("-", 1)[1])},
             by_id[i].row["server_upload_time"], True) for i in new[h]]
        assert [r["server_upload_time"][:13] for r in fresh] == [f"2024-03-09 {7 + k:02d}"] * len(fresh)
    # the first update, spelled out: the price its row gave (row 21 of the file), its identity the exported one
    got = {r["$insert_id"]: r for r in now["2024-03-09_7"]}["ev-0000"]
    was = {r["$insert_id"]: r for r in old["2024-03-09_7"]}["ev-0000"]
    assert (got["event_type"], got["event_properties"], got["uuid"], got["amplitude_id"]) == (
        "Purchase", {"price": 21}, was["uuid"], was["amplitude_id"])

    # the untouched hour keeps its bytes and no rebuild claimed it; the rewritten hours' markers written again
    assert hour_objects(before, "2024-03-09_10")
    assert hour_objects(after, "2024-03-09_10") == hour_objects(before, "2024-03-09_10")
    assert sorted({hr for r in recs if r.kind == "claim" for hr in Claim.of(r).hours}) == [
        H7, H7 + HOUR, H7 + 2 * HOUR]
    bucket = settings.destinations[0].bucket
    for h in TOUCHED:
        assert s3.head_object(Bucket=bucket, Key=f"amp/424242/424242_{h}_complete")["LastModified"] > markers_before[h]
    assert s3.head_object(Bucket=bucket, Key="amp/424242/424242_2024-03-09_10_complete")["LastModified"] == \
        markers_before["2024-03-09_10"]
    # every event once, the live one included
    ids = [r["$insert_id"] for h in HOURS for r in now[h]]
    assert len(ids) == len(set(ids)) == 1000 - 50 + 20 + 1
