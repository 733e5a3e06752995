"""The import engine on a fake clock, with in-memory senders, store and files: one file read, converted, produced
and recorded once; duplicates skipped; unreadable files failed; passing S3 failures read again; the rate limit."""

import asyncio

import orjson

from stream.clock import FakeClock
from stream.events import deadletter
from stream.events.batch import EventBatch
from stream.imports.fetch import Fetched, TransientRead
from stream.imports.files import FileState, ImportFile, State
from stream.imports.importer import FileImporter, Senders
from stream.imports.reader import FileError, FileErrorReason, Row, RowError, RowErrorReason
from stream.settings import Settings

FUNC = {"event_type": "event", "user_id": "user", "device_id": "device", "time": "ts"}
NOW = 1_700_000_100_000
RECORD_MS = 1_700_000_000_000
MODIFIED_MS = 1_699_999_000_000


def settings(**source):
    return Settings(projects=[{"id": 7}], topics={"partitions": 4}, worker={"data_dir": "/tmp/stream-test-importer"},
                    sources=[{"name": "clicks", "project": 7, "bucket": "bkt", "prefix": "in/",
                              "converter": {"converterConfig": {"convertToAmplitudeFunc": FUNC}}, **source}])


def good(n, user="user-1", **more):
    return Row(n, {"event": "Play", "user": user, "device": "device-1", "ts": RECORD_MS - 60_000 + n, **more})


def acked():
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


class Memory:
    """The senders and the store, in memory: what was produced and what state was written."""

    def __init__(self):
        self.valid, self.dead, self.mutations, self.states, self.puts = [], [], [], {}, []

    async def send_valid(self, value, partition):
        self.valid.append((partition, value))
        return acked()

    async def send_dead(self, key, value):
        self.dead.append((key, value))
        return acked()

    async def send_mutation(self, key, value):
        self.mutations.append((key, value))
        return acked()

    def senders(self):
        return Senders(self.send_valid, self.send_dead, self.send_mutation)

    def get(self, key):
        return self.states.get(key)

    async def put(self, key, value, partition):
        self.states[key] = value
        self.puts.append((key, partition))

    def events(self):
        return [orjson.loads(line) for _, v in self.valid for line in EventBatch.decode(v).lines]

    def dead_letters(self):
        return [deadletter.decode(v) for _, v in self.dead]


class Files:
    """Each file's items, in order; an item that is an exception is raised there (once per listed attempt)."""

    def __init__(self, attempts):
        self.attempts, self.reads = list(attempts), 0

    async def _runs(self, items, fetched):
        """The items in runs of 1, 2, 3, ... (the last cut short), as the readers give a block's rows at once; an
        exception after the run of the items before it."""
        fetched.modified_ms = MODIFIED_MS
        run, size = [], 1
        for item in items:
            if isinstance(item, BaseException):
                if run:
                    yield run
                raise item
            run.append(item)
            if len(run) == size:
                yield run
                run, size = [], size + 1
        if run:
            yield run

    def runs(self, src, f, fetched: Fetched):
        self.reads += 1
        items = self.attempts.pop(0) if len(self.attempts) > 1 else self.attempts[0]
        return self._runs(items, fetched)


def engine(attempts, s=None, clock=None):
    s = s or settings()
    mem, clock = Memory(), clock or FakeClock(NOW)
    slept = []

    async def sleep(seconds):
        slept.append(seconds)
        clock.advance(int(seconds * 1000))
    files = Files(attempts)
    imp = FileImporter(s, clock, mem.senders(), mem, files, "imports.files", sleep=sleep,
                       monotonic=lambda: clock.now_ms() / 1000)
    return imp, mem, files, slept


def discovered(key="in/a.json", found_by="sqs"):
    return ImportFile("clicks", "bkt", key, RECORD_MS - 5000, found_by, size=10, etag="e1")


def run(imp, f, offset=3, record_ms=RECORD_MS, partition=2):
    return asyncio.run(imp.handle(f, f.kafka_key, partition, offset, record_ms))


def test_a_file_is_read_converted_produced_and_then_recorded_done():
    bad = RowError(2, RowErrorReason.MALFORMED_JSON, "line 2 is not JSON")
    imp, mem, files, slept = engine([[good(1), bad, good(3, user="user-3")]])
    f = discovered()
    state = run(imp, f)
    assert state == FileState(State.DONE, 3, 2, 1, NOW, RECORD_MS - 5000, "e1", 10)
    assert [(e["user_id"], e["event_type"]) for e in mem.events()] == [("user-1", "Play"), ("user-3", "Play")]
    assert [(d["reason"], d["topic"], d["offset"]) for d in mem.dead_letters()] == [
        ("malformed_json", "s3://bkt/in/a.json", 2)]
    assert mem.states == {b"clicks:in/a.json": state.encode()}
    assert mem.puts == [(b"clicks:in/a.json", 2)]
    assert mem.mutations == [] and slept == [0.0, 0.0] and files.reads == 1


def test_a_second_discovery_is_skipped_and_its_state_written_again_as_it_was():
    imp, mem, files, _ = engine([[good(1)]])
    f = discovered()
    first = run(imp, f)
    assert run(imp, discovered(found_by="scan"), offset=4) is None
    assert files.reads == 1 and len(mem.valid) == 1
    assert mem.states[f.kafka_key] == first.encode()
    assert mem.puts == [(f.kafka_key, 2), (f.kafka_key, 2)]


def test_a_retry_asked_after_the_import_reads_the_file_again_but_not_its_own_replay():
    clock = FakeClock(NOW)
    imp, mem, files, _ = engine([[good(1)]], clock=clock)
    run(imp, discovered())                                                      # done at NOW
    clock.advance(10)
    assert run(imp, discovered(found_by="retry"), offset=9, record_ms=NOW + 1).at_ms == NOW + 10
    assert files.reads == 2
    assert run(imp, discovered(found_by="retry"), offset=9, record_ms=NOW + 1) is None   # its replay
    assert files.reads == 2


def test_an_unreadable_file_is_marked_failed_after_the_rows_before_the_damage():
    damage = FileError(FileErrorReason.TRUNCATED_GZIP, "the gzip stream ends early")
    imp, mem, files, _ = engine([[good(1), damage]])
    state = run(imp, discovered("in/t.json.gz"))
    assert (state.state, state.rows, state.imported, state.reason, state.message) == (
        State.FAILED, 1, 1, FileErrorReason.TRUNCATED_GZIP.value, "the gzip stream ends early")
    ((d),) = mem.dead_letters()
    assert (d["reason"], d["topic"], d["offset"]) == ("unreadable_file", "s3://bkt/in/t.json.gz", 0)
    assert len(mem.events()) == 1


def test_a_passing_s3_failure_reads_the_file_again_from_its_start_after_a_backoff():
    imp, mem, files, slept = engine([[good(1), TransientRead("timeout")], [good(1), TransientRead("timeout")],
                                     [good(1), good(2)]])
    state = run(imp, discovered())
    assert files.reads == 3
    assert [s for s in slept if s] == [1.0, 2.0]            # stream.retry.backoff_s: 1 s, doubling
    assert (state.state, state.rows, state.imported) == (State.DONE, 2, 2)
    # the rows read before a failure were not produced yet (their chunk was not full): the last read sends them
    assert [e["event_properties"] for e in mem.events()] == [{}, {}] and len(mem.valid) == 1


def test_rows_are_read_at_most_events_per_s_a_second():
    rows = [good(n) for n in range(1, 4001)]
    imp, mem, _, slept = engine([rows], settings(rate={"events_per_s": 1000, "files_per_s": 50}))
    run(imp, discovered())
    # a full bucket of 1000 lets the first chunk of 2000 go after 1 s, the second after 2 s more
    assert [s for s in slept if s] == [1.0, 2.0]
    assert len(mem.events()) == 4000


def test_a_file_of_a_source_that_is_not_configured_or_disabled_is_skipped():
    imp, mem, files, _ = engine([[good(1)]], settings(enabled=False))
    assert run(imp, discovered()) is None
    assert run(imp, ImportFile("gone", "bkt", "in/a.json", RECORD_MS, "sqs")) is None
    assert files.reads == 0 and mem.valid == [] and mem.states == {}


def test_rows_of_a_file_keep_their_source_offsets_from_the_discovery_record():
    imp, mem, _, _ = engine([[good(1), good(2)]])
    run(imp, discovered(), offset=11)
    (batch,) = [EventBatch.decode(v) for _, v in mem.valid]
    assert batch.offsets == [11 * (1 << 32) + 1, 11 * (1 << 32) + 2]
