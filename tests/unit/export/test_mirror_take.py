"""A take as the mirror stage holds it: records of events.mutations read by ``decode_raw``, rows kept as their bytes."""

import asyncio
import contextlib
import random
import tracemalloc

import orjson
import pytest

from stream.clock import FakeClock
from stream.events.timefmt import DAY_MS, HOUR_MS
from stream.export import mirror_index as ix
from stream.export import mirror_log
from stream.export.mirror import Mutation, Op, RawRow
from stream.export.mirror_apply import MirrorApplier, Targeted
from stream.imports.mutations import NotAMutation, decode, decode_raw, encode
from stream.s3.storage import MemoryStorage

H7 = 1709967600000   # 2024-03-09T07:00Z
NOW = H7 + 2 * DAY_MS
FILE = "s3://src/mirror/2024-03-09.json"


def event_row(i: int, props: int = 30) -> dict:
    return {"$insert_id": f"ins-{i:032d}", "event_type": "Video Played", "device_id": f"dev-{i}", "user_id": f"u-{i}",
            "time": 1709967600000 + i, "event_properties": {f"p{k}": f"value-{k}-{i}" for k in range(props)},
            "user_properties": {f"u{k}": k * 1.5 for k in range(20)}}


def generated(n: int, seed: int) -> list[tuple[int, Mutation]]:
    r = random.Random(seed)
    out = []
    for i in range(n):
        op = r.choice([Op.INSERT, Op.UPDATE, Op.DELETE])
        device = r.choice([None, f"dev-{i}", "dév-ü-\u2603", ""])
        row = None if op is Op.DELETE else {**event_row(i, r.randrange(0, 5)), "price": r.uniform(-1e9, 1e9),
                                            "big": r.randrange(-(1 << 62), 1 << 62), "text": "é\u2603\n\"q\"",
                                            "nested": [{"a": None, "b": [True, False, 0.1]}]}
        seq = (r.randrange(0, 1 << 62), r.choice([FILE, "s3://b/ü key.json"]), r.randrange(0, 1 << 40))
        out.append((r.randrange(0, 1 << 31), Mutation(f"ins-{i}-{r.random()}", op, seq, device or None, row)))
    return out


def test_decode_raw_reads_every_record_encode_writes_as_decode_does_with_the_row_kept_as_its_bytes():
    for project, m in generated(300, 7):
        _, value = encode(project, m)
        fast = decode_raw(value)
        assert fast == decode(value) == (project, m)
        if m.row is None:
            assert fast[1].row is None
        else:
            assert isinstance(fast[1].row, RawRow) and bytes(fast[1].row.raw) == orjson.dumps(m.row)


def test_decode_raw_refuses_a_record_that_is_not_a_mutation_saying_what_to_do():
    _, value = encode(1, Mutation("a", Op.UPDATE, (1, FILE, 2), "d", event_row(1)))
    with pytest.raises(NotAMutation) as cut:
        decode_raw(value[:-10])
    assert str(cut.value) == (
        f"a record of {len(value) - 10} bytes is not a mutation as schemas/mutation.avsc writes it (an event of "
        f"{len(orjson.dumps(event_row(1)))} bytes at byte 44 of {len(value) - 10}): only stream's mirror import writes "
        "events.mutations; find what else produces to it")
    with pytest.raises(NotAMutation, match=r"^a record of 2 bytes .* \(it ends inside a field\): only"):
        decode_raw(value[:2])
    with pytest.raises(NotAMutation, match=r"\(op symbol 5\)"):
        decode_raw(b"\x02\x0a")
    with pytest.raises(NotAMutation, match=r"\(union branch 2\)"):
        decode_raw(b"\x02\x02\x02a\x04")


def test_a_raw_row_is_read_as_its_parsed_row_and_its_log_line_is_the_same_bytes():
    for _, m in generated(100, 11):
        raw = decode_raw(encode(3, m)[1])[1]
        assert mirror_log.line(raw) == mirror_log.line(m)
        if m.row is not None:
            assert dict(raw.row) == m.row and raw.row.get("device_id") == m.row.get("device_id")
    assert mirror_log.decode(mirror_log.encode([decode_raw(encode(3, m)[1])[1] for _, m in generated(50, 3)])) == [
        m for _, m in generated(50, 3)]
    with pytest.raises(ValueError) as not_an_object:
        dict(RawRow(memoryview(b"[1,2]")))
    assert str(not_an_object.value) == (
        "a mutation's row must be a JSON object, got b'[1,2]': the record was not written by "
        "stream.imports.mutations.encode; find what else produces to events.mutations")


class Index:
    def __init__(self, held):
        self.held = {ix.key(p, i): ix.encode([ix.entry(h, d) for h, d in es]) for (p, i), es in held.items()}

    def get_many(self, keys):
        return [self.held.get(k) for k in keys]


def logged(take: list[Targeted], held) -> tuple:
    storage = MemoryStorage()

    @contextlib.asynccontextmanager
    async def logs(project):
        yield storage, f"archive-{project}"

    async def rebuild(project, hours):
        raise AssertionError("log() rebuilds nothing")

    a = MirrorApplier(FakeClock(NOW), Index(held), logs, "_stream/mirror/", 90, True, rebuild)
    applied = asyncio.run(a.log(2, 10, take))
    return applied.routed, applied.hours, applied.unknown, applied.new, applied.files, dict(storage.objects)


def test_a_take_read_by_decode_raw_is_logged_routed_and_folded_as_the_parsed_take():
    held = {(1, f"ins-{i:032d}"): [(H7 + (i % 3) * HOUR_MS, f"dev-{i}")] for i in range(0, 40, 2)}
    ms = []
    for i in range(40):     # odd insert_ids are not held: INSERTs of them are new events, folded with later ones
        ms.append(Mutation(f"ins-{i:032d}", [Op.UPDATE, Op.INSERT, Op.DELETE][i % 3], (5, FILE, i),
                           None if i % 4 else f"dev-{i}", None if i % 3 == 2 else event_row(i)))
    ms.append(Mutation(f"ins-{1:032d}", Op.UPDATE, (5, FILE, 99), None, {**event_row(1), "event_type": "later"}))
    values = [encode(1, m)[1] for m in ms]
    parsed = logged([Targeted(*decode(v), n) for n, v in enumerate(values)], held)
    raw = logged([Targeted(*decode_raw(v), n) for n, v in enumerate(values)], held)
    assert raw == parsed
    routed, hours, unknown, new, _, objects = raw
    assert routed == {("UPDATE", "routed"): 7, ("INSERT", "routed"): 6, ("DELETE", "routed"): 7,
                      ("UPDATE", "unknown"): 7, ("DELETE", "unknown"): 6, ("INSERT", "new"): 7,
                      ("UPDATE", "folded"): 1}
    assert len(unknown) == 13
    assert hours == {1: [H7, H7 + HOUR_MS, H7 + 2 * HOUR_MS]} and len(objects) == 3
    assert [(t.mutation.insert_id, t.mutation.row["event_type"]) for t in new][0] == (f"ins-{1:032d}", "later")


@pytest.mark.parametrize("props", [10, 120])
def test_the_heap_a_take_holds_beside_its_records_is_a_few_hundred_bytes_a_mutation_whatever_the_event_size(props):
    """The stage's take, read as the stage reads it, holds under 1 KB a mutation beside the records themselves,
    for events of 0.6 and 3.6 KB and for 500 or 2,000 mutations (parsed rows held 4-16 KB a mutation)."""
    for n in (500, 2000):
        values = [encode(1, Mutation(f"ins-{i:032d}", Op.UPDATE, (5, FILE, i), f"dev-{i}", event_row(i, props)))[1]
                  for i in range(n)]
        tracemalloc.start()
        take = [Targeted(*decode_raw(v), i) for i, v in enumerate(values)]
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(take) == n
        assert held / n < 1000, (props, n, held / n, sum(map(len, values)) / n)


def test_a_log_line_s_insert_id_is_found_in_its_bytes_as_its_parse_gives_it():
    ids = ["plain", "ü-\u2603", 'quo"te', "back\\slash", "tab\t", "", '"insert_id":"x']
    for n, insert_id in enumerate(ids):
        for seq in ((1, FILE, n), (2, 's3://b/"insert_id":"evil".json', n)):
            m = Mutation(insert_id, Op.UPDATE, seq, None, {"$insert_id": "other", "insert_id": "row's"})
            ln = mirror_log.line(m)
            assert mirror_log.insert_id_of(ln) == insert_id.encode(), (insert_id, ln)
    assert mirror_log.insert_id_of(b'{"op":"DELETE","insert_id":7,"seq":[1,"f",2]}\n') == b"7"


def test_a_rebuild_spills_an_hour_s_log_objects_as_their_lines_and_reads_the_same_mutations(tmp_path):
    from stream.export.mirror import by_insert_id
    from stream.export.mirror_apply import MirrorLog, hour_mutations
    from stream.export.mirror_kept import KeptMutations

    storage = MemoryStorage()
    muts = [m for _, m in generated(120, 5)] + [Mutation('quo"te', Op.DELETE, (9, FILE, 1), None, None)]
    for k in range(0, len(muts), 40):     # objects of three takes; they share mutations (a replay cut otherwise)
        key = mirror_log.log_key("_stream/mirror/", 1, H7, k % 4, k)
        asyncio.run(storage.put_bytes("b", key, mirror_log.encode(muts[max(0, k - 5):k + 40]), "x"))
    kept = KeptMutations(tmp_path / "spill")
    try:
        hour = asyncio.run(MirrorLog(storage, "b", "_stream/mirror/", False).keep(1, H7, kept))
        reference = by_insert_id(asyncio.run(hour_mutations(storage, "b", "_stream/mirror/", 1, H7)))
        assert len(hour) == len(reference) == len({m.insert_id for m in muts})
        assert sorted(hour) == sorted(reference)
        assert all(list(hour[i]) == reference[i] for i in reference)
    finally:
        kept.close()



# --- a take bounded by its records' bytes -------------------------------------------------------------------------
class Record:
    def __init__(self, n: int, size: int):
        self.n, self.key, self.value = n, b"k" * 10, b"v" * size


def takes_by_bytes(arrivals, max_bytes):
    """(records of each take, when it closed in ms) of records (arrival ms, index, value bytes) under ``max_bytes``."""
    from stream.agents.takes import take_bursts
    from tests.unit.test_takes import FakeStream

    class Stream(FakeStream):
        async def wait_for_stopped(self, event, timeout):
            until = self.clock.now_ms() + max(1, int(timeout * 1000 + 0.999))
            while self.arrivals and self.arrivals[0][0] <= until and not event.is_set():
                at, n, size = self.arrivals.pop(0)
                self.clock.advance(max(0, at - self.clock.now_ms()))
                self.current_event = Record(n, size)
                task = self.loop.create_task(self._processors[0](n))
                await asyncio.wait({task}, timeout=0.05)
            if not event.is_set():
                self.clock.advance(max(0, until - self.clock.now_ms()))
            if not self.arrivals and not event.is_set() and self.clock.now_ms() > 60_000:
                self.should_stop = True
            return False

        async def ack(self, event):
            self.acked.append(event.n)

    async def go():
        clock = FakeClock(0)
        stream = Stream(arrivals, clock)
        out = []
        async for events in take_bursts(stream, 20_000, 0.5, 10.0, lambda: clock.now_ms() / 1000, max_bytes):
            out.append(([e.n for e in events], clock.now_ms()))
        return out, stream.acked
    return asyncio.run(go())


def test_a_take_closes_once_its_records_hold_max_bytes_whatever_their_count():
    # 310 bytes a record (a 10-byte key, a 300-byte value): the fourth reaches 1,000 bytes, and the take closes at once
    out, acked = takes_by_bytes([(0, i, 300) for i in range(10)], 1000)
    assert out == [([0, 1, 2, 3], 0), ([4, 5, 6, 7], 0), ([8, 9], 500)]
    assert acked == list(range(10))
    # one record of more than the bound is a take of its own; smaller ones after it wait for the quiet time
    out, _ = takes_by_bytes([(0, 0, 5000), (100, 1, 10), (200, 2, 10)], 1000)
    assert out == [([0], 0), ([1, 2], 700)]
    # without a bound, the count and the quiet time close the take, as before
    out, _ = takes_by_bytes([(0, i, 300) for i in range(10)], None)
    assert out == [(list(range(10)), 500)]


# --- records of many mutations ----------------------------------------------------------------------------------------
def test_a_take_of_records_of_many_and_of_one_mutation_is_logged_and_routed_as_the_take_of_records_of_one():
    """A worker reads the records of one mutation an earlier version wrote and the records of many, mixed on a
    partition (a rolling upgrade): the same logs byte for byte, the same outcomes, and the new events' source offsets
    each of their own, increasing with the topic's order."""
    from stream.export.mirror_apply import targets_of
    from stream.imports.mutations import encode_many

    held = {(1, f"ins-{i:032d}"): [(H7 + (i % 3) * HOUR_MS, f"dev-{i}")] for i in range(0, 60, 2)}
    ms = [Mutation(f"ins-{i:032d}", [Op.UPDATE, Op.INSERT, Op.DELETE][i % 3], (5, FILE, i),
                   None if i % 4 else f"dev-{i}", None if i % 3 == 2 else event_row(i)) for i in range(60)]
    values = [encode(1, m)[1] for m in ms]
    singles = targets_of(enumerate(values))
    assert singles == [Targeted(*decode_raw(v), n) for n, v in enumerate(values)]
    # offsets 0..9 records of one, 10: a record of 20, 11..14 of one, 15: of the rest (an old importer's records
    # after a new one's)
    mixed_records = [*enumerate(values[:10]), (10, encode_many(values[10:30])), *zip(range(11, 15), values[30:34]),
                     (15, encode_many(values[34:]))]
    mixed = targets_of(mixed_records)
    assert [t.mutation for t in mixed] == [t.mutation for t in singles] == [decode(v)[1] for v in values]
    assert [(t.offset, t.index) for t in mixed] == ([(n, 0) for n in range(10)] + [(10, i) for i in range(20)] +
                                                    [(n, 0) for n in range(11, 15)] + [(15, i) for i in range(26)])
    a, b = logged(singles, held), logged(mixed, held)
    assert a[0] == b[0] and a[1] == b[1] and a[5] == b[5]          # outcomes, hours, the log objects' bytes
    assert [t.mutation for t in a[2]] == [t.mutation for t in b[2]]
    assert [t.mutation for t in a[3]] == [t.mutation for t in b[3]] and len(b[3]) == 10
    new_offsets = [t.source_offset for t in b[3]]
    assert new_offsets == sorted(set(new_offsets))
    from stream.events.batch import SOURCE_SLOTS
    assert [divmod(o, SOURCE_SLOTS) for o in new_offsets] == [(t.offset, t.index) for t in b[3]]
