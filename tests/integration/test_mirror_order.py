"""Mirror mutations of two files applied out of the order they were written, against the real broker and S3: the
hour ends as the documented order gives (the file written later wins, a DELETE is not undone by an older file's
UPDATE read after it), the same rows as had the files arrived in order."""

import asyncio
import gzip
from collections import Counter

import orjson
import pytest

from stream.events.normalize import Rules
from stream.export.mirror import by_insert_id, rewrite, updated
from stream.imports import mutations as records
from stream.kafka import ensure_topics
from tests.integration.conftest import wait_until
from tests.integration.test_crash import produce
from tests.integration.test_mirror import ledger_of, mirror_deployment, objects, send

pytestmark = pytest.mark.integration

H7 = 1_709_967_600_000                   # 2024-03-09T07
HOUR = "2024-03-09_7"
EVENTS = [({"event_type": "Page Viewed", "device_id": "device-0001", "user_id": "user-0001",
            "insert_id": f"ord-{i}"}, H7 + i * 60_000) for i in range(1, 6)]
"""Five events of one hour: ord-1 to ord-3 are mutated, ord-4 and ord-5 are not."""
FILE_A = "s3://src-bucket/mirror/a.json"
FILE_B = "s3://src-bucket/mirror/b.json"
A_MS, B_MS = 1_710_000_000_000, 1_710_000_060_000       # file B written a minute after file A
NOW = 1_710_000_120_000


def mutation(url, modified_ms, n, op, **row):
    m = records.mutation_of({"$mutation_type": op, "user_id": "user-0001", **row}, 424242, (modified_ms, url, n),
                            f"derived-{n}", NOW, f"{url}#{n}", Rules(), NOW)
    assert not hasattr(m, "reason"), m
    return m


def file_a():
    """ord-1 updated to v1, ord-2 and ord-3 deleted."""
    return [mutation(FILE_A, A_MS, 1, "UPDATE", event_type="v1", device_id="device-0001", insert_id="ord-1"),
            mutation(FILE_A, A_MS, 2, "DELETE", insert_id="ord-2"),
            mutation(FILE_A, A_MS, 3, "DELETE", insert_id="ord-3")]


def file_b():
    """Written later: ord-1 updated to v2, ord-2 updated (after file A's DELETE: finds nothing), ord-3 inserted
    again (its insert_id held by the hour, mirror.insert_is_update off: ignored)."""
    return [mutation(FILE_B, B_MS, 1, "UPDATE", event_type="v2", device_id="device-0001", insert_id="ord-1"),
            mutation(FILE_B, B_MS, 2, "UPDATE", event_type="back", device_id="device-0001", insert_id="ord-2"),
            mutation(FILE_B, B_MS, 3, "INSERT", event_type="again", device_id="device-0001", insert_id="ord-3")]


def hour_lines(settings):
    """The hour's data lines, decoded, in the order of its objects' keys and of their lines."""
    out = []
    for k, body in sorted(objects(settings).items()):
        if k.endswith(".json.gz") and f"_{HOUR}#" in k:
            out.extend(orjson.loads(x) for x in gzip.decompress(body).splitlines())
    return out


def test_a_later_files_mutations_applied_before_an_earlier_files_leave_the_hour_as_in_order(deployment, worker):
    settings = mirror_deployment(deployment[1])
    asyncio.run(ensure_topics(settings))
    worker()
    asyncio.run(produce(settings, EVENTS))
    wait_until(lambda: f"amp/424242/424242_{HOUR}_complete" in {
        r.key for r in ledger_of(settings) if r.kind == "marker"}, 120, "the hour exported and marked")
    old = wait_until(lambda: (ls := hour_lines(settings)) and len(ls) == 5 and ls, 30, "the hour's five rows")
    assert [r["$insert_id"] for r in old] == ["ord-1", "ord-2", "ord-3", "ord-4", "ord-5"]
    a, b = file_a(), file_b()

    # file B's mutations reach events.mutations first, and its hour is rewritten before file A's arrive
    asyncio.run(send(settings, b))
    by_id = {r["$insert_id"]: r for r in old}
    after_b = [updated(by_id["ord-1"], b[0].row), updated(by_id["ord-2"], b[1].row), *old[2:]]
    wait_until(lambda: hour_lines(settings) == after_b, 120, "the hour rewritten by file B alone")

    # then file A's: applied before file B's in the hour's rebuild, whatever order they arrived in
    asyncio.run(send(settings, a))
    expected = [updated(by_id["ord-1"], b[0].row), by_id["ord-4"], by_id["ord-5"]]
    # the same rows as the files applied in order, A then B
    in_order = [orjson.loads(x) for x in rewrite([orjson.dumps(r) for r in old], by_insert_id([*a, *b]), False,
                                                 Counter())]
    assert in_order == expected
    got = wait_until(lambda: (ls := hour_lines(settings)) and "ord-2" not in {r["$insert_id"] for r in ls} and ls,
                     120, "the hour rewritten by file A's mutations too")
    assert got == expected
    assert (got[0]["event_type"], got[0]["uuid"], got[0]["amplitude_id"], got[0]["server_upload_time"]) == (
        "v2", by_id["ord-1"]["uuid"], by_id["ord-1"]["amplitude_id"], by_id["ord-1"]["server_upload_time"])
    assert f"amp/424242/424242_{HOUR}_complete" in objects(settings)
