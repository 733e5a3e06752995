"""One file's bytes to numbered rows: JSON lines, CSV and parquet, each compression, bad rows, bad files, memory."""

import asyncio
import datetime
import decimal
import gzip
import io
import json
import pickle
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from isal import isal_zlib

from stream.imports import reader
from stream.imports.converter import CsvOptions
from stream.imports.converter.isotime import int96_to_ms
from stream.imports.reader import (
    BLOCK,
    FileError,
    FileErrorReason,
    Row,
    RowError,
    RowErrorReason,
    RowReader,
    aiter_rows,
    aiter_runs,
    iter_rows,
    read_parquet,
)

JSON_LINES = b'{"user_id":"u1","n":1}\n{"user_id":"u2","n":2}\n{"user_id":"u3","n":3}\n'
JSON_ROWS = [Row(1, {"user_id": "u1", "n": 1}), Row(2, {"user_id": "u2", "n": 2}), Row(3, {"user_id": "u3", "n": 3})]
CSV_FILE = b'user_id,plan,note\nu1,pro,"a, b"\nu2,free,"say ""hi"""\n'
CSV_ROWS = [Row(1, {"user_id": "u1", "plan": "pro", "note": "a, b"}),
            Row(2, {"user_id": "u2", "plan": "free", "note": 'say "hi"'})]


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def read(data: bytes, file_type: str = "json", compression: str = "none", csv_options: CsvOptions | None = None,
         chunk: int = 1 << 20, **kwargs) -> list:
    return list(iter_rows(split(data, chunk), file_type, compression, csv_options, **kwargs))


def read_until_error(data: bytes, file_type: str = "json", compression: str = "gzip") -> tuple[list, FileError]:
    out = []
    with pytest.raises(FileError) as info:
        for item in iter_rows(split(data, 64), file_type, compression):
            out.append(item)  # noqa: PERF402 - list() would drop the rows read before the error
    return out, info.value


def errors(items: list) -> list[tuple[int, RowErrorReason]]:
    return [(item.number, item.reason) for item in items if isinstance(item, RowError)]


# -- JSON lines ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression, compress", [
    ("none", False), ("auto", False), ("gzip", True), ("auto", True),
])
@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_json_lines_come_out_whatever_the_compression_and_the_chunking(compression, compress, chunk):
    data = gzip.compress(JSON_LINES) if compress else JSON_LINES
    assert read(data, "json", compression, chunk=chunk) == JSON_ROWS


def test_the_last_line_needs_no_line_end():
    assert read(JSON_LINES.rstrip(b"\n")) == JSON_ROWS


def test_a_byte_order_mark_and_crlf_line_ends_are_read():
    data = b"\xef\xbb\xbf" + JSON_LINES.replace(b"\n", b"\r\n")
    assert read(data, chunk=2) == JSON_ROWS
    assert read(gzip.compress(data), compression="auto") == JSON_ROWS


def test_blank_lines_are_skipped_but_counted_so_row_numbers_are_line_numbers():
    data = b'\n{"a":1}\r\n\r\n   \n{"a":2}\n\n'
    assert read(data) == [Row(2, {"a": 1}), Row(5, {"a": 2})]


def test_bad_lines_are_row_errors_and_the_lines_around_them_are_read():
    data = b'{"a":1}\n{"a":\n[1,2]\n"text"\n{"a":"\xff"}\nnull\n{"a":2}\n'
    items = read(data)
    assert [item for item in items if isinstance(item, Row)] == [Row(1, {"a": 1}), Row(7, {"a": 2})]
    assert errors(items) == [(2, RowErrorReason.MALFORMED_JSON), (3, RowErrorReason.NOT_AN_OBJECT),
                             (4, RowErrorReason.NOT_AN_OBJECT), (5, RowErrorReason.INVALID_UTF8),
                             (6, RowErrorReason.NOT_AN_OBJECT)]
    messages = [item.message for item in items if isinstance(item, RowError)]
    assert messages[0].startswith("line 2 is not valid JSON (")
    assert messages[1] == "line 3 is an array, not a JSON object; write one JSON object per line"
    assert messages[3] == "line 5 is not valid UTF-8 (byte 0xff at byte 7); save the file as UTF-8"


def test_a_line_that_is_not_utf8_is_invalid_utf8_even_where_it_is_not_json_either():
    utf16 = '{"a":1}'.encode("utf-16")   # with its byte order mark ff fe
    data = b'\xe9t\xe9\n{"a":1}\xff\n' + utf16 + b'\n{"\xe9":1}\n{"a":2}\n'
    items = read(data, compression="none")
    assert items[-1] == Row(5, {"a": 2})
    assert [(e.number, e.reason, e.message) for e in items if isinstance(e, RowError)] == [
        (1, RowErrorReason.INVALID_UTF8, "line 1 is not valid UTF-8 (byte 0xe9 at byte 1); save the file as UTF-8"),
        (2, RowErrorReason.INVALID_UTF8, "line 2 is not valid UTF-8 (byte 0xff at byte 8); save the file as UTF-8"),
        (3, RowErrorReason.INVALID_UTF8, "line 3 is not valid UTF-8 (byte 0xff at byte 1); save the file as UTF-8"),
        (4, RowErrorReason.INVALID_UTF8, "line 4 is not valid UTF-8 (byte 0xe9 at byte 3); save the file as UTF-8")]


def test_json_values_keep_their_types_and_big_integers_stay_exact():
    data = b'{"i":123456789012345678901234567890,"f":1.5,"b":true,"n":null,"o":{"l":[1,"x"]},"s":"\\u00e9"}\n'
    assert read(data) == [Row(1, {"i": 123456789012345678901234567890, "f": 1.5, "b": True, "n": None,
                                  "o": {"l": [1, "x"]}, "s": "é"})]


@pytest.mark.parametrize("text", [b'{"a":NaN}', b'{"a":Infinity}', b'{"a":1e400}', b'{"a":1,}'])
def test_what_json_does_not_allow_is_malformed(text):
    assert errors(read(text)) == [(1, RowErrorReason.MALFORMED_JSON)]


def test_a_line_over_the_limit_is_too_large_and_the_next_line_is_read():
    long_line = b'{"a":"' + b"x" * 1000 + b'"}'
    data = b'{"a":1}\n' + long_line + b'\n{"a":2}\n' + long_line
    for chunk in (3, 100, 1 << 20):
        items = read(data, chunk=chunk, max_row_bytes=500)
        assert [i for i in items if isinstance(i, Row)] == [Row(1, {"a": 1}), Row(3, {"a": 2})]
        assert errors(items) == [(2, RowErrorReason.TOO_LARGE), (4, RowErrorReason.TOO_LARGE)]
    assert read(long_line, max_row_bytes=len(long_line)) == [Row(1, {"a": "x" * 1000})]


def test_a_line_over_the_limit_is_never_held_whole():
    limit = 1 << 20
    data = b'{"a":"' + b"x" * (40 << 20) + b'"}\n{"a":1}\n'
    tracemalloc.start()
    try:
        items = list(iter_rows((data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)), "json", "none",
                               max_row_bytes=limit))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert errors(items) == [(1, RowErrorReason.TOO_LARGE)] and items[1] == Row(2, {"a": 1})
    assert peak < 5 * limit  # the 40 MiB line came in 1 MiB chunks and was dropped as it came (measured: 3 MiB)


def test_a_long_line_within_the_limit_is_read_across_many_blocks():
    value = "y" * (3 * BLOCK)
    data = gzip.compress(json.dumps({"v": value}).encode() + b"\n")
    assert read(data, compression="gzip", chunk=1000) == [Row(1, {"v": value})]


def test_an_empty_file_has_no_rows():
    assert read(b"", compression="none") == []
    assert read(b"", compression="auto") == []
    assert read(b"\n", compression="auto") == []


def test_rows_come_from_an_async_source():
    async def chunks():
        for chunk in split(gzip.compress(JSON_LINES), 5):
            await asyncio.sleep(0)
            yield chunk

    async def collect():
        return [item async for item in aiter_rows(chunks(), "json", "gzip")]

    assert asyncio.run(collect()) == JSON_ROWS


def test_the_reader_can_be_fed_by_hand():
    reader = RowReader("json", "none")
    assert list(reader.feed(b'{"a":1}\n{"a"')) == [Row(1, {"a": 1})]
    assert list(reader.feed(b":2}")) == []
    assert list(reader.finish()) == [Row(2, {"a": 2})]


def _items_then_error(feed, finish, chunks):
    """What a reader gives for ``chunks``, one item a step (``feed``/``finish`` yield items) or a run a step (they
    yield lists, flattened here), and the FileError it ends with (None when it reads to the end)."""
    out = []
    try:
        for chunk in chunks:
            out.extend(feed(chunk))
        out.extend(finish())
    except FileError as exc:
        return out, (exc.reason, exc.detail)
    return out, None


def _flat(gen_of_runs):
    def flattened(*args):
        out = []
        for run in gen_of_runs(*args):
            assert type(run) is list and run   # a run is never empty
            out.extend(run)
        return out
    return flattened


@pytest.mark.parametrize("seed", range(16))
def test_runs_hold_the_rows_the_reader_yields_one_at_a_time(seed):
    """``feed_runs``/``finish_runs`` and ``aiter_runs`` give the rows and row errors ``feed``/``finish`` and
    ``aiter_rows`` give, in the same order, and end with the same FileError after the same rows: generated JSON lines
    (blank, whitespace, malformed, non-object, non-UTF-8, too large and CRLF lines, a BOM), plain, gzip, two gzip
    members, truncated or corrupt gzip; and CSV."""
    from tests.unit.imports.test_pool import generated, gz_members, pieces
    import random
    rnd = random.Random(seed)
    data = generated(seed, 600)
    file_type, compression = "json", "auto"
    if seed % 4 == 1:
        data = gz_members(data)
    elif seed % 4 == 2:
        data = gzip.compress(data, 1)[:-(30 + seed)]                      # truncated
    elif seed % 4 == 3:
        packed = bytearray(gzip.compress(generated(seed, 5000), 1))       # more than a block before the damage
        packed[len(packed) * 9 // 10] ^= 0xFF                            # corrupt
        data = bytes(packed)
    if seed in (4, 8):
        file_type, compression = "csv", "none"
        data = b"a,b\n" + b"".join(b'%d,"x\ny%d"\n' % (n, n) if n % 7 else b"%d\n" % n for n in range(1, 900))
    chunks = pieces(data, rnd)
    one = RowReader(file_type, compression, max_row_bytes=500)
    expected = _items_then_error(one.feed, one.finish, chunks)
    runs = RowReader(file_type, compression, max_row_bytes=500)
    got = _items_then_error(_flat(runs.feed_runs), _flat(runs.finish_runs), chunks)
    assert got == expected and len(expected[0]) > 250

    async def source():
        for chunk in chunks:
            yield chunk

    async def collect(read, flat):
        out = []
        try:
            async for got in read(source(), file_type, compression, max_row_bytes=500):
                out.extend(got if flat else [got])
        except FileError as exc:
            return out, (exc.reason, exc.detail)
        return out, None
    assert asyncio.run(collect(aiter_runs, True)) == asyncio.run(collect(aiter_rows, False)) == expected


@pytest.mark.parametrize("args, match", [
    (("parquet",), "read_parquet"),
    (("xml",), "file type 'xml'"),
    (("json", "bz2"), "compression 'bz2'"),
])
def test_unknown_types_and_parquet_are_refused_by_the_stream_reader(args, match):
    with pytest.raises(ValueError, match=match):
        RowReader(*args)


# -- gzip -----------------------------------------------------------------------------------------------------------


def test_a_truncated_gzip_raises_after_the_rows_before_the_cut():
    data = "".join(json.dumps({"n": n}) + "\n" for n in range(1, 2001)).encode()
    cut = gzip.compress(data)[: -200]
    rows, error = read_until_error(cut)
    assert error.reason is FileErrorReason.TRUNCATED_GZIP
    assert "cut short" in str(error)
    assert len(rows) > 1000
    assert rows == [Row(n, {"n": n}) for n in range(1, len(rows) + 1)]  # the line cut in two does not come out
    assert pickle.loads(pickle.dumps(error)).reason is FileErrorReason.TRUNCATED_GZIP


def test_a_gzip_cut_in_its_trailer_is_truncated_too():
    rows, error = read_until_error(gzip.compress(JSON_LINES)[:-4])
    assert (rows, error.reason) == (JSON_ROWS, FileErrorReason.TRUNCATED_GZIP)


@pytest.mark.parametrize("data", [JSON_LINES, b"", b"\x1f"])
def test_gzip_declared_for_data_that_is_not_gzip_is_not_gzip(data):
    rows, error = read_until_error(data)
    assert (rows, error.reason) == ([], FileErrorReason.NOT_GZIP)
    assert '"compressionType": "none"' in str(error)


def test_concatenated_gzip_members_are_read_one_after_another():
    data = gzip.compress(JSON_LINES) + b"\0\0" + gzip.compress(b'{"a":1}\n') + b"\0" * 10
    assert read(data, compression="gzip", chunk=3) == [*JSON_ROWS, Row(4, {"a": 1})]


def test_other_data_after_the_gzip_stream_is_corrupt():
    rows, error = read_until_error(gzip.compress(JSON_LINES) + b"PK\x03\x04")
    assert (rows, error.reason) == (JSON_ROWS, FileErrorReason.CORRUPT_GZIP)


def test_corrupt_gzip_data_is_corrupt_gzip():
    data = bytearray(gzip.compress(JSON_LINES * 50))
    data[-6] ^= 0xFF  # the CRC no longer matches
    _, error = read_until_error(bytes(data))
    assert error.reason is FileErrorReason.CORRUPT_GZIP


# -- CSV ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 5, 1 << 20])
def test_csv_rows_are_strings_named_by_the_header_and_the_header_is_not_a_row(chunk):
    assert read(CSV_FILE, "csv", chunk=chunk) == CSV_ROWS
    assert read(gzip.compress(CSV_FILE), "csv", "auto", chunk=chunk) == CSV_ROWS


def test_a_byte_order_mark_and_crlf_line_ends_are_read_in_csv():
    data = b"\xef\xbb\xbf" + CSV_FILE.replace(b"\n", b"\r\n")
    assert read(data, "csv", chunk=1) == CSV_ROWS


def test_quoted_fields_may_hold_line_breaks_and_keep_them():
    data = b'id,text\r\n1,"first\r\nsecond"\r\n2,"a\nb\n\nc"\n3,plain\n'
    expected = [Row(1, {"id": "1", "text": "first\r\nsecond"}), Row(2, {"id": "2", "text": "a\nb\n\nc"}),
                Row(3, {"id": "3", "text": "plain"})]
    for chunk in (1, 2, 3, 7, 1 << 20):
        assert read(data, "csv", chunk=chunk) == expected


def test_a_row_with_the_wrong_number_of_columns_is_an_error_and_the_others_keep_their_numbers():
    data = b"a,b,c\n1,2,3\n4,5\n\n6,7,8\n9,10,11,12\n13,14,15\n"
    items = read(data, "csv")
    assert [i for i in items if isinstance(i, Row)] == [
        Row(1, {"a": "1", "b": "2", "c": "3"}), Row(3, {"a": "6", "b": "7", "c": "8"}),
        Row(5, {"a": "13", "b": "14", "c": "15"})]
    assert errors(items) == [(2, RowErrorReason.BAD_CSV_ROW), (4, RowErrorReason.BAD_CSV_ROW)]
    assert items[1].message == ("row 2 (line 3) has 2 fields where the header has 3; "
                                "check the delimiter ',' and the quoting")
    assert items[3].message.startswith("row 4 (line 6) has 4 fields")  # the blank line 4 is not a row


def test_without_a_header_columns_are_named_by_index_and_the_first_row_sets_the_width():
    items = read(b"u1,pro\nu2,free\nu3\n", "csv", csv_options=CsvOptions(header=False))
    assert items[:2] == [Row(1, {"0": "u1", "1": "pro"}), Row(2, {"0": "u2", "1": "free"})]
    assert errors(items) == [(3, RowErrorReason.BAD_CSV_ROW)]
    assert "the first row has 2" in items[2].message


def test_the_delimiter_quote_and_escape_characters_are_taken_from_the_options():
    options = CsvOptions(delimiter=";", quote_char="'", escape_char="\\")
    data = b"id;text\n1;'a;b'\n2;it\\'s\n3;'x''y'\n"
    assert read(data, "csv", csv_options=options) == [
        Row(1, {"id": "1", "text": "a;b"}), Row(2, {"id": "2", "text": "it's"}), Row(3, {"id": "3", "text": "x'y"})]


def test_a_csv_row_with_invalid_utf8_is_an_error_naming_its_line():
    data = b'id,text\n1,ok\n2,"multi\nline \xff"\n3,ok\n'
    items = read(data, "csv", chunk=4)
    assert [i.number for i in items if isinstance(i, Row)] == [1, 3]
    assert errors(items) == [(2, RowErrorReason.INVALID_UTF8)]
    assert items[1].message == ("row 2 (line 3) is not valid UTF-8 (byte 0xff at byte 6 of line 4); "
                                "save the file as UTF-8")


def test_a_field_larger_than_the_csv_modules_default_limit_is_read():
    big = "z" * 300_000
    assert read(f"a\n{big}\n".encode(), "csv", chunk=1000) == [Row(1, {"a": big})]


def test_a_quote_left_open_runs_to_the_limit_then_reading_resumes_at_the_next_line():
    data = b"a,b\n1,2\n3,\"open\n" + b"x,y\n" * 100 + b"4,5\n"
    items = read(data, "csv", chunk=16, max_row_bytes=200)
    assert items[0] == Row(1, {"a": "1", "b": "2"})
    assert items[1].reason is RowErrorReason.TOO_LARGE and items[1].message.startswith("row 2 (line 3) is longer")
    assert items[-1] == Row(len(items), {"a": "4", "b": "5"})  # the lines after the dropped ones are rows again


def test_a_long_multiline_record_is_parsed_a_few_times_not_once_per_block(monkeypatch):
    text = "line\n" * 500_000  # 2.5 MB inside one quoted field, arriving in 10 blocks
    data = f'a,b\n1,"{text}"\n2,x\n'.encode()
    pulled = 0
    original = reader._CsvRows.__next__

    def counting(self):
        nonlocal pulled
        pulled += 1
        return original(self)

    monkeypatch.setattr(reader._CsvRows, "__next__", counting)
    assert read(gzip.compress(data), "csv", "gzip", chunk=4096) == [
        Row(1, {"a": "1", "b": text}), Row(2, {"a": "2", "b": "x"})]
    # parsing again only once the held lines have doubled pulls each line under 3 times (measured: 2.6);
    # parsing again at every block would pull each about 5.7 times
    assert pulled < 3 * text.count("\n")


@pytest.mark.parametrize("data, match", [
    (b"a,b,a\n1,2,3\n", r"names column 'a' twice \(columns 1 and 3\)"),
    (b"a,\xff\n1,2\n", r"the header \(line 1\) is not valid UTF-8"),
])
def test_a_bad_header_is_a_file_error(data, match):
    with pytest.raises(FileError, match=match) as info:
        read(data, "csv")
    assert info.value.reason is FileErrorReason.BAD_CSV_HEADER


def test_a_csv_file_with_only_a_header_has_no_rows():
    assert read(b"a,b\n", "csv") == []
    assert read(b"", "csv") == []


# -- parquet --------------------------------------------------------------------------------------------------------

TS = datetime.datetime(2024, 3, 9, 7, 15, 2, 123456, tzinfo=datetime.UTC)


def parquet(table: pa.Table, **kwargs) -> io.BytesIO:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **kwargs)
    buffer.seek(0)
    return buffer


def test_parquet_rows_come_from_every_row_group_with_json_friendly_values(tmp_path):
    table = pa.table({
        "i": pa.array([1, None, 3], pa.int64()),
        "f": pa.array([1.5, None, -0.25], pa.float64()),
        "s": pa.array(["a", "b", None]),
        "b": pa.array([True, False, None]),
        "ts": pa.array([TS, None, TS], pa.timestamp("us", tz="UTC")),
        "n": pa.array([None, None, None], pa.null()),
    })
    path = tmp_path / "two-groups.parquet"
    pq.write_table(table, path, row_group_size=2)
    assert pq.ParquetFile(path).num_row_groups == 2
    assert list(read_parquet(path)) == [
        Row(1, {"i": 1, "f": 1.5, "s": "a", "b": True, "ts": 1709968502123, "n": None}),
        Row(2, {"i": None, "f": None, "s": "b", "b": False, "ts": None, "n": None}),
        Row(3, {"i": 3, "f": -0.25, "s": None, "b": None, "ts": 1709968502123, "n": None}),
    ]


def test_parquet_values_of_other_types_become_json_values():
    table = pa.table({
        "ts_ns_naive": pa.array([datetime.datetime(1969, 12, 31, 23, 59, 59, 999999)], pa.timestamp("ns")),
        "ts_s": pa.array([TS.replace(microsecond=0)], pa.timestamp("s", tz="Europe/Paris")),
        "date": pa.array([datetime.date(2024, 3, 9)]),
        "time": pa.array([datetime.time(7, 15, 2, 123000)]),
        "price": pa.array([decimal.Decimal("12.60")], pa.decimal128(5, 2)),
        "exact": pa.array([decimal.Decimal("12345678901234567.89")], pa.decimal128(19, 2)),
        "nan": pa.array([float("nan")]),
        "f32": pa.array([0.5], pa.float32()),
        "text_bytes": pa.array([b"hello"]),
        "raw_bytes": pa.array([b"\xff\x00"]),
        "dict": pa.array(["x"]).dictionary_encode(),
        "list": pa.array([[TS, None]], pa.list_(pa.timestamp("ms", tz="UTC"))),
        "struct": pa.array([{"d": datetime.date(2024, 1, 2), "k": 1}]),
        "map": pa.array([[(1, "one"), (2, "two")]], pa.map_(pa.int32(), pa.string())),
    })
    (row,) = read_parquet(parquet(table))
    assert row.value == {
        "ts_ns_naive": -1, "ts_s": 1709968502000, "date": "2024-03-09", "time": "07:15:02.123000",
        "price": 12.6, "exact": "12345678901234567.89", "nan": None, "f32": 0.5, "text_bytes": "hello",
        "raw_bytes": "/wA=", "dict": "x", "list": [1709968502123, None], "struct": {"d": "2024-01-02", "k": 1},
        "map": {"1": "one", "2": "two"},
    }


def test_int96_timestamps_come_as_base64_for_int96_time_to_ms():
    table = pa.table({"legacy": pa.array([TS, None], pa.timestamp("ns", tz="UTC"))})
    rows = list(read_parquet(parquet(table, use_deprecated_int96_timestamps=True)))
    assert rows[1] == Row(2, {"legacy": None})
    assert int96_to_ms(rows[0].value["legacy"]) == 1709968502123


@pytest.mark.parametrize("data", [JSON_LINES, b"", b"PAR1" + b"\0" * 100 + b"PAR1"])
def test_a_file_that_is_not_parquet_is_not_parquet(data, tmp_path):
    path = tmp_path / "not.parquet"
    path.write_bytes(data)
    for source in (path, io.BytesIO(data)):
        with pytest.raises(FileError) as info:
            list(read_parquet(source))
        assert info.value.reason is FileErrorReason.NOT_PARQUET


def test_parquet_is_read_one_row_group_at_a_time():
    rows_per_group, groups = 2000, 8
    numbers = range(rows_per_group * groups)
    noise = [f"{n * 2654435761 % 2**32:08x}" * 16 for n in numbers]  # 128 bytes a row that do not compress away
    table = pa.table({"n": pa.array(numbers), "noise": pa.array(noise)})
    buffer = parquet(table, row_group_size=rows_per_group, compression="none")
    size = len(buffer.getvalue())

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, n=-1):
            data = super().read(n)
            Counting.read_bytes += len(data)
            return data

        def readinto(self, b):
            n = super().readinto(b)
            Counting.read_bytes += n
            return n

    rows = read_parquet(Counting(buffer.getvalue()), batch_rows=100)
    assert next(rows) == Row(1, {"n": 0, "noise": f"{0:08x}" * 16})
    assert Counting.read_bytes < size / 3  # the first row came before most of the file was read
    assert sum(1 for _ in rows) == rows_per_group * groups - 1


# -- memory ---------------------------------------------------------------------------------------------------------


def test_memory_stays_bounded_for_a_large_gzip_json_file():
    # 200 MiB of JSON lines (2 KiB each) compressed; the compressed copy is made before tracing starts
    lines = []
    for n in range(2048):
        row = {"event_type": "purchase", "user_id": f"u-{n}", "time": 1709968500000 + n, "insert_id": f"r-{n:08d}",
               "event_properties": {"sku": f"SKU-{n % 31}", "price": n % 100 / 4}}
        row["event_properties"]["note"] = "".join(chr(97 + (n * 7 + i) % 26) for i in range(1900))
        lines.append(json.dumps(row).encode())
    block = b"\n".join(lines) + b"\n"
    z = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    repeats = -(-(200 << 20) // len(block))
    data = b"".join([*(z.compress(block) for _ in range(repeats)), z.flush()])

    def chunks():
        for start in range(0, len(data), 1 << 20):
            yield data[start:start + (1 << 20)]

    tracemalloc.start()
    try:
        count = last = 0
        for item in iter_rows(chunks(), "json", "auto"):
            assert isinstance(item, Row)
            count, last = count + 1, item.number
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == last == repeats * len(lines)
    assert repeats * len(block) >= 200 << 20
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB while reading {repeats * len(block) / 2**20:.0f} MiB"


@pytest.mark.parametrize("file_type,line", [("json", b"{}"), ("json", b"x"), ("json", b"[]"), ("csv", b"1")])
def test_a_run_holds_at_most_run_rows_rows_however_small_the_rows(file_type, line):
    """A block of 256 KiB of tiny lines is about 87,000 rows: its run is cut at RUN_ROWS rows, so what the importer
    holds while it converts a run stays bounded (rows, row errors and CSV records alike), with the rows numbered on."""
    from stream.imports.reader import RUN_ROWS
    data = (b"a\n" if file_type == "csv" else b"") + b"\n".join([line] * 100_000) + b"\n"
    reader = RowReader(file_type, "gzip", max_row_bytes=500)
    runs = list(reader.feed_runs(gzip.compress(data, 1))) + list(reader.finish_runs())
    assert max(len(r) for r in runs) == RUN_ROWS == 2_000
    assert sum(len(r) for r in runs) == 100_000
    assert [item.number for r in runs for item in r] == list(range(1, 100_001))     # a CSV's header is not a row


def test_rows_read_are_not_tracked_by_the_garbage_collector_and_compare_by_their_fields():
    import gc
    r = reader.RowReader("json", "none")
    rows = [*r.feed(b'{"a": 1, "b": {"c": [1, 2]}}\n{"a": 2}\n'), *r.finish()]
    assert rows == [Row(1, {"a": 1, "b": {"c": [1, 2]}}), Row(2, {"a": 2})]
    assert [gc.is_tracked(row) for row in rows] == [False, False]
    assert pickle.loads(pickle.dumps(rows)) == rows and rows[0] != Row(1, {"a": 2})
