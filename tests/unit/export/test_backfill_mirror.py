"""A rebuild of an hour with a mirror log: the hour's rows with every kept mutation applied, objects cut where the
live export cut them, the live export's other objects of the hour removed (one topic in memory, one bucket)."""

import asyncio
import gzip

import orjson
import pytest

from stream.export.backfill import BackfillRefused, Request
from stream.export.mirror import Mutation, Op, Outcome
from stream.export.mirror_apply import MirrorLog
from stream.export.mirror_log import encode, log_key
from tests.unit.export.test_backfill_race import JOB, Interleaved, Run
from tests.unit.export.test_writer import H7, HOUR


def ev(insert_id, **kw):
    return orjson.dumps({"$insert_id": insert_id, "uuid": f"u-{insert_id}", "device_id": "d1",
                         "event_type": "view", **kw}).decode()


def rebuild(run, mirror):
    b = Interleaved(run.topic, run.ledger, run.cycle.step, lambda: None, settings=run.s,
                    request=Request("main", H7, H7 + HOUR, job=JOB), storage=run.storage,
                    append_ledger=run.append, clock=run.clock, spool_dir=run.tmp / "bf", mirror=mirror)
    asyncio.run(b._rebuild_from_topic(b.inputs[0], [H7]))
    return b


def objects(storage):
    return {k.removeprefix("amp/424242/424242_2024-03-09_7#"): [orjson.loads(x)["$insert_id"] + ":" +
                                                                orjson.loads(x)["event_type"]
                                                                for x in gzip.decompress(body).splitlines()]
            for (_, k), body in storage.objects.items() if k.startswith("amp/") and k.endswith(".json.gz")}


def test_a_rebuild_applies_every_kept_mutation_of_the_hour_and_keeps_the_live_cuts(tmp_path):
    run = Run(tmp_path, max_object_events=2, per_poll=10)
    run.topic.produce(0, ev("a"), ev("b"))
    run.topic.produce(0, ev("c"))
    run.topic.produce(1, ev("x"))
    run.live(3)
    assert objects(run.storage) == {"0.json.gz": ["a:view", "b:view"], "1000.json.gz": ["c:view"],
                                    "1.json.gz": ["x:view"]}
    new = {"$insert_id": "a", "uuid": "other", "device_id": "d1", "event_type": "buy"}
    run.storage.objects[("log-bucket", log_key("_stream/mirror/", 424242, H7, 0, 5))] = encode([
        Mutation("a", Op.UPDATE, (1, "s3://src/m1.json", 1), None, new),
        Mutation("c", Op.DELETE, (1, "s3://src/m1.json", 2)),
        Mutation("gone", Op.DELETE, (1, "s3://src/m1.json", 3))])
    run.storage.objects[("log-bucket", log_key("_stream/mirror/", 424242, H7, 1, 9))] = encode([
        Mutation("x", Op.DELETE, (2, "s3://src/m2.json", 1))])
    b = rebuild(run, MirrorLog(run.storage, "log-bucket", "_stream/mirror/", False))
    # "c" was the only row of the live object 1000: it is gone with its row; partition 1 lost its only object
    assert objects(run.storage) == {"0.json.gz": ["a:buy", "b:view"]}
    body = gzip.decompress(run.storage.objects[("bkt", "amp/424242/424242_2024-03-09_7#0.json.gz")])
    assert orjson.loads(body.splitlines()[0]) == {"$insert_id": "a", "uuid": "u-a", "device_id": "d1",
                                                  "event_type": "buy"}
    assert b.mirror_outcomes == {("UPDATE", Outcome.UPDATED): 1, ("DELETE", Outcome.DELETED): 2,
                                 ("DELETE", Outcome.UNMATCHED): 1}
    first = dict(run.storage.objects)
    rebuild(run, MirrorLog(run.storage, "log-bucket", "_stream/mirror/", False))
    assert run.storage.objects == first            # a second rebuild leaves the same bytes


def test_without_a_mirror_log_a_rebuild_writes_the_rows_as_they_were_accepted(tmp_path):
    run = Run(tmp_path, max_object_events=2, per_poll=10)
    run.topic.produce(0, ev("a"))
    run.live(2)
    run.storage.objects[("log-bucket", log_key("_stream/mirror/", 424242, H7, 0, 5))] = encode([
        Mutation("a", Op.DELETE, (1, "s3://src/m1.json", 1))])
    rebuild(run, None)
    assert objects(run.storage) == {"0.json.gz": ["a:view"]}


class PastRetention(Interleaved):
    """events.accepted no longer holds hour 7: it holds from hour 8 on."""

    async def _accepted_from(self, topic):
        return H7 + HOUR


def test_an_archive_hour_past_the_retention_is_rebuilt_from_its_own_objects_with_the_mutations(tmp_path):
    run = Run(tmp_path, max_object_events=2, per_poll=10)
    run.s.destinations[0].__dict__["archive"] = True
    run.topic.produce(0, ev("a"), ev("b"))
    run.topic.produce(0, ev("c"))
    run.live(3)
    run.storage.objects[("bkt", log_key("_stream/mirror/", 424242, H7, 0, 5))] = encode([
        Mutation("b", Op.UPDATE, (1, "s3://src/m1.json", 1), None,
                 {"$insert_id": "b", "uuid": "x", "device_id": "d1", "event_type": "fixed"}),
        Mutation("c", Op.DELETE, (1, "s3://src/m1.json", 2))])
    b = PastRetention(run.topic, run.ledger, run.cycle.step, lambda: None, settings=run.s,
                      request=Request("main", H7, H7 + HOUR, job=JOB), storage=run.storage,
                      append_ledger=run.append, clock=run.clock, spool_dir=run.tmp / "bf",
                      mirror=MirrorLog(run.storage, "bkt", "_stream/mirror/", False))
    doc = asyncio.run(b.run())
    assert (doc["state"], doc["source"], doc["hours_done"]) == ("done", "auto", 1)
    assert objects(run.storage) == {"0.json.gz": ["a:view", "b:fixed"]}     # 1000 held only c: gone
    assert ("bkt", "amp/424242/424242_2024-03-09_7_complete") in run.storage.objects
    # each mutation matched a row of one of the hour's two objects: none is unmatched
    assert b.mirror_outcomes == {("UPDATE", Outcome.UPDATED): 1, ("DELETE", Outcome.DELETED): 1}
    # without a mirror log, the archive is not rebuilt from itself: the hour is refused
    plain = PastRetention(run.topic, run.ledger, run.cycle.step, lambda: None, settings=run.s,
                          request=Request("main", H7, H7 + HOUR, job=JOB), storage=run.storage,
                          append_ledger=run.append, clock=run.clock, spool_dir=run.tmp / "bf2")
    with pytest.raises(BackfillRefused, match="neither events.accepted nor the archive destination holds"):
        asyncio.run(plain.run())
