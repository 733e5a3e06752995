"""The identity stage's engines on the real table (RocksDB through faust's Table, no broker), on a fake clock,
their sends kept in lists: ids and links of a batch, replays, dead letters, holds let go by the user side's
answer."""

import asyncio
from types import SimpleNamespace

import orjson

from stream import metrics
from stream.clock import FakeClock
from stream.events import deadletter
from stream.events.batch import EventBatch, Origin, Source
from stream.events.normalize import Rules, normalize_message
from stream.events.partitioning import partition_for
from stream.identity.records import dec_links
from stream.identity.stage import DeviceStage, HeldRows, UserStage
from tests.unit.dedup.test_stage import table
from tests.unit.identity.test_resolution import PROJECT, T, ev

NOW = 1_800_000_000_000      # the Kafka timestamp of the events.valid messages
PARTITIONS = 4


async def _done(value=None):
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut


class Stages:
    """A device side and a user side on one table, and what each sent."""

    def __init__(self, tmp_path, hold_s=30.0, by_ref=False, memory=64 << 20):
        """``by_ref``: held rows are references to the events.valid messages (``topic``, which the stage reads
        back when they are not among the ``memory`` bytes it keeps)."""
        self.table = table(tmp_path, "identity")
        self.topic: dict[tuple[int, int], bytes] = {}
        self.reads: list[tuple[int, int, int]] = []

        async def read_valid(partition, first, end):
            self.reads.append((partition, first, end))
            return [(o, v) for (p, o), v in sorted(self.topic.items()) if p == partition and first <= o < end]
        self.clock = FakeClock(NOW)
        self.accepted, self.links, self.dead, self.valid, self.merges, self.undecodable = [], [], [], [], [], []

        def keep(into):
            async def send(value, partition=None):
                into.append((partition, value))
                return await _done()
            return send

        async def dead_letter(event, exc):
            self.undecodable.append((event.message.offset, type(exc).__name__))
        self.device = DeviceStage(self.table, self.clock, keep(self.accepted), keep(self.links), keep(self.dead),
                                  "events.valid", lambda p: None, partitions=PARTITIONS, hold_s=hold_s,
                                  max_properties_bytes=64 << 10, max_request_bytes=1 << 20,
                                  read_valid=read_valid if by_ref else None, held_rows_bytes=memory)
        self.users = UserStage(self.table, keep(self.valid), keep(self.merges), dead_letter, "identity.links",
                               answer=hold_s > 0)

    def batch(self, *events, partition=0, offset=0, now=NOW, source_offsets=None):
        lines = [normalize_message(orjson.dumps(e), None, PROJECT, T + i, f"in/0/{i}", Rules()).line
                 for i, e in enumerate(events)]
        n = len(lines)
        out = EventBatch(PROJECT, T, Origin("events.valid", partition, offset),
                         offsets=source_offsets or list(range(n)), keys=[b"k%d" % i for i in range(n)],
                         times=[T + i for i in range(n)], uuids=[b"u%015d" % i for i in range(n)], lines=lines,
                         source=Source("events.ingest", 0))
        # the message on events.valid: a row before the batch's (a duplicate, which dedupe dropped)
        self.topic[(partition, offset)] = EventBatch(
            PROJECT, T, out.origin, offsets=[10**6] + out.offsets, keys=[b"dup"] + out.keys, times=[T] + out.times,
            uuids=[b"d%015d" % 0] + out.uuids, lines=[b'{"dup":1}'] + out.lines, source=out.source).encode()
        return asyncio.run(self.device.batch(out, partition, offset, now, list(range(1, n + 1))))

    def user_side(self, partition, offset, value):
        msg = SimpleNamespace(topic="identity.links", partition=partition, offset=offset, timestamp=0, key=None)
        asyncio.run(self.users.handle(SimpleNamespace(value=value, message=msg)))

    def remaps(self, value, partition, offset):
        return asyncio.run(self.device.remaps(value, partition, offset))


def ids(b):
    return [(orjson.loads(ln)["device_id"], orjson.loads(ln)["amplitude_id"]) for ln in b.lines]


def test_a_batch_gets_ids_its_links_go_to_the_users_partition_and_a_replay_sends_the_same(tmp_path):
    s = Stages(tmp_path, hold_s=0)
    out = s.batch(ev("dev-aaaa1", "user-1111"), ev("dev-bbbb2"), ev("dev-aaaa1"), partition=2, offset=64)
    assert (ids(out), out.offsets) == ([("dev-aaaa1", 1026), ("dev-bbbb2", 2050), ("dev-aaaa1", 1026)], [0, 1, 2])
    ((q, value),) = s.links
    links = dec_links(value)
    assert (q, links.origin_partition, links.origin_offset, [(x.user, x.device) for x in links.links]) == (
        partition_for("user-1111", PARTITIONS), 2, 64, [("user-1111", "dev-aaaa1")])
    assert s.table.applied(2) == 64
    again = s.batch(ev("dev-aaaa1", "user-1111"), ev("dev-bbbb2"), ev("dev-aaaa1"), partition=2, offset=64)
    assert (ids(again), s.links[1:]) == (ids(out), [(q, value)])    # rolled back, then the same ids and link
    assert (s.accepted, s.dead) == ([], [])


def test_a_row_the_identity_stage_rejects_is_dead_lettered_stamped_by_the_clock_and_the_rest_go_on(tmp_path):
    s = Stages(tmp_path, hold_s=0)
    s.clock.t = NOW + 777
    out = s.batch(ev("dev-aaaa1"), ev("dev-aaaa1", event_type="$identify", user_properties={"$add": {"n": "1"}}),
                  ev("dev-aaaa1"), offset=9, source_offsets=[30, 31, 32])
    assert (out.offsets, ids(out)) == ([30, 32], [("dev-aaaa1", 1024)] * 2)
    ((_, value),) = s.dead
    d = deadletter.decode(value)
    assert (d["reason"], d["topic"], d["partition"], d["offset"], d["timestamp"], d["rejected_at"]) == (
        "invalid_identify", "events.valid", 0, 9, NOW, NOW + 777)
    assert d["detail"].endswith("(identity stage; source events.ingest[0]@31)")


def test_rows_held_for_the_users_answer_go_out_on_the_held_source_when_it_comes_and_their_wait_is_timed(tmp_path):
    s = Stages(tmp_path)
    out = s.batch(ev("dev-bbbb2", "user-1111"), ev("dev-cccc3"), partition=1, offset=5)
    assert ids(out) == [("dev-cccc3", 2049)]                     # the new pair's row waits for the answer
    ((q, value),) = s.links
    s.user_side(q, 0, value)
    assert s.merges == []                                        # the user's first link: adopted
    ((vp, remap),) = s.valid
    assert vp == 1
    hold = metrics.IDENTITY_HOLD_SECONDS.collect()[0]
    count = next(x.value for x in hold.samples if x.name.endswith("_count"))
    total = next(x.value for x in hold.samples if x.name.endswith("_sum"))
    s.clock.t = NOW + 2500
    assert s.remaps(remap, 1, 6) is True
    ((p, released),) = s.accepted
    b = EventBatch.decode(released)
    assert (p, str(b.source), b.offsets, b.origin, ids(b)) == (
        1, "events.valid.held[1]", [0], Origin("events.valid", 1, 6), [("dev-bbbb2", 1025)])
    hold = metrics.IDENTITY_HOLD_SECONDS.collect()[0]
    assert next(x.value for x in hold.samples if x.name.endswith("_count")) == count + 1
    assert next(x.value for x in hold.samples if x.name.endswith("_sum")) == total + 2.5
    assert s.remaps(b"not a remap message", 1, 7) is False


def test_the_user_side_merges_a_second_devices_id_and_waits_for_its_sends_before_writing(tmp_path):
    s = Stages(tmp_path, hold_s=0)
    s.batch(ev("dev-aaaa1", "user-1111"), partition=0, offset=1)
    s.batch(ev("dev-bbbb2", "user-1111"), partition=1, offset=1)
    for i, (q, value) in enumerate(s.links):
        s.user_side(q, i, value)
    ((_, merges),) = s.merges
    b = EventBatch.decode(merges)
    assert (str(b.source_of_events()[0]), b.offsets, [orjson.loads(ln)["merged_amplitude_id"] for ln in b.lines]) == (
        f"identity.links[{partition_for('user-1111', PARTITIONS)}]", [1], [1025])
    assert [p for p, _ in s.valid] == [1]                        # answer=False: only the merge's remap
    s.user_side(0, 9, b"\x00 not links")
    assert s.undecodable == [(9, "ValidationError")]


def test_chunks_a_hold_let_go_stay_until_that_offset_is_committed_so_a_replay_lets_the_same_rows_go(tmp_path):
    """The message that lets held rows go lists their chunks as unused instead of deleting them (which would
    journal every row again); a replay of it finds them, and a later batch deletes them once it is committed."""
    from stream.identity.records import dec_keys, held_chunk_key, held_key, journal_key, unused_key
    from stream.identity.table import PRUNE_EVERY
    s = Stages(tmp_path)
    s.batch(ev("dev-bbbb2", "user-1111"), partition=1, offset=5)
    s.batch(ev("dev-bbbb2"), ev("dev-bbbb2"), partition=1, offset=6, source_offsets=[1, 2])
    hk = held_key(PROJECT, "dev-bbbb2")
    chunks = [held_chunk_key(hk, 5, 0), held_chunk_key(hk, 5, 1)]
    ((q, value),) = s.links
    s.user_side(q, 0, value)
    ((_, remap),) = s.valid
    assert s.remaps(remap, 1, 7) is True
    first = [EventBatch.decode(v) for _, v in s.accepted]
    assert [(b.offsets, ids(b)) for b in first] == [([0, 1, 2], [("dev-bbbb2", 1025)] * 3)]
    state = dict(zip(chunks + [hk, unused_key(7)], s.table.get_many(1, chunks + [hk, unused_key(7)])))
    assert [k for k, v in state.items() if v is None] == [hk] and dec_keys(state[unused_key(7)]) == chunks
    # the journal of the release: the hold's record, no row (a chunk of three rows is over 1 KB)
    assert len(s.table.get_many(1, [journal_key(7)])[0]) < 300
    s.accepted.clear()
    assert s.remaps(remap, 1, 7) is True                          # read again: rolled back, the same rows again
    assert [(b.offsets, b.lines) for b in map(EventBatch.decode, (v for _, v in s.accepted))] == [
        (b.offsets, b.lines) for b in first]
    s.device.committed = lambda partition: 8
    s.batch(ev("dev-dddd4"), partition=1, offset=PRUNE_EVERY)     # a pruning point, 7 committed
    assert s.table.get_many(1, chunks + [unused_key(7)]) == [None, None, None]


def test_generated_batches_and_answers_read_again_and_pruned_send_every_row_as_read_once(tmp_path):
    """Generated batches and answers on one partition, through the real table: on one device side each message is
    read once; on the other, some are read again at once (a crash before the commit) and the journal and the unused
    chunks are pruned as the offsets are committed. Every row (by its source and source offset) goes out with the
    same bytes on both, and every row read once goes out on both."""
    import random
    from stream.identity.records import UNUSED, dec_keys, unused_offset
    from stream.identity.table import PRUNE_EVERY
    for seed in range(3):
        rnd = random.Random(seed)
        once, again = Stages(tmp_path / f"once{seed}"), Stages(tmp_path / f"again{seed}")
        rows = ({}, {})
        pending: list[bytes] = []
        source, answered, now, replays = 0, 0, NOW, 0

        def keep(into, b):
            src, offsets = b.source_of_events()
            for o, line in zip(offsets, b.lines):
                assert into.setdefault((str(src), o), line) == line
        for offset in range(3 * PRUNE_EVERY + 5):
            now += rnd.choice([1, 10, 2000])
            if pending and rnd.random() < 0.35:
                value = pending.pop(0)

                def step(s, value=value, offset=offset):
                    assert s.remaps(value, 1, offset) is True
            else:
                events = [ev(f"dev-{rnd.randrange(5)}", rnd.choice([None, f"user-{rnd.randrange(4)}"]),
                             user_properties={"v": rnd.randrange(3)}) for _ in range(rnd.randrange(1, 5))]
                offsets = list(range(source, source + len(events)))
                source += len(events)

                def step(s, events=events, offsets=offsets, offset=offset, now=now):
                    keep(rows[s is again], s.batch(*events, partition=1, offset=offset, now=now,
                                                   source_offsets=offsets))
            again.device.committed = lambda p, o=offset: o        # every offset before this one is committed
            step(once)
            step(again)
            if rnd.random() < 0.3:
                step(again)
                replays += 1
            for (q, value) in once.links[answered:]:
                once.user_side(q, answered, value)
                answered += 1
            pending += [v for p, v in once.valid if p == 1]
            once.valid.clear()
        for s, into in ((once, rows[0]), (again, rows[1])):
            for _, value in s.accepted:
                keep(into, EventBatch.decode(value))
        assert rows[0] == rows[1] and replays > 20
        assert sum(1 for k in rows[0] if k[0] == "events.valid.held[1]") > 20, seed     # rows did go through holds
        db = again.table.db(1)
        unused = [k for k in db.keys(from_key=UNUSED) if k[:1] == UNUSED]
        chunks = {k for k in db.keys() if k[:1] in b"QR"}
        listed = {c for k in unused for c in dec_keys(db[k])}
        # pruned at offset 192, when every offset before it was committed: only the lists written since remain
        assert listed <= chunks and all(unused_offset(k) >= 3 * PRUNE_EVERY for k in unused)


def test_rows_held_by_reference_go_out_as_the_rows_held_as_copies_from_memory_or_read_back(tmp_path):
    """Generated batches and answers on one partition: held as copies of their bytes; held as references to their
    events.valid message and kept in memory; held as references and forgotten after every message (read back from
    the topic when let go, as after a restart); and with a memory of a few rows (the batches past it hold copies);
    with a replay of some messages: the same rows, byte for byte and in the same order, go to events.accepted; the
    references' state is smaller."""
    import random
    from stream.identity.records import dec_held_rows
    for seed in range(3):
        rnd = random.Random(seed)
        runs = [Stages(tmp_path / f"copy{seed}"), Stages(tmp_path / f"mem{seed}", by_ref=True),
                Stages(tmp_path / f"read{seed}", by_ref=True), Stages(tmp_path / f"small{seed}", by_ref=True,
                                                                        memory=4000)]
        pending: list[bytes] = []
        source, answered, now = 0, 0, NOW
        for offset in range(150):
            now += rnd.choice([1, 10, 2000])
            if pending and rnd.random() < 0.35:
                value = pending.pop(0)
                for s in runs:
                    assert s.remaps(value, 1, offset) is True
            else:
                events = [ev(f"dev-{rnd.randrange(5)}", rnd.choice([None, f"user-{rnd.randrange(4)}"]),
                             user_properties={"v": rnd.randrange(3)}) for _ in range(rnd.randrange(1, 5))]
                offsets = list(range(source, source + len(events)))
                source += len(events)
                again = rnd.random() < 0.2
                for s in runs:
                    s.batch(*events, partition=1, offset=offset, now=now, source_offsets=offsets)
                    if again:     # read again before the next message: rolled back, computed again
                        s.batch(*events, partition=1, offset=offset, now=now, source_offsets=offsets)
            runs[2].device.held = HeldRows()                 # a restart: nothing in memory
            first = runs[0]
            for (q, value) in first.links[answered:]:
                first.user_side(q, answered, value)
                answered += 1
            pending += [v for p, v in first.valid if p == 1]
            first.valid.clear()
        sent = [[(p, EventBatch.decode(v)) for p, v in s.accepted] for s in runs]
        rows = [[(p, b.source_of_events()[0], b.offsets, b.keys, b.uuids, b.times, b.lines) for p, b in x]
                for x in sent]
        assert rows[0] == rows[1] == rows[2] == rows[3]
        held = [b for _, b in sent[0] if b.source == Source("events.valid.held", 1)]
        assert sum(map(len, held)) > 20, seed             # rows did go through holds
        assert (runs[0].reads, runs[1].reads, runs[3].reads) == ([], [], []) and len(runs[2].reads) > 5
        chunks = [[r for k in s.table.db(1).keys() if k[:1] == b"Q" for r in dec_held_rows(s.table.db(1)[k])]
                  for s in runs]
        assert chunks[1] and all(r.at >= 0 and r.head == b"" and r.uuid == b"" for r in chunks[1])
        assert all(r.at == -1 and r.head for r in chunks[0])
        assert {r.at >= 0 for r in chunks[3]} == {True, False}, seed    # past its memory, copies
        size = [sum(len(v) for k, v in s.table.db(1).items() if k[:1] == b"Q") for s in runs[:2]]
        assert size[1] * 2 < size[0], size


def test_a_row_held_by_reference_whose_message_is_gone_from_the_topic_stops_the_stage_with_what_to_do(tmp_path):
    import pytest
    s = Stages(tmp_path, by_ref=True)
    s.batch(ev("dev-bbbb2", "user-1111"), partition=1, offset=5)
    s.device.held = HeldRows()                           # a restart
    ((q, value),) = s.links
    s.user_side(q, 0, value)
    ((_, remap),) = s.valid
    del s.topic[(1, 5)]                                  # the topic's retention deleted it
    with pytest.raises(RuntimeError) as e:
        s.remaps(remap, 1, 7)
    assert str(e.value) == (
        "identity: rows held from events.valid[1]@5 cannot be read back: the offset is no longer in the topic (its "
        "retention deleted it while the rows were held); keep topics.retention_days well above the longest stop of a "
        "worker, or reset the identity state of the partition")
    assert (s.reads, s.accepted) == ([(1, 5, 6)], [])



def test_a_batch_is_kept_in_memory_until_its_last_held_row_is_let_go_and_one_past_the_bound_holds_copies(tmp_path):
    from stream.identity.records import dec_held_rows
    for memory, kept in ((64 << 20, True), (100, False)):
        s = Stages(tmp_path / str(memory), by_ref=True, memory=memory)
        s.batch(ev("dev-bbbb2", "user-1111"), ev("dev-bbbb2"), ev("dev-cccc3"), partition=1, offset=5)
        held = [r for k, v in s.table.db(1).items() if k[:1] == b"Q" for r in dec_held_rows(v)]
        assert [(r.at, r.index, r.head == b"") for r in held] == (
            [(5, 1, True), (5, 2, True)] if kept else [(-1, 0, False), (-1, 0, False)])
        assert ({k: e[1] for k, e in s.device.held.batches.items()}, s.device.held.bytes > 0) == (
            ({(1, 5): 2}, True) if kept else ({}, False))
        ((q, value),) = s.links
        s.user_side(q, 0, value)
        ((_, remap),) = s.valid
        assert s.remaps(remap, 1, 7) is True
        (b,) = [EventBatch.decode(v) for _, v in s.accepted]             # the batch itself is returned, not sent
        assert ([orjson.loads(x)["device_id"] for x in b.lines], b.keys, s.reads) == (
            ["dev-bbbb2", "dev-bbbb2"], [b"k0", b"k1"], [])
        assert (s.device.held.batches, s.device.held.bytes) == ({}, 0)


def test_the_rows_kept_for_a_revoked_partition_are_forgotten_and_read_back_when_let_go(tmp_path):
    s = Stages(tmp_path, by_ref=True)
    read_back = metrics.IDENTITY_READ_BACK._value.get()
    s.batch(ev("dev-bbbb2", "user-1111"), ev("dev-bbbb2"), partition=1, offset=5)
    s.batch(ev("dev-cccc3", "user-2222"), partition=2, offset=5)
    size = s.device.held.bytes
    s.device.held.forget({1, 3})
    assert (list(s.device.held.batches), 0 < s.device.held.bytes < size) == ([(2, 5)], True)
    q, value = s.links[0]
    s.user_side(q, 0, value)
    ((_, remap),) = s.valid
    assert s.remaps(remap, 1, 7) is True
    assert (s.reads, [orjson.loads(x)["device_id"] for _, v in s.accepted for x in EventBatch.decode(v).lines]) == (
        [(1, 5, 6)], ["dev-bbbb2", "dev-bbbb2"])
    assert metrics.IDENTITY_READ_BACK._value.get() - read_back == 2
