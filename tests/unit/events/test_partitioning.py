"""murmur2 and the partition of a key: exactly Kafka's default partitioner (aiokafka's murmur2 as the reference)."""

import random

from aiokafka.partitioner import murmur2 as reference
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import partitioning
from stream.events.partitioning import murmur2, partition_for, partition_of

# Kafka's UtilsTest.testMurmur2 (the Java client's signed ints) and the four 24-27 byte keys other clients pin.
JAVA = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107, b"": 275646681,
        b"string-f-24-chars-length": 124730809, b"string-fo-25-chars-length": 1269511650,
        b"string-foo-26-chars-length": 119165628, b"string-last-27-chars-length": 1089971754}

# Values of aiokafka.partitioner.murmur2, one per kind of key the function takes apart differently.
FIXED = {b"a": 2731586172, b"ab": 316155434, b"abcd": 2971317748, b"\x00": 375494588, b"\xff\xff\xff": 1548199422,
         "usér-3".encode(): 2683206702, "デバイス-ü".encode(): 3836026637, b"device-0123456": 2144217448,
         b"3f2504e0-4f89-11d3-9a0c-0305e82c3301": 149263511, b"x" * 300: 403018756, bytes(range(256)): 2346620022}


def test_murmur2_gives_the_java_clients_hashes():
    assert {k: murmur2(k) for k in JAVA} == {k: h & 0xFFFFFFFF for k, h in JAVA.items()}
    assert {k: reference(k) for k in JAVA} == {k: h & 0xFFFFFFFF for k, h in JAVA.items()}


def test_murmur2_gives_aiokafkas_values_for_fixed_keys():
    assert {k: murmur2(k) for k in FIXED} == FIXED
    assert {k: reference(k) for k in FIXED} == FIXED


def test_murmur2_is_aiokafkas_for_every_length_and_tail_up_to_1100_bytes():
    # every length: all four tail lengths, straight-line code (< 64 bytes: words in turn below 24, lanes from
    # there), the lanes with a loop (64-259 bytes), the plain loop (260 on)
    rnd = random.Random(20261206)
    for n in range(1101):
        keys = [bytes(n), b"\xff" * n, b"\x80" * n] + [rnd.randbytes(n) for _ in range(3 if n > 64 else 12)]
        assert [murmur2(k) for k in keys] == [reference(k) for k in keys], n


def test_murmur2_takes_any_bytes_like_buffer():
    for k in (b"device-0123456", b"3f2504e0-4f89-11d3-9a0c-0305e82c3301-x", b"y" * 301):
        assert [murmur2(bytearray(k)), murmur2(memoryview(k))] == [reference(k)] * 2


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=600))
def test_murmur2_is_aiokafkas_for_generated_bytes(key):
    assert murmur2(key) == reference(key)


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=80), st.integers(1, 1000))
def test_partition_for_and_partition_of_are_kafkas_default_partitioner(key, partitions):
    expected = (reference(key.encode()) & 0x7FFFFFFF) % partitions
    assert (partition_for(key, partitions), partition_of(key.encode(), partitions)) == (expected, expected)
    assert partitioning.partition_memo(partitions)[key] == expected
