"""Bodies are read within their limit, raw and decoded; headers are checked before the body."""

import gzip
import os

import pytest

from stream.api.body import BodyError, BodyProblem, BodyReader, check_headers


def read(chunks, limit, gz=False):
    r = BodyReader(limit, gz)
    for c in chunks:
        r.feed(c)
    return r.finish()


def test_reads_a_body_in_chunks():
    assert read([b'{"a":', b"1}"], 100) == b'{"a":1}'


def test_a_body_at_the_limit_is_read_one_byte_more_is_refused():
    assert read([b"x" * 10], 10) == b"x" * 10
    with pytest.raises(BodyError) as e:
        read([b"x" * 6, b"x" * 5], 10)
    assert e.value.problem is BodyProblem.TOO_LARGE
    assert e.value.detail == ("the request body is larger than the limit of 10 bytes; split the events into "
                              "smaller requests")


def test_the_raw_limit_stops_reading_at_the_chunk_that_passes_it():
    r = BodyReader(100, False)
    r.feed(b"x" * 100)
    with pytest.raises(BodyError):
        r.feed(b"x")
    assert r.received == 101


def test_gzip_bodies_are_decoded():
    body = b'{"events":[' + b"1," * 1000 + b"1]}"
    assert read([gzip.compress(body)], 10_000, gz=True) == body


def test_gzip_in_small_chunks_and_concatenated_members():
    data = gzip.compress(b"hello ") + gzip.compress(b"world")
    assert read([data[i:i + 3] for i in range(0, len(data), 3)], 100, gz=True) == b"hello world"


def test_thousands_of_gzip_members_are_decoded_without_recursing():
    members = gzip.compress(b"") * 3000 + gzip.compress(b'{"a":1}') + gzip.compress(b"") * 3000
    assert len(members) < 130_000
    assert read([members], 200_000, gz=True) == b'{"a":1}'
    assert read([members[i:i + 7] for i in range(0, len(members), 7)], 200_000, gz=True) == b'{"a":1}'
    assert read([gzip.compress(b"") * 3000], 200_000, gz=True) == b""


def test_a_member_that_starts_a_new_chunk_is_decoded():
    assert read([gzip.compress(b"hello "), gzip.compress(b"world")], 100, gz=True) == b"hello world"


def test_garbage_after_a_gzip_member_is_refused():
    with pytest.raises(BodyError) as e:
        read([gzip.compress(b"{}") + b"\0\0"], 100, gz=True)
    assert (e.value.problem, e.value.detail) == (BodyProblem.BAD_GZIP, "the gzip body is corrupt (Error -3 while "
                                                 "decompressing data: incorrect header check); Content-Encoding: "
                                                 "gzip needs a gzip stream")


def test_a_gzip_bomb_is_cut_off_at_the_limit_without_inflating_it():
    bomb = gzip.compress(b"\0" * 200_000_000, compresslevel=9)
    assert len(bomb) < 250_000
    r = BodyReader(1_000_000, True)
    with pytest.raises(BodyError) as e:
        r.feed(bomb)
    assert e.value.problem is BodyProblem.TOO_LARGE
    assert e.value.detail == ("the request body decompresses to more than the limit of 1000000 bytes; split the "
                              "events into smaller requests")
    assert r._size <= 1_000_001


def test_corrupt_and_truncated_gzip_are_refused():
    with pytest.raises(BodyError) as e:
        read([b"not gzip at all"], 100, gz=True)
    assert e.value.problem is BodyProblem.BAD_GZIP
    with pytest.raises(BodyError) as e:
        read([gzip.compress(os.urandom(100))[:50]], 1000, gz=True)
    assert e.value.problem is BodyProblem.BAD_GZIP
    assert "ends before" in e.value.detail


def test_an_empty_gzip_body_is_empty():
    assert read([], 100, gz=True) == b""


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=UTF-8", "Application/JSON",
                                   "text/plain;charset=UTF-8"])
def test_json_content_types_are_accepted(ctype):
    assert check_headers(ctype, None, None, 10) is False


@pytest.mark.parametrize("ctype", [None, "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_other_content_types_are_refused(ctype):
    with pytest.raises(BodyError) as e:
        check_headers(ctype, None, None, 10)
    assert e.value.problem is BodyProblem.BAD_CONTENT_TYPE
    assert "Content-Type: application/json" in e.value.detail


def test_gzip_is_the_only_encoding():
    assert check_headers("application/json", "gzip", None, 10) is True
    with pytest.raises(BodyError) as e:
        check_headers("application/json", "br", None, 10)
    assert e.value.problem is BodyProblem.BAD_ENCODING


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    with pytest.raises(BodyError) as e:
        check_headers("application/json", None, "11", 10)
    assert e.value.detail == "the request body is 11 bytes; the limit is 10 bytes; split the events into smaller " \
        "requests"
    # compressed bytes count against the limit as well
    with pytest.raises(BodyError):
        check_headers("application/json", "gzip", "11", 10)
    assert check_headers("application/json", "gzip", "10", 10) is True
