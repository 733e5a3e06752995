"""Failure notifications: one per incident after enough failures, one when exports succeed again."""

import asyncio

import orjson

from stream.export.ledger import LedgerRecord
from stream.export.notify import NoticeBook, Notifier, incident
from stream.s3.client import target_of
from stream.settings import load_settings

H = 1709967600000


def settings():
    return load_settings(None, projects=[{"id": 1}], notifications={"webhooks": [
        {"name": "ops", "url": "http://127.0.0.1:9/hook"}]}, destinations=[
        {"name": "main", "project": 1, "bucket": "bkt", "prefix": "amp/", "notify": {"after_failures": 3,
                                                                                       "webhooks": ["ops"]}}])


def err(at, hour=H, reason="access_denied", key="amp/1/1_2024-03-09_7#0.json.gz"):
    return LedgerRecord("main", 1, "t", 0, hour, "bkt", key, -1, -1, 0, {}, 0, reason, at, "error",
                        "missing s3:PutObject on arn:aws:s3:::bkt/amp/1/* (or a bucket policy denies it)")


def obj(at):
    return LedgerRecord("main", 1, "t", 0, H, "bkt", "k", 0, 0, 1, {}, 1, "idle", at, "object")


def test_an_incident_is_the_failures_since_the_last_success():
    assert incident([err(1), obj(2)]) is None
    inc = incident([obj(0), err(10), err(20, H + 3_600_000), err(20, H + 3_600_000)])   # one seen twice
    assert (inc.started, inc.failures, inc.hours) == (10, 2, (H, H + 3_600_000))


def test_one_notification_per_incident_after_enough_failures_then_one_when_resolved():
    s = settings()
    n = Notifier(s, s.destinations[0], "main", target_of(s.destinations[0], s.s3))
    book, sent = NoticeBook(), []

    async def send(kind, doc):
        sent.append((kind, doc))
        return ["webhook:ops"]
    n.send = send
    recorded = []

    async def record(rec):
        recorded.append(rec)

    def step(r):
        book.add(r)
        return asyncio.run(n.notify(book, record, r.written_at))
    assert [step(err(t)) for t in (10, 20)] == [None, None]
    assert step(err(30)) == "failing"
    assert [step(err(t)) for t in (40, 50)] == [None, None]                 # once per incident
    assert step(obj(60)) == "resolved"
    assert step(err(70)) is None                                           # a new incident, not enough yet
    kind, doc = sent[0]
    assert (kind, doc["failures"], doc["missing_permission"], doc["hours_affected"]) == (
        "failing", 3, "s3:PutObject", ["2024-03-09T07:00:00Z"])
    assert doc["statement"] == {"Effect": "Allow", "Principal": {
        "AWS": "arn:aws:iam::<account id>:role/<the role the stream workers run as>"}, "Action": "s3:PutObject",
        "Resource": "arn:aws:s3:::bkt/amp/1/*"}
    assert doc["text"].splitlines()[0] == ("stream: exports to destination main (s3://bkt) have failed 3 times since "
                                           "1970-01-01T00:00:00.010Z: access_denied.")
    assert sent[1][1]["text"] == ("stream: exports to destination main (s3://bkt) succeed again, after failing since "
                                  "1970-01-01T00:00:00.010Z.")
    assert [(r.kind, r.reason, orjson.loads(r.detail)["incident"]) for r in recorded] == [
        ("notice", "failing", 10), ("notice", "resolved", 10)]
