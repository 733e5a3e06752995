"""Kafka's default partitioner on the partition key (murmur2), as producers keyed by device_id use."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Callable


_MEMOS: dict[int, dict[str, int]] = {}
"""Per partition count, the partitions of the keys seen (at most MEMO_KEYS each: cleared when full)."""
MEMO_KEYS = 1_000_000

_M = 0x5BD1E995
_SEED = 0x9747B28C
_LANES_FROM = 6
"""From this many 32-bit words on (24 bytes), the words are mixed all at once (see ``murmur2``)."""
_TABLE_WORDS = 64
"""Keys of up to this many words (256 bytes) use the prepared structs below; longer ones a plain loop."""
_WORDS = tuple(struct.Struct(f"<{n}I").unpack_from for n in range(_TABLE_WORDS + 1))
"""n -> the first n little-endian 32-bit words of a buffer."""
_SPREAD = tuple(struct.Struct(f"<{n}Q").pack for n in range(_TABLE_WORDS + 1))
"""n -> n words, each in its own 64-bit lane."""
_LOW_HALVES = tuple(struct.Struct("<" + "I4x" * n).unpack for n in range(_TABLE_WORDS + 1))
"""n -> the low 32 bits of each of n 64-bit lanes."""
_LANE_MASKS = tuple(int.from_bytes(b"\xff\xff\xff\xff\0\0\0\0" * n, "little") for n in range(_TABLE_WORDS + 1))
"""n -> the low 32 bits of each of n 64-bit lanes set."""


def _murmur2_of_length(length: int) -> Callable[[bytes], int]:
    """``murmur2`` for keys of ``length`` bytes (below ``_GENERATED``) as straight-line code: no loop, no branch on
    the tail. Under ``_LANES_FROM`` words each word is mixed in turn; from there on the words are mixed at once in
    64-bit lanes (see ``murmur2``) and ``h``'s chain is one expression."""
    n, tail = length >> 2, length & 3
    fmt = ("", "B", "H", "HB")[tail]      # the tail as one little-endian value (two for 3 bytes: 2 + 1)
    env: dict[str, Any] = {"fb": int.from_bytes}
    lines = [f"def murmur2_{length}(data, m={_M}):"]
    h = str(_SEED ^ length)
    if n < _LANES_FROM:
        names = [f"w{i}" for i in range(n)] + [f"t{i}" for i in range(len(fmt))]
        if names:
            env["unpack"] = struct.Struct(f"<{n}I{fmt}").unpack_from
            lines.append(f"    {', '.join(names)}, = unpack(data)")
        for i in range(n):
            lines.append(f"    k = w{i} * m & 0xFFFFFFFF")
            lines.append(f"    h = {h} * m ^ (k ^ k >> 24) * m")
            h = "h"
    else:
        env.update(words=_WORDS[n], spread=_SPREAD[n], lows=_LOW_HALVES[n], lanes=_LANE_MASKS[n])
        lines.append("    y = fb(spread(*words(data)), 'little') * m & lanes")
        lines.append("    y = (y ^ y >> 24) & lanes")
        lines.append(f"    {', '.join(f'k{i}' for i in range(n))}, = lows((y * m).to_bytes({n << 3}, 'little'))")
        for i in range(n):
            h = f"({h}) * m ^ k{i}"
        lines.append(f"    h = {h}")
        if tail:
            env["unpack"] = struct.Struct(f"<{fmt}").unpack_from
            lines.append(f"    t{', t'.join(str(i) for i in range(len(fmt)))}, = unpack(data, {n << 2})")
        h = "h"
    if tail:
        value = "t0" if tail < 3 else "t0 | t1 << 16"
        lines.append(f"    h = ({h} ^ ({value})) * m & 0xFFFFFFFF")
    else:
        lines.append(f"    h = {h} & 0xFFFFFFFF")
    lines.append("    h = (h ^ h >> 13) * m & 0xFFFFFFFF")
    lines.append("    return h ^ h >> 15")
    exec(compile("\n".join(lines), f"<murmur2_{length}>", "exec"), env)   # noqa: S102 -- our own code, numbers only
    fn: Callable[[bytes], int] = env[f"murmur2_{length}"]
    return fn


def _generated_on_first_call(length: int) -> Callable[[bytes], int]:
    """``_BY_LENGTH[length]`` until its first call, which generates the function and puts it there (generating all
    of them costs about 6 ms, at every import of this module otherwise)."""
    def first_call(data: bytes) -> int:
        fn = _BY_LENGTH[length] = _murmur2_of_length(length)
        return fn(data)
    return first_call


_GENERATED = 64
"""Keys shorter than this many bytes go through their length's ``_murmur2_of_length``."""
_BY_LENGTH = [_generated_on_first_call(length) for length in range(_GENERATED)]


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` as an unsigned 32-bit integer: the Java client's ``Utils.murmur2`` (& 0xffffffff),
    the same value as ``aiokafka.partitioner.murmur2``, computed with fewer Python operations.

    The key is read as little-endian 32-bit words in one ``unpack_from``. ``h`` is not reduced mod 2**32 between
    words: the low 32 bits of a product or a xor depend only on the low 32 bits of the operands, so one mask at the
    end gives the same value. From ``_LANES_FROM`` words on, the per-word mixing (``k *= m; k ^= k >>> 24;
    k *= m``, independent of ``h``) is done for every word at once on one integer holding each word in its own
    64-bit lane: a 32-bit word times ``m`` fits in 64 bits, so no lane carries into the next, and the mask after
    the shift drops the bits the next lane shifted in; only ``h = h * m ^ k`` stays a chain. Keys shorter than
    ``_GENERATED`` bytes (device ids, UUID strings) take straight-line code of their length.
    """
    length = len(data)
    if length < _GENERATED:
        return _BY_LENGTH[length](data)
    h = _SEED ^ length
    n = length >> 2
    m = _M
    if n <= _TABLE_WORDS:
        lanes = _LANE_MASKS[n]
        y = int.from_bytes(_SPREAD[n](*_WORDS[n](data)), "little") * m & lanes
        y = (y ^ y >> 24) & lanes
        for k in _LOW_HALVES[n]((y * m).to_bytes(n << 3, "little")):
            h = h * m ^ k
        h &= 0xFFFFFFFF
    else:
        for k in struct.unpack_from(f"<{n}I", data):
            k = k * m & 0xFFFFFFFF
            h = (h * m ^ (k ^ k >> 24) * m) & 0xFFFFFFFF
    if length & 3:      # the last 1-3 bytes, little-endian, then one more multiply
        h = (h ^ int.from_bytes(data[n << 2:], "little")) * m & 0xFFFFFFFF
    h = (h ^ h >> 13) * m & 0xFFFFFFFF
    return h ^ h >> 15


def partition_memo(partitions: int) -> dict[str, int]:
    """``partition_for``'s memo for ``partitions`` (key -> partition), for a caller that looks up many keys: a key
    found there is ``partition_for``'s answer; a key missing goes through ``partition_for``, which adds it."""
    memo = _MEMOS.get(partitions)
    if memo is None:
        memo = _MEMOS[partitions] = {}
    return memo


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a message keyed by ``key``.

    Same as the Java client and aiokafka: ``(murmur2(key) & 0x7fffffff) % partitions``.
    """
    memo = _MEMOS.get(partitions)
    if memo is None:
        memo = partition_memo(partitions)
    p = memo.get(key)
    if p is None:
        if len(memo) >= MEMO_KEYS:
            memo.clear()
        p = memo[key] = (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
    return p


_MANY_FROM = 8
"""From this many keys of one length on, ``remember_partitions`` hashes them at once (``murmur2_same_length``)."""


def murmur2_same_length(blob: bytes, length: int) -> tuple[int, ...]:
    """``murmur2`` of each of the keys of ``length`` bytes (at least 1) whose concatenation is ``blob``, hashed at
    once: one integer holds the keys' i-th words, each key in its own 64-bit lane, and every step of murmur2 is one
    operation on it for all the keys (a 32-bit value times ``m`` fits in its lane, and each shift is masked to the
    lane's low 32 bits). About a quarter of ``murmur2``'s time a key for 2,000 keys of 14 bytes."""
    n = len(blob) // length
    words, tail = length >> 2, length & 3
    m = _M
    ones = int.from_bytes(b"\x01\0\0\0\0\0\0\0" * n, "little")
    lanes = 0xFFFFFFFF * ones
    # Structs made here, not struct's module functions, whose cache would keep up to 100 of these long formats
    values = struct.Struct("<" + (f"{words}I" + ("", "B", "H", "HB")[tail]) * n).unpack(blob)
    per = words + (0, 1, 1, 2)[tail]    # the values unpacked from one key
    spread = struct.Struct(f"<{n}Q").pack
    fb = int.from_bytes
    h = (_SEED ^ length) * ones
    for j in range(words):
        k = fb(spread(*values[j::per]), "little") * m & lanes
        k = (k ^ k >> 24) & lanes
        h = (h * m & lanes) ^ (k * m & lanes)
    if tail:    # the last 1-3 bytes, little-endian (3 bytes as 2 + 1), then one more multiply
        t = fb(spread(*values[words::per]), "little")
        if tail == 3:
            t |= fb(spread(*values[words + 1::per]), "little") << 16
        h = (h ^ t) * m & lanes
    h = (h ^ h >> 13) & lanes
    h = h * m & lanes
    h = (h ^ h >> 15) & lanes
    return struct.Struct("<" + "I4x" * n).unpack(h.to_bytes(n << 3, "little"))


def remember_partitions(keys: Iterable[str], partitions: int) -> None:
    """Puts the partitions of those ``keys`` that ``partition_for``'s memo for ``partitions`` lacks into it, the
    keys of one length in UTF-8 hashed at once where there are ``_MANY_FROM`` of them (``murmur2_same_length``):
    for a caller that then looks many keys up (a chunk of imported rows, where most devices are new). The memo is
    cleared first when they would take it over ``MEMO_KEYS``."""
    memo = partition_memo(partitions)
    new = {key for key in keys if key not in memo}
    if not new:
        return
    if len(memo) + len(new) > MEMO_KEYS:
        memo.clear()
    if len(set(map(len, new))) == 1:    # as device ids often are
        groups = [list(new)]
    else:
        by_length: dict[int, list[str]] = {}
        for key in new:
            by_length.setdefault(len(key), []).append(key)
        groups = list(by_length.values())
    for same in groups:
        length = len(same[0])
        encoded = [key.encode() for key in same]
        blob = b"".join(encoded)
        if len(blob) != length * len(same):     # some not ASCII: their lengths in bytes differ
            for key in same:
                partition_for(key, partitions)
            continue
        if len(same) < _MANY_FROM or not length:
            hashes: Iterable[int] = map(murmur2, encoded)
        else:
            hashes = murmur2_same_length(blob, length)
        memo.update(zip(same, [(h & 0x7FFFFFFF) % partitions for h in hashes]))


def partition_of(key: bytes, partitions: int) -> int:
    """``partition_for`` of a key already in bytes (the mirror's keys: a project number, then an insert_id)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
