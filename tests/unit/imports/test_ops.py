"""Preview and retry take only the source's keys; a parquet preview reads its footer and first pages, not the file."""

import asyncio
import io
import itertools

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from stream.imports import ops
from stream.imports.ranged import RangedFile, ReadLimit
from stream.imports.reader import Row, read_parquet
from stream.settings import load_settings

CONVERTER = {"converterConfig": {"convertToAmplitudeFunc": {"event_type": "event", "user_id": "user"}},
             "keyValidatorConfig": {"filterPattern": r".*\.json\.gz"}}


def settings():
    # nothing listens on these ports: a request that got past the key check would fail, not pass
    return load_settings(None, kafka={"bootstrap_servers": "127.0.0.1:9"}, s3={"endpoint_url": "http://127.0.0.1:9"},
                         projects=[{"id": 7}],
                         sources=[{"name": "clicks", "project": 7, "bucket": "acme", "prefix": "clicks/",
                                   "converter": CONVERTER}])


def test_a_preview_of_a_key_outside_the_source_is_refused_naming_its_prefix_and_pattern():
    with pytest.raises(ops.Refused) as err:
        asyncio.run(ops.preview(settings(), "clicks", "private/payroll.parquet"))
    assert str(err.value) == (
        "s3://acme/private/payroll.parquet is not a file of source clicks: its files are the keys under 'clicks/', "
        "matching the filter pattern '.*\\\\.json\\\\.gz' in full (the whole key or the key after the prefix), "
        "and this key is not one of them; name a key of the source")


def test_a_retry_of_keys_outside_the_source_is_refused_and_nothing_is_queued():
    keys = ["clicks/a.json.gz", "clicks/b.csv"] + [f"other/{i}.json.gz" for i in range(6)]
    with pytest.raises(ops.Refused) as err:
        asyncio.run(ops.retry(settings(), "clicks", keys))
    message = str(err.value)
    assert message.startswith("s3://acme/clicks/b.csv is not a file of source clicks: its files are the keys under "
                              "'clicks/', matching the filter pattern")
    assert message.count("is not a file of source clicks") == 5
    assert message.endswith("name a key of the source (and 2 more keys like them)")


def test_the_admin_api_answers_400_to_a_key_outside_the_source():
    from stream.admin.service import Admin, AdminError
    admin = Admin(settings())
    with pytest.raises(AdminError) as err:
        asyncio.run(admin.import_preview("clicks", "secrets/x.json.gz", 10))
    assert (err.value.status, str(err.value).split(":")[0]) == (400, "s3")
    with pytest.raises(AdminError) as err:
        asyncio.run(admin.import_retry("clicks", ["clicks/"]))
    assert err.value.status == 400
    assert str(err.value).endswith("this key is a folder, not a file; name a key of the source")


def parquet(rows: int, row_group: int) -> bytes:
    table = pa.table({"i": list(range(rows)), "s": [f"row-{i}-" + "x" * 40 for i in range(rows)],
                      "f": [i * 0.5 for i in range(rows)]})
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=row_group)
    return out.getvalue()


def test_the_first_rows_of_a_parquet_object_cost_its_footer_and_the_first_row_group_alone():
    data = parquet(60_000, 20_000)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    first = meta.row_group(0)
    starts = [min(filter(None, (c.dictionary_page_offset, c.data_page_offset))) for c in map(first.column, range(3))]
    first_end = max(start + first.column(i).total_compressed_size for i, start in enumerate(starts))
    second_start = min(meta.row_group(1).column(i).data_page_offset for i in range(3))
    calls = []

    def fetch(start, end):
        calls.append((start, end))
        return data[start:end]
    f = RangedFile(len(data), fetch, 1 << 30, "s3://b/k.parquet")
    rows = read_parquet(f, batch_rows=10, pre_buffer=False)
    assert list(itertools.islice(rows, 3)) == [Row(n + 1, {"i": n, "s": f"row-{n}-" + "x" * 40, "f": n * 0.5})
                                               for n in range(3)]
    rows.close()
    # the footer (read from the end), then the first row group's column chunks; nothing of the other groups
    assert calls[0][1] == len(data)
    assert all(end <= first_end for start, end in calls[1:]), (calls, first_end)
    assert all(end <= second_start or start >= calls[0][0] for start, end in calls)
    assert f.fetched == sum(end - start for start, end in calls) < len(data) // 2


def test_a_ranged_file_refuses_to_fetch_past_its_limit():
    data = parquet(1000, 1000)
    f = RangedFile(len(data), lambda start, end: data[start:end], 100, "s3://b/k.parquet")
    with pytest.raises(ReadLimit) as err:
        next(read_parquet(f, pre_buffer=False))
    assert str(err.value) == (f"reading on in s3://b/k.parquet would fetch more than 100 bytes of it (0 fetched, "
                              f"{len(data)} more asked for at byte 0)")
    assert f.fetched == 0


def test_the_cli_refuses_a_retry_of_a_key_outside_the_source(tmp_path):
    from click.testing import CliRunner

    from stream.cli import main
    config = tmp_path / "stream.yaml"
    config.write_text(yaml.safe_dump(settings().model_dump(mode="json", include={"kafka", "s3", "projects",
                                                                                   "sources"})))
    result = CliRunner().invoke(main, ["import", "retry", "clicks", "clicks/b.csv", "-c", str(config)])
    assert (result.exit_code, result.output) == (1, (
        "Error: s3://acme/clicks/b.csv is not a file of source clicks: its files are the keys under 'clicks/', "
        "matching the filter pattern '.*\\\\.json\\\\.gz' in full (the whole key or the key after the prefix), and "
        "this key is not one of them; name a key of the source\n"))
