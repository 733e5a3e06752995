"""Held rows stored and let go: the chunk's encode, the enriched row and the released batches against plain code."""

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events.batch import EventBatch, Origin, Source
from stream.events.timefmt import HOUR_MS
from stream.identity.device import Released, _HoldBook, held_line
from stream.identity.records import HeldRow, enc
from stream.identity.stage import released_batches

_encode = msgspec.json.Encoder().encode


def shared_reference(rows: list[HeldRow]) -> bytes:
    """``_HoldBook._shared`` as it was: a copy of each row whose properties are the row before's, without them."""
    return enc.encode([msgspec.structs.replace(r, props=b"") if i and r.props == rows[i - 1].props else r
                       for i, r in enumerate(rows)])


def line_reference(h: HeldRow) -> bytes:
    """A held row's enriched bytes as a ``%`` format of its tail (EXPORT_FIELDS order)."""
    return h.head + (b'"amplitude_event_type":%s,"amplitude_id":%d,"group_properties":%s,"paying":%s,'
                     b'"processed_time":%s,"start_version":%s,"user_creation_time":%s,"user_properties":%s}') % (
        h.event_type, h.aid, h.group_properties, b"true" if h.paying else b"false", h.processed_time,
        b"null" if h.start_version is None else _encode(h.start_version),
        b"null" if h.created is None else _encode(h.created), h.props)


def batches_reference(released: Released, origin: Origin, source: str) -> list[EventBatch]:
    """``released_batches`` as it was."""
    out: list[EventBatch] = []
    for row, line, offset in released.rows:
        hour = row.time - row.time % HOUR_MS
        b = out[-1] if out else None
        if b is None or (b.project, b.hour, b.segment_source) != (row.project, hour, row.segment_source):
            b = EventBatch(row.project, hour, origin, source=Source(source, origin.partition),
                           segment_source=row.segment_source)
            out.append(b)
        b.offsets.append(offset)
        b.keys.append(row.key)
        b.times.append(row.time)
        b.uuids.append(row.uuid)
        b.lines.append(line)
        b.segment.append(row.segment)
    for b in out:
        if not any(b.segment):
            b.segment = []
    return out


_few = st.sampled_from
held_rows = st.builds(
    HeldRow, project=_few([1, 2]), head=_few([b"{", b'{"a":1,', b'{"event_type":"x\\u00e9",']),
    event_type=_few([b"null", b'"$identify"']), group_properties=_few([b"{}", b'{"org":{"a":{"n":1}}}']),
    processed_time=_few([b'"2024-03-09 07:00:00.000000"', b"null"]), aid=_few([1, 1025, 2 ** 40]),
    created=_few([None, "2024-03-09 07:00:00.000000", "é\"\\"]), start_version=_few([None, "1.0", "2.0"]),
    paying=st.booleans(), props=_few([b"{}", b'{"plan":"pro"}', b'{"plan":"free"}', b""]),
    time=_few([0, HOUR_MS - 1, HOUR_MS, 5 * HOUR_MS + 7]), key=st.binary(max_size=8),
    uuid=st.binary(min_size=16, max_size=16), segment=_few([b"", b"seg"]), segment_source=_few(["", "src"]),
    at=_few([-1, 4]), index=_few([0, 3]), cut=_few([0, 12]))


@settings(max_examples=500, deadline=None)
@given(st.lists(held_rows, max_size=12))
def test_a_chunk_is_encoded_as_with_a_copy_of_each_row_and_its_rows_keep_their_properties(rows):
    before = [msgspec.structs.asdict(r) for r in rows]
    assert _HoldBook._shared(rows) == shared_reference(rows)
    assert [msgspec.structs.asdict(r) for r in rows] == before


@settings(max_examples=500, deadline=None)
@given(st.lists(held_rows, max_size=12))
def test_a_held_rows_enriched_bytes_are_its_tail_as_a_format_writes_it_with_or_without_the_memo(rows):
    memo: dict = {}
    assert [held_line(r, memo) for r in rows] == [held_line(r) for r in rows] == [line_reference(r) for r in rows]
    assert len(memo) == len({(r.aid, r.paying, r.start_version, r.created) for r in rows})


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(held_rows, st.binary(max_size=20), st.integers(0, 99)), max_size=14))
def test_the_rows_let_go_are_batched_as_the_plain_code_batched_them(rows):
    released = Released(list(rows))
    origin = Origin("events.valid", 2, 40)
    assert released_batches(released, origin, "events.valid.held") == batches_reference(
        released, origin, "events.valid.held")


def test_a_chunk_leaves_out_the_properties_of_a_row_that_are_the_row_befores():
    a = HeldRow(1, b"{", b"null", b"{}", b"null", 5, None, None, False, b'{"p":1}', 0, b"k", b"u" * 16, b"", "")
    rows = [a, msgspec.structs.replace(a, key=b"k2"), msgspec.structs.replace(a, props=b'{"p":2}')]
    stored = msgspec.msgpack.decode(_HoldBook._shared(rows))
    assert [r[9] for r in stored] == [b'{"p":1}', b"", b'{"p":2}']
    assert [r.props for r in rows] == [b'{"p":1}', b'{"p":1}', b'{"p":2}']
