"""Daily snapshots of changed profiles (exports: profiles): the settings, the days due, the object's key and bytes,
and each day written once."""

import asyncio
import gzip

import pytest
from pydantic import ValidationError

from stream.export.layout import written_prefixes
from stream.export.profiles_snapshot import GRACE_MS, planned, write_to
from stream.imports.profiles import DAY_MS, Profile, days_due, key, snapshot_body, snapshot_key
from stream.s3.storage import MemoryStorage
from stream.settings import Settings

CONVERTER = {"converterConfig": {"convertToAmplitudeFunc": {"user_id": "user", "user_properties": {"p": "p"}}}}
SOURCE = {"name": "people", "project": 7, "bucket": "bkt", "converter": CONVERTER, "data_type": "profiles",
          "strategy": "mirror"}
DEST = {"name": "crm", "project": 7, "bucket": "out", "prefix": "amp/", "exports": "profiles"}
D1 = 1_709_942_400_000          # 2024-03-09 00:00 UTC
SEQ = (1, "s3://bkt/p.json", 1)


def settings(dest=DEST, sources=(SOURCE,)):
    return Settings(projects=[{"id": 7}, {"id": 8}], destinations=[dest], sources=list(sources),
                    worker={"data_dir": "/tmp/stream-test-profiles"})


def test_a_destination_exports_profiles_of_a_project_with_a_source_of_profiles_in_the_amplitude_layout():
    d = settings().destination("crm")
    assert (d.exports_profiles(), d.exports_events(), d.exports_merged_ids()) == (True, False, False)
    assert written_prefixes(d) == [("profiles", "amp/7/profiles/7_profiles_")]
    with pytest.raises(ValidationError) as err:
        settings(sources=())
    assert ("destinations[0] (crm): exports: profiles needs a source of profiles (data_type: profiles) of project 7, "
            "whose users' profiles it exports; add one, or export events") in str(err.value)
    for bad in ({"layout": "segment"}, {"archive": True}):
        with pytest.raises(ValidationError) as err:
            settings(dest={**DEST, **bad})
        assert ("destinations[0] (crm): exports: profiles writes daily profile snapshots in the amplitude layout and "
                "is not an archive: use layout: amplitude and archive: false, or another destination for the events"
                ) in str(err.value)


STORED = {key(7, "b"): Profile({"plan": "pro"}, SEQ, D1 + 5),
          key(7, "a"): Profile(None, SEQ, D1 + DAY_MS - 1),
          key(7, "c"): Profile({"plan": "free"}, SEQ, D1 + DAY_MS + 7),       # changed the next day
          key(8, "z"): Profile({"plan": "x"}, SEQ, D1 - DAY_MS)}              # another project


def test_a_day_is_due_once_it_ended_and_the_grace_passed_and_a_profile_changed_that_day():
    assert days_due(STORED, 7, D1 + DAY_MS + GRACE_MS - 1, GRACE_MS) == []
    assert days_due(STORED, 7, D1 + DAY_MS + GRACE_MS, GRACE_MS) == [D1]
    assert days_due(STORED, 7, D1 + 3 * DAY_MS, GRACE_MS) == [D1, D1 + DAY_MS]
    assert days_due(STORED, 8, D1 + 3 * DAY_MS, GRACE_MS) == [D1 - DAY_MS]


def test_a_snapshot_holds_the_profiles_changed_that_day_by_user_id_deleted_ones_too():
    assert snapshot_key("amp/", 7, D1) == "amp/7/profiles/7_profiles_2024-03-09.json.gz"
    assert snapshot_body(STORED, 7, D1) == (
        b'{"app":7,"user_id":"a","user_properties":null,"deleted":true,"updated_time":"2024-03-09 23:59:59.999000"}\n'
        b'{"app":7,"user_id":"b","user_properties":{"plan":"pro"},"deleted":false,'
        b'"updated_time":"2024-03-09 00:00:00.005000"}\n')
    dest = settings().destination("crm")
    plan = planned(STORED, dest, set(), D1 + DAY_MS + GRACE_MS)
    assert [(k, gzip.decompress(b)) for k, b in plan] == [
        ("amp/7/profiles/7_profiles_2024-03-09.json.gz", snapshot_body(STORED, 7, D1))]
    assert plan == planned(STORED, dest, set(), D1 + DAY_MS + GRACE_MS)      # the same bytes each time
    assert planned(STORED, dest, {"amp/7/profiles/7_profiles_2024-03-09.json.gz"}, D1 + DAY_MS + GRACE_MS) == []


def test_each_days_snapshot_is_written_once():
    storage, dest = MemoryStorage(), settings().destination("crm")
    first = asyncio.run(write_to(storage, STORED, dest, D1 + DAY_MS + GRACE_MS))
    assert first == ["s3://out/amp/7/profiles/7_profiles_2024-03-09.json.gz"]
    assert asyncio.run(write_to(storage, STORED, dest, D1 + DAY_MS + GRACE_MS + 1)) == []
    assert asyncio.run(write_to(storage, STORED, dest, D1 + 2 * DAY_MS + GRACE_MS)) == [
        "s3://out/amp/7/profiles/7_profiles_2024-03-10.json.gz"]
    assert storage.puts == ["amp/7/profiles/7_profiles_2024-03-09.json.gz",
                            "amp/7/profiles/7_profiles_2024-03-10.json.gz"]


def test_a_second_writer_reading_later_puts_the_same_bytes_unless_a_profile_of_the_day_changed_again():
    """Two replicas each read the profiles, list the day missing and put it (the duty moved during a look): the body
    is made of the profiles whose latest change is in the day, so records written after the day's end for other
    users, or setting a user's same properties again, leave its bytes as they were; a user of the day changed again
    after it leaves the day (it is in its new day's snapshot), and the later reader puts other bytes under the key."""
    dest, now = settings().destination("crm"), D1 + DAY_MS + GRACE_MS
    first = planned(STORED, dest, set(), now)
    later = {**STORED, key(7, "d"): Profile({"plan": "new"}, SEQ, D1 + DAY_MS + 9),          # a new user, the next day
             key(7, "b"): Profile({"plan": "pro"}, (2, "s3://bkt/q.json", 1), D1 + 5)}      # set the same again
    assert planned(later, dest, set(), now) == first
    changed = {**STORED, key(7, "b"): Profile({"plan": "team"}, (2, "s3://bkt/q.json", 1), D1 + DAY_MS + 60_000)}
    (k, body), = planned(changed, dest, set(), now)
    assert k == first[0][0] and body != first[0][1]
    assert gzip.decompress(body) == (
        b'{"app":7,"user_id":"a","user_properties":null,"deleted":true,"updated_time":"2024-03-09 23:59:59.999000"}\n')


def test_a_replica_that_lost_the_duty_during_a_look_puts_nothing_more():
    """Two days due: the duty (partition 0) moves away after the first put; the second is left to the new owner."""
    storage, dest = MemoryStorage(), settings().destination("crm")
    answers = iter([True, False])
    assert asyncio.run(write_to(storage, STORED, dest, D1 + 2 * DAY_MS + GRACE_MS, lambda: next(answers))) == [
        "s3://out/amp/7/profiles/7_profiles_2024-03-09.json.gz"]
    assert storage.puts == ["amp/7/profiles/7_profiles_2024-03-09.json.gz"]
    assert asyncio.run(write_to(storage, STORED, dest, D1 + 2 * DAY_MS + GRACE_MS, lambda: False)) == []
    assert storage.puts == ["amp/7/profiles/7_profiles_2024-03-09.json.gz"]


def test_a_second_writer_that_listed_the_day_missing_leaves_the_first_writers_object():
    """Two replicas list the day missing before either puts it: the conditional put keeps the first object whole,
    and the second writes nothing, counts nothing and names nothing written, even with other bytes to put."""
    dest, now = settings().destination("crm"), D1 + DAY_MS + GRACE_MS

    class Unlisted(MemoryStorage):       # a listing made before the other replica's put
        async def list(self, bucket, prefix, start_after=""):
            return
            yield

    storage = Unlisted()
    assert asyncio.run(write_to(storage, STORED, dest, now)) == ["s3://out/amp/7/profiles/7_profiles_2024-03-09.json.gz"]
    first = dict(storage.objects)
    changed = {**STORED, key(7, "b"): Profile({"plan": "team"}, (2, "s3://bkt/q.json", 1), D1 + DAY_MS + 60_000)}
    assert asyncio.run(write_to(storage, changed, dest, now)) == []
    assert storage.objects == first and storage.puts == ["amp/7/profiles/7_profiles_2024-03-09.json.gz"]
