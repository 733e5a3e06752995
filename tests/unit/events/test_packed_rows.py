"""Packed rows: what the dedupe stage's pass-through (``Head``) writes reads back as what the reference path
(``EventBatch`` decoded, selected and encoded again) writes, on generated batches and masks, packed or not."""

import random

import pytest

from stream.events.batch import (
    EventBatch,
    Head,
    Origin,
    Source,
    decode_rows,
    drop_rows,
    pack_rows,
    unpack_rows,
)

H = 1709967600000


def generated(rnd: random.Random) -> EventBatch:
    n = rnd.choice([0, 1, 2, 7, 64, 300])
    own = rnd.random() < 0.4           # written directly to events.valid (the HTTP API): no offsets
    segment = rnd.random() < 0.3
    return EventBatch(
        project=rnd.randrange(1, 10**6), hour=H, origin=Origin("events.ingest", rnd.randrange(4), rnd.randrange(10**9)),
        offsets=[] if own else sorted(rnd.sample(range(10**6), n)),
        keys=[b"" if rnd.random() < 0.2 else b"1\x00d%d\x00i%d" % (rnd.randrange(50), i) for i in range(n)],
        times=[H + rnd.randrange(3_600_000) for _ in range(n)], uuids=[rnd.randbytes(16) for _ in range(n)],
        lines=[b'{"i":%d,"p":"%s"}' % (i, b"x" * rnd.randrange(0, 400)) for i in range(n)],
        source=None if own or rnd.random() < 0.5 else Source("events.ingest", rnd.randrange(4)),
        segment_source="src" if segment else "",
        segment=[b"" if rnd.random() < 0.5 else b'{"m":%d}' % i for i in range(n)] if segment else [])


def masks(rnd: random.Random, n: int) -> list[list[bool]]:
    return [[True] * n, [False] * n, [rnd.random() < 0.9 for _ in range(n)], [rnd.random() < 0.3 for _ in range(n)]]


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("seed", range(40))
def test_the_pass_through_reads_back_as_the_reference_select_once_and_twice(seed, pack):
    rnd = random.Random(seed)
    b = generated(rnd)
    data = b.encode(pack=pack)
    at = Origin("events.valid", rnd.randrange(4), rnd.randrange(10**6))
    for mask in masks(rnd, len(b)):
        ref = EventBatch.decode(data)
        ref.arrived_at(at)
        ref = ref.select(mask, Origin("events.valid", at.partition, at.offset))
        head = Head.decode(data)
        head.arrived_at(at)
        fast = head.select(mask, Origin("events.valid", at.partition, at.offset)).encode()
        assert EventBatch.decode(fast) == EventBatch.decode(ref.encode(pack=pack))
        assert decode_rows(fast) == decode_rows(ref.encode(pack=pack))
        # a second stage dropping more rows of the already-dropped field (a pass-through of a pass-through)
        again = masks(rnd, len(ref))[2]
        twice = Head.decode(fast).select(again, Origin("events.accepted", 0, 1)).encode()
        ref2 = ref.select(again, Origin("events.accepted", 0, 1)).encode(pack=pack)
        assert (EventBatch.decode(twice), decode_rows(twice)) == (EventBatch.decode(ref2), decode_rows(ref2))


def test_a_packed_field_keeps_its_frame_and_lists_the_rows_dropped():
    lines = [b'{"a":%d}' % i for i in range(6)]
    field = pack_rows(lines)
    assert field[:2] == b"\x00\x00"
    dropped = drop_rows(field, [True, False, True, True, False, True])
    assert dropped.endswith(field[2:]) and dropped[:2] == b"\x00\x04"    # two indices, uint32s, then the frame
    assert unpack_rows(dropped) == b"\n".join(lines[i] for i in (0, 2, 3, 5))
    assert unpack_rows(drop_rows(dropped, [False, True, True, False])) == b"\n".join(lines[i] for i in (2, 3))
    assert drop_rows(field, [True] * 6) is field
    assert (unpack_rows(b'{"a":0}\n{"a":1}'), drop_rows(b'{"a":0}\n{"a":1}', [False, True])) == (
        b'{"a":0}\n{"a":1}', b'{"a":1}')       # rows written before packing: read and dropped as they are
    assert unpack_rows(b"") == b""
