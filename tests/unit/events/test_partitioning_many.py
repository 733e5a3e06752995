"""Many keys hashed at once (``murmur2_same_length``, ``remember_partitions``): exactly Kafka's default partitioner,
aiokafka's murmur2 as the reference."""

import random

import pytest
from aiokafka.partitioner import murmur2 as reference
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import partitioning
from stream.events.partitioning import MEMO_KEYS, murmur2_same_length, remember_partitions


@pytest.fixture(autouse=True)
def fresh_memos(monkeypatch):
    monkeypatch.setattr(partitioning, "_MEMOS", {})


def expected(key: str, partitions: int) -> int:
    return (reference(key.encode()) & 0x7FFFFFFF) % partitions


def test_murmur2_same_length_is_aiokafkas_for_every_length_and_tail_up_to_300_bytes():
    rnd = random.Random(20261206)
    for length in range(1, 301):
        for n in (1, 2, 9, 64):
            keys = [bytes(length), b"\xff" * length, b"\x80" * length] + [rnd.randbytes(length) for _ in range(n)]
            assert list(murmur2_same_length(b"".join(keys), length)) == [reference(k) for k in keys], (length, n)


def test_murmur2_same_length_of_the_benchmarks_device_ids_and_uuids():
    rnd = random.Random(7)
    devices = [f"device-{rnd.randrange(250_000):07d}".encode() for _ in range(2000)]
    uuids = [f"{rnd.getrandbits(128):032x}".encode() for _ in range(500)]
    assert list(murmur2_same_length(b"".join(devices), 14)) == [reference(k) for k in devices]
    assert list(murmur2_same_length(b"".join(uuids), 32)) == [reference(k) for k in uuids]
    assert murmur2_same_length(b"device-0123456", 14) == (2144217448,)


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 80).flatmap(lambda n: st.lists(st.binary(min_size=n, max_size=n), min_size=1, max_size=40)))
def test_murmur2_same_length_is_aiokafkas_for_generated_keys(keys):
    assert list(murmur2_same_length(b"".join(keys), len(keys[0]))) == [reference(k) for k in keys]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
                          st.integers(0, 10 ** 6).map(lambda i: f"device-{i:07d}"),
                          st.integers(0, 10 ** 4).map(lambda i: f"ü-{i:05d}")), max_size=120),
       st.integers(1, 1000))
def test_remember_partitions_puts_kafkas_partitions_of_the_keys_in_the_memo(keys, partitions):
    partitioning._MEMOS.clear()     # each example from an empty memo (the fixture runs once for them all)
    memo = partitioning.partition_memo(partitions)
    memo["known"] = 12345      # kept as it is: a key the memo has is not hashed again
    remember_partitions(keys + ["known"], partitions)
    assert memo == {**{k: expected(k, partitions) for k in keys}, "known": 12345}


def test_remember_partitions_hashes_many_keys_of_mixed_lengths_and_scripts():
    rnd = random.Random(11)
    keys = ([f"device-{rnd.randrange(250_000):07d}" for _ in range(3000)] + [f"user-{i}" for i in range(500)]
            + [f"デバイス-{i:04d}" for i in range(40)] + [f"{rnd.getrandbits(128):032x}" for _ in range(300)] + [""])
    remember_partitions(keys, 64)
    assert partitioning.partition_memo(64) == {k: expected(k, 64) for k in keys}
    assert [partitioning.partition_for(k, 64) for k in keys] == [expected(k, 64) for k in keys]


def test_remember_partitions_clears_a_memo_the_new_keys_would_take_over_its_limit(monkeypatch):
    monkeypatch.setattr(partitioning, "MEMO_KEYS", 100)
    memo = partitioning.partition_memo(8)
    memo.update((f"old-{i}", 0) for i in range(90))
    remember_partitions([f"device-{i:07d}" for i in range(20)], 8)
    assert memo == {f"device-{i:07d}": expected(f"device-{i:07d}", 8) for i in range(20)}
    remember_partitions([f"device-{i:07d}" for i in range(10, 30)], 8)    # 30 keys: within the limit, kept
    assert memo == {f"device-{i:07d}": expected(f"device-{i:07d}", 8) for i in range(30)}
    assert MEMO_KEYS == 1_000_000


def test_hashing_chunks_of_ever_other_sizes_keeps_no_memory_of_their_formats():
    """The long formats of one chunk's keys are not kept after it (struct's module functions would cache up to 100
    of them: about 10 MB for chunks of about 2,000 ids)."""
    import gc
    import struct
    import tracemalloc

    rng = random.Random(5)
    chunks = [b"".join(bytes(rng.choice(b"0123456789abcdef") for _ in range(14)) for _ in range(n))
              for n in range(1_900, 2_000)]
    struct._clearcache()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for blob in chunks:
            murmur2_same_length(blob, 14)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 200_000, held
