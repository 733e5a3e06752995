"""ReadBatch: a batch read with its rows left in the message, against fastavro's reading of it (``decode_slowly``)
and the select, split and encode of that batch: the same columns, lines, messages and counts, on generated
batches, on batches whose rows or columns are not their events' count, and on messages cut, grown or altered."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import avro
from stream.events.batch import EventBatch, Origin, ReadBatch, Source
from tests.unit.events.test_batch import H, batches


def reference(data, arrived, mask, origin, max_bytes):
    """What the dedupe stage sent before ReadBatch: fastavro's batch, selected, split and encoded."""
    b = EventBatch.decode_slowly(data)
    b.arrived_at(arrived)
    out = b.select(mask, origin)
    return ([p.encode() for p in out.split(max_bytes)] if out.lines else [], len(out.lines)), len(b)


def read_or_error(read, data):
    try:
        return read(data)
    except Exception as exc:   # noqa: BLE001 - the error is what is compared
        return type(exc), str(exc)


@st.composite
def json_rows(draw):
    """A batch as every writer gives it: its rows JSON objects (no newline in them), one per event."""
    b = draw(batches())
    b.lines = [b'{"r":%d,"p":"%s"}' % (i, draw(st.binary(max_size=200)).hex().encode()) for i in range(len(b.times))]
    b.keys = [k.replace(b"\xff", b"") for k in b.keys]
    b.segment = [m.replace(b"\xff", b"") for m in b.segment]
    return b


def masks(n):
    return st.lists(st.booleans(), min_size=n, max_size=n)


@settings(max_examples=400, deadline=None)
@given(st.one_of(batches(), json_rows()), st.data())
def test_a_read_batch_is_fastavros_batch_and_sends_what_select_split_and_encode_send(b, data):
    msg = b.encode()
    r = ReadBatch.read(msg)
    assert r.batch() == EventBatch.decode(msg) == EventBatch.decode_slowly(msg)
    arrived = Origin("events.valid", data.draw(st.integers(0, 11)), data.draw(st.integers(-1, 1 << 40)))
    mask = data.draw(masks(len(b.times)))
    max_bytes = data.draw(st.sampled_from([1, 600, 2000, 4 << 20]))
    r.arrived_at(arrived)
    want, count = reference(msg, arrived, mask, arrived, max_bytes)
    assert (r.select_encoded(mask, arrived, max_bytes), len(r)) == (want, count)
    arrived_slowly = EventBatch.decode_slowly(msg)
    arrived_slowly.arrived_at(arrived)
    assert r.batch() == arrived_slowly   # as read, with its arrival: sending changed nothing of it
    assert r.select(mask, arrived) == arrived_slowly.select(mask, arrived)   # what the identity stage is handed


@settings(max_examples=300, deadline=None)
@given(json_rows(), st.data())
def test_kept_rows_go_out_in_one_message_copied_in_runs(b, data):
    msg = b.encode()
    mask = data.draw(masks(len(b.times)))
    r = ReadBatch.read(msg)
    r.arrived_at(Origin("events.valid", 1, 7))
    got, count = r.select_encoded(mask, Origin("events.valid", 1, 7), 4 << 20)
    kept = [ln for ln, m in zip(b.lines, mask) if m]
    assert count == len(kept) == sum(mask)
    assert [EventBatch.decode_slowly(m).lines for m in got] == ([kept] if kept else [])


def test_rows_holding_a_newline_or_columns_of_another_count_go_through_the_batch_as_before():
    b = EventBatch(7, H, Origin("events.ingest", 0, 9), [8, 9], [b"k1", b"k2"], [H, H + 1], [b"a" * 16, b"b" * 16],
                   [b'{"x":1}\n{"y":1}', b'{"x":2}'])
    for msg in (b.encode(),
                EventBatch(7, H, Origin("events.ingest", 0, 9), [8, 9], [b"k1", b"k2"], [H, H + 1],
                           [b"a" * 16, b"b" * 16], [b'{"x":1}']).encode(),
                EventBatch(7, H, Origin("events.ingest", 0, 9), [8], [b"k1\xffk3", b"k2"], [H, H + 1],
                           [b"a" * 16, b"b" * 10], [b'{"x":1}', b"{}"]).encode()):
        for mask in ([True, True], [False, True], [True, False]):
            r = ReadBatch.read(msg)
            want, count = reference(msg, Origin("events.valid", 0, 3), mask, Origin("events.valid", 0, 3), 4 << 20)
            assert (r.select_encoded(mask, Origin("events.valid", 0, 3), 4 << 20), len(r)) == (want, count)
            assert r.select(mask, Origin("events.valid", 0, 3)) == \
                EventBatch.decode_slowly(msg).select(mask, Origin("events.valid", 0, 3))
    r = ReadBatch.read(b.encode())
    assert (len(r), r.lines) == (3, [b'{"x":1}', b'{"y":1}', b'{"x":2}'])   # three lines for two events, as before


def test_a_message_not_as_writers_write_it_is_fastavros_to_read_or_refuse():
    good = EventBatch(424242, H, Origin("events.ingest", 3, 5), [1, 2], [b"k", b""], [H, H + 1],
                      [b"a" * 16, b"b" * 16], [b'{"a":1}', b'{"b":2}'], source=Source("events.ingest", 2)).encode()
    ten_bytes = bytes([0xFF] * 9 + [0x01])    # a long's largest varint: -2**63
    too_long = bytes([0xFF] * 9 + [0x02])     # 65 bits
    eleven = bytes([0x80] * 10 + [0x00])      # 0 in eleven bytes
    outside_int = avro.long_of(1 << 31)       # a partition past an Avro int
    head = avro.long_of(1) + avro.long_of(H)
    cases = [b"", b"\xff\xff not avro", good[:10], good[:-1], good + b"trailing", good.replace(b"events.ingest",
             b"events.\xffngest", 1), ten_bytes + good[3:], too_long + good[3:], eleven + good[3:],
             head + avro.string_of("t") + outside_int + good[len(head) + 2:],
             head + avro.string_of("t") + avro.long_of(-5) + good[len(head) + 2:]]
    cases += [good[:i] + bytes([good[i] ^ 0x55]) + good[i + 1:] for i in range(0, 120, 3)]
    for msg in cases:
        assert read_or_error(lambda d: ReadBatch.read(d).batch(), msg) == read_or_error(EventBatch.decode_slowly, msg)
        assert read_or_error(EventBatch.decode, msg) == read_or_error(EventBatch.decode_slowly, msg)
    assert ReadBatch.read(ten_bytes + good[3:]).project == -(1 << 63)
    assert ReadBatch.read(good + b"trailing").lines == [b'{"a":1}', b'{"b":2}']


@settings(max_examples=300, deadline=None)
@given(json_rows(), st.data())
def test_a_cut_or_altered_message_reads_as_fastavro_reads_it(b, data):
    msg = b.encode()
    at = data.draw(st.integers(0, len(msg)))
    msg = data.draw(st.sampled_from([msg[:at], msg[:at] + data.draw(st.binary(min_size=1, max_size=3)) + msg[at + 1:],
                                     msg + data.draw(st.binary(max_size=8))]))
    got = read_or_error(ReadBatch.read, msg)
    want = read_or_error(EventBatch.decode_slowly, msg)
    if isinstance(got, ReadBatch):
        assert got.batch() == want
        mask, o = [True] * len(got.times), got.origin
        assert read_or_error(lambda _: got.select_encoded(mask, o, 4 << 20), None) == \
            read_or_error(lambda _: reference(msg, o, mask, o, 4 << 20)[0], None)
    else:
        assert got == want


def test_an_empty_batch_sends_nothing_and_a_batch_of_all_duplicates_neither():
    empty = EventBatch(7, H, Origin("events.valid", 2, 6)).encode()
    assert ReadBatch.read(empty).select_encoded([], Origin("events.valid", 2, 6), 4 << 20) == ([], 0)
    two = EventBatch(7, H, Origin("events.valid", 2, 6), [], [b"k", b"k"], [H, H], [b"a" * 16] * 2,
                     [b"{}", b"{}"]).encode()
    assert ReadBatch.read(two).select_encoded([False, False], Origin("events.valid", 2, 6), 4 << 20) == ([], 0)


@pytest.mark.parametrize("mask", [[True] * 5, [False, True, True, False, True], [True, False, False, False, True]])
def test_a_kept_batch_past_the_limit_goes_in_parts_as_split_cuts_it(mask):
    b = EventBatch(1, H, Origin("events.ingest", 3, 14), [10, 11, 12, 13, 14], [b"k%d" % i for i in range(5)],
                   [H + i for i in range(5)], [bytes([i]) * 16 for i in range(5)], [b"r" * 400] * 5)
    limit = 1024 + 2 * (48 + 2 + 400)
    got, count = ReadBatch.read(b.encode()).select_encoded(mask, Origin("events.valid", 1, 7), limit)
    want, n = reference(b.encode(), Origin("events.valid", 1, 7), mask, Origin("events.valid", 1, 7), limit)
    assert (got, count) == want
    assert [len(EventBatch.decode(m)) for m in got] == {5: [2, 2, 1], 3: [2, 1], 2: [2]}[sum(mask)]


@settings(max_examples=60, deadline=None)
@given(st.integers(195, 260), st.data())
def test_a_batch_of_many_rows_joined_once_into_its_message_encodes_to_fastavros_bytes(n, data):
    b = EventBatch(7, H, Origin("events.ingest", 1, 5), list(range(n)), [b"k%d" % i for i in range(n)],
                   [H + i for i in range(n)], [bytes(16)] * n, [data.draw(st.binary(max_size=6)) for _ in range(n)])
    assert b.encode() == b.encode_slowly()
    assert ReadBatch.read(b.encode()).batch() == EventBatch.decode_slowly(b.encode())
