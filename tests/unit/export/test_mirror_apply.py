import asyncio
import contextlib
import gzip

import orjson

from stream.clock import FakeClock
from stream.events.timefmt import DAY_MS, HOUR_MS
from stream.export import mirror_index as ix
from stream.export.mirror import Mutation, Op
from stream.export.mirror_apply import MirrorApplier, Targeted, fold_new, hour_mutations
from stream.s3.storage import MemoryStorage

H7 = 1709967600000   # 2024-03-09T07:00Z
H8 = H7 + HOUR_MS
NOW = H8 + 2 * DAY_MS


class Index:
    def __init__(self, held):
        self.held = {ix.key(p, i): ix.encode([ix.entry(h, d) for h, d in es]) for (p, i), es in held.items()}

    def get_many(self, keys):
        return [self.held.get(k) for k in keys]


def row(insert_id, device="d1", **kw):
    return {"$insert_id": insert_id, "device_id": device, "event_type": "e", **kw}


def applier(held, insert_is_update=False, keep_days=90):
    storage, rebuilt = MemoryStorage(), []

    async def rebuild(project, hours):
        rebuilt.append((project, hours, sorted(k for (_, k) in storage.objects)))

    @contextlib.asynccontextmanager
    async def logs(project):
        yield storage, f"archive-{project}"

    a = MirrorApplier(FakeClock(NOW), Index(held), logs, "_stream/mirror/", keep_days, insert_is_update, rebuild)
    return a, storage, rebuilt


def test_updates_and_deletes_are_logged_in_their_hours_before_the_hours_are_rebuilt():
    a, storage, rebuilt = applier({(1, "a"): [(H7, "d1")], (1, "b"): [(H8, "d1"), (H7, "d2")]})
    up = Mutation("a", Op.UPDATE, (5, "m.json", 1), None, row("a"))
    dl = Mutation("b", Op.DELETE, (5, "m.json", 2), "d2")
    unknown = Mutation("zz", Op.DELETE, (5, "m.json", 3))
    applied = asyncio.run(a.apply(3, 40, [Targeted(1, up), Targeted(1, dl), Targeted(1, unknown)]))
    keys = ["_stream/mirror/1/2024-03-09_7/3-00000000000000000040.jsonl.gz"]
    assert rebuilt == [(1, [H7], keys)]
    assert sorted(storage.objects) == [("archive-1", keys[0])]
    assert gzip.decompress(storage.objects[("archive-1", keys[0])]).split(b"\n")[:-1] == [
        orjson.dumps({"seq": [5, "m.json", 1], "op": "UPDATE", "insert_id": "a", "row": row("a")}),
        orjson.dumps({"seq": [5, "m.json", 2], "op": "DELETE", "insert_id": "b", "device_id": "d2"})]
    assert applied.routed == {("UPDATE", "routed"): 1, ("DELETE", "routed"): 1, ("DELETE", "unknown"): 1}
    assert applied.unknown == [Targeted(1, unknown)]
    assert applied.hours == {1: [H7]}
    assert asyncio.run(hour_mutations(storage, "archive-1", "_stream/mirror/", 1, H7)) == [up, dl]


def test_a_mutation_without_a_device_reaches_every_hour_of_its_insert_id_and_entries_past_the_kept_days_are_not():
    a, storage, rebuilt = applier({(1, "a"): [(H7, "d1"), (H8, "d2"), (H7 - 100 * DAY_MS, "d3")]})
    applied = asyncio.run(a.apply(0, 0, [Targeted(1, Mutation("a", Op.DELETE, (1, "k", 1)))]))
    assert applied.hours == {1: [H7, H8]}
    assert [h for _, h, _ in rebuilt] == [[H7, H8]]


def test_an_insert_of_a_new_insert_id_is_a_new_event_with_the_batchs_later_mutations_folded_in():
    a, storage, rebuilt = applier({})
    ins = Mutation("n", Op.INSERT, (1, "k", 1), None, row("n", event_type="first", uuid="x"))
    upd = Mutation("n", Op.UPDATE, (1, "k", 2), None, row("n", event_type="second", uuid="y"))
    gone = Mutation("g", Op.INSERT, (1, "k", 3), None, row("g"))
    dele = Mutation("g", Op.DELETE, (1, "k", 4))
    applied = asyncio.run(a.apply(0, 0, [Targeted(1, upd), Targeted(1, ins), Targeted(1, gone), Targeted(1, dele)]))
    assert applied.new == [Targeted(1, Mutation("n", Op.INSERT, (1, "k", 1), None,
                                                row("n", event_type="second", uuid="x")))]
    assert applied.routed == {("INSERT", "new"): 2, ("UPDATE", "folded"): 1, ("DELETE", "folded"): 1}
    assert rebuilt == [] and storage.objects == {}


def test_an_insert_of_a_held_insert_id_updates_only_when_the_settings_say_so():
    held = {(1, "a"): [(H7, "d1")]}
    ins = Mutation("a", Op.INSERT, (1, "k", 1), None, row("a", "d1"))
    a, _, rebuilt = applier(held)
    applied = asyncio.run(a.apply(0, 0, [Targeted(1, ins)]))
    assert applied.routed == {("INSERT", "insert_conflict"): 1} and rebuilt == []
    a, _, rebuilt = applier(held, insert_is_update=True)
    applied = asyncio.run(a.apply(0, 0, [Targeted(1, ins)]))
    assert applied.routed == {("INSERT", "routed"): 1} and [h for _, h, _ in rebuilt] == [[H7]]
    # the same insert_id on another device is a new event
    other = Mutation("a", Op.INSERT, (1, "k", 2), None, row("a", "d2"))
    applied = asyncio.run(a.apply(0, 0, [Targeted(1, other)]))
    assert applied.routed == {("INSERT", "new"): 1}


def test_a_replayed_batch_cut_otherwise_leaves_each_mutation_once_in_the_hour():
    a, storage, _ = applier({(1, "a"): [(H7, "d1")], (1, "b"): [(H7, "d1")]})
    m1 = Targeted(1, Mutation("a", Op.DELETE, (1, "k", 1)))
    m2 = Targeted(1, Mutation("b", Op.UPDATE, (1, "k", 2), None, row("b")))
    asyncio.run(a.apply(0, 10, [m1, m2]))
    asyncio.run(a.apply(0, 10, [m1]))
    asyncio.run(a.apply(0, 11, [m2]))
    assert len(storage.objects) == 2
    assert asyncio.run(hour_mutations(storage, "archive-1", "_stream/mirror/", 1, H7)) == [m1.mutation, m2.mutation]


def test_folding_stops_at_a_delete_and_an_insert_after_it_starts_again():
    ins = Mutation("n", Op.INSERT, (1, "k", 1), None, row("n", event_type="a"))
    again = Mutation("n", Op.INSERT, (1, "k", 3), None, row("n", event_type="b"))
    assert fold_new(ins, [Mutation("n", Op.DELETE, (1, "k", 2)), again]) == again
    assert fold_new(ins, [Mutation("n", Op.DELETE, (1, "k", 2), "other-device")]) == ins


def test_a_rebuild_applies_the_log_only_for_a_mirror_project_in_the_amplitude_layout():
    from stream.export.mirror_apply import MirrorLog, mirror_log_of
    from stream.settings import load_settings
    s = load_settings(None, projects=[{"id": 1}, {"id": 2}], destinations=[
        {"name": "arch", "project": 1, "bucket": "archive-bucket", "archive": True},
        {"name": "seg", "project": 1, "bucket": "seg-bucket", "layout": "segment", "segment_source_id": "src"},
        {"name": "other", "project": 2, "bucket": "other-bucket"}])
    storage = MemoryStorage()
    assert mirror_log_of(s, s.destination("arch"), storage) is None      # no mirror source
    s.__dict__["mirror_projects"] = lambda: frozenset({1})
    log = mirror_log_of(s, s.destination("arch"), storage)
    assert isinstance(log, MirrorLog) and (log.bucket, log.log_prefix, log.insert_is_update) == (
        "archive-bucket", "_stream/mirror/", False)
    assert mirror_log_of(s, s.destination("seg"), storage) is None       # Segment layout
    assert mirror_log_of(s, s.destination("other"), storage) is None     # another project


def test_hours_touched_by_the_batches_of_several_partitions_are_rebuilt_once():
    from stream.export.mirror_apply import rebuild_touched
    held = {(1, "a"): [(H7, "d1")], (1, "b"): [(H7, "d1"), (H8, "d1")]}
    a0, storage, rebuilt = applier(held)
    a1, _, _ = applier(held)
    a1.logs = a0.logs
    first = asyncio.run(a0.log(0, 10, [Targeted(1, Mutation("a", Op.DELETE, (1, "k", 1)))]))
    second = asyncio.run(a1.log(1, 20, [Targeted(1, Mutation("b", Op.DELETE, (1, "k", 2)))]))
    assert rebuilt == []                       # logged, nothing rebuilt yet
    asyncio.run(rebuild_touched([first, second], a0.rebuild))
    assert [(p, h) for p, h, _ in rebuilt] == [(1, [H7, H8])]
    assert sorted(k for _, k in storage.objects) == [
        "_stream/mirror/1/2024-03-09_7/0-00000000000000000010.jsonl.gz",
        "_stream/mirror/1/2024-03-09_7/1-00000000000000000020.jsonl.gz",
        "_stream/mirror/1/2024-03-09_8/1-00000000000000000020.jsonl.gz"]


def test_a_batchs_log_objects_are_written_at_once_and_the_hours_listed_once_all_are_written():
    hours = [H7 + i * HOUR_MS for i in range(20)]
    held = {(1, f"e{i}"): [(h, "d1")] for i, h in enumerate(hours)}
    a, storage, rebuilt = applier(held)
    in_flight, most = [0], [0]
    put = storage.put_bytes
    gate = asyncio.Event()

    async def slow_put(bucket, key, data, content_type):
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        if in_flight[0] == 16:
            gate.set()
        await gate.wait()                # each put waits until 16 are on their way
        in_flight[0] -= 1
        await put(bucket, key, data, content_type)
    storage.put_bytes = slow_put
    batch = [Targeted(1, Mutation(f"e{i}", Op.DELETE, (1, "m.json", i))) for i in range(20)]
    applied = asyncio.run(asyncio.wait_for(a.log(0, 7, batch), 10))
    assert most[0] == 16
    assert applied.hours == {1: hours}
    assert sorted(k for _, k in storage.objects) == sorted(
        f"_stream/mirror/1/2024-03-{9 + (7 + i) // 24:02d}_{(7 + i) % 24}/0-00000000000000000007.jsonl.gz"
        for i in range(20))
