"""EventBatch.split's and select's fast paths against the plain code they replace, on generated batches."""

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events.batch import BATCH_HEAD_BYTES, PER_EVENT_BYTES, EventBatch, Origin, Source


def split_reference(b: EventBatch, max_bytes: int) -> list[EventBatch]:
    """``split`` as it was: every row's size first, then the sum."""
    sizes = [len(ln) + len(k) + PER_EVENT_BYTES for ln, k in zip(b.lines, b.keys)]
    if b.segment:
        sizes = [n + len(m) for n, m in zip(sizes, b.segment)]
    if sum(sizes) + BATCH_HEAD_BYTES <= max_bytes:
        return [b]
    source, offsets = b.source_of_events()
    parts: list[EventBatch] = []
    start, used = 0, BATCH_HEAD_BYTES
    for i, n in enumerate(sizes + [max_bytes]):
        if i == len(sizes) or (i > start and used + n > max_bytes):
            sl = slice(start, i)
            parts.append(EventBatch(b.project, b.hour, b.origin, offsets[sl], b.keys[sl], b.times[sl], b.uuids[sl],
                                    b.lines[sl], source, b.segment_source, b.segment[sl] if b.segment else []))
            start, used = i, BATCH_HEAD_BYTES
        used += n
    return parts


def select_reference(b: EventBatch, mask: list[bool], origin: Origin) -> EventBatch:
    """``select`` as it was: a comprehension a column."""
    source, offsets = b.source_of_events()
    return EventBatch(
        project=b.project, hour=b.hour, origin=origin, offsets=[o for o, m in zip(offsets, mask) if m],
        keys=[k for k, m in zip(b.keys, mask) if m], times=[t for t, m in zip(b.times, mask) if m],
        uuids=[u for u, m in zip(b.uuids, mask) if m], lines=[ln for ln, m in zip(b.lines, mask) if m],
        source=source, segment_source=b.segment_source,
        segment=[s for s, m in zip(b.segment, mask) if m] if b.segment else [])


@st.composite
def ragged_batches(draw) -> EventBatch:
    """Batches whose columns are mostly their rows' count, and sometimes not (a key or Segment message more or
    less): split and select must cut those as the plain code did."""
    n = draw(st.integers(0, 12))
    lines = [draw(st.binary(max_size=400)) for _ in range(n)]

    def count() -> int:
        return n if draw(st.booleans()) else draw(st.integers(0, n + 2))
    keys = [draw(st.binary(max_size=40)) for _ in range(count())]
    segment = [draw(st.binary(max_size=60)) for _ in range(count())] if draw(st.booleans()) else []
    hour = 3_600_000 * draw(st.integers(0, 3))
    return EventBatch(
        draw(st.integers(1, 5)), hour, Origin("events.valid", 2, draw(st.integers(0, 9))),
        offsets=list(range(100, 100 + n)) if draw(st.booleans()) else [], keys=keys, times=list(range(n)),
        uuids=[b"u%015d" % i for i in range(n)], lines=lines,
        source=Source("events.ingest", 1) if draw(st.booleans()) else None, segment_source="s", segment=segment)


@settings(max_examples=1000, deadline=None)
@given(ragged_batches(), st.integers(0, 8000))
def test_split_cuts_what_the_plain_code_cut(b, max_bytes):
    got, want = b.split(max_bytes), split_reference(b, max_bytes)
    assert got == want
    assert (len(got) == 1 and got[0] is b) == (len(want) == 1 and want[0] is b)


@settings(max_examples=1000, deadline=None)
@given(ragged_batches(), st.data())
def test_select_keeps_what_the_plain_code_kept(b, data):
    mask = data.draw(st.lists(st.booleans(), min_size=0, max_size=len(b.lines) + 2))
    origin = Origin("events.valid", 3, 7)
    assert b.select(mask, origin) == select_reference(b, mask, origin)


def test_a_batch_that_fits_is_itself_and_one_a_byte_over_is_cut():
    lines, keys, segment = [b"x" * 100, b"y" * 200], [b"k1", b"k22"], [b"s", b""]
    b = EventBatch(1, 0, Origin("events.valid", 0, 5), offsets=[7, 8], keys=keys, times=[1, 2],
                   uuids=[b"u" * 16, b"v" * 16], lines=lines, segment=segment)
    size = 100 + 2 + 1 + 200 + 3 + 2 * PER_EVENT_BYTES + BATCH_HEAD_BYTES
    assert b.split(size) == [b] and b.split(size)[0] is b
    parts = b.split(size - 1)
    assert [(p.lines, p.keys, p.offsets, p.segment) for p in parts] == [
        ([b"x" * 100], [b"k1"], [7], [b"s"]), ([b"y" * 200], [b"k22"], [8], [b""])]
