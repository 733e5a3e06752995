"""Conversion in other processes (stream.imports.pool): the raw lines, their chunks and the importer's records are
byte for byte those of the in-process path, on generated files with every kind of bad row."""

import asyncio
import gzip
import random

import orjson
import pytest

from stream.clock import FakeClock
from stream.events import deadletter
from stream.events.batch import EventBatch
from stream.imports import importer as importer_module
from stream.imports import pool as pool_module
from stream.imports.fetch import Fetched
from stream.imports.files import FileState, ImportFile, State
from stream.imports.importer import FileImporter, Senders
from stream.imports.pool import Chunker, ConvertPool, Job
from stream.imports.reader import FileError, LineReader, RowReader, aiter_lines, aiter_runs, iter_rows, json_items
from stream.settings import Settings

NOW = 1_700_000_100_000
RECORD_MS = 1_700_000_000_000
FUNC = {"event_type": "event", "user_id": "user", "device_id": "device", "time": "ts",
        "insert_id": "iid",
        "event_properties": {"page": "page", "price": ["multiply", "price", ["value", 100]],
                             "plan": ["lowercase", "plan"]}}


def settings(data_type="event", partitions=4, **more):
    return Settings(projects=[{"id": 7}], topics={"partitions": partitions},
                    worker={"data_dir": "/tmp/stream-test-pool"},
                    ingest={"max_event_bytes": 4000, "batch_max_events": 5},
                    sources=[{"name": "clicks", "project": 7, "bucket": "bkt", "prefix": "in/", "data_type": data_type,
                              "converter": {"converterConfig": {"convertToAmplitudeFunc": FUNC}}, **more}])


def line(rnd: random.Random, n: int) -> bytes:
    """One generated line: mostly good rows, and every way a row can fail or be skipped."""
    kind = rnd.random()
    row = {"event": rnd.choice(["Play", "Stop", "$identify", "Ünïcode ✓"]), "user": f"user-{rnd.randrange(50)}",
           "device": f"device-{rnd.randrange(30)}", "ts": RECORD_MS - rnd.randrange(10**7),
           "page": rnd.choice(["/", "/a", "/b?x=1"]), "price": rnd.choice([1, 2.5, "3", None, True]),
           "plan": rnd.choice(["Free", "PRO", 5]), "extra": {"k": [1, 2, {"z": None}]}}
    if rnd.random() < 0.3:
        row["iid"] = rnd.choice(["", f"i-{n}", None])
    if kind < 0.04:
        return b""                                    # blank
    if kind < 0.06:
        return b"  \t\r"                              # whitespace only
    if kind < 0.08:
        return b'{"event": "Play", "user": '          # malformed
    if kind < 0.10:
        return b"[1, 2, 3]"                           # not an object
    if kind < 0.12:
        return b'{"event": "caf\xe9"}'                # not UTF-8
    if kind < 0.14:
        return orjson.dumps({"event": "Play", "pad": "x" * 600})   # over the row limit of these tests (500)
    if kind < 0.16:
        row.pop("user"), row.pop("device")            # refused by validation: no id
    if kind < 0.18:
        row["pad"] = "y" * 300                        # a large event
    if kind < 0.20:
        row["event"] = 5                              # event_type not a string
    text = orjson.dumps(row)
    return text + b"\r" if kind < 0.25 else text


def generated(seed: int, rows: int) -> bytes:
    rnd = random.Random(seed)
    data = b"\n".join(line(rnd, n) for n in range(rows))
    if seed % 2:
        data = b"\xef\xbb\xbf" + data + b"\n"
    return data


def pieces(data: bytes, rnd: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rnd.choice([1, 7, 100, 1000, 1 << 16])
        out.append(data[i:i + n])
        i += n
    return out


def gz_members(data: bytes) -> bytes:
    half = len(data) // 2
    return gzip.compress(data[:half], 1) + gzip.compress(data[half:], 1)


@pytest.mark.parametrize("seed", range(12))
def test_line_runs_decode_to_the_rows_the_row_reader_reads(seed):
    rnd = random.Random(seed)
    data = generated(seed, 400)
    packed = gz_members(data) if seed % 3 else data
    chunks = pieces(packed, rnd)
    expected = list(iter_rows(chunks, "json", "auto", max_row_bytes=500))
    reader = LineReader("auto", max_row_bytes=500)
    runs = [run for c in chunks for run in reader.feed(c)] + list(reader.finish())
    numbers = [n for first, lines in runs for n in range(first, first + len(lines))]
    assert numbers == list(range(1, len(numbers) + 1))
    got = [item for first, lines in runs for item in json_items(first, lines, 500)]
    assert got == expected and len(expected) > 300


def test_a_truncated_gzip_ends_the_lines_where_the_rows_end():
    data = gzip.compress(generated(3, 300), 1)[:-40]
    reader, lines = LineReader("gzip"), []
    rows = RowReader("json", "gzip")
    expected = list(rows.feed(data))
    with pytest.raises(FileError) as want:
        list(rows.finish())
    runs = list(reader.feed(data))
    with pytest.raises(FileError) as got:
        list(reader.finish())
    lines = [item for first, ls in runs for item in json_items(first, ls)]
    assert lines == expected and str(got.value) == str(want.value)


def test_chunks_hold_the_rows_the_importer_converts_together():
    rnd = random.Random(5)
    lines = [rnd.choice([b"", b" ", b"{}", None, b"x"]) for _ in range(1000)]
    chunker, chunks, first = Chunker(7), [], 1
    while lines:
        n = rnd.choice([1, 3, 7, 20, 100])
        chunks += list(chunker.add(first, lines[:n]))
        first, lines = first + len(lines[:n]), lines[n:]
    rest = chunker.rest()
    numbered = [(f + i, ln) for f, ls, _ in chunks + ([rest] if rest else []) for i, ln in enumerate(ls)]
    assert [n for n, _ in numbered] == list(range(1, len(numbered) + 1))
    for f, ls, rows in chunks:
        assert rows == 7 == sum(1 for ln in ls if ln is None or ln.strip())
        assert ls[-1] is None or ls[-1].strip()   # a chunk ends at its last row; blank lines go with the next
    rows = sum(1 for ln in numbered_lines(chunks, rest) if ln is None or ln.strip())
    assert rest is not None and rest[2] == rows - 7 * len(chunks) and 0 < rest[2] < 7 and len(chunks) > 50


def numbered_lines(chunks, rest):
    return [ln for _, ls, _ in chunks + [rest] for ln in ls]


def test_a_chunker_given_only_blank_lines_has_no_last_chunk():
    chunker = Chunker(3)
    assert list(chunker.add(1, [b"", b" \r"])) == [] and chunker.rest() is None
    assert list(chunker.add(3, [b"{}", b"", b"{}", b"{}", b"{}"])) == [(1, [b"", b" \r", b"{}", b"", b"{}", b"{}"], 3)]
    assert chunker.rest() == (7, [b"{}"], 1)


class LocalPool:
    """ConvertPool's contract run in this process (what each of its processes runs, after loading the setup)."""

    def __init__(self, s: Settings, depth: int = 2):
        pool_module._load(pool_module.setup_of(s))
        self.depth, self.jobs = depth, []

    def submit(self, job: Job):
        self.jobs.append((job.first, len(job.lines)))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(pool_module._run(job))
        return fut

    def reset(self):
        pass


class Memory:
    def __init__(self):
        self.valid, self.dead, self.states = [], [], {}

    def _acked(self):
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def send_valid(self, value, partition):
        self.valid.append((partition, value))
        return self._acked()

    async def send_dead(self, key, value):
        self.dead.append((key, value))
        return self._acked()

    def get(self, key):
        return self.states.get(key)

    async def put(self, key, value, partition):
        self.states[key] = value


class BytesFiles:
    """A file's bytes, fed in pieces to the same readers S3Files uses."""

    def __init__(self, data: bytes, seed: int):
        self.chunks = pieces(data, random.Random(seed))

    async def _chunks(self):
        for c in self.chunks:
            yield c

    def runs(self, src, f, fetched: Fetched):
        return aiter_runs(self._chunks(), "json", "auto", max_row_bytes=500)

    def lines(self, src, f, fetched: Fetched):
        return aiter_lines(self._chunks(), "auto", max_row_bytes=500)


def imported(s: Settings, data: bytes, seed: int, pool=None):
    mem, clock = Memory(), FakeClock(NOW)
    imp = FileImporter(s, clock, Senders(mem.send_valid, mem.send_dead), mem, BytesFiles(data, seed), "imports.files",
                       monotonic=lambda: clock.now_ms() / 1000, pool=pool)
    f = ImportFile("clicks", "bkt", "in/a.json.gz", RECORD_MS - 5000, "sqs", size=10, etag="e1")
    state = asyncio.run(imp.handle(f, f.kafka_key, 2, 3, RECORD_MS))
    return state, mem


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(importer_module, "CHUNK_ROWS", 37)


@pytest.mark.parametrize("seed,data_type", [(0, "event"), (1, "event"), (2, "user_properties"),
                                            (3, "group_properties"), (4, "event"), (5, "event")])
def test_the_pool_produces_the_records_of_the_in_process_path(small_chunks, monkeypatch, seed, data_type):
    monkeypatch.setattr(pool_module, "json_items", lambda first, lines: json_items(first, lines, 500))
    s = settings(data_type)
    data = generated(seed, 1500)
    packed = gz_members(data) if seed % 2 else gzip.compress(data, 1)
    want_state, want = imported(s, packed, seed)
    local = LocalPool(s, depth=1 + seed % 3)
    got_state, got = imported(s, packed, seed, local)
    assert got.valid == want.valid and got.dead == want.dead and got_state == want_state
    assert got.states == want.states and want_state.state is State.DONE
    assert want_state.rows > 1300 and want_state.dead > 120 and len(want.valid) > 100
    starts = [1] + [first + n for first, n in local.jobs[:-1]]
    assert [first for first, _ in local.jobs] == starts and sum(n for _, n in local.jobs) > 1490
    events = [orjson.loads(ln) for _, v in want.valid for ln in EventBatch.decode(v).lines]
    assert len(events) == want_state.imported
    reasons = {deadletter.decode(v)["reason"] for _, v in want.dead}
    assert {"malformed_json", "not_an_object", "invalid_utf8", "too_large"} <= reasons


def test_a_file_cut_short_fails_after_the_same_records_with_the_pool(small_chunks, monkeypatch):
    monkeypatch.setattr(pool_module, "json_items", lambda first, lines: json_items(first, lines, 500))
    s = settings()
    packed = gzip.compress(generated(8, 600), 1)[:-30]
    want_state, want = imported(s, packed, 8)
    got_state, got = imported(s, packed, 8, LocalPool(s))
    assert want_state.state is State.FAILED and want_state.reason == "truncated_gzip" and want_state.rows > 500
    assert (got_state, got.valid, got.dead) == (want_state, want.valid, want.dead)


def test_the_processes_convert_as_this_process_does():
    s = settings()
    data = generated(11, 300)
    reader = LineReader("none")
    runs = list(reader.feed(data)) + list(reader.finish())
    lines = [ln for _, ls in runs for ln in ls]
    f = ImportFile("clicks", "bkt", "in/a.json.gz", RECORD_MS - 5000, "sqs", size=10, etag="e1")
    job = Job("clicks", f, 3, RECORD_MS, "imports.files/2/3", "imports.files", 2, NOW, 1, lines)
    pool_module._load(pool_module.setup_of(s))
    want = pool_module._run(job)
    pool = ConvertPool(s, 2)

    async def both():
        return await asyncio.gather(pool.submit(job), pool.submit(job))
    try:
        got = asyncio.run(both())
    finally:
        pool.close()
    assert got == [want, want] and want.rows == sum(1 for ln in lines if ln.strip()) > 250 and want.batches


class BreakingPool(LocalPool):
    """A pool whose processes die under the first ``breaks`` chunks (BrokenProcessPool, as a killed process gives)."""

    def __init__(self, s, breaks):
        super().__init__(s)
        self.breaks, self.resets = breaks, 0

    def submit(self, job):
        if self.breaks:
            self.breaks -= 1
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(pool_module.BrokenPool("A process in the process pool was terminated abruptly"))
            return fut
        return super().submit(job)

    def reset(self):
        self.resets += 1


def test_a_process_that_dies_is_replaced_and_the_file_read_again_to_the_same_records(small_chunks, monkeypatch):
    monkeypatch.setattr(pool_module, "json_items", lambda first, lines: json_items(first, lines, 500))
    s = settings()
    packed = gzip.compress(generated(9, 400), 1)
    want_state, want = imported(s, packed, 9)
    mem, clock, slept = Memory(), FakeClock(NOW), []

    async def sleep(seconds):
        slept.append(seconds)
    broken = BreakingPool(s, breaks=2)
    imp = FileImporter(s, clock, Senders(mem.send_valid, mem.send_dead), mem, BytesFiles(packed, 9), "imports.files",
                       monotonic=lambda: clock.now_ms() / 1000, pool=broken, sleep=sleep)
    f = ImportFile("clicks", "bkt", "in/a.json.gz", RECORD_MS - 5000, "sqs", size=10, etag="e1")
    state = asyncio.run(imp.handle(f, f.kafka_key, 2, 3, RECORD_MS))
    assert broken.resets == 2 and [x for x in slept if x] == [1.0, 2.0]   # read again twice, after a backoff
    assert state == want_state and mem.valid == want.valid and mem.dead == want.dead and state.state is State.DONE


class CountingPool(LocalPool):
    def submit(self, job):
        raise AssertionError("this file is not converted by the pool")


def test_csv_files_are_converted_by_the_importer_itself():
    s = settings()
    csv = b"event,user,device,ts\nPlay,u1,d1,1699999000000\n"
    mem, clock = Memory(), FakeClock(NOW)

    class CsvFiles(BytesFiles):
        def runs(self, src, f, fetched):
            return aiter_runs(self._chunks(), "csv", "none")
    imp = FileImporter(s, clock, Senders(mem.send_valid, mem.send_dead), mem, CsvFiles(csv, 1), "imports.files",
                       monotonic=lambda: clock.now_ms() / 1000, pool=CountingPool(s))
    f = ImportFile("clicks", "bkt", "in/a.csv", RECORD_MS - 5000, "sqs", size=10, etag="e1")
    state = asyncio.run(imp.handle(f, f.kafka_key, 2, 3, RECORD_MS))
    assert (state.state, state.rows, state.imported + state.dead) == (State.DONE, 1, 1)


def _start_then_wait(parent):
    """A conversion process's start (``_end_with_parent``), then a long wait."""
    import time

    from stream.imports.pool import _end_with_parent
    _end_with_parent(parent)
    time.sleep(60)


def test_a_conversion_process_whose_worker_died_while_it_started_ends_at_once_and_one_whose_worker_lives_stays():
    import multiprocessing
    import os

    ctx = multiprocessing.get_context("spawn")
    # its parent is not the worker it was started for: the worker died and the process was handed to another parent
    orphan = ctx.Process(target=_start_then_wait, args=(os.getpid() + 10_000_000,))
    kept = ctx.Process(target=_start_then_wait, args=(os.getpid(),))
    orphan.start()
    kept.start()
    try:
        orphan.join(30)
        kept.join(1)
        assert (orphan.exitcode, kept.exitcode) == (0, None)
    finally:
        for p in (orphan, kept):
            p.kill()
            p.join(10)
