"""The Avro record contracts in ``schemas/``, parsed once, with schemaless codecs."""

from __future__ import annotations

import io
import json
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import fastavro

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
"""``stream/schemas``: in the repository a link to the top-level ``schemas/``; in a wheel, its copy."""


@cache
def schema(name: str) -> Any:
    """The parsed schema ``schemas/<name>.avsc``."""
    return fastavro.parse_schema(json.loads((SCHEMA_DIR / f"{name}.avsc").read_text()))


def encode(name: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema(name), record)
    return buf.getvalue()


@cache
def head_schema(name: str) -> Any:
    """``schemas/<name>.avsc`` without its last field, which must be ``bytes`` (see ``encode_with_tail``)."""
    full = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    if full["fields"][-1]["type"] != "bytes":
        raise ValueError(f"the last field of {name} is not bytes")
    full["fields"] = full["fields"][:-1]
    full["name"] += "Head"
    return fastavro.parse_schema(full)


def encode_with_tail(name: str, head: dict[str, Any], tail: bytes) -> bytes:
    """Avro binary of a record whose last field is the bytes ``tail``, without copying ``tail`` through fastavro.

    A record is its fields encoded one after the other, and ``bytes`` is a zig-zag
    varint length followed by the bytes, so this equals ``encode(name, {**head, last: tail})``.
    """
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, head_schema(name), head)
    return b"".join((buf.getvalue(), _long(len(tail)), tail))


def _long(value: int) -> bytes:
    """Avro's ``long`` (and ``int``: the same zig-zag varint for a value in its range). A value outside the long's
    range (signed 64 bits) raises OverflowError, as fastavro's writer does, rather than being written wrapped."""
    n = (value << 1) ^ (value >> 63)  # zig-zag: [-2**63, 2**63) onto [0, 2**64), anything else past it
    if n < 0x80:
        return _ONE_BYTE[n]
    if n >> 64:
        raise OverflowError(f"{value} is outside an Avro long's range (-2**63 to 2**63 - 1) and cannot be written; "
                            "the value must fit a signed 64-bit integer")
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_ONE_BYTE = [bytes((i,)) for i in range(0x80)]


class NotALong(ValueError):
    """Bytes that are no Avro ``long``: a varint of more than 10 bytes, or one past the signed 64 bits."""


def long_at(data: bytes, i: int) -> tuple[int, int]:
    """The Avro ``long`` (or ``int``) at ``data[i]`` and the index after it, read by hand for readers that take a
    record's fields one after the other; ``NotALong`` for a varint of more than 10 bytes or past the long's range,
    IndexError past the end of ``data``."""
    b = data[i]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), i + 1
    n, shift = b & 0x7F, 7
    while True:
        i += 1
        b = data[i]
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise NotALong("a varint of more than 10 bytes")
    if n >> 64:
        raise NotALong("a varint past a long's 64 bits")
    return (n >> 1) ^ -(n & 1), i + 1


def long_of(n: int) -> bytes:
    """Avro binary of the ``long`` (or ``int``) ``n``."""
    return _long(n)


def bytes_of(b: bytes) -> bytes:
    """Avro binary of ``bytes`` without its content: the length that comes before it."""
    return _long(len(b))


@lru_cache(maxsize=1024)
def string_of(s: str) -> bytes:
    """Avro binary of the ``string`` ``s`` (its length, then its UTF-8), kept: the few topic names recur."""
    b = s.encode()
    return _long(len(b)) + b


def decode(name: str, data: bytes) -> dict[str, Any]:
    return fastavro.schemaless_reader(io.BytesIO(data), schema(name), None)
