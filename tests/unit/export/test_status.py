"""The status view lists each exporter of a destination: its events and, when it exports them, its merged-IDs files."""

from stream.export.completion import ExportBook
from stream.export.ledger import LedgerRecord
from stream.export.status import export_status
from stream.export.status_cli import render
from tests.unit.export.test_writer import settings

H8 = 1709971200000   # 2024-03-09 08:00 UTC
HOUR = 3_600_000
MERGES = "identity.merges"


def books_of(*records):
    books = {"main": ExportBook("main", 2), "main.merged-ids": ExportBook("main.merged-ids", 1)}
    for r in records:
        for b in books.values():
            b.add(r)
    return books


def test_a_destination_exporting_both_shows_its_merged_ids_exporter_with_its_own_hours_and_seals():
    s = settings(exports="both", org_id=55)
    books = books_of(
        LedgerRecord("main", 424242, "events.accepted", 0, H8, "bkt", "amp/424242/424242_2024-03-09_8#0.json.gz",
                     0, 4, 5, {}, 400, "hour_closed", H8 + HOUR + 60_000),
        LedgerRecord("main.merged-ids", 424242, MERGES, 0, H8, "bkt", "amp/424242/-55_2024-03-09_8.json.gz", 0, 1, 2,
                     {}, 120, "idle", H8 + HOUR + 70_000),
        LedgerRecord.seal("main.merged-ids", 424242, MERGES, 0, H8, "bkt", "idle", H8 + HOUR + 70_000))
    doc = export_status(s, books)
    heads = [{k: d[k] for k in ("destination", "exports", "layout", "state", "sealed_through", "partitions")}
             for d in doc["destinations"]]
    assert heads == [
        {"destination": "main", "exports": "events", "layout": "amplitude", "state": "ok", "sealed_through": None,
         "partitions": {"0": None, "1": None}},
        {"destination": "main.merged-ids", "exports": "merged_ids", "layout": "merged_ids", "state": "ok",
         "sealed_through": "2024-03-09T08:00:00Z", "partitions": {"0": "2024-03-09T08:00:00Z"}}]
    assert doc["destinations"][1]["hours"] == [
        {"hour": "2024-03-09T08:00:00Z", "state": "sealed", "complete_marker": None, "objects": 1, "events": 2,
         "bytes": 120, "last_error": None}]
    assert render(doc).splitlines()[4:] == [
        "main.merged-ids: project 424242, merged_ids layout, s3://bkt/amp/  [ok]",
        "  sealed through 2024-03-09T08:00:00Z; partitions: 0: 2024-03-09T08:00:00Z",
        "  hour (UTC)            state   marker  objects     events        bytes  last error",
        "  2024-03-09T08:00:00Z  sealed  no            1          2          120"]


def test_a_destination_exporting_events_or_merged_ids_alone_shows_that_exporter_only():
    assert [(d["destination"], d["exports"], d["state"]) for d in export_status(settings(), {})["destinations"]] == [
        ("main", "events", "not running here")]
    doc = export_status(settings(exports="merged_ids", org_id=55, enabled=False), books_of())
    assert [(d["destination"], d["exports"], d["state"]) for d in doc["destinations"]] == [
        ("main.merged-ids", "merged_ids", "disabled")]


def test_an_object_recorded_again_under_its_key_counts_once_as_its_latest_record_says():
    key = "amp/424242/424242_2024-03-09_8#0.json.gz"

    def obj(key, end, events, size, at):
        return LedgerRecord("main", 424242, "events.accepted", 0, H8, "bkt", key, 0, end, events, {}, size,
                            "hour_closed", at)
    # written by one replica, written again under the same key by the next owner of the partition (holding more,
    # then less, events than before), and a second object
    book = books_of(obj(key, 4, 5, 400, H8 + HOUR), obj(key, 9, 10, 800, H8 + HOUR + 5),
                    obj("amp/424242/424242_2024-03-09_8#10000.json.gz", 12, 3, 100, H8 + HOUR + 6),
                    obj(key, 6, 7, 560, H8 + HOUR + 7))["main"]
    (hour,) = book.status()["hours"]
    assert (hour["objects"], hour["events"], hour["bytes"]) == (2, 10, 660)
