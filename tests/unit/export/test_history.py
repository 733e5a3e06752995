"""The history of a destination's hours: each job, live or backfill, with its outcome and timing."""

from stream.export.history import history
from stream.export.ledger import LedgerRecord

H = 1709967600000
HOUR = 3_600_000


def rec(kind, hour, key="", at=0, events=0, size=0, partition=0, reason="", detail=""):
    return LedgerRecord("main", 1, "events.accepted", partition, hour, "bkt", key, 0, 0, events, {}, size, reason,
                        at, kind, detail)


def test_each_hour_lists_the_live_export_and_each_backfill_with_counts_timing_and_errors():
    end = H + HOUR
    records = [
        rec("error", H + HOUR, "k8", end + HOUR + 10_000, reason="access_denied", detail="missing s3:PutObject on x"),
        rec("object", H, "k7a", end + 60_000, 3, 100),
        rec("object", H, "k7b", end + 65_000, 2, 50, partition=1),
        rec("seal", H, partition=0), rec("seal", H, partition=1),
        rec("marker", H, "m7", end + 70_000, reason="complete"),
        rec("object", H, "k7a", end + 90_000, 4, 120),                      # the same key written again
        rec("job", -1, at=end + 200_000, detail='{"job":"bf-1","state":"running","hours_written":[]}'),
        rec("object", H, "k7c", end + 210_000, 6, 170, detail='{"job":"bf-1"}'),
        rec("deleted", H, "k7b", end + 211_000, detail='{"job":"bf-1"}'),
        rec("marker", H, "m7", end + 212_000, reason="complete", detail='{"job":"bf-1"}'),
        rec("job", -1, at=end + 213_000, detail='{"job":"bf-1","state":"done","hours_written":[' + str(H) + ']}')]
    doc = history(records, 10, now_ms=end + 300_000, partitions=2)
    assert [h["hour"] for h in doc] == ["2024-03-09T08:00:00Z", "2024-03-09T07:00:00Z"]
    (failing,), (live, bf) = doc[0]["jobs"], doc[1]["jobs"]
    assert (failing["job"], failing["status"], failing["failed_attempts"], failing["last_error"]["detail"]) == (
        "live", "failing", 1, "missing s3:PutObject on x")
    assert live == {"job": "live", "status": "complete", "objects": 1, "events": 4, "bytes": 120, "replaced": 1,
                    "started_at": "2024-03-09T08:01:00.000Z", "ended_at": "2024-03-09T08:01:30.000Z",
                    "duration_s": 30.0, "delay_s": 90.0, "failed_attempts": 0, "last_error": None}
    assert (bf["job"], bf["status"], bf["objects"], bf["events"], bf["delay_s"]) == ("bf-1", "done", 1, 6, 213.0)


def test_a_backfill_silent_for_a_minute_is_interrupted():
    records = [rec("job", -1, at=H, detail='{"job":"bf-2","state":"running","hours_written":[' + str(H) + ']}')]
    assert history(records, now_ms=H + 61_000)[0]["jobs"][0]["status"] == "interrupted"
    assert history(records, now_ms=H + 30_000)[0]["jobs"][0]["status"] == "running"
