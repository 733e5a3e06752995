"""Replays in the cohorts stage and ``exactly`` counts: an event delivered twice (the same message read again, or
written again by an upstream stage at a later offset, with the same source offset) counts once, so a user who
performed an event exactly once stays in an ``exactly 1`` cohort."""

import asyncio
import calendar
import time

import orjson

from stream.cohorts.stage import LocalStage
from stream.cohorts.sync import jobs_of, run_syncs
from stream.events.batch import EventBatch, Origin, Source
from stream.s3.storage import MemoryStorage
from stream.settings import load_settings

P = 424242
BUCKET = "cohort-bucket"


def ms(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")) * 1000


T1 = ms("2024-03-10 00:00")


def settings():
    return load_settings(None, projects=[{"id": P}], cohorts=[
        {"id": "once", "project": P, "name": "Bought exactly once", "rule": {
            "performed": "purchase", "count": {"op": "exactly", "n": 1}, "within_days": 3}}],
        cohort_destinations=[{"name": "crm", "bucket": BUCKET, "encryption": {"type": "none"}, "syncs": [
            {"cohort": "once", "cadence": "daily"}]}])


class Feed:
    """events.accepted as the stage reads it (one partition): one batch per event, each with its own source offset
    on events.ingest[0]."""

    def __init__(self, s):
        self.stage = LocalStage(s.cohort_set, 1, s.cohort_state.state_days)
        self.offset = 0
        self.sent: dict[str, EventBatch] = {}

    def event(self, name, aid, at, user_id):
        r = {"amplitude_id": aid, "app": P, "event_type": "purchase", "event_time": at + ":00.000000",
             "user_id": user_id}
        up = ms(at) + 5_000
        self.offset += 1
        b = EventBatch(P, up - up % 3_600_000, Origin("events.accepted", 0, self.offset), [self.offset], [b"d"],
                       [up], [b"u" * 16], [orjson.dumps(r)], Source("events.ingest", 0))
        self.sent[name] = b
        self.stage.accepted(0, b)

    def again(self, name):
        """The batch read again: the same message (a consumer that re-read it)."""
        self.stage.accepted(0, self.sent[name])

    def rewritten(self, name):
        """The batch written again by an upstream stage: a later offset of events.accepted, the same source."""
        self.offset += 1
        b = self.sent[name]
        self.stage.accepted(0, EventBatch(b.project, b.hour, Origin("events.accepted", 0, self.offset), b.offsets,
                                          b.keys, b.times, b.uuids, b.lines, b.source))


def test_a_user_who_performed_the_event_once_stays_in_an_exactly_1_cohort_when_the_row_is_delivered_twice():
    s = settings()
    f = Feed(s)
    f.event("a", 10, "2024-03-09 12:00", "u-10")        # once, delivered twice: the same message read again
    f.event("b", 20, "2024-03-09 12:00", "u-20")        # once, written again upstream at a later offset
    f.event("c", 30, "2024-03-09 12:00", "u-30")        # twice: two events
    f.event("d", 30, "2024-03-09 13:00", "u-30")
    f.event("e", 40, "2024-03-09 14:00", "u-40")        # once, delivered once
    f.again("a")
    f.rewritten("b")
    f.again("b")
    f.stage.advance(T1 + 60_000)
    view = asyncio.run(f.stage.view(s.cohort_set, T1))
    assert list(view.members(s.cohort_set.cohort("once"))) == [10, 20, 40]
    assert (f.stage.totals.applied, f.stage.totals.replayed) == (5, 3)
    storage = MemoryStorage()
    (r,) = asyncio.run(run_syncs(s, jobs_of(s, "once"), T1 + 60_000, lambda d: storage, f.stage))
    assert (r.scheduled_ms, r.members, r.entering, r.exiting, r.error) == (T1, 3, 3, 0, None)
    assert storage.objects[(BUCKET, "cohorts/424242_once_2024-03-10T00:00_existing.csv")] == (
        b"amplitudeID,userID\r\n10,u-10\r\n20,u-20\r\n40,u-40\r\n")
